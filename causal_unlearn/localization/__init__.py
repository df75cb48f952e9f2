"""Localization: which layers carry the traced facts, which to edit, and whether editing
them removed the effect."""

from causal_unlearn.localization.components import Components, localize_components
from causal_unlearn.localization.layers import Localization, localize
from causal_unlearn.localization.verify import TraceComparison, compare_traces

__all__ = ["Components", "Localization", "TraceComparison", "compare_traces", "localize", "localize_components"]
