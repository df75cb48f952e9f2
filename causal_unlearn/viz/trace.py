"""One fact's causal trace as ROME draws it: tokens down the side, layers across; a kind scored per
attention head ("head": token x layer x head) as layer x head panels at chosen tokens."""

from __future__ import annotations

import re
from typing import Callable, Literal, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from causal_unlearn.patching import SITES
from causal_unlearn.tracing.result import TraceResult
from causal_unlearn.viz.style import (
    HEAD_NOUNS,
    KIND_COLORSCALES,
    KIND_TITLES,
    PIXELS_PER_INCH,
    Column,
    panel_color_axis,
    paper_layout,
    stacks_panels,
    subplot_number,
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
    return [_visible(token) + ("*" if start <= position < end else "") for position, token in enumerate(result.tokens)]


def _visible(token: str) -> str:
    """A token of whitespace only, drawn so that its label is not blank."""
    return token if token.strip() else token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def trace_caption(result: TraceResult) -> str:
    """What made the trace, for a figure that stands alone: the metric, the corruption, the
    window (where a kind restores one) and the number of corrupted copies.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> result = cu.trace(lm, "Otto Russet lives in", "Otto Russet", samples=2, progress=False)
        >>> trace_caption(result)
        "p(answer) · GaussianNoise(scale='s3'), scale 0.295 · window 2 · 2 samples"
    """
    settings = result.settings
    parts = [value_label(result), settings.corruption + (f", scale {settings.noise_scale:.3g}" if settings.noise_scale
                                                          else "")]
    if any(_windowed(kind) for kind in result.kinds):
        parts.append(f"window {settings.window}")
    parts.append(f"{settings.samples} sample{'s' * (settings.samples != 1)}")
    if settings.method != "exact":
        parts.append(f"{settings.method} ({settings.fixes})" if settings.fixes else settings.method)
    if result.exact_cells:
        parts.append("○ traced exactly")
    return " · ".join(parts)


def value_label(result: TraceResult, value: Value = "score") -> str:
    metric = result.settings.metric
    foil = re.fullmatch(r"logit_diff\(foil=(.*)\)", metric)
    label = f"logit difference vs {foil.group(1)}" if foil else METRIC_LABELS.get(metric, metric)
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
    _check(result, [kind], value)
    if result.scores[kind].dim() != 2:
        raise ValueError(f"{kind!r} scores are per head {tuple(result.scores[kind].shape)}: draw one token's heads "
                         "with head_heatmap")
    z = (result.scores[kind] if value == "score" else result.indirect_effects(kind)).float().numpy()
    labels = token_labels(result)
    n_tokens, n_layers = z.shape
    hover = np.array([[f"{labels[t]!r} (token {t})" for _ in range(n_layers)] for t in range(n_tokens)], dtype=object)
    if decode is not None and kind in result.top_ids:
        top = np.array([[_top_text(result, kind, t, l, decode) for l in range(n_layers)] for t in range(n_tokens)],
                       dtype=object)
        hover = hover + "<br>restored, next token:<br>" + top
    if kind in result.exact_cells:
        hover = hover + np.where(result.exact_cells[kind].numpy(), " · exact", " · estimated")
    return go.Heatmap(
        z=z, x=list(range(n_layers)), y=list(range(n_tokens)), customdata=hover, coloraxis=coloraxis, name=kind,
        hovertemplate=f"%{{customdata}}<br>layer %{{x}}<br>{value_label(result, value)} %{{z:.4f}}<extra>{kind}</extra>",
    )


def default_head_tokens(result: TraceResult) -> list[int]:
    """The positions whose heads a trace figure shows by default: the last subject token and
    the last token (once when they are the same).

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> result = cu.trace(lm, "Otto Russet lives in", "Otto Russet", kinds=("hidden",), samples=1, progress=False)
        >>> default_head_tokens(result), [result.tokens[t] for t in default_head_tokens(result)]
        ([2, 4], [' Russet', ' in'])
    """
    return list(dict.fromkeys([result.subject_range[1] - 1, len(result.tokens) - 1]))


def head_heatmap(
    result: TraceResult,
    token: int,
    kind: str = "head",
    *,
    value: Value = "score",
    decode: Callable[[list[int]], str] | None = None,
    coloraxis: str = "coloraxis",
) -> go.Heatmap:
    """The heatmap of one token's attention heads: layers across (x), heads down (y), so `z` is
    `scores[kind][token].T`. Hovering a cell shows its token, layer, head and value (and the top
    next tokens with that head restored when the trace kept them and `decode` is given).

    Examples:
        >>> import torch
        >>> from causal_unlearn.tracing import TraceResult, TraceSettings
        >>> settings = TraceSettings("demo", "GaussianNoise(scale='s3')", 1.0, 10, 1, 0, "prob", "exact")
        >>> heads = torch.rand(4, 3, 2)  # token layer head
        >>> result = TraceResult("Otto Russet lives in", "Otto Russet", ["Otto", " Russet", " lives", " in"],
        ...                      torch.arange(4), (0, 2), " Houston", 0, 0.9, 0.1, True, {"head": heads}, settings)
        >>> panel = head_heatmap(result, 1)
        >>> panel.z.tolist() == heads[1].T.tolist(), list(panel.x), list(panel.y)  # layers across, heads down
        (True, [0, 1, 2], [0, 1])
    """
    _check(result, [kind], value)
    table = result.scores[kind] if value == "score" else result.indirect_effects(kind)
    if table.dim() != 3:
        raise ValueError(f"{kind!r} scores are {tuple(table.shape)} (token, layer), not per head: "
                         "draw them with trace_heatmap")
    token = _positions(result, [token])[0]
    z = table[token].T.float().numpy()  # head layer
    n_heads, n_layers = z.shape
    where = f"{token_labels(result)[token]!r} (token {token})"
    hover = np.full((n_heads, n_layers), where, dtype=object)
    top_ids = result.top_ids.get(kind)
    if decode is not None and top_ids is not None and top_ids.dim() == 4:  # token layer head k
        top = np.array([[_top_text(result, kind, token, l, decode, unit=h) for l in range(n_layers)]
                        for h in range(n_heads)], dtype=object)
        hover = hover + "<br>restored, next token:<br>" + top
    return go.Heatmap(
        z=z, x=list(range(n_layers)), y=list(range(n_heads)), customdata=hover, coloraxis=coloraxis, name=kind,
        hovertemplate=f"%{{customdata}}<br>layer %{{x}}<br>head %{{y}}<br>{value_label(result, value)} "
                      f"%{{z:.4f}}<extra>{kind}</extra>",
    )


def plot_trace(
    result: TraceResult,
    kinds: Sequence[str] | None = None,
    *,
    value: Value = "score",
    decode: Callable[[list[int]], str] | None = None,
    column: Column | None = None,
    title: str | None = None,
    head_tokens: Sequence[int] | None = None,
) -> go.Figure:
    """ROME's three-panel causal-trace figure (one panel per kind, in `result`'s order).

    Colour is `value` per (token, layer): the score with that state restored, floored at the
    corrupted run's `low`, or the indirect effect (score - low). A kind scored per attention
    head ("head": token x layer x head) is drawn below, one layer x head panel per token in
    `head_tokens` (by default the last subject token and the last token; see
    `plot_head_effects`). `column="single" | "double"` sizes it for a paper (in a single column
    the panels stand one above the other). Also `result.plot()`.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> result = cu.trace(lm, "Otto Russet lives in", "Otto Russet", samples=2, window=3, progress=False)
        >>> fig = result.plot()
        >>> [panel.name for panel in fig.data], fig.layout.coloraxis.cmin == result.low
        (['hidden', 'mlp', 'attn'], True)
    """
    kinds = list(kinds) if kinds is not None else result.kinds
    _check(result, kinds, value)
    labels = token_labels(result)
    per_token = [(kind, None) for kind in kinds if result.scores[kind].dim() == 2]
    tokens = _positions(result, head_tokens) if head_tokens is not None else default_head_tokens(result)
    per_head = [(kind, token) for kind in kinds if result.scores[kind].dim() == 3 for token in tokens]
    n_heads = max((result.scores[kind].shape[2] for kind, _ in per_head), default=0)
    panels = per_token + per_head
    stacked = stacks_panels(column, len(panels))
    grid = [[panel] for panel in panels] if stacked else [row for row in (per_token, per_head) if row]
    token_inches, gap_inches = max(1.2, 0.5 + 0.14 * len(labels)), 0.55  # a gap holds tick labels and two titles
    head_inches = min(3.0, max(1.2, 0.5 + 0.08 * n_heads))
    row_inches = [token_inches if row[0][1] is None else head_inches for row in grid]
    plot_inches = sum(row_inches) + gap_inches * (len(grid) - 1)
    if per_head:  # the margins (the paper template's 28 + 32 px) come on top of the panels and gaps
        height_inches, spacing = plot_inches + 60 / PIXELS_PER_INCH, gap_inches / plot_inches
    else:  # as before heads were drawn
        height_inches = plot_inches + (0 if stacked else 0.3)
        spacing = gap_inches / height_inches
    n_cols = max(len(row) for row in grid)
    fig = make_subplots(rows=len(grid), cols=n_cols, shared_yaxes=not stacked, horizontal_spacing=0.13,
                        vertical_spacing=spacing, row_heights=row_inches if per_head else None,
                        specs=[[{}] * len(row) + [None] * (n_cols - len(row)) for row in grid],
                        subplot_titles=[_panel_title(result, kind, token) for row in grid for kind, token in row])
    for r, row in enumerate(grid, start=1):
        for c, (kind, token) in enumerate(row, start=1):
            _add_panel(fig, result, kind, token, r, c, value=value, decode=decode, labels=labels)
    # on screen: 150 px an inch of panels and gaps, and plotly's default margins (100 + 80 px)
    height = round(180 + 150 * plot_inches) if per_head else max(300, 140 + 26 * len(labels))
    default_title = f"{result.prompt!r} → {result.answer!r}<br><sup>{trace_caption(result)}</sup>"
    fig.update_layout(title=title if title is not None else default_title,
                      height=height, width=330 * n_cols + 60)
    return paper_layout(fig, column, height_inches=height_inches) if column else fig


def plot_head_effects(
    result: TraceResult,
    tokens: Sequence[int] | None = None,
    *,
    kind: str = "head",
    value: Value = "score",
    decode: Callable[[list[int]], str] | None = None,
    column: Column | None = None,
    title: str | None = None,
) -> go.Figure:
    """The attention heads alone: one heatmap per token in `tokens` (positions; by default the
    last subject token and the last token, once if they are the same) with layers across and
    heads down, coloured as `plot_trace` colours its panels (floor at `low` for scores).

    Examples:
        >>> import torch
        >>> from causal_unlearn.tracing import TraceResult, TraceSettings
        >>> settings = TraceSettings("demo", "GaussianNoise(scale='s3')", 1.0, 10, 1, 0, "prob", "exact")
        >>> result = TraceResult("Otto Russet lives in", "Otto Russet", ["Otto", " Russet", " lives", " in"],
        ...                      torch.arange(4), (0, 2), " Houston", 0, 0.9, 0.1, True,
        ...                      {"head": torch.rand(4, 3, 2)}, settings)
        >>> fig = plot_head_effects(result)
        >>> [a.text for a in fig.layout.annotations]
        ["heads at ' Russet' (last subject token)", "heads at ' in' (last token)"]
    """
    _check(result, [kind], value)
    if result.scores[kind].dim() != 3:
        raise ValueError(f"{kind!r} scores are {tuple(result.scores[kind].shape)} (token, layer), not per head; "
                         "draw them with plot_trace")
    return plot_trace(result, [kind], value=value, decode=decode, column=column, title=title, head_tokens=tokens)


def _check(result: TraceResult, kinds: Sequence[str], value: str) -> None:
    for kind in kinds:
        if kind not in result.scores:
            raise ValueError(f"this trace has no {kind!r} scores; it has {result.kinds}")
        if result.scores[kind].dim() not in (2, 3):
            raise ValueError(f"{kind!r} scores are {tuple(result.scores[kind].shape)}: expected (token, layer) "
                             "or (token, layer, head)")
    if value not in ("score", "indirect_effect"):
        raise ValueError(f"unknown value {value!r}; use 'score' or 'indirect_effect'")


def _positions(result: TraceResult, tokens: Sequence[int]) -> list[int]:
    """`tokens` as positions from 0 (negative ones count from the end), each once, in order."""
    n = len(result.tokens)
    bad = [t for t in tokens if not isinstance(t, (int, np.integer)) or not -n <= t < n]
    if bad:
        raise ValueError(f"tokens {bad} are not positions in this trace's {n} tokens {result.tokens}")
    if not tokens:
        raise ValueError("no tokens to show the heads at")
    return list(dict.fromkeys(int(t) % n for t in tokens))


def _add_panel(fig: go.Figure, result: TraceResult, kind: str, token: int | None, row: int, col: int, *,
               value: Value, decode: Callable[[list[int]], str] | None, labels: list[str]) -> None:
    """One panel: a kind's tokens x layers, or (`token` given) its heads at that token."""
    heatmap = (trace_heatmap(result, kind, value=value, decode=decode) if token is None
               else head_heatmap(result, token, kind, value=value, decode=decode))
    heatmap.coloraxis = panel_color_axis(fig, subplot_number(fig, row, col), **_color_axis(result, kind, value))
    fig.add_trace(heatmap, row=row, col=col)
    if token is None and kind in result.exact_cells:
        fig.add_trace(_exact_markers(result, kind), row=row, col=col)
    if token is None:
        windowed = _windowed(kind) and result.settings.window > 1
        fig.update_xaxes(title_text="layer (window center)" if windowed else "layer", row=row, col=col)
        fig.update_yaxes(tickmode="array", tickvals=list(range(len(labels))), ticktext=labels, autorange="reversed",
                         row=row, col=col)
    else:
        fig.update_xaxes(title_text="layer", row=row, col=col)
        fig.update_yaxes(title_text="head" if col == 1 else None, autorange="reversed", row=row, col=col)


def _exact_markers(result: TraceResult, kind: str) -> go.Scatter:
    """Rings on the cells a guided trace scored exactly (past the subject's start: before it, every
    cell is the corrupted score either way)."""
    mask = result.exact_cells[kind].clone()
    mask[: result.subject_range[0]] = False
    tokens, layers = mask.nonzero(as_tuple=True)
    return go.Scatter(x=layers.tolist(), y=tokens.tolist(), mode="markers", name="traced exactly", showlegend=False,
                      hoverinfo="skip", marker=dict(symbol="circle-open", size=6, color="black", line_width=1))


def _panel_title(result: TraceResult, kind: str, token: int | None = None) -> str:
    if token is not None:
        noun = HEAD_NOUNS.get(kind, KIND_TITLES.get(kind, kind))
        return f"{noun} at {result.tokens[token]!r} ({_role(result, token)})"
    window = f" (window {result.settings.window})" if _windowed(kind) and result.settings.window > 1 else ""
    return f"{KIND_TITLES.get(kind, kind)}{window}"


def _windowed(kind: str) -> bool:
    """Whether a kind's cells restore a window of layers (the built-in `mlp` and `attn`)."""
    return kind in SITES and SITES[kind].windowed


def _role(result: TraceResult, token: int) -> str:
    roles = [name for name, position in (("last subject token", result.subject_range[1] - 1),
                                         ("last token", len(result.tokens) - 1)) if position == token]
    return ", ".join(roles) or f"token {token}"


def _color_axis(result: TraceResult, kind: str, value: Value) -> dict:
    z = result.scores[kind] if value == "score" else result.indirect_effects(kind)
    floor = result.low if value == "score" else 0.0
    ceiling = max(float(z.max()), (result.high if value == "score" else result.high - result.low), floor + 1e-6)
    return dict(colorscale=KIND_COLORSCALES.get(kind, "Greys"), cmin=floor, cmax=ceiling,
                colorbar=dict(title=dict(text=value_label(result, value) if value == "score"
                                                  else "indirect effect", side="right")))


def _top_text(result: TraceResult, kind: str, token: int, layer: int, decode: Callable[[list[int]], str],
              unit: int | None = None) -> str:
    return "<br>".join(f"  {decode([i])!r} {p:.3f}" for i, p in result.predictions(kind, token, layer, unit))
