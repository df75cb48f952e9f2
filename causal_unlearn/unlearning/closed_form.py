"""Closed-form deletion at the traced site: MEMIT's least-squares edit of the MLPs' output
projections, with a target that deletes a fact instead of rewriting it.

An MLP's down (output) projection W maps a key k, its input (for a gated MLP act(gate(x)) *
up(x)), to the value W k it adds to the residual stream. For the facts to delete, at each edited
layer l in order (MEMIT, Meng et al. 2023):

    Delta W_l = R_l K_l^T (lambda C_l + K_l K_l^T)^-1

- K_l: one key per fact (columns): the key at the subject's last token of the fact's prompt;
- C_l = E[k k^T] over every token of the covariance text (with the unedited weights, as MEMIT's
  cached statistics): the keys whose values are kept; `lambda` (`mom2_weight`) weighs keeping
  them against reaching the targets;
- R_l = (z - h) / (layers not yet edited, this one included): z is the target hidden state at the
  last edited layer L at the subject's last token, h the current one (after the edits of the
  layers before l). This is the least-squares solution of
  min ||Delta W K - R||^2 + lambda E_text ||Delta W k||^2.

The target z deletes:
- "stand_in": the hidden state the model has at layer L for someone it never saw, the subject's
  name swapped for a stand-in's (`BiosWorld.stand_in_names`) in the same prompt;
- "max_entropy": h + delta, one delta per subject found by a few Adam steps (MEMIT's
  `compute_z`, with Patil et al.'s deletion objective, arXiv 2309.17410) so that the next-token
  distribution at every answer token of the subject's prompts has the largest entropy, with
  MEMIT's weight decay and norm bound on delta.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from causal_unlearn.data.facts import TraceFact
from causal_unlearn.data.rows import Row
from causal_unlearn.data.stand_ins import stand_in_prompts
from causal_unlearn.models.hooks import HookPoint, edit
from causal_unlearn.models.weights import editing
from causal_unlearn.models.loader import LoadedModel, require_loaded
from causal_unlearn.tracing.tokens import subject_token_range
from causal_unlearn.tracing.trace import as_facts
from causal_unlearn.unlearning.objectives import LossInputs, Objective, Terms
from causal_unlearn.unlearning.parameters import check_layers, select_parameters
from causal_unlearn.unlearning.result import UnlearnResult
from causal_unlearn.validation import finite, integer, replaced

Target = Literal["max_entropy", "stand_in"]
TARGETS: tuple[str, ...] = ("max_entropy", "stand_in")


@dataclass(frozen=True)
class DeletionConfig:
    """How `delete_facts` computes its edit.

    - `target`: "max_entropy" (optimize each subject's hidden state so that its answers become a
      uniform guess) or "stand_in" (the hidden state of a stranger in the same prompts).
    - `mom2_weight`: MEMIT's lambda, the weight of the covariance text's keys against the forget
      keys; larger keeps other text closer to what it was and reaches the targets less.
    - `steps`, `lr`, `weight_decay`, `clamp_norm_factor`: the max-entropy target's Adam steps,
      learning rate, MEMIT's decay weight_decay * |delta| / |h|^2, and the bound
      |delta| <= clamp_norm_factor * |h| (h: the subject's hidden state at the last edited layer).
    - `batch_size` sequences per forward; covariance texts are cut at `max_length` tokens.

    Examples:
        >>> DeletionConfig(target="stand_in").replace(mom2_weight=100.0).mom2_weight
        100.0
        >>> DeletionConfig(target="zero")
        Traceback (most recent call last):
        ...
        ValueError: unknown target 'zero'; use 'max_entropy' or 'stand_in'
    """

    target: Target = "max_entropy"
    mom2_weight: float = 1000.0
    steps: int = 20
    lr: float = 0.5
    weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    batch_size: int = 64
    max_length: int = 512

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731  (frozen)
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; use 'max_entropy' or 'stand_in'")
        for name in ("steps", "batch_size", "max_length"):
            set_(name, integer(name, getattr(self, name), minimum=1))
        for name in ("mom2_weight", "lr", "clamp_norm_factor"):
            set_(name, finite(name, getattr(self, name), above=0))
        set_("weight_decay", finite("weight_decay", self.weight_decay, at_least=0))

    def replace(self, **changes: Any) -> DeletionConfig:
        """A copy with `changes`; an unknown name is refused, listing the known ones."""
        return replaced(self, "deletion", changes)


class ClosedFormDeletion(Objective):
    """The method an `UnlearnResult` of `delete_facts` records (its `objective`): an edit
    computed in one go, not a loss to train with `unlearn`."""

    name = "closed_form"

    def __init__(self, target: Target):
        self.target = target

    @property
    def label(self) -> str:
        return f"closed_form ({self.target})"

    def __call__(self, inputs: LossInputs) -> Terms:
        raise TypeError("closed-form deletion computes its edit in one go and has no loss to train; "
                        "call causal_unlearn.unlearning.closed_form.delete_facts instead of unlearn")


def delete_facts(
    model: LoadedModel,
    facts: Iterable[TraceFact | tuple[str, str, str]],
    layers: Iterable[int],
    *,
    covariance_text: Sequence[str | Row],
    stand_ins: Mapping[str, str] | None = None,
    config: DeletionConfig | None = None,
    progress: bool = True,
    **settings: Any,
) -> UnlearnResult:
    """Delete `facts` (`TraceFact`s or (prompt, subject, answer) triples: the forget people's)
    by MEMIT's closed-form edit of the MLP down projections of `layers` at each subject's last
    token, keeping the keys of `covariance_text` (strings or rows: retain rows, bios, general
    text; several times more tokens than the MLP has hidden units) as they were.

    Each fact gives a key (its prompt's) and a target; the max-entropy shift is one per subject,
    over all the subject's prompts. With `target="stand_in"`, `stand_ins` maps each subject to a
    name the model never saw (`world.stand_in_names()`).
    `config` is a `DeletionConfig`, or its fields as keywords (`target="stand_in"`).

    The model is edited in place and the same `UnlearnResult` as `unlearn`'s comes back
    (`revert()` restores the original weights bit for bit; `history` holds one record of what was
    computed); an error on the way leaves the original weights. The last edited layer must be able
    to reach the answer from the subject's last token: the model's final layer cannot (its output
    there reaches no later token), so it is refused.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> facts = world.facts_to_trace("forget")[:7]               # one person's facts
        >>> text = [*world.retain, *world.documents("retain")]      # rows and plain text
        >>> result = cu.delete_facts(lm, facts, [0], covariance_text=text, target="stand_in",
        ...                          stand_ins=world.stand_in_names(), progress=False)
        >>> result.selection.names, result.settings["n_subjects"]
        (['model.layers.0.mlp.down_proj.weight'], 1)
        >>> result.revert()
    """
    started = time.perf_counter()
    lm = require_loaded(model, "delete_facts")
    if config is not None and not isinstance(config, DeletionConfig):
        raise TypeError(f"config must be a DeletionConfig, got a {type(config).__name__}")
    config = (config or DeletionConfig()).replace(**settings)
    facts = as_facts(facts)
    if not facts:
        raise ValueError("no facts to delete; pass TraceFacts, e.g. world.facts_to_trace('forget')")
    layers = check_layers(getattr(layers, "layers", layers), lm.n_layers)
    texts = _texts(covariance_text)
    subjects = list(dict.fromkeys(fact.subject for fact in facts))
    group = torch.tensor([subjects.index(fact.subject) for fact in facts])
    batch = _encode(lm, facts)
    z_layer = layers[-1]
    if z_layer == lm.n_layers - 1 and bool((batch.subject_position < batch.prompt_length - 1).any()):
        raise ValueError(
            f"layer {z_layer} is the model's last layer: what its MLP writes at the subject's last token reaches no "
            "later token, so a closed-form edit there cannot change the answer. Edit the layers where the subject's "
            f"attributes are looked up (e.g. layers={[layer for layer in layers if layer != z_layer] or [0]}); the "
            "last layer's MLP reads the answer out at the prompt's last token, a site this edit does not address")
    if config.target == "stand_in":
        stranger = _encode(lm, _with_stand_ins(facts, subjects, stand_ins))
    selection = select_parameters(lm, layers, modules="mlp_down")
    spec = lm.architecture
    down = {layer: spec.path("mlp_down_projection_path").format(layer=layer) for layer in layers}
    hidden = spec.block_output(z_layer)

    covariances, n_tokens = second_moments(lm, texts, [down[layer] for layer in layers], batch_size=config.batch_size,
                                           max_length=config.max_length, progress=progress)
    width = next(iter(covariances.values())).shape[0]
    if n_tokens < width:
        raise ValueError(f"the covariance text has {n_tokens} tokens, fewer than the {width} hidden units of the MLP, "
                         "so their second moment cannot pin the other keys down; give more text (retain rows, "
                         "bios, general text)")
    records: dict[str, float] = dict(step=0)
    with editing(lm.model, selection.parameters, keep=True) as original:  # any error: the original weights back
        current = _float64(_states_at_subject(lm, batch, [hidden], config.batch_size)[hidden])
        if config.target == "stand_in":
            target = _float64(_states_at_subject(lm, stranger, [hidden], config.batch_size)[hidden])
        else:
            delta = _max_entropy_delta(lm, batch, group, _subject_means(current, group, len(subjects)), hidden, config,
                                       progress)
            target = current + delta.to(current.device)[group.to(current.device)]
        records["target_gap_before"] = _mean_norm(target - current)
        for i, layer in enumerate(tqdm(layers, desc="delete_facts", unit="layer", disable=not progress)):
            key = HookPoint(down[layer], input=True)
            states = _states_at_subject(lm, batch, [key, hidden], config.batch_size)
            residuals = (target - _float64(states[hidden])) / (len(layers) - i)
            update = memit_update(states[key], residuals, covariances[down[layer]], config.mom2_weight)
            records[f"update_norm_layer_{layer}"] = float(update.norm())
            _add_to_output_projection(lm.module(down[layer]), update)
        final = _states_at_subject(lm, batch, [hidden], config.batch_size)[hidden]
        records["target_gap_after"] = _mean_norm(target - _float64(final))
    return UnlearnResult(
        model=lm, selection=selection, objective=ClosedFormDeletion(config.target),
        settings=dict(method="closed_form", **dataclasses.asdict(config), layers=layers, n_facts=len(facts),
                      n_subjects=len(subjects), covariance_tokens=n_tokens),
        history=[records], evaluations=[], selected_step=0, seconds=time.perf_counter() - started,
        original=original, edited=selection.snapshot())


def memit_update(
    keys: Float[Tensor, "subjects d_hidden"],
    residuals: Float[Tensor, "subjects d_model"],
    covariance: Float[Tensor, "d_hidden d_hidden"],
    mom2_weight: float,
) -> Float[Tensor, "d_model d_hidden"]:
    """MEMIT's update R K^T (lambda C + K K^T)^-1 in float64, keys and residuals one row per
    subject (K and R are their transposes); the result is oriented as `nn.Linear.weight`.

    Examples:
        >>> k, r = torch.eye(2)[:1], torch.tensor([[3.0]])
        >>> memit_update(k, r, torch.eye(2), 1.0)  # 3 * 1 / (1 + 1) on the key's direction
        tensor([[1.5000, 0.0000]], dtype=torch.float64)
    """
    keys, residuals, covariance = _float64(keys), _float64(residuals), _float64(covariance)
    system = mom2_weight * covariance + keys.T @ keys
    # (lambda C + K K^T) is symmetric, so R K^T A^-1 = R (A^-1 K)^T
    return residuals.T @ torch.linalg.solve(system, keys.T).T


@torch.no_grad()
def second_moments(
    model: LoadedModel,
    texts: Sequence[str],
    points: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 512,
    progress: bool = True,
) -> tuple[dict[str, Float[Tensor, "d_hidden d_hidden"]], int]:
    """E[k k^T] in float64 of the input k of each module at `points`, over every token of `texts`
    (cut at `max_length` tokens, special tokens included), and the number of tokens: the keys
    MEMIT's edit preserves.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> moments, n = second_moments(lm, ["Paris is the capital of France."], ["model.layers.0.mlp.down_proj"],
        ...                             progress=False)
        >>> moments["model.layers.0.mlp.down_proj"].shape, n
        (torch.Size([512, 512]), 9)
    """
    lm = require_loaded(model, "second_moments")
    sums: dict[str, Tensor] = {}
    count = 0
    mask: Tensor | None = None

    def accumulate(point: str):
        def add(state: Tensor) -> None:
            keys = _float64(state[mask])
            sums[point] = sums.get(point, 0) + keys.T @ keys

        return add

    tokenizer = lm.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        with edit(lm.model, {HookPoint(point, input=True): accumulate(point) for point in points}):
            for start in tqdm(range(0, len(texts), batch_size), desc="second moments", unit="batch",
                              disable=not progress):
                encoded = tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True,
                                    truncation=True, max_length=max_length).to(lm.device)
                mask = encoded["attention_mask"].bool()
                lm.model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
                count += int(mask.sum())
    finally:
        tokenizer.padding_side = side
    return {point: total / count for point, total in sums.items()}, count


@dataclass
class _Encoded:
    """Prompt + answer per fact, right-padded; where each subject ends, where each prompt ends, and
    which positions predict an answer token."""

    input_ids: Int[Tensor, "row pos"]
    attention_mask: Int[Tensor, "row pos"]
    subject_position: Int[Tensor, " row"]
    prompt_length: Int[Tensor, " row"]
    predicts_answer: Tensor  # bool, row pos

    def rows(self, start: int, stop: int) -> _Encoded:
        return _Encoded(*(value[start:stop] for value in dataclasses.astuple(self)))


def _encode(lm: LoadedModel, facts: Sequence[TraceFact]) -> _Encoded:
    sequences, subject_positions, prompt_lengths = [], [], []
    for index, fact in enumerate(facts):
        try:
            end = subject_token_range(lm, fact.prompt, fact.subject)[1]
        except ValueError as error:
            raise ValueError(f"fact {index}: {error}") from None
        prompt = lm.tokenizer(fact.prompt)["input_ids"]
        full = lm.tokenizer(fact.prompt + fact.answer)["input_ids"]
        if full[:len(prompt)] != prompt:
            raise ValueError(f"fact {index}: appending the answer {fact.answer!r} changes how the prompt "
                             f"{fact.prompt!r} tokenizes; start the answer at a token boundary (with a leading space)")
        sequences.append(full)
        subject_positions.append(end - 1)
        prompt_lengths.append(len(prompt))
    width = max(map(len, sequences))
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences])
    lengths = torch.tensor([len(s) for s in sequences])
    positions = torch.arange(width)
    prompt_length = torch.tensor(prompt_lengths)
    # the logits at position t predict token t + 1
    predicts = (positions >= prompt_length[:, None] - 1) & (positions < lengths[:, None] - 1)
    return _Encoded(ids, (positions < lengths[:, None]).long(), torch.tensor(subject_positions), prompt_length,
                    predicts)


def _with_stand_ins(facts: Sequence[TraceFact], subjects: Sequence[str],
                    stand_ins: Mapping[str, str] | None) -> list[TraceFact]:
    """The facts with each subject's name swapped for its stand-in's, in the prompt only."""
    if not stand_ins:
        raise ValueError("target='stand_in' needs stand_ins={subject: a name the model never saw}, e.g. "
                         "world.stand_in_names() for the built-in world")
    missing = [subject for subject in subjects if subject not in stand_ins]
    if missing:
        raise ValueError(f"{len(missing)} subject(s) have no stand-in (first: {missing[0]!r}); stand_ins must map "
                         "every fact's subject to a name")
    rows = [Row(id=str(i), input=fact.prompt, output=fact.answer, task="") for i, fact in enumerate(facts)]
    prompts = stand_in_prompts(rows, {subject: stand_ins[subject] for subject in subjects})
    return [TraceFact(prompts[str(i)], stand_ins[fact.subject], fact.answer) for i, fact in enumerate(facts)]


def _texts(covariance_text: Sequence[str | Row]) -> list[str]:
    if isinstance(covariance_text, str):
        raise TypeError("covariance_text is a list of texts (strings or rows), got one string; wrap it in a list")
    texts = [f"{t.input} {t.output}" if isinstance(t, Row) else t for t in covariance_text]
    wrong = [t for t in texts if not isinstance(t, str)]
    if wrong:
        raise TypeError(f"covariance_text holds strings or rows, got {wrong[0]!r:.60}")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("covariance_text is empty; pass the text whose keys the edit must keep, e.g. retain rows and "
                         "bios")
    return texts


def _states_at_subject(lm: LoadedModel, batch: _Encoded, points: Sequence[str | HookPoint],
                       batch_size: int) -> dict[str | HookPoint, Tensor]:
    """Each point's state at each row's subject's last token (a module's input for an input point)."""
    found: dict[str | HookPoint, list[Tensor]] = {point: [] for point in points}
    current: list[_Encoded] = []

    def keep(point):
        def store(state: Tensor) -> None:
            rows = torch.arange(state.shape[0], device=state.device)
            found[point].append(state[rows, current[0].subject_position.to(state.device)].detach())

        return store

    with torch.no_grad(), edit(lm.model, {point: keep(point) for point in points}):
        for start in range(0, len(batch.input_ids), batch_size):
            current[:] = [batch.rows(start, start + batch_size)]
            rows = current[0]
            lm.model(input_ids=rows.input_ids.to(lm.device), attention_mask=rows.attention_mask.to(lm.device))
    return {point: torch.cat(states) for point, states in found.items()}


def _subject_means(states: Float[Tensor, "row d"], group: Int[Tensor, " row"], n: int) -> Float[Tensor, "subject d"]:
    """The mean of each subject's rows, in float64."""
    states = _float64(states)
    group = group.to(states.device)
    totals = torch.zeros(n, states.shape[-1], dtype=torch.float64, device=states.device)
    totals.index_add_(0, group, states)
    return totals / torch.bincount(group, minlength=n)[:, None]


def _float64(tensor: Tensor) -> Tensor:
    """`tensor` in float64, on the CPU where its device has no float64 (Apple's MPS)."""
    return (tensor.cpu() if tensor.device.type == "mps" else tensor).double()


def _mean_norm(vectors: Tensor) -> float:
    return float(vectors.norm(dim=-1).mean())


def _max_entropy_delta(lm: LoadedModel, batch: _Encoded, group: Tensor, current: Tensor, hidden: str,
                       config: DeletionConfig, progress: bool) -> Float[Tensor, "subject d_model"]:
    """Per subject, the shift of the hidden state at `hidden` (the subject's last token) that
    maximizes the entropy of the next-token distribution at the subject's answer tokens."""
    device, n = lm.device, current.shape[0]
    delta = torch.zeros(n, current.shape[1], device=device, requires_grad=True)
    scale = current.norm(dim=-1).float().to(device)  # float64 lives on the CPU where the device has none
    optimizer = torch.optim.Adam([delta], lr=config.lr)
    # each subject's answer positions weigh 1 / their number, so every subject counts once
    per_subject = torch.zeros(n).index_add_(0, group, batch.predicts_answer.sum(1).float())
    for _ in tqdm(range(config.steps), desc="max-entropy targets", unit="step", disable=not progress):
        gradient = torch.zeros_like(delta)
        for start in range(0, len(batch.input_ids), config.batch_size):
            rows = batch.rows(start, start + config.batch_size)
            subject = group[start:start + config.batch_size].to(device)

            def shift(state: Tensor, rows: _Encoded = rows, subject: Tensor = subject) -> Tensor:
                state = state.clone()
                index = torch.arange(state.shape[0], device=state.device)
                state[index, rows.subject_position.to(state.device)] += delta[subject].to(state.dtype)
                return state

            with edit(lm.model, {hidden: shift}):
                logits = lm.model(input_ids=rows.input_ids.to(device),
                                  attention_mask=rows.attention_mask.to(device)).logits
            mask = rows.predicts_answer.to(device)
            log_p = logits[mask].float().log_softmax(-1)
            entropy = -(log_p.exp() * log_p).sum(-1)
            weight = (1 / per_subject.to(device)[subject])[:, None].expand_as(mask)[mask]
            loss = -(entropy * weight).sum()
            gradient += torch.autograd.grad(loss, delta)[0]
        # MEMIT's decay, |delta| / |h|^2 per subject
        decay = config.weight_decay * (delta.norm(dim=-1) / scale**2).sum()
        delta.grad = gradient + torch.autograd.grad(decay, delta)[0]
        optimizer.step()
        with torch.no_grad():
            bound = config.clamp_norm_factor * scale
            delta.mul_((bound / delta.norm(dim=-1).clamp(min=1e-12)).clamp(max=1)[:, None])
    return _float64(delta.detach())


def _add_to_output_projection(module: nn.Module, update: Float[Tensor, "d_model d_hidden"]) -> None:
    """Add `update` (oriented as nn.Linear's weight: out x in) to the projection's weight; GPT-2's
    Conv1D keeps its weight transposed (in x out)."""
    weight = module.weight
    if isinstance(module, nn.Linear):
        oriented = update
    elif type(module).__name__ == "Conv1D" and weight.shape == update.T.shape:
        oriented = update.T
    else:
        raise TypeError(f"the MLP's down projection is a {type(module).__name__}; closed-form editing knows how "
                        "nn.Linear and GPT-2's Conv1D map their input to their output")
    with torch.no_grad():
        weight.add_(oriented.to(device=weight.device, dtype=weight.dtype))
