"""Effects averaged over many facts by token group, as in ROME's Figure 2."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb
from plotly.subplots import make_subplots

from causal_unlearn.tracing.average import AveragedEffects
from causal_unlearn.viz.style import (
    KIND_COLORS,
    KIND_COLORSCALES,
    KIND_TITLES,
    Column,
    panel_color_axis,
    paper_layout,
    stacks_panels,
)

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
    interval and the number of facts); a group no fact has (middle subject tokens, where every
    subject has at most two tokens) is left out. Bottom row: the effect by layer at
    `line_groups`, with the confidence interval as a band.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> facts = cu.make_bios_world().facts_to_trace(attribute="city")[:3]
        >>> effects = cu.average_effects(cu.trace_facts(lm, facts, kinds=("mlp",), samples=2, progress=False))
        >>> fig = plot_average_effects(effects)
        >>> fig.data[0].z.shape, [d.name for d in fig.data[1:]]
        ((5, 8), ['last subject token', 'last subject token', 'last token', 'last token'])
    """
    kinds = list(kinds) if kinds is not None else effects.kinds
    missing = [k for k in kinds if k not in effects.mean]
    if missing:
        raise ValueError(f"no {missing} effects here; these hold {effects.kinds}")
    unknown = [g for g in line_groups if g not in effects.groups]
    if unknown:
        raise ValueError(f"unknown token groups {unknown}; use some of {list(effects.groups)}")
    value = "indirect effect" if effects.value == "indirect_effect" else "score"
    stacked, n = stacks_panels(column, len(kinds)), len(kinds)
    titles = [f"average {KIND_TITLES.get(k, k)}" for k in kinds]
    if stacked:  # kind by kind, its heatmap above its lines
        fig = make_subplots(rows=2 * n, cols=1, vertical_spacing=0.25 / n, row_heights=[0.6, 0.4] * n,
                            subplot_titles=[t for title in titles for t in (title, "")])
        places = [((2 * i + 1, 1), (2 * i + 2, 1)) for i in range(n)]
    else:
        fig = make_subplots(rows=2, cols=n, shared_xaxes=True, shared_yaxes=True, vertical_spacing=0.1,
                            horizontal_spacing=0.13, row_heights=[0.6, 0.4], subplot_titles=titles)
        places = [((1, i + 1), (2, i + 1)) for i in range(n)]
    groups = [g for g in range(len(effects.groups)) if any(effects.count[k][g].max() > 0 for k in kinds)]
    for index, (kind, (heatmap, lines)) in enumerate(zip(kinds, places), start=1):
        panel = (heatmap[0] - 1) * (1 if stacked else n) + heatmap[1]
        axis = panel_color_axis(fig, panel, colorscale=KIND_COLORSCALES.get(kind, "Greys"), cmin=0,
                                colorbar=dict(title=dict(text=value, side="right")))
        fig.add_trace(_group_heatmap(effects, kind, axis, value, groups), *heatmap)
        for group, dash in zip(line_groups, ("solid", "dot", "dash", "dashdot")):
            for trace in _line_with_band(effects, kind, group, dash, show_legend=index == 1):
                fig.add_trace(trace, *lines)
        fig.update_xaxes(title_text="layer", row=lines[0], col=lines[1])
        fig.update_yaxes(autorange="reversed", row=heatmap[0], col=heatmap[1])
        if stacked or index == 1:
            fig.update_yaxes(title_text=value, row=lines[0], col=lines[1])
    n_facts = int(max(effects.count[k].max() for k in kinds))
    fig.update_layout(title=title if title is not None else f"average effect over {n_facts} facts "
                      f"({effects.confidence:.0%} interval)", height=560, width=330 * n + 170,
                      legend=dict(orientation="h", y=-0.12 / (n if stacked else 1), x=0.5, xanchor="center"))
    if not column:
        return fig
    height_inches = 2.56 * n if stacked else 2.6 if column == "double" else 3.2  # stacked: 2.56 inches a kind
    return paper_layout(fig, column, height_inches=height_inches)


def _group_heatmap(effects: AveragedEffects, kind: str, axis: str, value: str, groups: list[int]) -> go.Heatmap:
    mean, lower, upper = (t[kind][groups].float().numpy() for t in (effects.mean, effects.lower, effects.upper))
    count = effects.count[kind][groups].numpy()
    detail = np.vectorize(lambda lo, hi, n: f"[{lo:.3f}, {hi:.3f}], {n} facts" if n > 1 else f"{n} facts")(lower, upper, count)
    return go.Heatmap(z=mean, x=list(range(mean.shape[1])), y=[effects.groups[g] for g in groups], coloraxis=axis, customdata=detail,
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

