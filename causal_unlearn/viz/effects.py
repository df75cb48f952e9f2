"""Effects averaged over many facts by token group, as in ROME's Figure 2; a kind averaged per
attention head as layer x head panels at chosen token groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float
from plotly.colors import hex_to_rgb
from plotly.subplots import make_subplots
from torch import Tensor

from causal_unlearn.tracing.average import AveragedEffects
from causal_unlearn.viz.style import (
    HEAD_NOUNS,
    KIND_COLORS,
    KIND_COLORSCALES,
    KIND_TITLES,
    PIXELS_PER_INCH,
    Column,
    panel_color_axis,
    paper_layout,
    stacks_panels,
    subplot_number,
)

LINE_GROUPS = ("last subject token", "last token")
HEAD_GROUPS = ("last subject token", "last token")  # where a kind averaged per head is drawn, layer x head
HEAD_PANEL_INCHES, HEAD_GAP_INCHES, STACKED_GAP_INCHES = 1.3, 0.6, 0.64  # a gap holds ticks and two titles
PAPER_MARGIN_INCHES = 60 / PIXELS_PER_INCH  # the paper template's top and bottom margins
SCREEN_PPI = 192  # px an inch of panels on screen: the 560 px figure without heads draws 2 inches of panels in 380 px


def plot_average_effects(
    effects: AveragedEffects,
    kinds: Sequence[str] | None = None,
    *,
    line_groups: Sequence[str] = LINE_GROUPS,
    head_groups: Sequence[str] = HEAD_GROUPS,
    column: Column | None = None,
    title: str | None = None,
) -> go.Figure:
    """Top row: the mean effect per token group x layer, one heatmap per kind (hover: the
    interval and the number of facts); a group no fact has (middle subject tokens, where every
    subject has at most two tokens) is left out. Bottom row: the effect by layer at
    `line_groups`, with the confidence interval as a band. A kind averaged per attention head
    ("head") is drawn below those, as one layer x head heatmap per token group in `head_groups`.

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
    unknown = [g for g in (*line_groups, *head_groups) if g not in effects.groups]
    if unknown:
        raise ValueError(f"unknown token groups {unknown}; use some of {list(effects.groups)}")
    per_layer = [k for k in kinds if effects.mean[k].dim() == 2]
    head_kinds = [k for k in kinds if effects.mean[k].dim() == 3]
    if head_kinds and not head_groups:
        raise ValueError(f"no head_groups to show the {head_kinds} effects at")
    per_head = [(k, g) for k in head_kinds for g in dict.fromkeys(head_groups)]
    value = "indirect effect" if effects.value == "indirect_effect" else "score"
    n, stacked = len(per_layer), stacks_panels(column, len(per_layer) + len(per_head))
    grid = _grid(n, len(per_head), stacked, column)
    titles = [f"average {KIND_TITLES.get(k, k)}" for k in per_layer]
    head_titles = [f"average {HEAD_NOUNS.get(k, KIND_TITLES.get(k, k))} at the {group}" for k, group in per_head]
    fig = make_subplots(**grid.subplots, subplot_titles=(
        [t for title in titles for t in (title, "")] if stacked else titles + [""] * n) + head_titles)
    groups = [g for g in range(len(effects.groups)) if any(effects.count[k][g].max() > 0 for k in per_layer)]
    for index, (kind, (heatmap, lines)) in enumerate(zip(per_layer, grid.places), start=1):
        axis = panel_color_axis(fig, subplot_number(fig, *heatmap), colorscale=KIND_COLORSCALES.get(kind, "Greys"),
                                cmin=0, colorbar=dict(title=dict(text=value, side="right")))
        fig.add_trace(_group_heatmap(effects, kind, axis, value, groups), *heatmap)
        for group, dash in zip(line_groups, ("solid", "dot", "dash", "dashdot")):
            for trace in _line_with_band(effects, kind, group, dash, show_legend=index == 1):
                fig.add_trace(trace, *lines)
        fig.update_xaxes(title_text="layer", showticklabels=True, row=lines[0], col=lines[1])
        fig.update_yaxes(autorange="reversed", row=heatmap[0], col=heatmap[1])
        if stacked or index == 1:
            fig.update_yaxes(title_text=value, row=lines[0], col=lines[1])
    for (kind, group), (row, col) in zip(per_head, grid.head_places):
        shown = [effects.groups.index(g) for k, g in per_head if k == kind]  # one scale for a kind's panels
        axis = panel_color_axis(fig, subplot_number(fig, row, col), colorscale=KIND_COLORSCALES.get(kind, "Greys"),
                                cmin=0, cmax=_ceiling(effects.mean[kind][shown]),
                                colorbar=dict(title=dict(text=value, side="right")))
        fig.add_trace(_head_heatmap(effects, kind, group, axis, value), row, col)
        fig.update_xaxes(title_text="layer", row=row, col=col)
        fig.update_yaxes(title_text="head" if col == 1 else None, autorange="reversed", row=row, col=col)
    n_facts = int(max(effects.count[k].max() for k in kinds))
    fig.update_layout(title=title if title is not None else f"average effect over {n_facts} facts "
                      f"({effects.confidence:.0%} interval)", height=grid.height_px, width=330 * grid.n_cols + 170,
                      legend=dict(orientation="h", y=grid.legend_y, x=0.5, xanchor="center"))
    return paper_layout(fig, column, height_inches=grid.height_inches) if column else fig


@dataclass
class _Grid:
    """Where `plot_average_effects` puts its panels, and how big it is."""

    subplots: dict  # make_subplots' keywords, titles aside
    places: list[tuple[tuple[int, int], tuple[int, int]]]  # per kind: its heatmap's and its lines' (row, col)
    head_places: list[tuple[int, int]]
    n_cols: int
    height_inches: float  # on paper
    height_px: int  # on screen
    legend_y: float


def _grid(n: int, n_head: int, stacked: bool, column: Column | None) -> _Grid:
    """The panels of `n` kinds by token group and layer (each a heatmap above its lines) and then
    `n_head` layer x head panels: side by side in rows, or (`stacked`) one above the other."""
    if stacked:  # kind by kind, its heatmap above its lines, 0.64 inches between panels; then the heads
        height = 2.56 * n + n_head * (STACKED_GAP_INCHES + HEAD_PANEL_INCHES)
        pair = (2.56 * n - STACKED_GAP_INCHES * (2 * n - 1)) / n if n else 0  # a heatmap and its lines
        subplots = dict(rows=2 * n + n_head, cols=1, vertical_spacing=STACKED_GAP_INCHES / height,
                        row_heights=[0.6 * pair, 0.4 * pair] * n + [HEAD_PANEL_INCHES] * n_head)
        places = [((2 * i + 1, 1), (2 * i + 2, 1)) for i in range(n)]
        head_places = [(2 * n + 1 + i, 1) for i in range(n_head)]
        return _Grid(subplots, places, head_places, 1, height, 560, -0.12 * 2.56 / height if n else -0.12)
    n_cols = max(n, n_head)
    base = 2.6 if column == "double" else 3.2  # inches without heads (a single column holds one panel side by side)
    places = [((1, i + 1), (2, i + 1)) for i in range(n)]
    if not n_head:
        subplots = dict(rows=2, cols=n, shared_xaxes=True, shared_yaxes=True, vertical_spacing=0.1,
                        horizontal_spacing=0.13, row_heights=[0.6, 0.4])
        return _Grid(subplots, places, [], n, base, 560, -0.12)
    heads_row = [{}] * n_head + [None] * (n_cols - n_head)
    if not n:
        subplots = dict(rows=1, cols=n_cols, shared_yaxes=True, horizontal_spacing=0.13)
        height = HEAD_PANEL_INCHES + PAPER_MARGIN_INCHES
        return _Grid(subplots, [], [(1, i + 1) for i in range(n_head)], n_cols, height,
                     round(180 + SCREEN_PPI * HEAD_PANEL_INCHES), -0.3)
    # heatmaps and lines as without heads (0.1 of their height between them), a spacer row, the heads
    upper = base - PAPER_MARGIN_INCHES
    spacing = 0.1 * upper
    total = upper + HEAD_GAP_INCHES + HEAD_PANEL_INCHES  # the spacer row and its two spacings make HEAD_GAP_INCHES
    row = [{}] * n + [None] * (n_cols - n)
    subplots = dict(rows=4, cols=n_cols, shared_xaxes=True, shared_yaxes=True, vertical_spacing=spacing / total,
                    horizontal_spacing=0.13, specs=[row, row, [None] * n_cols, heads_row],
                    row_heights=[0.54 * upper, 0.36 * upper, HEAD_GAP_INCHES - 2 * spacing, HEAD_PANEL_INCHES])
    return _Grid(subplots, places, [(4, i + 1) for i in range(n_head)], n_cols, total + PAPER_MARGIN_INCHES,
                 round(180 + SCREEN_PPI * total), -0.12 * upper / total)


def _ceiling(table: Float[Tensor, "group layer head"]) -> float:
    """The top of a colour scale from 0 for `table` (NaN where no fact has the group)."""
    return max(float(np.nanmax(table.float().numpy(), initial=0.0)), 1e-6)


def _head_heatmap(effects: AveragedEffects, kind: str, group: str, axis: str, value: str) -> go.Heatmap:
    """One token group's mean effect per head: layers across, heads down (z is mean[kind][g].T)."""
    g = effects.groups.index(group)
    mean, lower, upper = (t[kind][g].T.float().numpy() for t in (effects.mean, effects.lower, effects.upper))
    detail = _interval_text(lower, upper, effects.count[kind][g].T.numpy())
    return go.Heatmap(z=mean, x=list(range(mean.shape[1])), y=list(range(mean.shape[0])), coloraxis=axis,
                      customdata=detail, name=kind,
                      hovertemplate=f"{group}<br>layer %{{x}}<br>head %{{y}}<br>{value} %{{z:.4f}} %{{customdata}}"
                                    f"<extra>{kind}</extra>")


def _group_heatmap(effects: AveragedEffects, kind: str, axis: str, value: str, groups: list[int]) -> go.Heatmap:
    mean, lower, upper = (t[kind][groups].float().numpy() for t in (effects.mean, effects.lower, effects.upper))
    detail = _interval_text(lower, upper, effects.count[kind][groups].numpy())
    return go.Heatmap(z=mean, x=list(range(mean.shape[1])), y=[effects.groups[g] for g in groups], coloraxis=axis, customdata=detail,
                      name=kind, hovertemplate=f"%{{y}}<br>layer %{{x}}<br>{value} %{{z:.4f}} %{{customdata}}<extra>{kind}</extra>")


def _interval_text(lower: np.ndarray, upper: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Each cell's hover detail: its interval and the number of facts behind it."""
    text = np.vectorize(lambda lo, hi, n: f"[{lo:.3f}, {hi:.3f}], {n} facts" if n > 1 else f"{n} facts")
    return text(lower, upper, count)


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

