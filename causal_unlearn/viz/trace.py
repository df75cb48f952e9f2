"""One fact's causal trace as ROME draws it: tokens down the side, layers across."""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from causal_unlearn.tracing.result import TraceResult
from causal_unlearn.viz.style import (
    KIND_COLORSCALES,
    KIND_TITLES,
    Column,
    panel_color_axis,
    paper_layout,
    stacks_panels,
)

METRIC_LABELS = {"prob": "p(answer)", "logprob": "log p(answer)", "logit_diff": "logit difference"}
Value = Literal["score", "indirect_effect"]


def token_labels(result: TraceResult) -> list[str]:
    """The prompt's tokens, subject tokens starred as in ROME's figures.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> result = cu.trace(lm, "Otto Russet lives in", "Otto Russet", kinds=("hidden",), samples=1, progress=False)
        >>> token_labels(result)
        ['<|endoftext|>', 'Otto*', ' Russet*', ' lives', ' in']
    """
    start, end = result.subject_range
    return [token + ("*" if start <= position < end else "") for position, token in enumerate(result.tokens)]


def value_label(result: TraceResult, value: Value = "score") -> str:
    label = METRIC_LABELS.get(result.settings.metric, result.settings.metric)
    return label if value == "score" else f"indirect effect on {label}"


def trace_heatmap(
    result: TraceResult,
    kind: str,
    *,
    value: Value = "score",
    decode: Callable[[list[int]], str] | None = None,
    coloraxis: str = "coloraxis",
) -> go.Heatmap:
    """The heatmap trace of one kind; hovering a cell shows its token, layer and value, and
    the top next tokens with that cell restored when the trace kept them and `decode` is given.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> result = cu.trace(lm, "Otto Russet lives in", "Otto Russet", kinds=("mlp",), samples=1, progress=False)
        >>> trace_heatmap(result, "mlp").z.shape == tuple(result.scores["mlp"].shape)
        True
    """
    if kind not in result.scores:
        raise ValueError(f"this trace has no {kind!r} scores; it has {result.kinds}")
    if value not in ("score", "indirect_effect"):
        raise ValueError(f"unknown value {value!r}; use 'score' or 'indirect_effect'")
    z = (result.scores[kind] if value == "score" else result.indirect_effects(kind)).float().numpy()
    labels = token_labels(result)
    n_tokens, n_layers = z.shape
    hover = np.array([[f"{labels[t]!r} (token {t})" for _ in range(n_layers)] for t in range(n_tokens)], dtype=object)
    if decode is not None and kind in result.top_ids:
        top = np.array([[_top_text(result, kind, t, l, decode) for l in range(n_layers)] for t in range(n_tokens)],
                       dtype=object)
        hover = hover + "<br>restored, next token:<br>" + top
    return go.Heatmap(
        z=z, x=list(range(n_layers)), y=list(range(n_tokens)), customdata=hover, coloraxis=coloraxis, name=kind,
        hovertemplate=f"%{{customdata}}<br>layer %{{x}}<br>{value_label(result, value)} %{{z:.4f}}<extra>{kind}</extra>",
    )


def plot_trace(
    result: TraceResult,
    kinds: Sequence[str] | None = None,
    *,
    value: Value = "score",
    decode: Callable[[list[int]], str] | None = None,
    column: Column | None = None,
    title: str | None = None,
) -> go.Figure:
    """ROME's three-panel causal-trace figure (one panel per kind, in `result`'s order).

    Colour is `value` per (token, layer): the score with that state restored, floored at the
    corrupted run's `low`, or the indirect effect (score - low). `column="single" | "double"`
    sizes it for a paper (in a single column the panels stand one above the other). Also
    `result.plot()`.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> result = cu.trace(lm, "Otto Russet lives in", "Otto Russet", samples=2, window=3, progress=False)
        >>> fig = result.plot()
        >>> [panel.name for panel in fig.data], fig.layout.coloraxis.cmin == result.low
        (['hidden', 'mlp', 'attn'], True)
    """
    kinds = list(kinds) if kinds is not None else result.kinds
    labels = token_labels(result)
    stacked = stacks_panels(column, len(kinds))
    panel_inches, gap_inches = max(1.2, 0.5 + 0.14 * len(labels)), 0.55  # a gap holds tick labels and two titles
    height_inches = panel_inches * len(kinds) + gap_inches * (len(kinds) - 1) if stacked else panel_inches + 0.3
    fig = make_subplots(rows=len(kinds) if stacked else 1, cols=1 if stacked else len(kinds), shared_yaxes=not stacked,
                        horizontal_spacing=0.13, vertical_spacing=gap_inches / height_inches,
                        subplot_titles=[_panel_title(result, kind) for kind in kinds])
    for index, kind in enumerate(kinds, start=1):
        heatmap = trace_heatmap(result, kind, value=value, decode=decode)  # checks kind and value first
        heatmap.coloraxis = panel_color_axis(fig, index, **_color_axis(result, kind, value))
        row, col = (index, 1) if stacked else (1, index)
        fig.add_trace(heatmap, row=row, col=col)
        windowed = kind != "hidden" and result.settings.window > 1
        fig.update_xaxes(title_text="layer (window center)" if windowed else "layer", row=row, col=col)
    fig.update_yaxes(tickmode="array", tickvals=list(range(len(labels))), ticktext=labels, autorange="reversed")
    fig.update_layout(title=title if title is not None else f"{result.prompt!r} → {result.answer!r}",
                      height=max(300, 140 + 26 * len(labels)), width=330 * len(kinds) + 60)
    return paper_layout(fig, column, height_inches=height_inches) if column else fig


def _panel_title(result: TraceResult, kind: str) -> str:
    window = "" if kind == "hidden" or result.settings.window == 1 else f" (window {result.settings.window})"
    return f"{KIND_TITLES.get(kind, kind)}{window}"


def _color_axis(result: TraceResult, kind: str, value: Value) -> dict:
    z = result.scores[kind] if value == "score" else result.indirect_effects(kind)
    floor = result.low if value == "score" else 0.0
    ceiling = max(float(z.max()), (result.high if value == "score" else result.high - result.low), floor + 1e-6)
    return dict(colorscale=KIND_COLORSCALES.get(kind, "Greys"), cmin=floor, cmax=ceiling,
                colorbar=dict(title=dict(text=value_label(result, value) if value == "score"
                                                  else "indirect effect", side="right")))


def _top_text(result: TraceResult, kind: str, token: int, layer: int, decode: Callable[[list[int]], str]) -> str:
    return "<br>".join(f"  {decode([i])!r} {p:.3f}" for i, p in result.predictions(kind, token, layer))
