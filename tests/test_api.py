"""The public names: the aliases deprecated before 0.1.0 are gone (CHANGELOG.md), and every public
function shows how it is called."""

import pytest

import causal_unlearn as cu


@pytest.mark.parametrize("module, owner, old, new", [
    ("causal_unlearn", None, "compare", "compare_layer_sets"),
    ("causal_unlearn.auditing", None, "compare", "compare_layer_sets"),
    ("causal_unlearn.auditing.ablation", None, "compare", "compare_layer_sets"),
    ("causal_unlearn.viz", None, "plot_compare", "plot_layer_sets"),
    ("causal_unlearn.viz.comparison", None, "plot_compare", "plot_layer_sets"),
    ("causal_unlearn.data.bios", "BiosWorld", "trace_facts", "facts_to_trace"),
])
def test_removed_aliases_are_gone(module, owner, old, new):
    import importlib

    obj = importlib.import_module(module)
    obj = getattr(obj, owner) if owner else obj
    assert not hasattr(obj, old) and hasattr(obj, new)


def test_objective_labels_tell_recipes_apart():
    from causal_unlearn.unlearning.recipes import builtin_sha256

    assert (cu.unlearning.SHA256().label, builtin_sha256().label) == ("sha256", "sha256 (alpha 3-6)")
    assert builtin_sha256().name == "sha256" == cu.unlearning.get_objective("sha256").name  # the name is the registry key


PACKAGES = ["causal_unlearn", "causal_unlearn.data", "causal_unlearn.models", "causal_unlearn.tracing",
            "causal_unlearn.localization", "causal_unlearn.unlearning", "causal_unlearn.evaluation",
            "causal_unlearn.auditing", "causal_unlearn.viz"]


def test_every_public_function_has_a_runnable_example():
    """Every function a package exports shows how it is called (the doctests run with the suite)."""
    import importlib
    import inspect

    without = sorted({f"{package}.{name}" for package in PACKAGES
                      for name in importlib.import_module(package).__all__
                      if inspect.isfunction(obj := getattr(importlib.import_module(package), name))
                      and not name.startswith("_") and ">>>" not in (inspect.getdoc(obj) or "")})
    assert without == []
