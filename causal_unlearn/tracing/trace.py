"""`trace` and `trace_facts`: ROME's causal tracing of facts."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple

import torch
from tqdm.auto import tqdm

# the engines register themselves on import
import causal_unlearn.tracing.attribution  # noqa: F401
import causal_unlearn.tracing.engine  # noqa: F401
import causal_unlearn.tracing.guided  # noqa: F401
from causal_unlearn.data.facts import TraceFact
from causal_unlearn.models.loader import LoadedModel, require_loaded
from causal_unlearn.tracing.config import TraceConfig
from causal_unlearn.tracing.corruption import corrupted_embeddings, embeddings_of, subject_embedding_std
from causal_unlearn.tracing.engines import TraceInput, TraceScores
from causal_unlearn.tracing.metrics import bind_metric
from causal_unlearn.tracing.nnsight_backend import clean_passes
from causal_unlearn.tracing.result import TraceResult, TraceSettings
from causal_unlearn.tracing.tokens import (
    MultiTokenAnswerWarning,
    UnknownFactWarning,
    answer_token_id,
    subject_token_range,
)
from causal_unlearn.validation import integer, text


def trace(
    model: LoadedModel,
    prompt: str,
    subject: str,
    *,
    answer: str | int | None = None,
    config: TraceConfig | None = None,
    progress: bool = True,
    **overrides,
) -> TraceResult:
    """Causally trace where `model` recalls the answer to `prompt` about `subject`.

    The answer is the clean top-1 next token unless given (text that follows the prompt, or a
    token id). `config` (a `TraceConfig`) holds every setting: the sites (`kinds`), the
    corruption (`noise`), the metric, the method and the engine; keywords override single
    settings (`trace(lm, prompt, subject, kinds=("head",), samples=3)`).

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> result = cu.trace(lm, "Otto Russet was born on", "Otto Russet", answer=" February", samples=3)
        >>> result.tokens[result.subject_range[0]:result.subject_range[1]], result.high > result.low
        (['Otto', ' Russet'], True)
        >>> heads = cu.trace(lm, "Otto Russet was born on", "Otto Russet", kinds=("head",), samples=2, progress=False)
        >>> heads.scores["head"].shape == (len(heads.tokens), lm.n_layers, lm.n_heads)
        True
    """
    lm = require_loaded(model, "trace")
    tracer = _Tracer(lm, _configured(lm, config, "trace", overrides))
    fact = tracer.prepare(prompt, subject, answer, tracer.config.subject_std)
    result = tracer.result(fact, tracer.compute([fact], progress)[0])
    if not result.known:
        warnings.warn(f"the model does not know this fact: after {prompt!r} its top-1 is {result.clean_prediction!r}, "
                      f"not the answer {result.answer!r} (p = {result.high:.3g}); the trace says how much each state "
                      "restores that p, and result.known is False", UnknownFactWarning, stacklevel=2)
    return result


def _configured(lm: LoadedModel, config: TraceConfig | None, caller: str, overrides: dict) -> TraceConfig:
    if config is not None and not isinstance(config, TraceConfig):
        raise TypeError(f"config must be a TraceConfig, e.g. TraceConfig(kinds=('head',)), got {config!r:.80}")
    return (config or TraceConfig()).with_overrides(caller, **overrides).for_model(lm)


@dataclass(frozen=True)
class _Tracer:
    """A model and the settings of a trace, shared by every fact `trace_facts` traces with them."""

    lm: LoadedModel
    config: TraceConfig

    @property
    def batches_facts(self) -> bool:
        """Whether the cells of several facts can share forwards (the engine's exact method)."""
        return self.config.engine.batches_facts

    def prepare(self, prompt: str, subject: str, answer: str | int | None, subject_std: float | None) -> _Fact:
        """Tokenize one fact, find its answer and corrupt its subject."""
        lm, config = self.lm, self.config
        corruption = config.corruption
        if not text("prompt", prompt).strip():
            raise ValueError("the prompt is empty; pass the text that leads up to the answer, e.g. 'Otto Russet lives in'")
        text("subject", subject)
        input_ids = lm.to_tokens(prompt)[0]
        _check_length(lm, input_ids)
        subject_range = subject_token_range(lm, prompt, subject)
        prompts = [input_ids]
        if corruption.replacement_prompt is not None:
            prompts.append(_replacement_ids(lm, prompt, corruption.replacement_prompt, input_ids))
        (clean, clean_top1), *replacement = _clean_passes(lm, prompts, config, top1=answer is None)
        answer_id = answer_token_id(lm, prompt, answer) if answer is not None else clean_top1
        metric = bind_metric(config.scorer, answer_id, lambda token: answer_token_id(lm, prompt, token))
        samples = corruption.sample_count(config.samples)
        if subject_std is None and corruption.needs_subject_std:
            subject_std = _subject_std(lm, config, [subject], lambda: [clean[slice(*subject_range)]])
        scale = corruption.scale_for(subject_std)
        corrupted = corrupted_embeddings(clean, subject_range, corruption, samples=samples, scale=scale,
                                         seed=config.seed, replacement=replacement[0][0] if replacement else None)
        return _Fact(prompt, subject, subject_range, answer_id, TraceInput(input_ids, clean, corrupted, metric), scale)

    def compute(self, facts: list[_Fact], progress: bool) -> list[TraceScores]:
        """Score the cells of `facts` with the config's engine."""
        return self.config.engine.engine(self.lm, [f.inputs for f in facts], self.config, progress=progress)

    def result(self, fact: _Fact, computed: TraceScores) -> TraceResult:
        lm, config = self.lm, self.config
        return TraceResult(
            prompt=fact.prompt,
            subject=fact.subject,
            tokens=lm.to_str_tokens(fact.prompt),
            input_ids=fact.inputs.input_ids.cpu(),
            subject_range=fact.subject_range,
            answer=lm.tokenizer.decode([fact.answer_id]),
            answer_id=fact.answer_id,
            high=computed.high,
            low=computed.low,
            known=computed.clean_top1 == fact.answer_id,
            scores=computed.scores,
            settings=TraceSettings.of(config, model=lm.name, noise_scale=fact.scale,
                                      samples=fact.inputs.corrupted.shape[0]),
            clean_prediction=lm.tokenizer.decode([computed.clean_top1]),
            top_ids=computed.top_ids,
            top_probs=computed.top_probs,
            exact_cells=computed.exact_cells,
            config=config,
        )


class _Fact(NamedTuple):
    """One fact, tokenized and corrupted."""

    prompt: str
    subject: str
    subject_range: tuple[int, int]
    answer_id: int
    inputs: TraceInput
    scale: float | None


def trace_facts(
    model: LoadedModel,
    facts: Iterable[TraceFact | tuple[str, str, str]],
    *,
    config: TraceConfig | None = None,
    require_known: bool = False,
    progress: bool = True,
    facts_per_batch: int = 32,
    **overrides,
) -> list[TraceResult]:
    """Trace many facts with one noise scale: the s3 rule's std is pooled over all their subjects.

    `facts` are `TraceFact`s or (prompt, subject, answer) triples; `config` and `overrides` are
    `trace`'s. With `require_known=True`, facts whose clean top-1 is not the answer are dropped,
    with a warning saying how many. The exact method traces `facts_per_batch` facts at a time,
    their cells sharing forwards (the same numbers as tracing each alone; 1 traces them one by
    one, and more takes more memory: each fact's corrupted run is kept while its batch is traced).

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> facts = cu.make_bios_world().facts_to_trace(attribute="city")[:2]
        >>> results = cu.trace_facts(lm, facts, kinds=("mlp",), samples=2, progress=False)
        >>> len({r.settings.noise_scale for r in results})
        1
    """
    lm = require_loaded(model, "trace_facts")
    facts = as_facts(facts)
    if not facts:
        raise ValueError("no facts to trace")
    facts_per_batch = integer("facts_per_batch", facts_per_batch, minimum=1)
    tracer = _Tracer(lm, _configured(lm, config, "trace_facts", overrides))
    subject_std = tracer.config.subject_std
    if subject_std is None and tracer.config.corruption.needs_subject_std:

        def in_prompt() -> list[torch.Tensor]:
            ranges = [_about(i, lambda: subject_token_range(lm, f.prompt, f.subject)) for i, f in enumerate(facts)]
            passes = _clean_passes(lm, [lm.to_tokens(f.prompt)[0] for f in facts], tracer.config, top1=False)
            return [embedded[slice(*r)] for (embedded, _), r in zip(passes, ranges)]

        subject_std = _subject_std(lm, tracer.config, [f.subject for f in facts], in_prompt)
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
    unknown = sum(not r.known for r in results)
    if unknown and require_known:
        warnings.warn(f"dropped {unknown} of {len(results)} facts whose clean top-1 is not the answer", stacklevel=2)
        results = [r for r in results if r.known]
    elif unknown:
        warnings.warn(f"{unknown} of {len(results)} facts are not known (the model's clean top-1 is not the answer; "
                      "their result.known is False); require_known=True drops them", UnknownFactWarning, stacklevel=2)
    return results


def as_facts(facts: Iterable[TraceFact | tuple[str, str, str]]) -> list[TraceFact]:
    """Facts given as `TraceFact`s or (prompt, subject, answer) triples, as `TraceFact`s; a bad one
    is named by its index.

    Examples:
        >>> as_facts([("Paris is in", "Paris", " France")])[0].subject
        'Paris'
    """
    return [_as_fact(index, fact) for index, fact in enumerate(facts)]


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


def _clean_passes(lm: LoadedModel, prompts: list[torch.Tensor], config: TraceConfig, *, top1: bool,
                  ) -> list[tuple[torch.Tensor, int | None]]:
    """Each prompt's clean embeddings (what the corruption perturbs) and, with `top1`, its clean
    top-1 next token: through nnsight (one request) or here."""
    if config.backend == "nnsight":
        return clean_passes(lm, prompts, remote=config.remote)
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
    if torch.equal(other_ids.cpu(), input_ids.cpu()):
        raise ValueError(f"TokenReplacement({other!r}) reads the same tokens as the prompt, so nothing is corrupted; "
                         "replace the subject, e.g. TokenReplacement('Ada Cobalt lives in')")
    return other_ids


def _subject_std(lm: LoadedModel, config: TraceConfig, subjects: list[str],
                 in_prompt: Callable[[], list[torch.Tensor]]) -> float:
    """The std the s3 rule scales by, pooled over the subjects' token embeddings: as they sit in
    their prompts (`in_prompt()`, std_rule "prompt"), or each subject tokenized on its own, start
    token included (std_rule "rome", ROME's `collect_embedding_std`)."""
    if config.corruption.std_rule == "rome":
        alone = _clean_passes(lm, [lm.to_tokens(subject)[0] for subject in subjects], config, top1=False)
        return subject_embedding_std([embedded for embedded, _ in alone])
    return subject_embedding_std(in_prompt())
