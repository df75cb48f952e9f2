"""causal_unlearn: find where a language model stores a fact, then remove it.

>>> import causal_unlearn as cu
>>> lm = cu.load_model("olmo-tiny-bios")
>>> world = cu.make_bios_world()
>>> world.trace_facts(attribute="city")[0].prompt.endswith("lives in")
True
"""

from causal_unlearn.data import BiosWorld, Row, SemEvalData, TraceFact, load_semeval, make_bios_world
from causal_unlearn.evaluate import exact_match, greedy_generate, knowledge_report, rouge_l_recall
from causal_unlearn.tracing import AveragedEffects, average_effects
from causal_unlearn.tracing import GaussianNoise, TokenReplacement, TraceResult, UniformNoise, trace, trace_facts
from causal_unlearn.models import (
    ArchitectureSpec,
    LoadedModel,
    UnsupportedArchitectureError,
    get_architecture,
    load_model,
    register_architecture,
    supported_architectures,
)

__version__ = "0.1.0"

__all__ = [
    "ArchitectureSpec", "BiosWorld", "LoadedModel", "Row", "SemEvalData", "TraceFact",
    "UnsupportedArchitectureError", "exact_match", "get_architecture", "greedy_generate", "knowledge_report",
    "load_model", "load_semeval", "make_bios_world", "register_architecture", "rouge_l_recall",
    "supported_architectures", "GaussianNoise", "TokenReplacement", "TraceResult", "UniformNoise", "trace",
    "trace_facts", "AveragedEffects", "average_effects",
]
