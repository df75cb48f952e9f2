"""Unlearning curves: each loss term and alpha (the learning rate for objectives without one)
per step, and the forget / retain accuracies at each evaluation. One builder serves the static
figure and the live dashboard."""

from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from causal_unlearn.viz.style import Column, paper_layout

PANELS = ("loss terms (training batches)", "retain weight alpha", "accuracy on the evaluation rows")
NOT_A_TERM = ("step", "epoch", "lr", "grad_norm", "alpha")
ACCURACIES = ("forget_answer_accuracy", "retain_answer_accuracy", "forget_token_accuracy", "retain_token_accuracy")


def unlearning_figure() -> go.Figure:
    """The empty three-panel layout the curves are drawn into.

    Examples:
        >>> [annotation.text for annotation in unlearning_figure().layout.annotations][1]
        'retain weight alpha'
    """
    fig = make_subplots(rows=1, cols=3, subplot_titles=PANELS, horizontal_spacing=0.08)
    fig.update_xaxes(title_text="optimizer step")
    fig.update_yaxes(title_text="alpha", row=1, col=2)
    fig.update_yaxes(title_text="accuracy", range=[-0.02, 1.02], row=1, col=3)
    fig.update_layout(height=380, width=1200, legend=dict(orientation="h", y=-0.22, x=0.5, xanchor="center"))
    return fig


def update_curves(fig: go.Figure, history: Sequence[Mapping[str, float]], evaluations: Sequence[Mapping[str, float]]) -> go.Figure:
    """Set each curve of `fig` to the records so far, adding curves for new terms.

    Examples:
        >>> history = [dict(step=1, epoch=0, lr=1e-3, loss=0.5, alpha=3.0), dict(step=2, epoch=0, lr=5e-4, loss=0.2, alpha=3.0)]
        >>> fig = update_curves(unlearning_figure(), history, [dict(step=2, forget_answer_accuracy=0.5)])
        >>> [(trace.name, list(trace.y)) for trace in fig.data]
        [('loss', [0.5, 0.2]), ('alpha', [3.0, 3.0]), ('forget answer accuracy', [0.5])]
        >>> without_alpha = update_curves(unlearning_figure(), [dict(step=1, lr=1e-3, loss=0.5)], [])
        >>> [trace.name for trace in without_alpha.data], without_alpha.layout.annotations[1].text
        (['lr', 'loss'], 'learning rate')
    """
    curves: dict[tuple[int, str], tuple[list, list]] = {}
    names = _keys(history)
    # SHA256's alpha is the schedule worth watching; other objectives have only the learning rate
    schedule = "alpha" if "alpha" in names or not names else "lr"
    if schedule == "lr":
        fig.layout.annotations[1].text = "learning rate"
        fig.update_yaxes(title_text="learning rate", row=1, col=2)
    for name in names:
        if name == schedule:
            curves[(2, name)] = _series(history, name)
        elif name not in NOT_A_TERM:
            curves[(1, name)] = _series(history, name)
    for name in ACCURACIES:
        if any(name in record for record in evaluations):
            curves[(3, name)] = _series(evaluations, name)
    existing = {trace.meta: trace for trace in fig.data}
    for (col, name), (x, y) in curves.items():
        key = f"{col}/{name}"
        if key in existing:
            existing[key].update(x=x, y=y)
        else:
            fig.add_trace(_curve(key, name, x, y, col), row=1, col=col)
    return fig


def mark_selected_step(fig: go.Figure, step: int) -> go.Figure:
    """A dotted line at `step` on the loss and accuracy panels.

    Examples:
        >>> history = [dict(step=1, loss=0.5), dict(step=2, loss=0.2)]
        >>> fig = update_curves(unlearning_figure(), history, [dict(step=2, forget_answer_accuracy=0.5)])
        >>> [shape.x0 for shape in mark_selected_step(fig, 2).layout.shapes]  # panels without data get none
        [2, 2]
    """
    for col in (1, 3):
        fig.add_vline(x=step, line=dict(color="grey", dash="dot", width=1), row=1, col=col)
    return fig


def plot_unlearning(result, *, column: Column | None = None, title: str | None = None) -> go.Figure:
    """The curves of an `UnlearnResult`, with the step whose weights the model holds marked.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> result = cu.unlearn(lm, world.forget[:8], world.retain[:8], layers=[0], epochs=1, lr=1e-3, batch_size=4,
        ...                     grad_accum=1, eval_every=2, progress=False)
        >>> fig = plot_unlearning(result); result.revert()
        >>> sorted(trace.name for trace in fig.data)[:4], len(fig.data[0].x) == len(result.history)
        (['alpha', 'forget answer accuracy', 'forget token accuracy', 'forget_ce'], True)
    """
    fig = mark_selected_step(update_curves(unlearning_figure(), result.history, result.evaluations), result.selected_step)
    layers = ", ".join(map(str, result.selection.layers))
    fig.update_layout(title=title if title is not None else f"{result.objective.label} on {result.selection.modules} "
                      f"of layers {layers}: kept step {result.selected_step} ({result.seconds:.0f} s)")
    return paper_layout(fig, column, height_inches=2.0 if column == "double" else 2.6) if column else fig


def _keys(records: Sequence[Mapping[str, float]]) -> list[str]:
    return list(dict.fromkeys(key for record in records for key in record))


def _series(records: Sequence[Mapping[str, float]], name: str) -> tuple[list, list]:
    kept = [record for record in records if name in record]
    return [record["step"] for record in kept], [record[name] for record in kept]


def _curve(key: str, name: str, x: list, y: list, col: int) -> go.Scatter:
    split = name.split("_")[0]
    dash = "dot" if "token" in name else "solid"
    color = {"forget": "#D55E00", "retain": "#0072B2"}.get(split) if col == 3 else None
    label = name.replace("_", " ") if col == 3 else name
    value = {1: "%{y:.4f}", 2: "%{y:.4g}", 3: "%{y:.3f}"}[col]
    return go.Scatter(x=x, y=y, name=label, meta=key, mode="lines+markers" if col == 3 else "lines",
                      line=dict(dash=dash, color=color, width=1.5), marker=dict(size=4),
                      hovertemplate=f"step %{{x}}<br>{label} {value}<extra></extra>")
