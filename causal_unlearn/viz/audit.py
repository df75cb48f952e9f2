"""The audit at a glance: recall asked other ways, after relearning and quantization, what a
linear read-out still finds, the re-trace, the whitebox attacks (the logit lens, the bios' own
openings) and the membership-inference attacks. A panel per check the audit ran, none for the rest."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from causal_unlearn.auditing.result import AuditResult
from causal_unlearn.viz.style import OKABE_ITO, Column, paper_layout

VARIANT_COLORS = {
    "original": "#999999", "edited": OKABE_ITO[0], "edited, int8": OKABE_ITO[1], "edited, bf16": OKABE_ITO[5],
    "edited, nf4": OKABE_ITO[2],
    "edited, relearned": OKABE_ITO[3], "edited, relearned on retain": OKABE_ITO[4],
    "original, relearned": "#666666", "original, relearned on retain": "#CCCCCC",
}
BAR_PANELS = {  # check -> (the checks whose recall it shows, its measure (None: the check's first), its title)
    "probes": (("probes", "precision"), "recall", "held-out probes: recall"),
    "choice": (("choice",), "top-1", "multiple choice: top-1"),
    "relearning": (("relearning",), "recall", "after relearning: recall"),
    "head_projection": (("head_projection",), None, "head projection: {measure}<br>at any layer (holdout: chance)"),
    "probability_delta": (("probability_delta",), None, "probability delta: {measure}<br>(holdout: chance)"),
    "bio_openings": (("bio_openings",), "recall", "bio openings: recall<br>(holdout: chance)"),
}
NEVER_KNOWN = {"holdout": " (never known: the chance level)"}  # hover note per split
PER_ROW = 5  # panels per row of the figure
CHANCE = dict(color="grey", dash="dot", width=1)


def plot_audit(result: AuditResult, *, attribute: str = "all", decode_attribute: str | None = None,
               column: Column | None = None, title: str | None = None) -> go.Figure:
    """A panel per check the audit ran: greedy recall of held-out probes per split (with the int8,
    bf16 and 4-bit NF4 copies), multiple-choice top-1 (dotted: each split's chance), forget recall after
    the relearning attacks, the whitebox attacks per split (head projection and probability delta
    at B = `AuditConfig.lens_top`, recall after the bios' openings; holdout people were never
    known, so their bars are the chance level), the per-layer accuracy of a linear read-out of
    `decode_attribute` (default: the first decoded) on forget subjects (dotted: chance), and the
    forget facts' per-layer MLP effect re-traced before and after, and each membership attack's
    AUC of telling the forget rows from never-seen ones (dotted: 0.5, cannot tell them apart).

    Examples:
        >>> from causal_unlearn.auditing.result import AuditResult
        >>> records = [dict(check="probes", measure="recall", split="forget", attribute="all", variant=v,
        ...                 layer=None, value=x, n=10) for v, x in (("original", 0.9), ("edited", 0.1))]
        >>> fig = plot_audit(AuditResult(records, {}))
        >>> [trace.name for trace in fig.data], [a.text for a in fig.layout.annotations]
        (['original', 'edited'], ['held-out probes: recall'])
    """
    frame = result.to_dataframe()
    decode_attribute = decode_attribute or next(iter(result.decoded_attributes), None)
    panels = [check for check, (checks, _, _) in BAR_PANELS.items() if frame.check.isin(checks).any()]
    if (frame.check == "membership").any():
        panels.append("membership")
    if decode_attribute in result.decoded_attributes:
        panels.append("decoding")
    elif decode_attribute is not None and result.decoded_attributes:
        raise ValueError(f"the audit decoded no {decode_attribute!r}; it decoded {result.decoded_attributes}")
    if result.comparison is not None:
        panels.append("retrace")
    if not panels:
        raise ValueError("the audit has no measurements to draw")
    titles = [BAR_PANELS[p][2].format(measure=_measure(result, p)) if p in BAR_PANELS else
              f"read-out of {decode_attribute} (forget)" if p == "decoding" else
              "membership inference: AUC<br>(forget vs never seen; 0.5: chance)" if p == "membership" else
              "re-traced: MLP effect (forget)" for p in panels]
    n_rows, n_cols = -(-len(panels) // PER_ROW), min(len(panels), PER_ROW)
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=titles, horizontal_spacing=0.07,
                        vertical_spacing=0.22 if n_rows > 1 else None)
    shown: set[str] = set()
    for i, panel in enumerate(panels):
        at = dict(row=i // PER_ROW + 1, col=i % PER_ROW + 1)
        if panel == "decoding":
            _decoding_panel(fig, frame, decode_attribute, shown, at)
        elif panel == "retrace":
            _retrace_panel(fig, result, shown, at)
        elif panel == "membership":
            _membership_panel(fig, frame, shown, at)
        else:
            _bar_panel(fig, frame, result, panel, attribute, shown, at)
    fig.update_layout(barmode="group", height=400 * n_rows, width=300 * n_cols + 100,
                      title=title or "audit: asked in ways unlearning never saw",
                      legend=dict(orientation="h", y=-0.25 / n_rows, x=0.5, xanchor="center"))
    return paper_layout(fig, column, height_inches=2.6 * n_rows) if column else fig


def _measure(result: AuditResult, panel: str) -> str:
    """The measure a bar panel draws: its own, or its check's first (the lens' "top-B")."""
    checks, measure, _ = BAR_PANELS[panel]
    return measure or next(filter(None, (result.first_measure(check) for check in checks)), "")


def _bar_panel(fig: go.Figure, frame, result: AuditResult, panel: str, attribute: str, shown: set[str],
               at: dict) -> None:
    checks, measure = BAR_PANELS[panel][0], _measure(result, panel)
    rows = frame[frame.check.isin(checks) & (frame.measure == measure) & (frame.attribute == attribute)]
    splits = list(dict.fromkeys(rows.split))
    for variant, group in rows.groupby("variant", sort=False):
        fig.add_trace(_trace(go.Bar, variant, shown, x=group.split, y=group.value,
                             customdata=[NEVER_KNOWN.get(split, "") for split in group.split],
                             hovertemplate=f"{variant}<br>%{{x}}%{{customdata}}: %{{y:.3f}}<extra></extra>"),
                      **at)
    fig.update_xaxes(categoryorder="array", categoryarray=splits, **at)
    fig.update_yaxes(range=[0, 1.02], **at)
    chance = frame[frame.check.isin(checks) & (frame.measure == "chance") & (frame.attribute == attribute)]
    for split, value in chance.groupby("split", sort=False).value.mean().items():
        # each split's own chance (its probes have as many choices as their attribute has answers),
        # across its group of bars: a category axis places shapes at the category's index
        x = splits.index(split)
        fig.add_shape(type="line", x0=x - 0.45, x1=x + 0.45, y0=value, y1=value, line=CHANCE, **at)


def _decoding_panel(fig: go.Figure, frame, attribute: str, shown: set[str], at: dict) -> None:
    rows = frame[(frame.check == "decoding") & (frame.attribute == attribute) & (frame.split == "forget")]
    for variant, group in rows[rows.measure == "accuracy"].groupby("variant", sort=False):
        fig.add_trace(_trace(go.Scatter, variant, shown, x=group.layer, y=group.value, mode="lines+markers",
                             hovertemplate=f"{variant}<br>layer %{{x}}: %{{y:.3f}}<extra></extra>"), **at)
    chance = rows[rows.measure == "chance"].value
    fig.add_hline(y=float(chance.max()), line=CHANCE, **at)
    fig.update_xaxes(title_text="layer", dtick=1, **at)
    fig.update_yaxes(range=[0, 1.02], **at)


def _membership_panel(fig: go.Figure, frame, shown: set[str], at: dict) -> None:
    rows = frame[(frame.check == "membership") & frame.measure.str.endswith(" AUC")]
    attacks = list(dict.fromkeys(rows.measure.str.removesuffix(" AUC")))
    for variant, group in rows.groupby("variant", sort=False):
        fig.add_trace(_trace(go.Bar, variant, shown, x=group.measure.str.removesuffix(" AUC"), y=group.value,
                             hovertemplate=f"{variant}<br>%{{x}}: AUC %{{y:.3f}}<extra></extra>"), **at)
    fig.update_xaxes(categoryorder="array", categoryarray=attacks, tickangle=-45, **at)
    fig.update_yaxes(range=[0, 1.02], **at)
    fig.add_hline(y=0.5, line=CHANCE, **at)


def _retrace_panel(fig: go.Figure, result: AuditResult, shown: set[str], at: dict) -> None:
    effects = result.comparison.layer_effects("mlp")
    for variant, column in (("original", "before"), ("edited", "after")):
        fig.add_trace(_trace(go.Scatter, variant, shown, x=effects.layer, y=effects[column], mode="lines+markers",
                             customdata=effects.token_group,
                             hovertemplate=f"{variant}<br>layer %{{x}} (%{{customdata}}): %{{y:.3f}}<extra></extra>"),
                      **at)
    for layer in result.comparison.layers:  # the edited layers
        fig.add_vrect(x0=layer - 0.5, x1=layer + 0.5, fillcolor="#999999", opacity=0.15, line_width=0, **at)
    fig.update_xaxes(title_text="layer", dtick=1, **at)
    fig.update_yaxes(title_text="mean indirect effect" if at["col"] == 1 else None, **at)


def _trace(kind, variant: str, shown: set[str], **kwargs):
    trace = kind(name=variant, legendgroup=variant, showlegend=variant not in shown,
                 marker_color=VARIANT_COLORS.get(variant, OKABE_ITO[7]), **kwargs)
    shown.add(variant)
    return trace
