"""causal_unlearn: find where a language model stores a fact, then remove it.

    facts --trace--> effects --localize--> layers --unlearn--> edited model --evaluate--> scores
                                                                                  --audit--> robustness

Examples:
    >>> import causal_unlearn as cu
    >>> lm = cu.load_model("olmo-tiny-bios")
    >>> world = cu.make_bios_world()
    >>> world.facts_to_trace(attribute="city")[0].prompt.endswith("lives in")
    True
"""

from causal_unlearn.data import BiosWorld, Probe, Row, SemEvalData, TraceFact, UnlearningTask, load_semeval, make_bios_world
from causal_unlearn.models import (
    ArchitectureMismatchError, ArchitectureSpec, LoadedModel, UnsupportedArchitectureError, get_architecture, load_model,
    register_architecture, supported_architectures,
)
from causal_unlearn import patching
from causal_unlearn.patching import MLPNeurons, ModuleSite, Site
from causal_unlearn.tracing import (
    AveragedEffects, GaussianNoise, LogitDifference, LogProbability, Probability, ProbabilityMass, TokenReplacement,
    TraceConfig, TraceResult, UniformNoise, average_effects, trace, trace_facts,
)
from causal_unlearn.localization import Localization, TraceComparison, compare_traces, localize
from causal_unlearn.unlearning import (
    Objective, ParameterSelection, UnlearnCallback, UnlearnConfig, UnlearnResult, UnlearningDivergedError, UnlearningInterrupted,
    select_parameters, shard_model, unlearn,
)
from causal_unlearn.evaluation import (
    SemEvalScores, evaluate, exact_match, greedy_generate, knowledge_report, probe_recall, rouge_l_recall,
)
from causal_unlearn.auditing import (
    AuditConfig, AuditResult, RelearnBudget, audit, compare_layer_sets, control_layer_sets,
)
from causal_unlearn.figures import register_figure

# what `result.plot()` draws for each result type; the figures load on the first call
for _type, _figure in [(TraceResult, "trace:plot_trace"), (AveragedEffects, "effects:plot_average_effects"),
                       (TraceComparison, "comparison:plot_trace_comparison"),
                       (UnlearnResult, "unlearning:plot_unlearning"), (AuditResult, "audit:plot_audit")]:
    register_figure(_type, f"causal_unlearn.viz.{_figure}")
del _type, _figure


def __getattr__(name: str):
    """`cu.viz` (figures and widgets: cu.viz.plot_trace, cu.viz.TraceExplorer, ...) is imported on
    first use, so that `import causal_unlearn` loads neither plotly nor ipywidgets."""
    if name == "viz":
        import importlib

        return importlib.import_module("causal_unlearn.viz")
    raise AttributeError(f"module 'causal_unlearn' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    # data
    "BiosWorld", "Probe", "Row", "SemEvalData", "TraceFact", "UnlearningTask", "load_semeval", "make_bios_world",
    # models
    "ArchitectureMismatchError", "ArchitectureSpec", "LoadedModel", "UnsupportedArchitectureError", "get_architecture",
    "load_model", "register_architecture", "supported_architectures",
    # patching
    "MLPNeurons", "ModuleSite", "Site", "patching",
    # tracing
    "AveragedEffects", "GaussianNoise", "LogProbability", "LogitDifference", "Probability", "ProbabilityMass",
    "TokenReplacement", "TraceConfig", "TraceResult", "UniformNoise", "average_effects", "trace", "trace_facts",
    # localization
    "Localization", "TraceComparison", "compare_traces", "localize",
    # unlearning
    "Objective", "ParameterSelection", "UnlearnCallback", "UnlearnConfig", "UnlearnResult", "UnlearningDivergedError", "UnlearningInterrupted",
    "select_parameters", "shard_model", "unlearn",
    # evaluation
    "SemEvalScores", "evaluate", "exact_match", "greedy_generate", "knowledge_report", "probe_recall", "rouge_l_recall",
    # audit
    "AuditConfig", "AuditResult", "RelearnBudget", "audit", "compare_layer_sets", "control_layer_sets",
    # figures
    "viz",
]
