"""`compare_traces`: the same facts traced before and after unlearning, side by side."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from typing import Sequence

from causal_unlearn.figures import Plottable
from causal_unlearn.localization.layers import Localization
from causal_unlearn.tracing.average import AveragedEffects, average_effects
from causal_unlearn.tracing.result import TraceResult


@dataclass
class TraceComparison(Plottable):
    """Averaged effects of the same facts before and after, and each fact's clean p(answer).

    `layer_effects(kind)` answers "did the effect at the localized layers disappear?": each
    layer's mean indirect effect (in its strongest token group before unlearning) before and
    after.
    """

    before: AveragedEffects
    after: AveragedEffects
    traces_before: list[TraceResult]
    traces_after: list[TraceResult]
    layers: list[int]

    def layer_effects(self, kind: str = "mlp"):
        import pandas as pd

        effect_before, groups = self.before.by_layer(kind)
        table = self.after.mean[kind]
        effect_after = [float(table[self.after.groups.index(g), layer]) for layer, g in enumerate(groups)]
        return pd.DataFrame(dict(
            layer=range(len(groups)), token_group=groups, before=effect_before.tolist(), after=effect_after,
            change=[a - b for a, b in zip(effect_after, effect_before.tolist())],
            localized=[layer in self.layers for layer in range(len(groups))],
        ))

    def summary(self, kind: str = "mlp") -> dict[str, float]:
        """Mean p(answer), share known, and the mean effect at the localized layers, before and after."""
        effects = self.layer_effects(kind)
        at = effects[effects.localized] if self.layers else effects
        return dict(
            p_answer_before=fmean(t.high for t in self.traces_before), p_answer_after=fmean(t.high for t in self.traces_after),
            known_before=fmean(t.known for t in self.traces_before), known_after=fmean(t.known for t in self.traces_after),
            effect_before=float(at.before.mean()), effect_after=float(at.after.mean()),
        )

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame(dict(
            prompt=[t.prompt for t in self.traces_before], answer=[t.answer for t in self.traces_before],
            p_answer_before=[t.high for t in self.traces_before], p_answer_after=[t.high for t in self.traces_after],
            known_before=[t.known for t in self.traces_before], known_after=[t.known for t in self.traces_after],
            prediction_after=[t.clean_prediction for t in self.traces_after],
        ))


def compare_traces(
    before: Sequence[TraceResult], after: Sequence[TraceResult], *, layers: Localization | Sequence[int] = ()
) -> TraceComparison:
    """Pair traces of the same facts (same prompts, answers and settings) from before and after
    unlearning; `layers` marks the localized layers in the tables.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> facts = cu.make_bios_world().facts_to_trace("forget", "city")[:3]
        >>> traces = cu.trace_facts(lm, facts, kinds=("mlp",), window=1, samples=2, progress=False)
        >>> cu.compare_traces(traces, traces, layers=[0]).summary()["effect_before"] > 0
        True
    """
    if not before or len(before) != len(after):
        raise ValueError(f"need the same non-empty list of facts traced twice, got {len(before)} and {len(after)} traces")
    for index, (b, a) in enumerate(zip(before, after)):
        if (b.prompt, b.subject, b.answer_id) != (a.prompt, a.subject, a.answer_id):
            raise ValueError(f"trace {index} is not the same fact before and after: {b.prompt!r} vs {a.prompt!r}")
        if (b.settings.samples, b.settings.window, b.settings.metric) != (a.settings.samples, a.settings.window, a.settings.metric):
            raise ValueError(f"trace {index} was made with different settings before ({b.settings}) and after ({a.settings})")
    return TraceComparison(average_effects(before), average_effects(after), list(before), list(after), sorted(layers))
