"""Did the edit hit the right place? Traces before vs after, and the layer-set ablation."""

from __future__ import annotations

import itertools
from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from causal_unlearn.localization.verify import TraceComparison
from causal_unlearn.viz.style import KIND_COLORS, OKABE_ITO, Column, paper_layout

# `compare_layer_sets()` / `evaluate().to_dict()` column -> the short name tables and charts show
SCORE_LABELS = {
    "Task2/forget_knowledge": "forget QA", "Task2/retain_knowledge": "retain QA",
    "Task2/forget_regurgitation": "forget SC", "Task2/retain_regurgitation": "retain SC",
    "GeneralKnowledge/retain_knowledge": "GK retain", "task_aggregate": "aggregate", "mia_score": "MIA",
    "utility": "GK held out", "final": "final",
}
ABLATION_METRICS = ("forget QA", "retain QA", "GK held out", "MIA", "final")


def score_label(name: str) -> str:
    """The short name of a score key: `SCORE_LABELS`, else the key in words.

    Examples:
        >>> score_label("Task2/forget_knowledge"), score_label("mia_auc"), score_label("Task1/retain_regurgitation")
        ('forget QA', 'MIA AUC', 'Task1 retain regurgitation')
    """
    return SCORE_LABELS.get(name) or {"mia_auc": "MIA AUC"}.get(name) or name.replace("/", " ").replace("_", " ")


def plot_trace_comparison(
    comparison: TraceComparison, kind: str = "mlp", *, column: Column | None = None, title: str | None = None
) -> go.Figure:
    """Left: each layer's mean indirect effect before and after unlearning (localized layers
    shaded). Right: each fact's clean p(answer) before and after.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> facts = cu.make_bios_world().facts_to_trace("forget", "city")[:3]
        >>> traces = cu.trace_facts(lm, facts, kinds=("mlp",), window=1, samples=2, progress=False)
        >>> fig = plot_trace_comparison(cu.compare_traces(traces, traces, layers=[0]))
        >>> [trace.name for trace in fig.data]
        ['before', 'after', 'before', 'after']
    """
    effects = comparison.layer_effects(kind)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.65, 0.35], horizontal_spacing=0.12,
                        subplot_titles=[f"{kind} indirect effect by layer", "p(answer) per fact"])
    color = KIND_COLORS.get(kind, OKABE_ITO[0])
    for name, fill, opacity in (("before", color, 0.45), ("after", color, 1.0)):
        fig.add_trace(go.Bar(x=effects.layer, y=effects[name], name=name, legendgroup=name, marker_color=fill,
                             opacity=opacity, customdata=effects.token_group,
                             hovertemplate=f"layer %{{x}} ({name})<br>%{{customdata}}: %{{y:.4f}}<extra></extra>"),
                      row=1, col=1)
    for layer in comparison.layers:  # after the bars: plotly leaves shapes out of subplots that have no data yet
        fig.add_vrect(x0=layer - 0.5, x1=layer + 0.5, fillcolor="#F0E442", opacity=0.35, line_width=0, layer="below",
                      row=1, col=1)
    facts = comparison.to_dataframe()
    for name, opacity in (("before", 0.45), ("after", 1.0)):
        fig.add_trace(go.Box(y=facts[f"p_answer_{name}"], name=name, legendgroup=name, showlegend=False, boxpoints="all",
                             jitter=0.4, pointpos=0, marker=dict(color=color, opacity=opacity, size=4),
                             line=dict(color=color), customdata=facts.prompt,
                             hovertemplate="%{customdata}<br>p(answer) %{y:.3f}<extra></extra>"), row=1, col=2)
    summary = comparison.summary(kind)
    fig.update_xaxes(title_text="layer (shaded: localized)", dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="indirect effect", row=1, col=1)
    fig.update_yaxes(title_text="p(answer), clean run", range=[-0.02, 1.02], row=1, col=2)
    fig.update_layout(barmode="group", height=380, width=900, title=title if title is not None else
                      f"{len(facts)} facts: effect at localized layers {summary['effect_before']:.3f} → "
                      f"{summary['effect_after']:.3f}, p(answer) {summary['p_answer_before']:.3f} → "
                      f"{summary['p_answer_after']:.3f}")
    return paper_layout(fig, column, height_inches=2.2 if column == "double" else 2.4) if column else fig


def plot_layer_sets(
    table, metrics: Sequence[str] = ABLATION_METRICS, *, column: Column | None = None, title: str | None = None
) -> go.Figure:
    """The ablation table from `compare_layer_sets` (or `benchmarks/unlearn_grid.py`'s CSV) as bars: one
    panel per metric, layer sets across, one colour per objective; the original model's row
    (layer set "original") is the dotted line.

    Examples:
        >>> import pandas as pd
        >>> table = pd.DataFrame(dict(objective=["sha256", "sha256"], layer_set=["traced", "all"],
        ...                           **{"Task2/forget_knowledge": [0.0, 0.1], "final": [0.8, 0.6]}))
        >>> fig = plot_layer_sets(table, metrics=["forget QA", "final"])
        >>> [(trace.name, trace.y.tolist()) for trace in fig.data]
        [('sha256', [0.0, 0.1]), ('sha256', [0.8, 0.6])]
    """
    table = table.rename(columns={**SCORE_LABELS, "layer_set": "layer set"})
    missing = [m for m in ("objective", "layer set", *metrics) if m not in table.columns]
    if missing:
        raise ValueError(f"the table has no {missing} columns; it has {list(table.columns)}")
    original = table[table["layer set"] == "original"]
    table = table[table["layer set"] != "original"]
    objectives = list(dict.fromkeys(table.objective))
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=list(metrics), shared_yaxes=True,
                        horizontal_spacing=0.02)
    for index, metric in enumerate(metrics, start=1):
        for color, objective in zip(itertools.cycle(OKABE_ITO), objectives):
            rows = table[table.objective == objective]
            fig.add_trace(go.Bar(x=rows["layer set"], y=rows[metric], name=objective, legendgroup=objective,
                                 marker_color=color, showlegend=index == 1,
                                 hovertemplate=f"{objective}<br>%{{x}}<br>{metric} %{{y:.3f}}<extra></extra>"),
                          row=1, col=index)
        if len(original):  # the unedited model, as a reference line rather than one more bar
            fig.add_hline(y=float(original[metric].iloc[0]), line=dict(color="grey", dash="dot", width=1), row=1, col=index)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_xaxes(tickangle=-45)
    fig.update_layout(barmode="group", height=420, width=260 * len(metrics) + 120, title=title or
                      "each objective on the traced layers and on control layer sets of the same size "
                      "(dotted: before unlearning)",
                      legend=dict(orientation="h", y=-0.45, x=0.5, xanchor="center"))
    return paper_layout(fig, column, height_inches=2.6) if column else fig
