"""Unlearning objectives. Each one is a small class: given one batch's `LossInputs`, it returns
its loss terms (a dict whose "loss" entry is optimized); the training loop never changes.

Examples:
    >>> objective = get_objective("grad_diff")
    >>> objective.name, objective.needs_reference
    ('grad_diff', False)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from causal_unlearn.data.encoding import EncodedBatch, encode_rows
from causal_unlearn.data.rows import Row
from causal_unlearn.evaluation.likelihood import sequence_nll
from causal_unlearn.validation import finite, integer

if TYPE_CHECKING:
    from causal_unlearn.models.loader import LoadedModel

Split = Literal["forget", "retain"]
Terms = dict[str, Tensor]


@dataclass
class LossInputs:
    """One batch as an objective sees it: the edited model's logits, which rows are forget rows,
    the rows it was encoded from (`source_rows`), (computed only if asked for) the original
    model's logits on the same batch or, through `original_logits`, on any other, and the states
    the objective `reads` (`state`)."""

    logits: Float[Tensor, "batch pos vocab"]
    batch: EncodedBatch
    is_forget: Bool[Tensor, " batch"]
    epoch: int
    training: bool
    reference_logits_fn: Callable[[], Float[Tensor, "batch pos vocab"]] | None = None
    source_rows: Sequence[Row] = ()
    original_logits_fn: Callable[[EncodedBatch], Float[Tensor, "batch pos vocab"]] | None = None
    states: Mapping[str, Tensor] = field(default_factory=dict, repr=False)
    reference_states: Mapping[str, Tensor] = field(default_factory=dict, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def rows(self, split: Split) -> Bool[Tensor, " batch"]:
        return self.is_forget if split == "forget" else ~self.is_forget

    def has(self, split: Split) -> bool:
        return bool(self.rows(split).any())

    def _nll(self, reference: bool = False) -> tuple[Tensor, Tensor]:
        key = ("nll", reference)
        if key not in self._cache:
            self._cache[key] = sequence_nll(self.reference_logits() if reference else self.logits, self.batch)
        return self._cache[key]

    def mean_nll(self, split: Split) -> Float[Tensor, ""]:
        """Token-mean cross-entropy over the split's answer tokens (0 when the batch has none)."""
        total, count = self._nll()
        rows = self.rows(split)
        return total[rows].sum() / count[rows].sum().clamp(min=1)

    def sequence_logprob(self, split: Split, *, reference: bool = False) -> tuple[Float[Tensor, " row"], Tensor]:
        """Summed log p(answer | prompt) of each of the split's rows, and its answer length."""
        total, count = self._nll(reference)
        rows = self.rows(split)
        return -total[rows], count[rows]

    def reference_logits(self) -> Float[Tensor, "batch pos vocab"]:
        if self.reference_logits_fn is None:
            raise RuntimeError("this objective needs the original model's logits but none were provided")
        if "reference" not in self._cache:
            self._cache["reference"] = self.reference_logits_fn()
        return self._cache["reference"]

    def state(self, address: str, *, reference: bool = False) -> Float[Tensor, "batch pos d_model"]:
        """The output of the module at `address` in this batch's forward of the edited model (with
        its gradient) or, with `reference=True`, of the original model (recorded where the
        objective `needs_reference`)."""
        states = self.reference_states if reference else self.states
        if address not in states:
            raise RuntimeError(f"no {'original' if reference else 'edited'} model state was recorded at {address!r}: "
                               "an objective lists the module addresses it reads in `reads` (and sets "
                               "`needs_reference` for the original model's)")
        return states[address]

    def original_logits(self, batch: EncodedBatch) -> Float[Tensor, "batch pos vocab"]:
        """The original model's logits (no gradient) on another batch."""
        if self.original_logits_fn is None:
            raise RuntimeError("this objective needs the original model but the loop provided none")
        return self.original_logits_fn(batch)

    def kl_from_reference(self, split: Split) -> Float[Tensor, ""]:
        """KL(original || edited) per answer token, averaged over the split's answer tokens."""
        mask = self.batch.target_mask & self.rows(split)[:, None]
        # the prediction of token t is read at position t - 1
        mask = mask[:, 1:]
        log_edited = self.logits[:, :-1][mask].float().log_softmax(-1)
        log_original = self.reference_logits()[:, :-1][mask].float().log_softmax(-1)
        if log_edited.shape[0] == 0:
            return log_edited.sum()
        return F.kl_div(log_edited, log_original, log_target=True, reduction="batchmean")


class Objective:
    """Base class: `__call__` maps a batch to loss terms; `loss` is what the optimizer minimizes.
    Objectives that keep state across epochs (SHA256's adaptive alpha) override the epoch hooks."""

    name = "objective"
    needs_reference = False
    # whether `__call__` runs forwards of its own whose number depends on the process's rows
    # (a sharded model gathers weights on every forward, so every process must run as many)
    runs_own_forwards = False

    def __call__(self, inputs: LossInputs) -> Terms:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the state of a previous run (called when a run starts)."""

    def begin(self, model: "LoadedModel", forget: Sequence[Row], retain: Sequence[Row],
              layers: Sequence[int] = ()) -> None:
        """Check the run's rows and trained `layers` and keep what the objective needs (called
        after `reset`, before the first step, with the original weights in place)."""

    @property
    def reads(self) -> tuple[str, ...]:
        """Module addresses whose outputs the loop records in every forward of the edited model
        (with gradient) and, where `needs_reference`, of the original model: `LossInputs.state`.
        Known after `begin`."""
        return ()

    def start_epoch(self, epoch: int) -> None:
        pass

    def end_epoch(self, epoch: int) -> None:
        pass

    def synchronize(self, gather: Callable[[list[float]], list[float]]) -> None:
        """Before `end_epoch`, where the run is spread over processes: make the state the epoch
        kept the same on every process (`gather` returns every process's values)."""

    @property
    def label(self) -> str:
        """What tables, figures and progress bars call this objective: its `name`, plus the
        settings that set it apart from the defaults where an objective says so."""
        return self.name

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"


class GradientAscent(Objective):
    """Maximize the forget set's cross-entropy: L = -CE_forget."""

    name = "grad_ascent"

    def __call__(self, inputs: LossInputs) -> Terms:
        forget_ce = inputs.mean_nll("forget")
        return {"loss": -forget_ce, "forget_ce": forget_ce}


class GradientDifference(Objective):
    """L = -CE_forget + retain_weight * CE_retain."""

    name = "grad_diff"

    def __init__(self, retain_weight: float = 1.0):
        self.retain_weight = retain_weight

    def __call__(self, inputs: LossInputs) -> Terms:
        forget_ce, retain_ce = inputs.mean_nll("forget"), inputs.mean_nll("retain")
        return {"loss": -forget_ce + self.retain_weight * retain_ce, "forget_ce": forget_ce, "retain_ce": retain_ce}


class KLMinimization(Objective):
    """Gradient ascent on the forget set, KL(original || edited) on the retain set's answers."""

    name = "kl"
    needs_reference = True

    def __init__(self, kl_weight: float = 1.0):
        self.kl_weight = kl_weight

    def __call__(self, inputs: LossInputs) -> Terms:
        forget_ce, retain_kl = inputs.mean_nll("forget"), inputs.kl_from_reference("retain")
        return {"loss": -forget_ce + self.kl_weight * retain_kl, "forget_ce": forget_ce, "retain_kl": retain_kl}


class SHA256(Objective):
    """The paper's loss L = -CE_forget + alpha * CE_retain with its adaptive alpha.

    During epoch 0, alpha = `alpha_start` and the mean retain CE over epoch 0's batches becomes
    the baseline. Afterwards, with delta = retain CE - baseline > 0,
    alpha = clip(round(scale * base ** delta + offset, 1), alpha_start, alpha_max); otherwise
    alpha_start. The public code divides the summed batch means by the number of examples,
    which shrinks the baseline by the batch size; here it is the mean of the batch means.
    The paper's text caps alpha at 2.8, its code at 2.3 (the default).

    Examples:
        >>> sha = SHA256()
        >>> sha.baseline = 1.0
        >>> sha.alpha(1.0), sha.alpha(1.5), sha.alpha(9.0)
        (1.2, 1.5, 2.3)
    """

    name = "sha256"

    def __init__(self, alpha_start: float = 1.2, alpha_max: float = 2.3, scale: float = 0.3, base: float = 6.0,
                 offset: float = 0.8):
        self.alpha_start, self.alpha_max, self.scale, self.base, self.offset = alpha_start, alpha_max, scale, base, offset
        self.reset()

    def reset(self) -> None:
        self.baseline: float | None = None
        self._epoch0_retain: list[float] = []

    @property
    def label(self) -> str:
        """`sha256`, with the alpha range where it is not the paper's 1.2-2.3 (`sha256 (alpha 3-6)`)."""
        default = type(self)()
        if (self.alpha_start, self.alpha_max) == (default.alpha_start, default.alpha_max):
            return self.name
        return f"{self.name} (alpha {self.alpha_start:g}-{self.alpha_max:g})"

    def alpha(self, retain_ce: float) -> float:
        if self.baseline is None or retain_ce <= self.baseline:
            return self.alpha_start
        raw = round(self.scale * self.base ** (retain_ce - self.baseline) + self.offset, 1)
        return min(max(raw, self.alpha_start), self.alpha_max)

    def __call__(self, inputs: LossInputs) -> Terms:
        forget_ce, retain_ce = inputs.mean_nll("forget"), inputs.mean_nll("retain")
        if inputs.training and inputs.epoch == 0 and inputs.has("retain"):
            self._epoch0_retain.append(float(retain_ce.detach()))
        alpha = self.alpha(float(retain_ce.detach())) if inputs.epoch > 0 else self.alpha_start
        return {"loss": -forget_ce + alpha * retain_ce, "forget_ce": forget_ce, "retain_ce": retain_ce,
                "alpha": torch.tensor(alpha, dtype=torch.float64)}

    def synchronize(self, gather: Callable[[list[float]], list[float]]) -> None:
        self._epoch0_retain = gather(self._epoch0_retain)  # the baseline reads every process's batches

    def end_epoch(self, epoch: int) -> None:
        if epoch == 0 and self._epoch0_retain:
            self.baseline = sum(self._epoch0_retain) / len(self._epoch0_retain)


class SHA256KL(SHA256):
    """SHA256 plus the paper's future-work retain constraint: + kl_weight * KL(original || edited)
    on the retain set's answers."""

    name = "sha256_kl"
    needs_reference = True

    def __init__(self, kl_weight: float = 1.0, **sha256_settings: float):
        super().__init__(**sha256_settings)
        self.kl_weight = kl_weight

    def __call__(self, inputs: LossInputs) -> Terms:
        terms = super().__call__(inputs)
        terms["retain_kl"] = inputs.kl_from_reference("retain")
        terms["loss"] = terms["loss"] + self.kl_weight * terms["retain_kl"]
        return terms


class NPO(Objective):
    """Negative preference optimization (Zhang et al. 2024):
    L = (2 / beta) * mean softplus(beta * (log p(y|x) - log p_original(y|x))) over forget rows,
    + retain_weight * CE_retain (set it to 0 for NPO without a retain term)."""

    name = "npo"
    needs_reference = True

    def __init__(self, beta: float = 0.1, retain_weight: float = 1.0):
        self.beta, self.retain_weight = beta, retain_weight

    def __call__(self, inputs: LossInputs) -> Terms:
        logprob, _ = inputs.sequence_logprob("forget")
        reference, _ = inputs.sequence_logprob("forget", reference=True)
        npo = _mean(2 / self.beta * F.softplus(self.beta * (logprob - reference)))
        retain_ce = inputs.mean_nll("retain")
        return {"loss": npo + self.retain_weight * retain_ce, "npo": npo, "forget_ce": inputs.mean_nll("forget"),
                "retain_ce": retain_ce}


class SimNPO(Objective):
    """SimNPO (Fan et al. 2024), NPO without a reference model, on length-normalized log-probs:
    L = (2 / beta) * mean softplus(beta * log p(y|x) / |y| + gamma) + retain_weight * CE_retain."""

    name = "simnpo"

    def __init__(self, beta: float = 2.5, gamma: float = 0.0, retain_weight: float = 1.0):
        self.beta, self.gamma, self.retain_weight = beta, gamma, retain_weight

    def __call__(self, inputs: LossInputs) -> Terms:
        logprob, length = inputs.sequence_logprob("forget")
        simnpo = _mean(2 / self.beta * F.softplus(self.beta * logprob / length.clamp(min=1) + self.gamma))
        retain_ce = inputs.mean_nll("retain")
        return {"loss": simnpo + self.retain_weight * retain_ce, "simnpo": simnpo,
                "forget_ce": inputs.mean_nll("forget"), "retain_ce": retain_ce}


class RMU(Objective):
    """Representation misdirection for unlearning (RMU; Li et al. 2024, the WMDP paper), as
    open-unlearning computes it. At the output of decoder layer `layer` (the residual stream
    after it; default: the deepest trained layer), with h the edited model's state there,
    h_0 the original model's, u a fixed random unit vector and c = `steering_coeff`:

        forget = mean over forget rows of the mean over their answer tokens of mean_d (h - c u)^2
        retain = the same mean over retain rows of mean_d (h - h_0)^2
        L = forget + alpha * retain

    The forget term points every forget answer's state at one meaningless direction; the retain
    term keeps the retain rows' states where they were. The tokens are those the loss reads
    (`loss_on`; the answer tokens by default), as open-unlearning reads its labels. Their code
    divides a [batch] tensor by a [batch, 1] one, so on batches of several rows it averages
    mean(token sums) x mean(1 / token counts) instead of the per-row mean its comments describe;
    here it is the per-row mean (the same number on one row a batch, their WMDP setting), and
    `token_mean="open_unlearning"` reproduces their number on any batch. u is drawn
    once from `seed`, uniform in [0, 1)^d_model and scaled to unit norm (`torch.rand`, as
    open-unlearning and the WMDP code draw it). `retain_loss="nll"` replaces the retain term by
    the retain answers' cross-entropy (open-unlearning's `retain_loss_type: NLL`; no original
    model needed). The defaults are open-unlearning's (c = 2, alpha = 1, their WMDP
    experiment); c is worth setting relative to the norm of h (docs/unlearning.md).

    The steered layer must be at or above every trained layer: weights above it cannot move it.

    Examples:
        >>> objective = RMU(steering_coeff=80.0, alpha=10.0)
        >>> objective.name, objective.label, objective.needs_reference
        ('rmu', 'rmu (c 80, alpha 10)', True)
        >>> round(float(objective.steering_vector(128).norm()), 4)
        80.0
    """

    name = "rmu"

    def __init__(self, layer: int | None = None, *, steering_coeff: float = 2.0, alpha: float = 1.0,
                 retain_loss: Literal["embed_diff", "nll"] = "embed_diff", seed: int = 0,
                 token_mean: Literal["per_row", "open_unlearning"] = "per_row"):
        self.layer = None if layer is None else integer("RMU's layer", layer, minimum=0)
        self.steering_coeff = finite("steering_coeff", steering_coeff, above=0)
        self.alpha = finite("alpha", alpha, at_least=0)
        if retain_loss not in ("embed_diff", "nll"):
            raise ValueError(f"unknown retain_loss {retain_loss!r}; use 'embed_diff' (the retain rows' states kept at "
                             "the original model's, open-unlearning's default) or 'nll' (their cross-entropy)")
        self.retain_loss = retain_loss
        if token_mean not in ("per_row", "open_unlearning"):
            raise ValueError(f"unknown token_mean {token_mean!r}; use 'per_row' or 'open_unlearning' (their code's "
                             "mean(token sums) x mean(1 / token counts), for numbers comparable with theirs)")
        self.token_mean = token_mean
        self.seed = integer("seed", seed)
        self.reset()

    def reset(self) -> None:
        self._address: str | None = None
        self._vector: Tensor | None = None

    @property
    def needs_reference(self) -> bool:
        return self.retain_loss == "embed_diff"

    @property
    def reads(self) -> tuple[str, ...]:
        return () if self._address is None else (self._address,)

    @property
    def label(self) -> str:
        """`rmu`, with the settings that differ from the defaults (`rmu (c 80, alpha 10)`)."""
        default = type(self)()
        changed = [f"layer {self.layer}"] if self.layer is not None else []
        changed += [f"c {self.steering_coeff:g}"] if self.steering_coeff != default.steering_coeff else []
        changed += [f"alpha {self.alpha:g}"] if self.alpha != default.alpha else []
        changed += [f"retain {self.retain_loss}"] if self.retain_loss != default.retain_loss else []
        changed += [f"token mean {self.token_mean}"] if self.token_mean != default.token_mean else []
        return f"{self.name} ({', '.join(changed)})" if changed else self.name

    def steering_vector(self, d_model: int) -> Float[Tensor, " d_model"]:
        """c u: u uniform in [0, 1)^d_model, drawn from `seed`, scaled to unit norm (float32, CPU).

        Examples:
            >>> torch.equal(RMU(seed=3).steering_vector(4), RMU(seed=3).steering_vector(4))
            True
        """
        vector = torch.rand(integer("d_model", d_model, minimum=1), generator=torch.Generator().manual_seed(self.seed))
        return vector / vector.norm() * self.steering_coeff

    def begin(self, model: "LoadedModel", forget: Sequence[Row], retain: Sequence[Row],
              layers: Sequence[int] = ()) -> None:
        layers = list(layers)
        if self.layer is None and not layers:
            raise ValueError("RMU steers the output of the deepest trained layer, and no trained layers were given; "
                             "run it through unlearn(..., layers=...) or name one: RMU(layer=...)")
        layer = max(layers) if self.layer is None else self.layer
        if layer >= model.n_layers:
            raise ValueError(f"RMU's layer {layer} is out of range: this model has layers 0..{model.n_layers - 1}")
        above = [trained for trained in layers if trained > layer]
        if above:
            raise ValueError(f"RMU steers the output of layer {layer}, but trained layer(s) {above} lie above it and "
                             f"cannot move it; steer a layer at or above every trained one (RMU(layer={max(layers)}), "
                             f"or leave layer unset for the deepest) or train only layers up to {layer}")
        self._address = model.architecture.block_output(layer)
        self._vector = self.steering_vector(model.d_model)

    def __call__(self, inputs: LossInputs) -> Terms:
        if self._address is None or self._vector is None:
            raise RuntimeError("RMU.begin was not called; run it through unlearn()")
        state = inputs.state(self._address).float()  # the losses in fp32, whatever the forward's dtype
        forget, mask = inputs.rows("forget"), inputs.batch.target_mask
        target = self._vector.to(state.device).expand_as(state[forget])
        distance = partial(_activation_mse, per_row=self.token_mean == "per_row")
        terms = {"forget_mse": distance(state[forget], target, mask[forget])}
        if self.retain_loss == "embed_diff":
            original = inputs.state(self._address, reference=True).float()
            retain = ~forget
            terms["retain_mse"] = distance(state[retain], original[retain], mask[retain])
            retain_term = terms["retain_mse"]
        else:
            retain_term = inputs.mean_nll("retain")
        terms["forget_ce"], terms["retain_ce"] = inputs.mean_nll("forget"), inputs.mean_nll("retain")
        return {"loss": terms["forget_mse"] + self.alpha * retain_term, **terms}


def _activation_mse(states: Float[Tensor, "row pos d_model"], target: Float[Tensor, "row pos d_model"],
                    mask: Bool[Tensor, "row pos"], *, per_row: bool = True) -> Float[Tensor, ""]:
    """open-unlearning's RMU distance: per token the mean over d_model of the squared difference,
    averaged over each row's masked tokens, then over rows (0 for no rows); row by row, or
    (`per_row=False`) as their code's division broadcasts across rows (see `RMU`)."""
    squared = F.mse_loss(states, target, reduction="none").mean(-1)
    sums, counts = (squared * mask).sum(-1), mask.sum(-1).clamp(min=1)  # a row with no tokens adds 0, not NaN
    if not per_row:
        return _mean(sums) * _mean(1 / counts)
    return _mean(sums / counts)


class StandIn(Objective):
    """Make the model answer about each forget subject as the original model answers about a
    stranger, and no further.

    `prompts` maps each forget row's id to its prompt with the subject swapped for someone the
    model never saw (`BiosWorld.stand_ins`, or `data.stand_in_prompts` for your own names). At
    every answer token of a forget row, the target is the original model's next-token
    distribution on the stand-in prompt, teacher-forced on the same answer:

        L = KL(target || edited) + excess_weight * mean_t max(0, log p(y_t) - log p_target(y_t))
            + retain_weight * CE_retain

    The excess term pushes each answer token down to the likelihood the original model gives it
    about a stranger (the KL barely sees a token the target finds unlikely). Both forget terms are
    zero once the subject is a stranger to the model, so nothing pushes past it into the answers
    of people it never knew: that is what membership inference compares. The idea of "generic
    predictions" from Eldan & Russinovich (2023), with a name swap as the anchor.

    The targets come from the original weights, computed on a row's first batch and kept (up to
    `cache_bytes`; beyond it they are recomputed). Answer tokens only: whatever `loss_on` says,
    the prompt tokens are left alone.

    Examples:
        >>> import causal_unlearn as cu
        >>> world = cu.make_bios_world()
        >>> objective = StandIn(world.stand_ins())
        >>> objective.name, objective.excess_weight
        ('stand_in', 0.5)
    """

    name = "stand_in"
    runs_own_forwards = True

    def __init__(self, prompts: Mapping[str, str], *, excess_weight: float = 0.5, retain_weight: float = 1.0,
                 cache_bytes: int = 2**30):
        if not prompts:
            raise ValueError("StandIn needs a stand-in prompt per forget row id, e.g. StandIn(world.stand_ins())")
        self.prompts, self.excess_weight, self.retain_weight = dict(prompts), excess_weight, retain_weight
        self.cache_bytes = cache_bytes
        self.reset()

    def __repr__(self) -> str:
        return (f"StandIn({len(self.prompts)} prompts, excess_weight={self.excess_weight}, "
                f"retain_weight={self.retain_weight})")

    def reset(self) -> None:
        self._targets: dict[Row, tuple[Tensor, Tensor]] = {}
        self._cached_bytes = 0
        self._tokenizer = None

    def begin(self, model: "LoadedModel", forget: Sequence[Row], retain: Sequence[Row],
              layers: Sequence[int] = ()) -> None:
        missing = [row.id for row in forget if row.id not in self.prompts]
        if missing:
            raise ValueError(f"{len(missing)} forget row(s) have no stand-in prompt (first: {missing[0]!r}); "
                             "StandIn's prompts must cover every forget row id")
        unchanged = [row.id for row in forget if self.prompts[row.id] == row.input]
        if unchanged:
            raise ValueError(f"{len(unchanged)} stand-in prompt(s) equal their forget prompt (first: {unchanged[0]!r}): "
                             "their target would be the memorized answer")
        self._tokenizer = model.tokenizer

    def __call__(self, inputs: LossInputs) -> Terms:
        rows = [row for row, forget in zip(inputs.source_rows, inputs.is_forget.tolist()) if forget]
        if rows:
            edited, answer = self._answer_log_probs(inputs, rows)
            target_answer, target = (torch.cat(parts) for parts in zip(*self._targets_for(inputs, rows)))
            if not torch.equal(answer, target_answer):
                raise ValueError("a stand-in prompt changes how its row's answer is tokenized; the stand-in must "
                                 "differ from the forget prompt only before the answer")
            kl = F.kl_div(edited, target, log_target=True, reduction="batchmean")
            excess = (edited.gather(1, answer[:, None]) - target.gather(1, answer[:, None])).clamp(min=0).mean()
        else:
            kl = excess = inputs.logits.sum() * 0
        retain_ce = inputs.mean_nll("retain")
        return {"loss": kl + self.excess_weight * excess + self.retain_weight * retain_ce, "forget_kl": kl,
                "forget_excess": excess, "forget_ce": inputs.mean_nll("forget"), "retain_ce": retain_ce}

    def _encode(self, rows: Sequence[Row]) -> EncodedBatch:
        if self._tokenizer is None:
            raise RuntimeError("StandIn.begin was not called; run it through unlearn()")
        return encode_rows(self._tokenizer, rows)

    def _answer_log_probs(
        self, inputs: LossInputs, rows: list[Row]
    ) -> tuple[Float[Tensor, "token vocab"], Int[Tensor, " token"]]:
        """The edited model's log-probs at the answer tokens of the batch's forget rows, in row
        order, and those tokens (found by encoding the rows answer-only, whatever `loss_on` is)."""
        own = self._encode(rows)
        mask = torch.zeros_like(inputs.batch.target_mask)
        for k, (i, row) in enumerate(zip(inputs.is_forget.nonzero().flatten().tolist(), rows)):
            n = int(own.attention_mask[k].sum())
            if not torch.equal(inputs.batch.input_ids[i, :n].cpu(), own.input_ids[k, :n]):
                raise ValueError(f"forget row {row.id!r} is cut short in the training batch (max_length?); "
                                 "StandIn needs whole answers")
            mask[i, :n] = own.target_mask[k, :n].to(mask.device)
        mask = mask[:, 1:]  # the prediction of token t is read at position t - 1
        return inputs.logits[:, :-1][mask].float().log_softmax(-1), inputs.batch.input_ids[:, 1:][mask]

    def _targets_for(self, inputs: LossInputs, rows: list[Row]) -> list[tuple[Tensor, Tensor]]:
        """(answer tokens, the original model's log-probs there) for each row's answer after its
        stand-in prompt."""
        missing = [row for row in dict.fromkeys(rows) if row not in self._targets]
        fresh: dict[Row, tuple[Tensor, Tensor]] = {}
        if missing:
            batch = self._encode([Row(row.id, self.prompts[row.id], row.output, row.task) for row in missing])
            batch = batch.to(inputs.logits.device)
            log_probs = inputs.original_logits(batch)[:, :-1].float().log_softmax(-1)
            mask = batch.target_mask[:, 1:]
            for k, row in enumerate(missing):
                fresh[row] = (batch.input_ids[k, 1:][mask[k]], log_probs[k][mask[k]])
                size = fresh[row][1].numel() * fresh[row][1].element_size()
                if self._cached_bytes + size <= self.cache_bytes:
                    self._targets[row], self._cached_bytes = fresh[row], self._cached_bytes + size
        return [self._targets[row] if row in self._targets else fresh[row] for row in rows]


def _mean(values: Tensor) -> Tensor:
    """The mean, or 0 for a batch without rows of that split."""
    return values.mean() if values.numel() else values.sum()


# by name, the objectives that need no data of their own (StandIn needs its prompts)
OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (SHA256, SHA256KL, GradientAscent, GradientDifference, KLMinimization, NPO, SimNPO, RMU)
}


def get_objective(objective: str | Objective) -> Objective:
    """A fresh objective by name, or the given instance (to pass settings: `SHA256(alpha_max=2.8)`).

    Examples:
        >>> get_objective("npo"), get_objective("sha256") is get_objective("sha256")
        (NPO(beta=0.1, retain_weight=1.0), False)
    """
    if isinstance(objective, Objective):
        return objective
    if objective == StandIn.name:
        raise ValueError("'stand_in' needs a stand-in prompt per forget row: pass StandIn(prompts), e.g. "
                         "StandIn(world.stand_ins()) or StandIn(stand_in_prompts(forget, {subject: stand-in name}))")
    try:
        return OBJECTIVES[objective]()
    except KeyError:
        raise ValueError(f"unknown objective {objective!r}; use one of {sorted(OBJECTIVES)} or an Objective instance") from None
