"""Choosing layers from traced effects, the control layer sets, and before/after trace comparison."""

import pytest
import torch

import causal_unlearn as cu
from causal_unlearn.tracing.average import TOKEN_GROUPS, AveragedEffects


def _effects(mlp_last_token, mlp_subject=None):
    """Averaged effects whose MLP rows are zero except the last token (and last subject token)."""
    n = len(mlp_last_token)
    mean = torch.zeros(len(TOKEN_GROUPS), n)
    mean[TOKEN_GROUPS.index("last token")] = torch.tensor(mlp_last_token)
    if mlp_subject is not None:
        mean[TOKEN_GROUPS.index("last subject token")] = torch.tensor(mlp_subject)
    mean[TOKEN_GROUPS.index("middle subject tokens")] = float("nan")
    count = torch.ones(len(TOKEN_GROUPS), n, dtype=torch.long)
    return AveragedEffects(TOKEN_GROUPS, "indirect_effect", 0.95, {"mlp": mean}, {"mlp": mean}, {"mlp": mean}, {"mlp": count})


EFFECT = [0.7, 0.1, 0.05, 0.06, 0.08, 0.1, 0.3, 0.65]


def test_default_rule_takes_layers_at_half_the_peak_or_more():
    found = cu.localize(_effects(EFFECT))
    assert found.layers == [0, 7] and found.kind == "mlp" and "half the peak" in found.rule
    assert found.token_group == ["last token"] * 8
    assert found.effect.tolist() == pytest.approx(EFFECT)
    assert list(found) == [0, 7] and len(found) == 2


def test_top_k_threshold_contiguous_and_token_group():
    effects = _effects(EFFECT, mlp_subject=[0.0, 0.2, 0.9, 0.8, 0.0, 0.0, 0.0, 0.0])
    assert cu.localize(effects, top_k=3).layers == [0, 2, 3]  # strongest group per layer
    assert cu.localize(effects, threshold=0.6).layers == [0, 2, 3, 7]
    assert cu.localize(effects, top_k=2, contiguous=True).layers == [2, 3]
    assert cu.localize(effects, token_group="last token", top_k=2, contiguous=True).layers == [6, 7]
    assert cu.localize(effects, token_group="last subject token", top_k=1).layers == [2]
    table = cu.localize(effects, top_k=2).to_dataframe()
    assert list(table.chosen) == [False, False, True, True, False, False, False, False]


def test_localize_rejects_bad_requests():
    effects = _effects(EFFECT)
    with pytest.raises(ValueError, match="top_k or threshold, not both"):
        cu.localize(effects, top_k=2, threshold=0.1)
    with pytest.raises(ValueError, match="between 1 and the number of layers"):
        cu.localize(effects, top_k=9)
    with pytest.raises(ValueError, match="no 'attn' effects"):
        cu.localize(effects, kind="attn")
    with pytest.raises(ValueError, match="unknown token group"):
        cu.localize(effects, token_group="subject")
    with pytest.raises(ValueError, match="no layer reaches the threshold 2"):
        cu.localize(effects, threshold=2.0)
    with pytest.raises(ValueError, match="no traces"):
        cu.localize([])


def test_localize_from_traces_equals_localize_from_their_average(builtin, world):
    traces = cu.trace_facts(builtin, world.facts_to_trace("forget", "city")[:3], kinds=("mlp",), window=1, samples=2,
                            progress=False)
    assert cu.localize(traces, top_k=2).layers == cu.localize(cu.average_effects(traces), top_k=2).layers


def test_control_layer_sets():
    traced = cu.localize(_effects(EFFECT))
    sets = cu.control_layer_sets(traced, 8, seeds=(0, 1, 2))
    assert list(sets) == ["traced", "other band", "random (seed 0)", "random (seed 1)", "random (seed 2)", "all"]
    assert sets["traced"] == [0, 7] and sets["all"] == list(range(8))
    assert all(len(v) == 2 for k, v in sets.items() if k != "all")
    # a band of two disjoint from {0, 7} with the weakest effect: 2-3 (0.11)
    assert sets["other band"] == [2, 3]
    assert sets == cu.control_layer_sets(traced, 8, seeds=(0, 1, 2))
    assert cu.control_layer_sets([0, 1, 2, 3, 4, 5], 8, seeds=())["other band"] == [2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="out of range"):
        cu.control_layer_sets([9], 8)


def test_compare_traces(builtin, world):
    facts = world.facts_to_trace("forget", "city")[:2]
    traces = cu.trace_facts(builtin, facts, kinds=("mlp",), window=1, samples=2, progress=False)
    same = cu.compare_traces(traces, traces, layers=[0, 7])
    effects = same.layer_effects("mlp")
    assert list(effects.localized) == [True] + [False] * 6 + [True]
    assert effects.change.abs().max() == 0
    summary = same.summary()
    assert summary["p_answer_before"] == summary["p_answer_after"] and summary["known_before"] == 1.0
    assert len(same.to_dataframe()) == 2
    with pytest.raises(ValueError, match="not the same fact"):
        cu.compare_traces(traces, traces[::-1])
    with pytest.raises(ValueError, match="same non-empty list"):
        cu.compare_traces(traces, traces[:1])
    other = cu.trace_facts(builtin, facts, kinds=("mlp",), window=1, samples=3, progress=False)
    with pytest.raises(ValueError, match="different settings"):
        cu.compare_traces(traces, other)


def test_effects_without_evidence_choose_no_layers():
    """All-zero effects would pass every threshold, and NaN effects compare False everywhere:
    either would have picked layers from no evidence."""
    for rule in (dict(), dict(top_k=2), dict(threshold=0.0), dict(top_k=3, contiguous=True)):
        with pytest.raises(ValueError, match="no layer has a positive mlp effect .*strongest is 0"):
            cu.localize(_effects([0.0] * 8), **rule)
    with pytest.raises(ValueError, match=r"effects of layers \[2\] are NaN"):
        cu.localize(_effects([0.5, 0.1, float("nan"), 0.1, 0.0, 0.0, 0.0, 0.2]), token_group="last token", top_k=2)
    with pytest.raises(ValueError, match=r"effects of layers \[0, 1, 2, 3, 4, 5, 6, 7\] are NaN"):
        cu.localize(_effects(EFFECT), token_group="middle subject tokens")
