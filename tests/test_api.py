"""The public names: the deprecated ones still work, say what replaces them, and forward."""

import pytest

import causal_unlearn as cu


def test_world_trace_facts_is_facts_to_trace(world):
    with pytest.warns(FutureWarning, match="BiosWorld.facts_to_trace"):
        old = world.trace_facts("forget", "city")
    assert old == world.facts_to_trace("forget", "city") and len(old) > 10


def test_compare_is_compare_layer_sets(builtin, world):
    with pytest.warns(FutureWarning, match="compare_layer_sets"), pytest.raises(ValueError, match="no layer sets"):
        cu.compare(builtin, world.forget[:2], world.retain[:2], layer_sets={})


def test_plot_compare_is_plot_layer_sets():
    import pandas as pd

    table = pd.DataFrame(dict(objective=["npo"], layer_set=["traced"], final=[0.5]))
    with pytest.warns(FutureWarning, match="plot_layer_sets"):
        old = cu.viz.plot_compare(table, metrics=["final"])
    assert old.to_dict() == cu.viz.plot_layer_sets(table, metrics=["final"]).to_dict()


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
                      and not name.startswith("_") and ">>>" not in (inspect.getdoc(obj) or "")
                      and "Deprecated" not in (inspect.getdoc(obj) or "")})
    assert without == []
