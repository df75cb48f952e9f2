"""The membership-inference attacks in `evaluate`'s scores and in the audit: each AUC equals the
attack functions called directly on the same texts, and the AUC and privleak equal their formulas
written out here (pairs of texts, float64)."""

from __future__ import annotations

import dataclasses
from itertools import product

import pytest
import torch

import causal_unlearn as cu
from causal_unlearn.data.bios import UnlearningTask
from causal_unlearn.evaluation import mia

N = 4  # rows per group: the tests stay quick


def _pairwise_auc(members, nonmembers) -> float:
    """The AUC as the share of (member, non-member) pairs in which the member scores lower, ties half."""
    pairs = list(product(map(float, members), map(float, nonmembers)))
    return sum(1.0 if m < n else 0.5 if m == n else 0.0 for m, n in pairs) / len(pairs)


@pytest.fixture(scope="module")
def groups(world):
    return world.forget[:N], world.holdout[:N]


@pytest.fixture(scope="module")
def edited(builtin):
    """The built-in model with its first MLP scaled: another model, whose AUCs differ."""
    model = builtin.copy()
    with torch.no_grad():
        model.model.model.layers[0].mlp.down_proj.weight.mul_(0.3)
    return model


@pytest.fixture(scope="module")
def task(world, groups):
    full = world.unlearning_task()
    forget = {p.subject for p in full.probes if p.split == "forget"}
    probes = [p for p in full.probes if p.subject in sorted(forget)[:1] and p.form != "opening"][:4]
    return UnlearningTask(forget=list(groups[0]), retain=world.retain[:N], members=list(groups[0]),
                          nonmembers=list(groups[1]), utility=[], probes=probes)


def test_membership_inference_equals_the_attacks_called_directly(builtin, groups, edited):
    members, nonmembers = groups
    texts = [[f"{row.input} {row.output}" for row in group] for group in groups]
    config = cu.MIAConfig(k=0.3, batch_size=3)
    result = cu.membership_inference(builtin, members, nonmembers, config=config, reference_model=edited,
                                     progress=False)
    direct = dict(loss=mia.loss, zlib=mia.zlib, gradnorm=mia.gradnorm,
                  reference=lambda lm, t, **kw: mia.reference(lm, t, reference_model=edited),
                  min_k=lambda lm, t, **kw: mia.min_k(lm, t, k=0.3),
                  min_k_plus_plus=lambda lm, t, **kw: mia.min_k_plus_plus(lm, t, k=0.3))
    assert list(result.aucs) == list(mia.ATTACKS) and result.skipped == {} and result.privleak is None
    for name, attack in direct.items():
        member, nonmember = (attack(builtin, group, progress=False) for group in texts)
        assert result.member_scores[name] == pytest.approx(member, rel=1e-5)
        assert result.nonmember_scores[name] == pytest.approx(nonmember, rel=1e-5)
        assert result.aucs[name] == pytest.approx(mia.auc(member, nonmember))
        assert result.aucs[name] == pytest.approx(_pairwise_auc(member, nonmember))
    # the built-in model was trained on the forget rows and never saw the holdout rows
    assert result.aucs["loss"] > 0.8


def test_the_reference_attack_is_skipped_without_a_reference_model(builtin, groups):
    result = cu.membership_inference(builtin, *groups, config=cu.MIAConfig(reference_auc=0.6), progress=False)
    assert "reference" not in result.aucs and "no reference model" in result.skipped["reference"]
    ref = 0.6  # MUSE's PrivLeak, with its AUC reported as 1 - ours: ((1 - auc) - (1 - ref)) / (1 - ref) * 100
    assert result.privleak == pytest.approx(((1 - result.aucs["min_k"]) - (1 - ref)) / (1 - ref) * 100)
    with pytest.raises(ValueError, match="'reference' attack needs reference_model="):
        cu.membership_inference(builtin, *groups, config=cu.MIAConfig(attacks=("reference",)), progress=False)


@pytest.mark.parametrize("make, error, match", [
    (lambda: cu.MIAConfig(attacks=("vibes",)), ValueError, "unknown membership attack"),
    (lambda: cu.MIAConfig(attacks=()), ValueError, "unknown membership attack"),
    (lambda: cu.MIAConfig(attacks="loss"), TypeError, "tuple of attack names"),
    (lambda: cu.MIAConfig(k=0), ValueError, "share of the lowest token scores"),
    (lambda: cu.MIAConfig(p=3), ValueError, "1-, 2- or inf-norm"),
    (lambda: cu.MIAConfig(batch_size=0), ValueError, "batch_size must be a positive integer"),
    (lambda: cu.MIAConfig(reference_auc=1.0), ValueError, r"in \[0, 1\)"),
    (lambda: cu.MIAConfig(attacks=("loss",), reference_auc=0.5), ValueError, "privleak compares the 'min_k' AUC"),
    (lambda: cu.AuditConfig(membership="loss"), TypeError, "membership is a causal_unlearn.MIAConfig"),
])
def test_bad_settings_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_texts_are_refused(builtin, groups):
    with pytest.raises(ValueError, match="needs members and non-members, got 4 and 0"):
        cu.membership_inference(builtin, groups[0], [], progress=False)
    with pytest.raises(TypeError, match="wrap a single text"):
        cu.membership_inference(builtin, "a text", groups[1], progress=False)
    with pytest.raises(TypeError, match="rows .* or texts, got a int"):
        cu.membership_inference(builtin, [1, 2], groups[1], progress=False)


def test_evaluate_reports_the_aucs_beside_the_official_mia(builtin, world, groups):
    members, nonmembers = groups
    config = cu.MIAConfig(attacks=("loss", "min_k"), reference_auc=0.5)
    scores = cu.evaluate(builtin, world.forget[:2], world.retain[:2], members=members, nonmembers=nonmembers,
                         membership=config, max_new_tokens=4, progress=False)
    texts = [[f"{row.input} {row.output}" for row in group] for group in groups]
    loss_auc = mia.auc(*(mia.loss(builtin, t, progress=False) for t in texts))
    min_k_auc = mia.auc(*(mia.min_k(builtin, t, k=0.4, progress=False) for t in texts))
    flat = scores.to_dict()
    assert flat["mia_auc/loss"] == pytest.approx(loss_auc) and flat["mia_auc/min_k"] == pytest.approx(min_k_auc)
    assert flat["privleak"] == pytest.approx(((1 - min_k_auc) - 0.5) / 0.5 * 100)
    assert "mia_auc/loss" in flat and "mia_auc" in flat and "membership=MIAResult(aucs={'loss'" in repr(scores)
    # the official score is what it was without the attacks
    plain = cu.evaluate(builtin, world.forget[:2], world.retain[:2], members=members, nonmembers=nonmembers,
                        max_new_tokens=4, progress=False)
    assert (plain.mia_auc, plain.mia_score, plain.membership) == (scores.mia_auc, scores.mia_score, None)
    with pytest.raises(ValueError, match="pass members= and nonmembers="):
        cu.evaluate(builtin, world.forget[:2], world.retain[:2], membership=config, progress=False)
    with pytest.raises(ValueError, match="reference_model= is the reference attack's"):
        cu.evaluate(builtin, world.forget[:2], world.retain[:2], reference_model=builtin, progress=False)


def test_the_audit_measures_both_models_and_draws_a_panel(builtin, edited, task, groups):
    config = cu.AuditConfig(checks=("membership",), membership=cu.MIAConfig(attacks=("loss", "gradnorm", "min_k")))
    result = cu.audit(builtin, edited, task, config=config, progress=False)
    texts = [[row.text for row in group] for group in groups]
    for variant, model in (("original", builtin), ("edited", edited)):
        for name, attack in (("loss", mia.loss), ("gradnorm", mia.gradnorm), ("min_k", mia.min_k)):
            options = dict(k=0.4) if name == "min_k" else {}
            member, nonmember = (attack(model, group, progress=False, **options) for group in texts)
            assert result.value("membership", f"{name} AUC", "forget", variant) == pytest.approx(
                _pairwise_auc(member, nonmember))
    assert result.value("membership", "loss AUC", "forget", "original") > 0.8
    table = result.table()
    assert list(table.columns) == ["original", "edited"] and len(table) == 3
    assert result.summary()["mia_loss_auc"] == result.value("membership", "loss AUC", "forget", "edited")
    assert result.skipped == {}  # attacks=(...) named no reference attack
    fig = result.plot()
    assert fig.layout.annotations[0].text.startswith("membership inference: AUC")
    bars = {trace.name: dict(zip(trace.x, trace.y)) for trace in fig.data}
    assert bars["edited"]["gradnorm"] == result.value("membership", "gradnorm AUC", "forget", "edited")
    assert list(bars["original"]) == ["loss", "gradnorm", "min_k"]


def test_the_audit_skips_membership_without_non_members(builtin, task):
    bare = dataclasses.replace(task, nonmembers=[])
    assert "no non-member rows" in cu.plan_audit(bare).skipped["membership"]
    with pytest.raises(ValueError, match="cannot run its 'membership' check: the task has no non-member rows"):
        cu.plan_audit(bare, cu.AuditConfig(checks=("membership",)))
    # with every check the task supports, the reference attack is skipped with its reason
    config = cu.AuditConfig(checks=("membership",), membership=cu.MIAConfig(attacks=None))
    result = cu.audit(builtin, builtin.copy(), task, config=config, progress=False)
    assert "no reference model" in result.skipped["membership: reference"]
    assert result.value("membership", "loss AUC", "forget", "edited") == result.value(
        "membership", "loss AUC", "forget", "original")
