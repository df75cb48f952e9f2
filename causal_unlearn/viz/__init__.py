"""Figures (plotly) and interactive explorers (ipywidgets) for traces, unlearning runs and scores.

Every `plot_*` returns a plotly figure; `column="single" | "double"` sizes it for a paper with
the paper template, and `export(fig, "figure.pdf", formats=["svg", "png"])` writes it out.
"""

from causal_unlearn.viz.audit import plot_audit
from causal_unlearn.viz.comparison import SCORE_LABELS, plot_layer_sets, plot_trace_comparison
from causal_unlearn.viz.dashboard import UnlearnDashboard
from causal_unlearn.viz.effects import plot_average_effects
from causal_unlearn.viz.explorer import TraceExplorer
from causal_unlearn.viz.static_export import BrowserNotFoundError, export, find_browser
from causal_unlearn.viz.style import OKABE_ITO, PAPER_TEMPLATE, paper_layout
from causal_unlearn.viz.trace import head_heatmap, plot_head_effects, plot_trace, trace_heatmap
from causal_unlearn.viz.unlearning import plot_unlearning

__all__ = [
    "BrowserNotFoundError", "OKABE_ITO", "PAPER_TEMPLATE", "SCORE_LABELS", "TraceExplorer", "UnlearnDashboard", "export",
    "find_browser", "head_heatmap", "paper_layout", "plot_audit", "plot_average_effects", "plot_head_effects",
    "plot_layer_sets", "plot_trace", "plot_trace_comparison", "plot_unlearning", "trace_heatmap",
]
