"""Causal tracing: where in the model is a fact recalled?"""

from causal_unlearn.tracing.attribution import AttributionFixes
from causal_unlearn.tracing.average import TOKEN_GROUPS, AveragedEffects, average_effects, token_groups
from causal_unlearn.tracing.corruption import Corruption, EmbeddingFunction, GaussianNoise, TokenReplacement, UniformNoise
from causal_unlearn.tracing.engine import KINDS, Shortcuts
from causal_unlearn.tracing.result import TraceResult, TraceSettings
from causal_unlearn.tracing.trace import trace, trace_facts

__all__ = ["AttributionFixes", "AveragedEffects", "Corruption", "EmbeddingFunction", "TOKEN_GROUPS", "average_effects", "token_groups", "GaussianNoise", "KINDS", "Shortcuts", "TokenReplacement", "TraceResult", "TraceSettings", "UniformNoise", "trace",
           "trace_facts"]
