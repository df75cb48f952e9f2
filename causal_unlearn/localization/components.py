"""`localize_components`: from traced effects per head or per neuron to the parts of layers worth
editing (a finer edit than whole layers: `unlearn(layers=components)`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from causal_unlearn.localization.layers import as_effects
from causal_unlearn.tracing.average import AveragedEffects
from causal_unlearn.tracing.result import TraceResult
from causal_unlearn.validation import integer

KINDS = {"head": "heads", "neuron": "neurons"}


@dataclass(frozen=True)
class Components:
    """Attention heads and MLP neurons, by layer: the only weights a finer edit may change.

    A head is its slice of the attention's output projection (what it writes to the residual
    stream, TransformerLens `W_O[head]`); a neuron is its row of every projection into the MLP's
    hidden units and its column of the down projection (its key and its value).

    Examples:
        >>> parts = Components(heads={3: (0, 2)}, neurons={1: (7,)})
        >>> parts.layers, parts
        ([1, 3], Components(heads={3: (0, 2)}, neurons={1: (7,)}))
    """

    heads: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    neurons: Mapping[int, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in ("heads", "neurons"):
            given = getattr(self, kind)
            if not isinstance(given, Mapping):
                raise TypeError(f"Components({kind}=...) maps a layer to its {kind}, e.g. {{3: (0, 2)}}; got {given!r:.60}")
            cleaned = {integer(f"a layer of {kind}", layer, minimum=0):
                       tuple(sorted({integer(kind[:-1], unit, minimum=0) for unit in units}))
                       for layer, units in given.items()}
            object.__setattr__(self, kind, {layer: units for layer, units in sorted(cleaned.items()) if units})
        if not self.heads and not self.neurons:
            raise ValueError("Components names no head and no neuron; give e.g. heads={3: (0, 2)} or neurons={1: (7,)}")

    @property
    def layers(self) -> list[int]:
        return sorted(set(self.heads) | set(self.neurons))

    def __iter__(self):  # where layers are expected, the layers it touches (like a Localization)
        return iter(self.layers)

    def to_dict(self) -> dict[str, dict[int, list[int]]]:
        return {kind: {layer: list(units) for layer, units in getattr(self, kind).items()} for kind in KINDS.values()}


def localize_components(
    effects_or_traces: AveragedEffects | Sequence[TraceResult],
    *,
    kind: str = "head",
    top_k: int = 8,
    token_group: str = "last subject token",
    layers: Sequence[int] | None = None,
) -> Components:
    """The `top_k` heads (`kind="head"`) or neurons (`"neuron"`) with the largest mean indirect
    effect in `token_group`, optionally only within `layers` (e.g. `localize(...).layers`).

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> traces = cu.trace_facts(lm, world.facts_to_trace("forget", "city")[:2], kinds=("head",),
        ...                         method="attribution", samples=2, progress=False)
        >>> parts = localize_components(traces, kind="head", top_k=3)
        >>> sum(len(heads) for heads in parts.heads.values())
        3
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {tuple(KINDS)} (a site traced per unit); got {kind!r}")
    effects = as_effects(effects_or_traces)
    if kind not in effects.mean:
        raise ValueError(f"no {kind!r} effects here (these hold {effects.kinds}); trace with kinds=({kind!r},)")
    if token_group not in effects.groups:
        raise ValueError(f"unknown token group {token_group!r}; use one of {list(effects.groups)}")
    table = effects.mean[kind][effects.groups.index(token_group)].clone()  # layer unit
    n_layers, n_units = table.shape
    if layers is not None:
        allowed = torch.zeros(n_layers, dtype=torch.bool)
        wanted = [integer("layer", layer, minimum=0) for layer in layers]
        if not wanted or max(wanted) >= n_layers:
            raise ValueError(f"layers must be one or more of 0..{n_layers - 1}, got {list(layers)}")
        allowed[wanted] = True
        table[~allowed] = -torch.inf
    top_k = integer("top_k", top_k)
    candidates = int(torch.isfinite(table).sum())
    if not 1 <= top_k <= candidates:
        raise ValueError(f"top_k must be between 1 and the {candidates} {KINDS[kind]} with an effect, got {top_k}")
    chosen: dict[int, list[int]] = {}
    for cell in table.flatten().topk(top_k).indices.tolist():
        chosen.setdefault(cell // n_units, []).append(cell % n_units)
    return Components(**{KINDS[kind]: {layer: tuple(units) for layer, units in chosen.items()}})
