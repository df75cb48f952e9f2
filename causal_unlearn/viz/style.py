"""Colours, sizes and the paper template shared by every figure.

Heatmaps use ROME's single-hue scales (Purples / Greens / Reds for hidden / MLP / attention, Blues
for single attention heads), which stay ordered for every kind of colour vision; lines and bars
use the Okabe-Ito palette.
"""

from __future__ import annotations

from typing import Literal

import plotly.graph_objects as go
import plotly.io as pio

KIND_COLORSCALES = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds", "head": "Blues"}
KIND_TITLES = {"hidden": "single restored layer", "mlp": "restored MLP", "attn": "restored attention",
               "head": "restored attention head"}
HEAD_NOUNS = {"head": "heads"}  # a panel of one token's heads: "heads at ' Russet' (last subject token)"
# Okabe & Ito (2008), "Color Universal Design": distinguishable under every common colour-vision deficiency.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
KIND_COLORS = {"hidden": "#7B4EA3", "mlp": "#009E73", "attn": "#D55E00", "head": "#0072B2"}

PIXELS_PER_INCH = 96  # plotly's px are CSS px: a PDF page of W px is W / 96 inches wide
COLUMN_WIDTHS_INCHES = {"single": 3.25, "double": 6.75}  # ACL / NeurIPS-style two-column pages
PAPER_TEMPLATE = "causal_unlearn_paper"
Column = Literal["single", "double"]


def _register_paper_template() -> None:
    base = pio.templates["simple_white"]
    paper = go.layout.Template(base)
    paper.layout.update(
        font=dict(family="Times New Roman, Times, Liberation Serif, serif", size=9, color="black"),
        colorway=OKABE_ITO,
        margin=dict(l=40, r=10, t=28, b=32),
        legend=dict(font=dict(size=8), bgcolor="rgba(255,255,255,0)"),
        title=dict(font=dict(size=10), x=0.5, xanchor="center"),
        xaxis=dict(title=dict(font=dict(size=9), standoff=4), tickfont=dict(size=8)),
        yaxis=dict(title=dict(font=dict(size=9), standoff=4), tickfont=dict(size=8)),
    )
    pio.templates[PAPER_TEMPLATE] = paper


_register_paper_template()


def panel_color_axis(fig: go.Figure, panel: int, *, colorbar: dict | None = None, **axis: object) -> str:
    """Give subplot `panel` (numbered as plotly numbers its axes: row by row from 1) its own
    colour axis, with a colour bar just right of that panel and as tall as 90 % of it, and
    return the axis name for its heatmap's `coloraxis`.

    Examples:
        >>> from plotly.subplots import make_subplots
        >>> fig = make_subplots(rows=1, cols=2)
        >>> panel_color_axis(fig, 2, colorscale="Greens", cmin=0), fig.layout.coloraxis2.colorbar.xanchor
        ('coloraxis2', 'left')
    """
    suffix = "" if panel == 1 else str(panel)
    x, y = fig.layout[f"xaxis{suffix}"].domain, fig.layout[f"yaxis{suffix}"].domain
    bar = dict(x=x[1] + 0.005, xanchor="left", y=(y[0] + y[1]) / 2, yanchor="middle", len=0.9 * (y[1] - y[0]),
               thickness=8, xpad=4, **(colorbar or {}))
    fig.update_layout({f"coloraxis{suffix}": dict(colorbar=bar, **axis)})
    return f"coloraxis{suffix}"


def subplot_number(fig: go.Figure, row: int, col: int) -> int:
    """The number plotly gave the axes of the subplot at (`row`, `col`) ("xaxis" is 1), which
    skips the empty cells of a grid: what `panel_color_axis` takes.

    Examples:
        >>> from plotly.subplots import make_subplots
        >>> subplot_number(make_subplots(rows=2, cols=2, specs=[[{}, None], [{}, {}]]), 2, 2)
        3
    """
    return int(fig.get_subplot(row, col).xaxis.plotly_name.removeprefix("xaxis") or 1)


def stacks_panels(column: Column | None, n_panels: int) -> bool:
    """Whether a figure of `n_panels` side-by-side panels is drawn one above the other instead:
    in a single column a panel and its colour bar need more than a third of the width.

    Examples:
        >>> stacks_panels("single", 3), stacks_panels("double", 3), stacks_panels(None, 3), stacks_panels("single", 1)
        (True, False, False, False)
    """
    return column == "single" and n_panels > 1


def paper_layout(fig: go.Figure, column: Column = "single", *, height_inches: float | None = None) -> go.Figure:
    """Size `fig` for a single- or double-column figure and apply the paper template (serif
    9 pt text, colour-blind-safe colours, tight margins). Returns the same figure.

    Examples:
        >>> import plotly.graph_objects as go
        >>> fig = paper_layout(go.Figure(), "double", height_inches=2)
        >>> fig.layout.width, fig.layout.height
        (648, 192)
    """
    if column not in COLUMN_WIDTHS_INCHES:
        raise ValueError(f"unknown column {column!r}; use one of {list(COLUMN_WIDTHS_INCHES)}")
    width = COLUMN_WIDTHS_INCHES[column]
    height = height_inches if height_inches is not None else width * (0.75 if column == "single" else 0.4)
    fig.update_layout(template=PAPER_TEMPLATE, width=round(width * PIXELS_PER_INCH),
                      height=round(height * PIXELS_PER_INCH))
    # subplot titles and colour bars carry their own sizes, which a template does not reach
    fig.update_annotations(font_size=9)
    fig.update_coloraxes(colorbar_title_font_size=8, colorbar_tickfont_size=8, colorbar_thickness=6)
    fig.update_xaxes(title_font_size=9, tickfont_size=8)
    fig.update_yaxes(title_font_size=9, tickfont_size=8)
    return fig
