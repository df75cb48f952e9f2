"""`trace` and `trace_facts`: ROME's causal tracing of facts."""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Iterable, NamedTuple, Sequence

import torch
from tqdm.auto import tqdm

from causal_unlearn.data.facts import TraceFact
from causal_unlearn.models.hooks import attention_recordable
from causal_unlearn.models.loader import LoadedModel, require_loaded
from causal_unlearn.tracing.attribution import AttributionFixes, run_attribution
from causal_unlearn.tracing.corruption import (
    Corruption,
    corrupted_embeddings,
    embeddings_of,
    resolve_corruption,
    subject_embedding_std,
)
from causal_unlearn.tracing.engine import (
    KINDS,
    Shortcuts,
    TraceInput,
    TraceScores,
    first_corrupted_position,
    run_exact_facts,
)
from causal_unlearn.tracing.metrics import make_metric
from causal_unlearn.tracing.nnsight_backend import clean_passes, run_nnsight
from causal_unlearn.tracing.result import TraceResult, TraceSettings
from causal_unlearn.tracing.tokens import MultiTokenAnswerWarning, answer_token_id, subject_token_range
from causal_unlearn.validation import finite, integer, text

METHODS = ("exact", "attribution")
BACKENDS = ("torch", "nnsight")


def trace(
    model: LoadedModel,
    prompt: str,
    subject: str,
    *,
    answer: str | int | None = None,
    kinds: Sequence[str] = KINDS,
    samples: int = 10,
    noise: str | float | Corruption = "s3",
    window: int = 10,
    metric: str = "prob",
    foil: str | int | None = None,
    seed: int = 0,
    method: str = "exact",
    max_batch_tokens: int = 8192,
    progress: bool = True,
    subject_std: float | None = None,
    top_predictions: int = 0,
    backend: str = "torch",
    remote: bool | str = False,
    shortcuts: Shortcuts = Shortcuts(),
    fixes: AttributionFixes = AttributionFixes(),
) -> TraceResult:
    """Causally trace where `model` recalls the answer to `prompt` about `subject`.

    The answer is the clean top-1 next token unless given (text that follows the prompt, or a
    token id). `noise` corrupts the subject's token embeddings ("s3": Gaussian with 3 x the std of
    the subject embeddings; a float scale; "uniform"; `TokenReplacement(other_prompt)`; or a
    function). `method="attribution"` estimates the same heatmap from gradients (fast,
    approximate), with `fixes` (`AttributionFixes(grad_drop=True)`; `AttributionFixes.none()` is
    plain attribution patching). `subject_std` overrides the std the s3 rule uses
    (`trace_facts` pools it over all facts, as ROME does); `GaussianNoise("s3", std_rule="rome")`
    measures it as ROME's code does, on each subject tokenized on its own. `top_predictions=k`
    also keeps each cell's k most probable next tokens (exact method; `TraceResult.predictions`).
    `shortcuts` switches the exact engine's shortcuts one by one (`Shortcuts(prefix_cache=False)`;
    each is exact, so the numbers stay the same, only the time changes).

    `backend="nnsight"` runs the same recipe as nnsight interventions (equal numbers, slower
    here); with `remote=True` the request runs on NDIF, for the models NDIF hosts
    (`load_model(nnsight.TransformersModel("meta-llama/Llama-3.1-70B"))`, no weights here), and
    `remote="local"` serializes it and runs it here as a server would.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> result = cu.trace(lm, "Otto Russet was born on", "Otto Russet", answer=" February", samples=3, window=3)
        >>> result.tokens[result.subject_range[0]:result.subject_range[1]], result.high > result.low
        (['Otto', ' Russet'], True)
    """
    lm = require_loaded(model, "trace")
    tracer = _Tracer.checked(lm, kinds=kinds, samples=samples, noise=noise, window=window, metric=metric, foil=foil,
                             seed=seed, method=method, max_batch_tokens=max_batch_tokens,
                             top_predictions=top_predictions, backend=backend, remote=remote, shortcuts=shortcuts,
                             fixes=fixes)
    if subject_std is not None:
        subject_std = finite("subject_std", subject_std, above=0)
    fact = tracer.prepare(prompt, subject, answer, subject_std)
    return tracer.result(fact, tracer.compute([fact], progress)[0])


@dataclass(frozen=True)
class _Tracer:
    """The checked settings of a trace, shared by every fact `trace_facts` traces with them."""

    lm: LoadedModel
    kinds: tuple[str, ...]
    samples: int
    corruption: Corruption
    window: int
    metric: str
    foil: str | int | None
    seed: int
    method: str
    max_batch_tokens: int
    top_predictions: int
    backend: str
    remote: bool | str
    shortcuts: Shortcuts
    fixes: AttributionFixes

    @classmethod
    def checked(cls, lm: LoadedModel, *, kinds: Sequence[str] = KINDS, samples: int = 10,
                noise: str | float | Corruption = "s3", window: int = 10, metric: str = "prob",
                foil: str | int | None = None, seed: int = 0, method: str = "exact", max_batch_tokens: int = 8192,
                top_predictions: int = 0, backend: str = "torch", remote: bool | str = False,
                shortcuts: Shortcuts = Shortcuts(), fixes: AttributionFixes = AttributionFixes()) -> _Tracer:
        kinds = _check_settings(kinds, method)
        backend, remote = _check_backend(lm, backend, remote, method, top_predictions)
        if not isinstance(shortcuts, Shortcuts):
            raise TypeError(f"shortcuts must be a Shortcuts, e.g. Shortcuts(skip_blocks=False), got {shortcuts!r:.80}")
        if not isinstance(fixes, AttributionFixes):
            raise TypeError(f"fixes must be an AttributionFixes, e.g. AttributionFixes(grad_drop=True), got {fixes!r:.80}")
        if fixes != AttributionFixes() and method != "attribution":
            raise ValueError(f"fixes={fixes} changes method='attribution' only; this trace runs method={method!r}")
        if fixes.qk_fix and not attention_recordable(lm.model, lm.architecture.attn_module(0)):
            if fixes != AttributionFixes():
                raise ValueError(f"qk_fix needs the attention probabilities, which {lm.name}'s attention does not expose "
                                 "(it does not run through transformers' AttentionInterface); pass "
                                 "fixes=AttributionFixes(qk_fix=False)")
            fixes = replace(fixes, qk_fix=False)  # the default: every fix this model allows
        if top_predictions and method != "exact":
            raise ValueError("top_predictions needs method='exact': the attribution method runs no restored forward")
        return cls(lm, kinds, integer("samples", samples, minimum=1), resolve_corruption(noise),
                   integer("window", window, minimum=1), metric, foil, integer("seed", seed), method,
                   integer("max_batch_tokens", max_batch_tokens, minimum=1),
                   integer("top_predictions", top_predictions, minimum=0), backend, remote, shortcuts, fixes)

    @property
    def batches_facts(self) -> bool:
        """Whether the cells of several facts can share forwards (the engine's exact method)."""
        return self.backend == "torch" and self.method == "exact"

    def prepare(self, prompt: str, subject: str, answer: str | int | None, subject_std: float | None) -> _Fact:
        """Tokenize one fact, find its answer and corrupt its subject."""
        lm, corruption = self.lm, self.corruption
        if not text("prompt", prompt).strip():
            raise ValueError("the prompt is empty; pass the text that leads up to the answer, e.g. 'Otto Russet lives in'")
        text("subject", subject)
        input_ids = lm.to_tokens(prompt)[0]
        _check_length(lm, input_ids)
        subject_range = subject_token_range(lm, prompt, subject)
        prompts = [input_ids]
        if corruption.replacement_prompt is not None:
            prompts.append(_replacement_ids(lm, prompt, corruption.replacement_prompt, input_ids))
        (clean, clean_top1), *replacement = _clean_passes(lm, prompts, self.backend, self.remote, top1=answer is None)
        answer_id = answer_token_id(lm, prompt, answer) if answer is not None else clean_top1
        foil_id = answer_token_id(lm, prompt, self.foil) if self.foil is not None else None
        samples = corruption.sample_count(self.samples)
        if subject_std is None and corruption.needs_subject_std:
            subject_std = _subject_std(lm, corruption, [subject], lambda: [clean[slice(*subject_range)]],
                                       self.backend, self.remote)
        scale = corruption.scale_for(subject_std)
        corrupted = corrupted_embeddings(clean, subject_range, corruption, samples=samples, scale=scale, seed=self.seed,
                                         replacement=replacement[0][0] if replacement else None)
        return _Fact(prompt, subject, input_ids, subject_range, answer_id, foil_id, clean, corrupted, scale)

    def compute(self, facts: list[_Fact], progress: bool) -> list[TraceScores]:
        """Score the cells of `facts`: in shared forwards where the method allows, else one by one."""
        lm, settings = self.lm, dict(kinds=self.kinds, window=self.window)
        metrics = [make_metric(self.metric, f.answer_id, f.foil_id) for f in facts]
        if self.batches_facts:
            inputs = [TraceInput(f.input_ids, f.corrupted, m) for f, m in zip(facts, metrics)]
            return run_exact_facts(lm, inputs, max_batch_tokens=self.max_batch_tokens, progress=progress,
                                   top_predictions=self.top_predictions, shortcuts=self.shortcuts, **settings)
        if self.backend == "nnsight":
            return [run_nnsight(lm, f.input_ids, f.corrupted, self.metric, f.answer_id, f.foil_id,
                                first_corrupted=first_corrupted_position(f.clean, f.corrupted),
                                max_batch_tokens=self.max_batch_tokens, remote=self.remote, **settings) for f in facts]
        return [run_attribution(lm, f.input_ids, f.corrupted, m, fixes=self.fixes, probability=self.metric == "prob",
                                **settings) for f, m in zip(facts, metrics)]

    def result(self, fact: _Fact, computed: TraceScores) -> TraceResult:
        lm = self.lm
        return TraceResult(
            prompt=fact.prompt,
            subject=fact.subject,
            tokens=lm.to_str_tokens(fact.prompt),
            input_ids=fact.input_ids.cpu(),
            subject_range=fact.subject_range,
            answer=lm.tokenizer.decode([fact.answer_id]),
            answer_id=fact.answer_id,
            high=computed.high,
            low=computed.low,
            known=computed.clean_top1 == fact.answer_id,
            scores=computed.scores,
            settings=TraceSettings(
                model=lm.name, corruption=self.corruption.describe(), noise_scale=fact.scale,
                samples=fact.corrupted.shape[0], window=self.window, seed=self.seed, metric=self.metric,
                method=self.method,
                fixes=("+".join(self.fixes.enabled) or "none") if self.method == "attribution" else "",
            ),
            clean_prediction=lm.tokenizer.decode([computed.clean_top1]),
            top_ids=computed.top_ids,
            top_probs=computed.top_probs,
        )


class _Fact(NamedTuple):
    """One fact, tokenized and corrupted."""

    prompt: str
    subject: str
    input_ids: torch.Tensor
    subject_range: tuple[int, int]
    answer_id: int
    foil_id: int | None
    clean: torch.Tensor  # the clean embeddings
    corrupted: torch.Tensor
    scale: float | None


def trace_facts(
    model: LoadedModel,
    facts: Iterable[TraceFact | tuple[str, str, str]],
    *,
    require_known: bool = False,
    noise: str | float | Corruption = "s3",
    progress: bool = True,
    facts_per_batch: int = 32,
    **settings,
) -> list[TraceResult]:
    """Trace many facts with one noise scale: the s3 rule's std is pooled over all their subjects.

    `facts` are `TraceFact`s or (prompt, subject, answer) triples; `settings` are `trace`'s. With
    `require_known=True`, facts whose clean top-1 is not the answer are dropped, with a warning
    saying how many. The exact method traces `facts_per_batch` facts at a time, their cells
    sharing forwards (the same numbers as tracing each alone; 1 traces them one by one, and more
    takes more memory: each fact's corrupted run is kept while its batch is traced).

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> facts = cu.make_bios_world().facts_to_trace(attribute="city")[:2]
        >>> results = cu.trace_facts(lm, facts, kinds=("mlp",), samples=2, progress=False)
        >>> len({r.settings.noise_scale for r in results})
        1
    """
    lm = require_loaded(model, "trace_facts")
    facts = [_as_fact(index, f) for index, f in enumerate(facts)]
    if not facts:
        raise ValueError("no facts to trace")
    facts_per_batch = integer("facts_per_batch", facts_per_batch, minimum=1)
    subject_std = settings.pop("subject_std", None)
    unknown = set(settings) - set(inspect.signature(_Tracer.checked).parameters)
    if unknown:
        raise TypeError(f"trace_facts got unknown settings {sorted(unknown)}; it takes trace's settings except "
                        "prompt, subject and answer (those come with each fact)")
    tracer = _Tracer.checked(lm, noise=noise, **settings)
    if subject_std is not None:
        subject_std = finite("subject_std", subject_std, above=0)
    elif tracer.corruption.needs_subject_std:

        def in_prompt() -> list[torch.Tensor]:
            ranges = [_about(i, lambda: subject_token_range(lm, f.prompt, f.subject)) for i, f in enumerate(facts)]
            passes = _clean_passes(lm, [lm.to_tokens(f.prompt)[0] for f in facts], tracer.backend, tracer.remote,
                                   top1=False)
            return [embedded[slice(*r)] for (embedded, _), r in zip(passes, ranges)]

        subject_std = _subject_std(lm, tracer.corruption, [f.subject for f in facts], in_prompt, tracer.backend,
                                   tracer.remote)
    per_batch = facts_per_batch if tracer.batches_facts else 1
    results = []
    with warnings.catch_warnings(record=True) as caught, \
            tqdm(total=len(facts), desc="tracing facts", unit="fact", disable=not progress) as bar:
        warnings.simplefilter("always", MultiTokenAnswerWarning)
        for start in range(0, len(facts), per_batch):
            batch = list(enumerate(facts))[start : start + per_batch]
            prepared = [_about(i, lambda: tracer.prepare(f.prompt, f.subject, f.answer, subject_std)) for i, f in batch]
            results += [tracer.result(p, c) for p, c in zip(prepared, tracer.compute(prepared, progress=False))]
            bar.update(len(batch))
    _summarize_warnings(caught, len(facts))
    for fact, result in zip(facts, results):
        result.meta.update(attribute=fact.attribute, person_id=fact.person_id, split=fact.split)
    if require_known:
        known = [r for r in results if r.known]
        if len(known) < len(results):
            warnings.warn(f"dropped {len(results) - len(known)} of {len(results)} facts whose clean top-1 is not the answer",
                          stacklevel=2)
        results = known
    return results


def _as_fact(index: int, fact) -> TraceFact:
    if isinstance(fact, TraceFact):
        return fact
    if isinstance(fact, (tuple, list)) and len(fact) == 3 and all(isinstance(x, str) for x in fact):
        return _about(index, lambda: TraceFact(*fact))
    raise TypeError(f"fact {index} is {fact!r:.100}; facts are TraceFacts or (prompt, subject, answer) triples of "
                    "strings")


def _about(index: int, compute):
    """`compute()`, with a bad fact's error saying which fact it is."""
    try:
        return compute()
    except (ValueError, TypeError) as error:
        raise (TypeError if isinstance(error, TypeError) else ValueError)(f"fact {index}: {error}") from error


def _summarize_warnings(caught: list[warnings.WarningMessage], n_facts: int) -> None:
    """One warning for all multi-token answers instead of one per fact; others pass through."""
    multi_token = [w for w in caught if issubclass(w.category, MultiTokenAnswerWarning)]
    for w in caught:
        if w not in multi_token:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if multi_token:
        warnings.warn(f"{len(multi_token)} of {n_facts} facts have answers of several tokens; each is traced on its "
                      "first token", MultiTokenAnswerWarning, stacklevel=3)


def _check_settings(kinds: Sequence[str], method: str) -> tuple[str, ...]:
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown kinds {unknown or kinds!r}; choose from {KINDS}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    return kinds


def _check_backend(lm: LoadedModel, backend: str, remote: bool | str, method: str,
                   top_predictions: int) -> tuple[str, bool | str]:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use 'torch' (this process, fastest) or 'nnsight' "
                         "(nnsight interventions, locally or on NDIF with remote=True)")
    if remote not in (False, True, "local"):
        raise ValueError(f"remote must be False, True (NDIF) or 'local' (the remote path, run here), got {remote!r}")
    if remote and backend != "nnsight":
        raise ValueError("remote tracing runs through nnsight: pass backend='nnsight' with remote=...")
    if lm.is_remote_only and not (backend == "nnsight" and remote):
        raise ValueError(f"{lm.name}'s weights are not on this machine (meta device); trace it on NDIF with "
                         "backend='nnsight', remote=True, or load it with its weights")
    if lm.is_sharded:
        raise ValueError(f"{lm.name} is sharded over processes (shard_model), which is for training; trace an "
                         "unsharded model (load it again, or the folder result.save_pretrained wrote)")
    if backend == "nnsight" and (method != "exact" or top_predictions):
        raise ValueError("backend='nnsight' runs method='exact' without top_predictions; use the torch backend for "
                         "attribution or top predictions")
    return backend, remote


def _clean_passes(lm: LoadedModel, prompts: list[torch.Tensor], backend: str, remote: bool | str, *, top1: bool,
                  ) -> list[tuple[torch.Tensor, int | None]]:
    """Each prompt's clean embeddings (what the corruption perturbs) and, with `top1`, its clean
    top-1 next token: through nnsight (one request) or here."""
    if backend == "nnsight":
        return clean_passes(lm, prompts, remote=remote)
    with torch.no_grad():
        return [(embeddings_of(lm, ids), int(lm.next_token_logits(ids[None])[0].argmax()) if top1 and i == 0 else None)
                for i, ids in enumerate(prompts)]


def _check_length(lm: LoadedModel, input_ids: torch.Tensor) -> None:
    context = getattr(lm.model.config, "max_position_embeddings", None) or getattr(lm.model.config, "n_positions", None)
    if context is not None and input_ids.shape[0] > context:
        raise ValueError(f"the prompt is {input_ids.shape[0]} tokens, longer than the model's context of {context}")


def _replacement_ids(lm: LoadedModel, prompt: str, other: str, input_ids: torch.Tensor) -> torch.Tensor:
    other_ids = lm.to_tokens(other)[0]
    if other_ids.shape != input_ids.shape:
        raise ValueError(
            f"token replacement needs prompts of equal token length: {prompt!r} is {input_ids.shape[0]} tokens "
            f"{lm.to_str_tokens(prompt)}, {other!r} is {other_ids.shape[0]} {lm.to_str_tokens(other)}"
        )
    return other_ids


def _subject_std(lm: LoadedModel, corruption: Corruption, subjects: list[str],
                 in_prompt: Callable[[], list[torch.Tensor]], backend: str, remote: bool | str) -> float:
    """The std the s3 rule scales by, pooled over the subjects' token embeddings: as they sit in
    their prompts (`in_prompt()`, std_rule "prompt"), or each subject tokenized on its own, start
    token included (std_rule "rome", ROME's `collect_embedding_std`)."""
    if corruption.std_rule == "rome":
        alone = _clean_passes(lm, [lm.to_tokens(subject)[0] for subject in subjects], backend, remote, top1=False)
        return subject_embedding_std([embedded for embedded, _ in alone])
    return subject_embedding_std(in_prompt())
