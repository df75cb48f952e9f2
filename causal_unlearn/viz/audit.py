"""The audit at a glance: recall asked other ways, after relearning and quantization, and what a
linear read-out still finds."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from causal_unlearn.auditing.result import AuditResult
from causal_unlearn.viz.style import OKABE_ITO, Column, paper_layout

VARIANT_COLORS = {
    "original": "#999999", "edited": OKABE_ITO[0], "edited, int8": OKABE_ITO[1], "edited, bf16": OKABE_ITO[5],
    "edited, relearned": OKABE_ITO[3], "edited, relearned on retain": OKABE_ITO[4],
    "original, relearned": "#666666", "original, relearned on retain": "#CCCCCC",
}
PANELS = (("probes", "recall", "held-out probes: recall"), ("choice", "top-1", "multiple choice: top-1"),
          ("relearning", "recall", "after relearning: recall"), ("decoding", "accuracy", "linear read-out (forget)"))


def plot_audit(result: AuditResult, *, attribute: str = "all", decode_attribute: str = "city",
               column: Column | None = None, title: str | None = None) -> go.Figure:
    """Four panels: greedy recall of held-out probes per split (with the int8 and bf16 copies),
    multiple-choice top-1 (dotted: chance), forget recall after the relearning attacks, and the
    per-layer accuracy of a linear read-out of `decode_attribute` on forget subjects (dotted:
    chance). Checks the audit did not run leave their panel empty.

    Examples:
        >>> from causal_unlearn.auditing.result import AuditResult
        >>> records = [dict(check="probes", measure="recall", split="forget", attribute="all", variant=v,
        ...                 layer=None, value=x, n=10) for v, x in (("original", 0.9), ("edited", 0.1))]
        >>> [trace.name for trace in plot_audit(AuditResult(records, {})).data]
        ['original', 'edited']
    """
    frame = result.to_dataframe()
    fig = make_subplots(rows=1, cols=len(PANELS), subplot_titles=[p[2] for p in PANELS], horizontal_spacing=0.07)
    shown: set[str] = set()
    for col, (check, measure, _) in enumerate(PANELS, start=1):
        if check == "decoding":
            rows = frame[(frame.check == check) & (frame.attribute == decode_attribute) & (frame.split == "forget")]
            for variant, group in rows[rows.measure == "accuracy"].groupby("variant", sort=False):
                fig.add_trace(_trace(go.Scatter, variant, shown, x=group.layer, y=group.value, mode="lines+markers",
                                     hovertemplate=f"{variant}<br>layer %{{x}}: %{{y:.3f}}<extra></extra>"), row=1, col=col)
            chance = rows[rows.measure == "chance"].value
            if len(chance):
                fig.add_hline(y=float(chance.max()), line=dict(color="grey", dash="dot", width=1), row=1, col=col)
            fig.update_xaxes(title_text="layer", dtick=1, row=1, col=col)
            continue
        rows = frame[(frame.check == check) & (frame.measure == measure) & (frame.attribute == attribute)]
        if check == "probes":  # the quantized copies are recall on the same probes
            rows = frame[(frame.check.isin(["probes", "precision"])) & (frame.measure == "recall")
                         & (frame.attribute == attribute)]
        for variant, group in rows.groupby("variant", sort=False):
            fig.add_trace(_trace(go.Bar, variant, shown, x=group.split, y=group.value,
                                 hovertemplate=f"{variant}<br>%{{x}}: %{{y:.3f}}<extra></extra>"), row=1, col=col)
        chance = frame[(frame.check == check) & (frame.measure == "chance") & (frame.attribute == attribute)]
        if len(chance):
            fig.add_hline(y=float(chance.value.mean()), line=dict(color="grey", dash="dot", width=1), row=1, col=col)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_layout(barmode="group", height=400, width=1200, title=title or "audit: asked in ways unlearning never saw",
                      legend=dict(orientation="h", y=-0.25, x=0.5, xanchor="center"))
    return paper_layout(fig, column, height_inches=2.6) if column else fig


def _trace(kind, variant: str, shown: set[str], **kwargs):
    trace = kind(name=variant, legendgroup=variant, showlegend=variant not in shown,
                 marker_color=VARIANT_COLORS.get(variant, OKABE_ITO[7]), **kwargs)
    shown.add(variant)
    return trace
