"""Averaging traces over many facts by token group, as in ROME's Figure 2."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from jaxtyping import Float, Int
from scipy import stats
from torch import Tensor

from causal_unlearn.figures import Plottable
from causal_unlearn.tracing.result import TraceResult

TOKEN_GROUPS = (
    "before subject",
    "first subject token",
    "middle subject tokens",
    "last subject token",
    "first after subject",
    "further tokens",
    "last token",
)


def token_groups(n_tokens: int, subject_range: tuple[int, int]) -> dict[str, list[int]]:
    """The positions of each token group; the last token belongs to "last token" only (unless it
    is also a subject token).

    Examples:
        >>> token_groups(8, (2, 5))["middle subject tokens"], token_groups(8, (2, 5))["further tokens"]
        ([3], [6])
    """
    start, end = subject_range
    last = n_tokens - 1
    return {
        "before subject": list(range(0, start)),
        "first subject token": [start],
        "middle subject tokens": list(range(start + 1, end - 1)),
        "last subject token": [end - 1],
        "first after subject": [end] if end < last else [],
        "further tokens": list(range(end + 1, last)),
        "last token": [last],
    }


@dataclass
class AveragedEffects(Plottable):
    """Mean effect per token group x layer with a t-based confidence interval, per kind; for a
    kind scored per attention head ("head"), per token group x layer x head.

    `count[kind][g, l]` is the number of facts behind a cell (facts without that group, e.g.
    one-token subjects have no middle tokens, do not count); intervals need two facts or more.
    """

    groups: tuple[str, ...]
    value: str
    confidence: float
    mean: dict[str, Float[Tensor, "group layer *unit"]]
    lower: dict[str, Float[Tensor, "group layer *unit"]]
    upper: dict[str, Float[Tensor, "group layer *unit"]]
    count: dict[str, Int[Tensor, "group layer *unit"]]

    @property
    def kinds(self) -> list[str]:
        return list(self.mean)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{kind!r}: {tuple(mean.shape)}" for kind, mean in self.mean.items())
        facts = max((int(count.max()) for count in self.count.values()), default=0)
        return (f"AveragedEffects({self.value}, {len(self.groups)} token groups, up to {facts} fact{'s' * (facts != 1)}, "
                f"{self.confidence:.0%} intervals, mean={{{shapes}}})")

    def by_layer(self, kind: str, token_group: str | None = None) -> tuple[Float[Tensor, " layer"], list[str]]:
        """Each layer's mean effect in `token_group`, or in its strongest group when None, and
        the group it was read from."""
        if kind not in self.mean:
            raise ValueError(f"no {kind!r} effects here; these hold {self.kinds}")
        table = self.mean[kind]
        if table.dim() != 2:
            raise ValueError(f"{kind!r} effects are per head {tuple(table.shape)} (group, layer, head), not one per "
                             f"layer; read effects.mean[{kind!r}] and choose how to reduce the heads")
        if token_group is None:
            values, index = torch.nan_to_num(table, nan=-torch.inf).max(0)
            return values, [self.groups[g] for g in index.tolist()]
        if token_group not in self.groups:
            raise ValueError(f"unknown token group {token_group!r}; use one of {list(self.groups)}")
        return table[self.groups.index(token_group)], [token_group] * table.shape[1]

    def to_dataframe(self):
        """One row per (kind, group, layer), and per unit (head) for kinds scored per unit: a
        "unit" column, as in `TraceResult.to_dataframe`, empty for the other kinds."""
        import pandas as pd

        frame = pd.DataFrame.from_records(
            dict(kind=kind, group=group, layer=cell[0], **({"unit": cell[1]} if len(cell) > 1 else {}),
                 mean=float(self.mean[kind][(g, *cell)]), lower=float(self.lower[kind][(g, *cell)]),
                 upper=float(self.upper[kind][(g, *cell)]), n_facts=int(self.count[kind][(g, *cell)]))
            for kind in self.mean
            for g, group in enumerate(self.groups)
            for cell in itertools.product(*map(range, self.mean[kind].shape[1:]))
        )
        if "unit" in frame:
            frame["unit"] = frame["unit"].astype("Int64")
            frame = frame[["kind", "group", "layer", "unit", "mean", "lower", "upper", "n_facts"]]
        return frame


def average_effects(
    traces: Sequence[TraceResult],
    *,
    value: Literal["indirect_effect", "score"] = "indirect_effect",
    confidence: float = 0.95,
) -> AveragedEffects:
    """Average traces by token group and layer (the mean over a group's positions per fact, then
    over facts), with a `confidence` interval from Student's t. Kinds scored per attention head
    (token x layer x head) average by token group, layer and head.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> facts = cu.make_bios_world().facts_to_trace(attribute="city")[:3]
        >>> effects = cu.average_effects(cu.trace_facts(lm, facts, kinds=("mlp",), samples=2, progress=False))
        >>> effects.mean["mlp"].shape, int(effects.count["mlp"][1, 0])
        (torch.Size([7, 8]), 3)
    """
    if not traces:
        raise ValueError("no traces to average")
    wrong = next((i for i, t in enumerate(traces) if not isinstance(t, TraceResult)), None)
    if wrong is not None:
        raise TypeError(f"average_effects takes TraceResults; item {wrong} is a {type(traces[wrong]).__name__}")
    if not (isinstance(confidence, float) and 0 < confidence < 1):
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}")
    if value not in ("indirect_effect", "score"):
        raise ValueError(f"unknown value {value!r}; use 'indirect_effect' or 'score'")
    kinds = [k for k in traces[0].kinds if all(k in t.scores for t in traces)]
    if not kinds:
        raise ValueError("the traces share no kind of state")
    _check_comparable(traces, kinds)
    result = AveragedEffects(TOKEN_GROUPS, value, confidence, {}, {}, {}, {})
    for kind in kinds:
        per_fact = torch.stack([_group_means(t, kind, value) for t in traces])  # fact group layer [unit], NaN if absent
        present = ~per_fact.isnan()
        count = present.sum(0)
        mean = per_fact.nanmean(0)
        centered = torch.where(present, per_fact - mean, torch.zeros(()))
        std = (centered.pow(2).sum(0) / (count - 1).clamp(min=1)).sqrt()
        critical = torch.tensor(stats.t.ppf(0.5 + confidence / 2, (count - 1).clamp(min=1).numpy()), dtype=mean.dtype)
        half = torch.where(count > 1, critical * std / count.clamp(min=1).sqrt(), torch.tensor(float("nan")))
        result.mean[kind], result.lower[kind], result.upper[kind], result.count[kind] = mean, mean - half, mean + half, count
    return result


def _check_comparable(traces: Sequence[TraceResult], kinds: list[str]) -> None:
    """Traces average only when each cell means the same thing in all of them."""
    for name in ("model", "metric", "method", "window"):
        values = {getattr(t.settings, name) for t in traces}
        if len(values) > 1:
            first = {value: next(i for i, t in enumerate(traces) if getattr(t.settings, name) == value) for value in values}
            shown = ", ".join(f"{value!r} (first at trace {index})" for value, index in sorted(first.items(), key=lambda x: x[1]))
            raise ValueError(f"the traces differ in {name}: {shown}; average traces of one model made with one "
                             "metric, method and window")
    n_layers = {t.scores[kinds[0]].shape[1] for t in traces}
    if len(n_layers) != 1:
        raise ValueError(f"traces come from models with different layer counts {sorted(n_layers)}")
    for kind in kinds:
        cells = {tuple(t.scores[kind].shape[1:]) for t in traces}
        if len(cells) != 1:
            raise ValueError(f"the traces' {kind!r} scores differ in shape past the token axis: {sorted(cells)}")
    for index, t in enumerate(traces):
        bad = [kind for kind in kinds if not torch.isfinite(t.scores[kind]).all()]
        if bad or not (math.isfinite(t.low) and math.isfinite(t.high)):
            raise ValueError(f"trace {index} ({t.prompt!r}) has NaN or infinite scores{f' in {bad}' if bad else ''}; "
                             "trace it again (a model in fp16 can overflow: load it in float32 or bfloat16)")


def _group_means(trace: TraceResult, kind: str, value: str) -> Float[Tensor, "group layer *unit"]:
    table = trace.indirect_effects(kind) if value == "indirect_effect" else trace.scores[kind]
    groups = token_groups(table.shape[0], trace.subject_range)
    nan_row = torch.full(table.shape[1:], float("nan"))
    return torch.stack([table[positions].mean(0) if positions else nan_row for positions in groups.values()])
