"""Effects averaged over many facts by token group, as in ROME's Figure 2."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb
from plotly.subplots import make_subplots

from causal_unlearn.tracing.average import AveragedEffects
from causal_unlearn.viz.style import KIND_COLORSCALES, KIND_COLORS, KIND_TITLES, Column, panel_color_axis, paper_layout

LINE_GROUPS = ("last subject token", "last token")


def plot_average_effects(
    effects: AveragedEffects,
    kinds: Sequence[str] | None = None,
    *,
    line_groups: Sequence[str] = LINE_GROUPS,
    column: Column | None = None,
    title: str | None = None,
) -> go.Figure:
    """Top row: the mean effect per token group x layer, one heatmap per kind (hover: the
    interval and the number of facts). Bottom row: the effect by layer at `line_groups`, with
    the confidence interval as a band.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> facts = cu.make_bios_world().facts_to_trace(attribute="city")[:3]
        >>> effects = cu.average_effects(cu.trace_facts(lm, facts, kinds=("mlp",), samples=2, progress=False))
        >>> fig = plot_average_effects(effects)
        >>> fig.data[0].z.shape, [d.name for d in fig.data[1:]]
        ((7, 8), ['last subject token', 'last subject token', 'last token', 'last token'])
    """
    kinds = list(kinds) if kinds is not None else effects.kinds
    missing = [k for k in kinds if k not in effects.mean]
    if missing:
        raise ValueError(f"no {missing} effects here; these hold {effects.kinds}")
    unknown = [g for g in line_groups if g not in effects.groups]
    if unknown:
        raise ValueError(f"unknown token groups {unknown}; use some of {list(effects.groups)}")
    value = "indirect effect" if effects.value == "indirect_effect" else "score"
    fig = make_subplots(rows=2, cols=len(kinds), shared_xaxes=True, shared_yaxes=True, vertical_spacing=0.1,
                        horizontal_spacing=0.1,
                        row_heights=[0.6, 0.4], subplot_titles=[f"average {KIND_TITLES.get(k, k)}" for k in kinds])
    for index, kind in enumerate(kinds, start=1):
        axis = panel_color_axis(fig, index, colorscale=KIND_COLORSCALES.get(kind, "Greys"), cmin=0,
                                colorbar=dict(y=1, yanchor="top", len=0.55, title=dict(text=value, side="right")))
        fig.add_trace(_group_heatmap(effects, kind, axis, value), row=1, col=index)
        for group, dash in zip(line_groups, ("solid", "dot", "dash", "dashdot")):
            for trace in _line_with_band(effects, kind, group, dash, show_legend=index == 1):
                fig.add_trace(trace, row=2, col=index)
        fig.update_xaxes(title_text="layer", row=2, col=index)
    fig.update_yaxes(autorange="reversed", row=1)
    fig.update_yaxes(title_text=value, row=2, col=1)
    n_facts = int(max(effects.count[k].max() for k in kinds))
    fig.update_layout(title=title if title is not None else f"average effect over {n_facts} facts "
                      f"({effects.confidence:.0%} interval)", height=560, width=330 * len(kinds) + 170,
                      legend=dict(orientation="h", y=-0.12, x=0.5, xanchor="center"))
    return paper_layout(fig, column, height_inches=2.6 if column == "double" else 3.2) if column else fig


def _group_heatmap(effects: AveragedEffects, kind: str, axis: str, value: str) -> go.Heatmap:
    mean, lower, upper = (t[kind].float().numpy() for t in (effects.mean, effects.lower, effects.upper))
    count = effects.count[kind].numpy()
    detail = np.vectorize(lambda lo, hi, n: f"[{lo:.3f}, {hi:.3f}], {n} facts" if n > 1 else f"{n} facts")(lower, upper, count)
    return go.Heatmap(z=mean, x=list(range(mean.shape[1])), y=list(effects.groups), coloraxis=axis, customdata=detail,
                      name=kind, hovertemplate=f"%{{y}}<br>layer %{{x}}<br>{value} %{{z:.4f}} %{{customdata}}<extra>{kind}</extra>")


def _line_with_band(effects: AveragedEffects, kind: str, group: str, dash: str, show_legend: bool) -> list[go.Scatter]:
    g = effects.groups.index(group)
    mean, lower, upper = (t[kind][g].float().numpy() for t in (effects.mean, effects.lower, effects.upper))
    layers = list(range(len(mean)))
    color = KIND_COLORS.get(kind, "black")
    band = go.Scatter(x=layers + layers[::-1], y=np.concatenate([upper, lower[::-1]]), fill="toself", mode="lines", line=dict(width=0),
                      fillcolor="rgba({}, {}, {}, 0.18)".format(*hex_to_rgb(color)), hoverinfo="skip", showlegend=False, name=group, legendgroup=group)
    line = go.Scatter(x=layers, y=mean, mode="lines+markers", line=dict(color=color, dash=dash), marker=dict(size=4),
                      name=group, legendgroup=group, showlegend=show_legend,
                      hovertemplate=f"{group}<br>layer %{{x}}<br>%{{y:.4f}}<extra>{kind}</extra>")
    return [band, line]

