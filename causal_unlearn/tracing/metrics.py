"""What a traced forward is scored by: a function from last-position logits to one score per row.

Any callable `metric(logits) -> scores` works (TransformerLens's convention, here with one score
per batch row). The built-ins are bound to each fact's answer when it is traced, and read only
a few logit columns and each row's log-normalizer, so a backend can send those back instead of
whole rows of logits (`columns`, `from_columns`):

- `Probability()` ("prob"): p(answer), ROME's score;
- `LogProbability()` ("logprob"): log p(answer);
- `LogitDifference(foil)` ("logit_diff"): logit(answer) - logit(foil);
- `ProbabilityMass(tokens)`: the probability of any of several tokens (several spellings of one answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

Metric = Callable[[Float[Tensor, "batch vocab"]], Float[Tensor, " batch"]]
TokenResolver = Callable[["str | int"], int]  # a token's id as it follows the prompt


@dataclass(frozen=True)
class BuiltinMetric:
    """Base class of the built-in metrics: `bind` makes the fact's metric from its answer."""

    name = ""
    is_probability = False  # scores in (0, 1): attribution's log_odds fix applies

    def bind(self, answer_id: int, token_id: TokenResolver) -> BoundMetric:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class BoundMetric:
    """A built-in metric for one fact: `formula` of the logits at `columns` and the log-normalizer.

    Examples:
        >>> metric = Probability().bind(1, token_id=int)
        >>> metric(torch.tensor([[0.0, 0.0]]))
        tensor([0.5000])
    """

    formula: str  # "prob", "logprob", "logit_diff" or "mass"
    columns: tuple[int, ...]
    is_probability: bool

    def __call__(self, logits: Float[Tensor, "batch vocab"]) -> Float[Tensor, " batch"]:
        logits, columns = _at_least_fp32(logits), list(self.columns)
        # softmax over the row rather than exp(logit - logsumexp): the same to float rounding, and
        # exactly what ROME computes (attribution's log-odds amplify rounding near p = 1)
        if self.formula == "logit_diff":
            return logits[:, columns[0]] - logits[:, columns[1]]
        if self.formula == "logprob":
            return logits.log_softmax(-1)[:, columns[0]]
        return logits.softmax(-1)[:, columns].sum(-1)

    def from_columns(self, picked: Float[Tensor, "batch columns"], log_normalizer: Float[Tensor, " batch"],
                     ) -> Float[Tensor, " batch"]:
        """The score from the logits at `columns` and each row's logsumexp."""
        picked = _at_least_fp32(picked)
        if self.formula == "logit_diff":
            return picked[:, 0] - picked[:, 1]
        log_probs = picked - log_normalizer[:, None].to(picked.dtype)
        if self.formula == "logprob":
            return log_probs[:, 0]
        return log_probs.exp().sum(-1)


@dataclass(frozen=True)
class Probability(BuiltinMetric):
    """p(answer) at the last position.

    Examples:
        >>> Probability().bind(0, token_id=int)(torch.tensor([[0.0, 0.0]])).item()
        0.5
    """

    name = "prob"
    is_probability = True

    def bind(self, answer_id: int, token_id: TokenResolver) -> BoundMetric:
        return BoundMetric("prob", (answer_id,), True)


@dataclass(frozen=True)
class LogProbability(BuiltinMetric):
    """log p(answer) at the last position."""

    name = "logprob"

    def bind(self, answer_id: int, token_id: TokenResolver) -> BoundMetric:
        return BoundMetric("logprob", (answer_id,), False)


@dataclass(frozen=True)
class LogitDifference(BuiltinMetric):
    """logit(answer) - logit(foil): the foil is text that follows the prompt, or a token id.

    Examples:
        >>> LogitDifference(1).bind(0, token_id=int)(torch.tensor([[2.0, 0.5]])).item()
        1.5
    """

    foil: str | int = ""
    name = "logit_diff"

    def __post_init__(self):
        if isinstance(self.foil, bool) or not isinstance(self.foil, (str, int)) or self.foil == "":
            raise ValueError("metric='logit_diff' needs a foil: trace(..., foil=' Paris'), "
                             f"LogitDifference(' Paris') or a foil token id; got {self.foil!r:.60}")

    def bind(self, answer_id: int, token_id: TokenResolver) -> BoundMetric:
        foil_id = token_id(self.foil)
        if foil_id == answer_id:
            raise ValueError(f"the foil {self.foil!r} is the answer's own token (id {answer_id}), so every score would "
                             "be 0; pass a different foil")
        return BoundMetric("logit_diff", (answer_id, foil_id), False)

    def describe(self) -> str:
        return f"logit_diff(foil={self.foil!r})"


@dataclass(frozen=True)
class ProbabilityMass(BuiltinMetric):
    """The probability of any of `tokens` (texts that follow the prompt, or token ids) at the
    last position; the answer counts only if it is among them.

    Examples:
        >>> ProbabilityMass((0, 1)).bind(2, token_id=int)(torch.zeros(1, 4)).item()
        0.5
    """

    tokens: tuple[str | int, ...] = ()
    name = "prob_mass"
    is_probability = True

    def __post_init__(self):
        tokens = (self.tokens,) if isinstance(self.tokens, (str, int)) else tuple(self.tokens)
        if not tokens:
            raise ValueError("ProbabilityMass needs one or more tokens, e.g. ProbabilityMass([' Paris', ' paris'])")
        object.__setattr__(self, "tokens", tokens)

    def bind(self, answer_id: int, token_id: TokenResolver) -> BoundMetric:
        return BoundMetric("mass", tuple(dict.fromkeys(token_id(t) for t in self.tokens)), True)

    def describe(self) -> str:
        return f"prob_mass({list(self.tokens)!r})"


METRICS: dict[str, BuiltinMetric] = {"prob": Probability(), "logprob": LogProbability()}
METRIC_NAMES = ("prob", "logprob", "logit_diff")


def resolve_metric(metric: str | BuiltinMetric | Metric, foil: str | int | None = None) -> BuiltinMetric | Metric:
    """A metric from a shorthand ("prob", "logprob", "logit_diff" with `foil`), or as given.

    Examples:
        >>> resolve_metric("logit_diff", foil=" Paris")
        LogitDifference(foil=' Paris')
    """
    if foil is not None and metric != "logit_diff":
        raise ValueError(f"foil={foil!r} is for metric='logit_diff'; this trace scores {metric!r:.60}")
    if metric == "logit_diff":
        return LogitDifference(foil if foil is not None else "")
    if isinstance(metric, str):
        if metric in METRICS:
            return METRICS[metric]
        raise ValueError(f"unknown metric {metric!r}; use one of {METRIC_NAMES}, a built-in such as "
                         "ProbabilityMass([' Paris', ' Lyon']), or a function from logits (batch, vocab) to scores (batch,)")
    if isinstance(metric, BuiltinMetric) or callable(metric):
        return metric
    raise TypeError(f"metric must be a name {METRIC_NAMES}, a built-in metric or a function from logits (batch, vocab) "
                    f"to one score per row; got {metric!r:.80}")


def bind_metric(metric: BuiltinMetric | Metric, answer_id: int, token_id: TokenResolver) -> Metric:
    """The metric one fact is scored by: a built-in bound to its answer, a function as given."""
    return metric.bind(answer_id, token_id) if isinstance(metric, BuiltinMetric) else metric


def describe_metric(metric: BuiltinMetric | Metric) -> str:
    """How a trace records its metric."""
    if isinstance(metric, BuiltinMetric):
        return metric.describe()
    return getattr(metric, "__name__", None) or repr(metric)


def checked_scores(metric: Metric, logits: Float[Tensor, "rows vocab"]) -> Float[Tensor, " rows"]:
    """`metric(logits)`, with a clear error where a user's function returns other than one score per row."""
    scores = metric(logits)
    if not isinstance(scores, Tensor) or scores.shape != logits.shape[:1]:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"the metric must return one score per row of logits: for logits of shape "
                         f"{tuple(logits.shape)} it returned {shape}; e.g. lambda logits: logits.log_softmax(-1)[:, 42]")
    return scores


def _at_least_fp32(logits: Tensor) -> Tensor:
    """bf16/fp16 logits are scored in fp32; fp64 stays fp64."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))
