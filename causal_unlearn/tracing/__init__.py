"""Causal tracing: where in the model is a fact recalled?"""

from causal_unlearn.patching.sites import KINDS
from causal_unlearn.tracing.average import TOKEN_GROUPS, AveragedEffects, average_effects, token_groups
from causal_unlearn.tracing.config import TraceConfig, default_window
from causal_unlearn.tracing.corruption import Corruption, EmbeddingFunction, GaussianNoise, TokenReplacement, UniformNoise
from causal_unlearn.tracing.engines import ENGINES, Cell, TraceInput, TraceScores, register_engine
from causal_unlearn.tracing.metrics import LogitDifference, LogProbability, Probability, ProbabilityMass
from causal_unlearn.tracing.result import TraceResult, TraceSettings
from causal_unlearn.tracing.switches import AttributionFixes, Shortcuts
from causal_unlearn.tracing.trace import trace, trace_facts

__all__ = ["AttributionFixes", "AveragedEffects", "Cell", "Corruption", "ENGINES", "EmbeddingFunction", "GaussianNoise",
           "KINDS", "LogProbability", "LogitDifference", "Probability", "ProbabilityMass", "Shortcuts", "TOKEN_GROUPS",
           "TokenReplacement", "TraceConfig", "TraceInput", "TraceResult", "TraceScores", "TraceSettings", "UniformNoise",
           "average_effects", "default_window", "register_engine", "token_groups", "trace", "trace_facts"]
