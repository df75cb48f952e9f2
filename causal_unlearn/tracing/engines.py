"""What every tracing engine shares: the prepared facts it takes, the cells it scores and what
it returns.

An engine is a function `engine(lm, facts, config, progress=...) -> list[TraceScores]`: the
exact engine (torch, exact), attribution patching (torch, attribution) and the nnsight backend
(nnsight, exact) register themselves with `register_engine`, which adds another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, Protocol, Sequence

from jaxtyping import Bool, Float, Int
from torch import Tensor

from causal_unlearn.models.hooks import HookPoint
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.patching.sites import Site
from causal_unlearn.tracing.config import ENGINES, TraceConfig, register_engine  # noqa: F401 (the registry)
from causal_unlearn.tracing.metrics import Metric


class TraceInput(NamedTuple):
    """One fact, ready to trace: its tokens, its clean and corrupted embeddings and what a cell scores."""

    input_ids: Int[Tensor, " pos"]
    clean: Float[Tensor, "pos d_model"]
    corrupted: Float[Tensor, "samples pos d_model"]
    metric: Metric


@dataclass
class TraceScores:
    """What an engine computes for one fact; `trace` wraps it into a `TraceResult`. A site's
    scores are (pos, layer), or (pos, layer, unit) for a site of units (heads)."""

    high: float
    low: float
    clean_top1: int
    scores: dict[str, Float[Tensor, "pos layer *unit"]]
    top_ids: dict[str, Int[Tensor, "pos layer *unit k"]] = field(default_factory=dict)
    top_probs: dict[str, Float[Tensor, "pos layer *unit k"]] = field(default_factory=dict)
    exact_cells: dict[str, Bool[Tensor, "pos layer *unit"]] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    """One heatmap cell: a site's state at one token and layer (and unit), restored in `restored` layers."""

    site: Site
    token: int
    layer: int
    restored: range
    unit: int | None = None
    fact: int = 0  # which of the facts traced together
    skipped: int = 0  # blocks that do not run: their outputs come from the corrupted run

    @property
    def index(self) -> tuple[int, ...]:
        """Where the cell's score sits in its site's table."""
        return (self.token, self.layer) if self.unit is None else (self.token, self.layer, self.unit)

    def points(self, lm: LoadedModel) -> list[HookPoint]:
        """The states the cell restores, one per restored layer."""
        return [self.site.point(lm, layer, self.unit) for layer in self.restored]


def cells_of(lm: LoadedModel, sites: Sequence[Site], window: int, tokens: range, fact: int = 0) -> Iterator[Cell]:
    """Every cell of `sites` at `tokens`, site by site, token-major."""
    for site in sites:
        units = site.units(lm)
        for token in tokens:
            for layer in range(lm.n_layers):
                for unit in units:
                    yield Cell(site, token, layer, site.restored_layers(layer, window, lm.n_layers), unit, fact)


def table_shape(lm: LoadedModel, site: Site, n_tokens: int) -> tuple[int, ...]:
    """The shape of a site's score table: (pos, layer) or (pos, layer, unit)."""
    units = site.n_units(lm)
    return (n_tokens, lm.n_layers) + ((units,) if units else ())


class Engine(Protocol):
    """What `register_engine` takes: scores for each prepared fact."""

    def __call__(self, lm: LoadedModel, facts: Sequence[TraceInput], config: TraceConfig, *,
                 progress: bool) -> list[TraceScores]: ...
