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

import importlib

from causal_unlearn.figures import register_figure

__version__ = "0.1.0"

# Every name is imported on first use (PEP 562), so that `import causal_unlearn` and the command
# line's --help load neither torch nor transformers, and `cu.viz` neither plotly nor ipywidgets.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "causal_unlearn.data": ("BiosWorld", "Probe", "Row", "SemEvalData", "TofuRow", "TraceFact", "UnlearningTask",
                            "load_semeval", "load_tofu", "make_bios_world"),
    "causal_unlearn.models": ("ArchitectureMismatchError", "ArchitectureSpec", "LoadedModel",
                              "UnsupportedArchitectureError", "get_architecture", "load_model", "register_architecture",
                              "supported_architectures"),
    "causal_unlearn.patching": ("MLPNeurons", "ModuleSite", "Site"),
    "causal_unlearn.tracing": ("AveragedEffects", "GaussianNoise", "LogProbability", "LogitDifference", "Probability",
                               "ProbabilityMass", "TokenReplacement", "TraceConfig", "TraceResult", "UniformNoise",
                               "average_effects", "trace", "trace_facts"),
    "causal_unlearn.localization": ("Components", "Localization", "TraceComparison", "compare_traces", "localize",
                                    "localize_components"),
    "causal_unlearn.unlearning": ("DeletionConfig", "LoRA", "Objective", "ParameterSelection", "UnlearnCallback",
                                  "UnlearnConfig", "UnlearnResult", "UnlearningDivergedError", "UnlearningInterrupted",
                                  "delete_facts", "select_components", "select_parameters", "shard_model", "unlearn"),
    "causal_unlearn.evaluation": ("MIAConfig", "MIAResult", "SemEvalScores", "evaluate", "exact_match", "forget_quality",
                                  "greedy_generate", "knowledge_report", "membership_inference", "model_utility",
                                  "probe_recall", "rouge_l_recall", "truth_ratio"),
    "causal_unlearn.auditing": ("AuditConfig", "AuditResult", "AuditSkipWarning", "RelearnBudget", "audit",
                                "compare_layer_sets", "control_layer_sets", "plan_audit"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}
_PACKAGES = ("auditing", "builtin", "data", "evaluation", "figures", "localization", "models", "patching", "tracing",
             "unlearning", "validation", "viz")

# what `result.plot()` draws for each result type; the figures load on the first call
for _type, _figure in [("tracing.result:TraceResult", "trace:plot_trace"),
                       ("tracing.average:AveragedEffects", "effects:plot_average_effects"),
                       ("localization.verify:TraceComparison", "comparison:plot_trace_comparison"),
                       ("unlearning.result:UnlearnResult", "unlearning:plot_unlearning"),
                       ("auditing.result:AuditResult", "audit:plot_audit")]:
    register_figure(f"causal_unlearn.{_type}", f"causal_unlearn.viz.{_figure}")
del _type, _figure


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
    elif name in _PACKAGES:
        value = importlib.import_module(f"causal_unlearn.{name}")
    else:
        raise AttributeError(f"module 'causal_unlearn' has no attribute {name!r}")
    globals()[name] = value  # found once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME) | set(_PACKAGES))


__all__ = [*_HOME, "patching", "viz"]
