"""`localize`: from traced effects to the layers worth editing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from causal_unlearn.tracing.average import AveragedEffects, average_effects
from causal_unlearn.tracing.result import TraceResult
from causal_unlearn.validation import finite, integer


@dataclass
class Localization:
    """The chosen layers and the evidence: `effect[l]` is the mean indirect effect of `kind` at
    layer l in `token_group[l]` (the named group, or each layer's strongest one).

    A `Localization` can be passed wherever layers are expected (`unlearn(layers=...)`).
    """

    layers: list[int]
    kind: str
    effect: Float[Tensor, " layer"]
    token_group: list[str]
    rule: str

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame(dict(layer=range(len(self.effect)), effect=self.effect.tolist(), token_group=self.token_group,
                                 chosen=[layer in self.layers for layer in range(len(self.effect))]))


def localize(
    effects_or_traces: AveragedEffects | Sequence[TraceResult],
    *,
    kind: str = "mlp",
    top_k: int | None = None,
    threshold: float | None = None,
    contiguous: bool = False,
    token_group: str | None = None,
) -> Localization:
    """Choose the layers whose `kind` states carry the traced facts.

    A layer's evidence is its averaged indirect effect in `token_group` (by default the token
    group where that layer's effect is largest). `top_k` takes the k strongest layers;
    `threshold` the layers whose effect is at least that value; with neither, the layers at or
    above half the strongest layer's effect. `contiguous=True` returns instead the band of as
    many consecutive layers with the largest summed effect (the paper edits a band, 0-5).

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> traces = cu.trace_facts(lm, world.facts_to_trace("forget", "ssn")[:4], kinds=("mlp",), window=1, samples=2, progress=False)
        >>> found = cu.localize(traces, top_k=2, contiguous=True)
        >>> len(found.layers), found.layers[1] - found.layers[0]
        (2, 1)
    """
    if top_k is not None and threshold is not None:
        raise ValueError("give top_k or threshold, not both")
    top_k = None if top_k is None else integer("top_k", top_k)
    threshold = None if threshold is None else finite("threshold", threshold)
    effects = as_effects(effects_or_traces)
    evidence, group_names = effects.by_layer(kind, token_group)
    _check_evidence(evidence, kind)
    n_layers = len(evidence)
    if top_k is not None:
        if not 1 <= top_k <= n_layers:
            raise ValueError(f"top_k must be between 1 and the number of layers ({n_layers}), got {top_k}")
        chosen, rule = evidence.topk(top_k).indices.tolist(), f"top {top_k}"
    else:
        cut = threshold if threshold is not None else float(evidence.max()) / 2
        chosen = (evidence >= cut).nonzero().flatten().tolist()
        rule = f"effect >= {cut:.3g}" + ("" if threshold is not None else " (half the peak)")
        if not chosen:
            raise ValueError(f"no layer reaches the threshold {cut:.3g}; the strongest effect is {float(evidence.max()):.3g}")
    if contiguous:
        width = len(chosen)
        sums = torch.stack([evidence[s : s + width].sum() for s in range(n_layers - width + 1)])
        first = int(sums.argmax())
        chosen, rule = list(range(first, first + width)), f"band of {width} ({rule})"
    return Localization(sorted(chosen), kind, evidence, group_names, rule)


def _check_evidence(evidence: Float[Tensor, " layer"], kind: str) -> None:
    """Refuse to choose layers from effects that cannot single any out."""
    if not torch.isfinite(evidence).all():
        bad = (~torch.isfinite(evidence)).nonzero().flatten().tolist()
        raise ValueError(f"the {kind} effects of layers {bad} are NaN or infinite (no fact has data there, or a trace "
                         "diverged); trace the facts again or choose a token_group that every fact has")
    if float(evidence.max()) <= 0:
        raise ValueError(
            f"no layer has a positive {kind} effect (the strongest is {float(evidence.max()):.3g}): restoring a state "
            "recovers nothing, so there is no evidence to choose layers by. Check that the model knows the facts "
            "(TraceResult.known, high well above low) and that the noise hides the subject")


def as_effects(effects_or_traces: AveragedEffects | Sequence[TraceResult]) -> AveragedEffects:
    """Averaged effects as given, or averaged from traces."""
    if isinstance(effects_or_traces, AveragedEffects):
        return effects_or_traces
    if not effects_or_traces:
        raise ValueError("no traces given; trace some facts first (causal_unlearn.trace_facts)")
    return average_effects(effects_or_traces)
