"""The official SemEval-2025 Task 4 scoring: hand-computed cases and the real LUME files."""

import dataclasses
import math

import pytest
import torch

from causal_unlearn import Row, evaluate, load_semeval
from causal_unlearn.data.encoding import encode_rows
from causal_unlearn.evaluation import mean_token_nll, mia_score, task_aggregate
from causal_unlearn.evaluation.semeval import score_generations
from conftest import LUME


def test_task_aggregate_is_the_harmonic_mean_of_retain_and_one_minus_forget():
    scores = {
        "Task1": {"forget_regurgitation": 0.5, "forget_knowledge": 0.0, "retain_regurgitation": 0.5, "retain_knowledge": 1.0},
        "Task2": {"forget_regurgitation": 0.75, "forget_knowledge": 0.5, "retain_regurgitation": 1.0, "retain_knowledge": 0.25},
    }
    values = [0.5, 1.0, 0.5, 1.0, 0.25, 0.5, 1.0, 0.25]
    assert task_aggregate(scores) == pytest.approx(len(values) / sum(1 / v for v in values))


def test_one_zero_makes_the_aggregate_zero():
    scores = {"Task1": {"forget_knowledge": 1.0, "retain_knowledge": 1.0, "retain_regurgitation": 1.0}}
    assert task_aggregate(scores) == 0
    with pytest.raises(ValueError, match="no task scores"):
        task_aggregate({})


def test_mia_score_by_hand():
    # members' -NLL: -1, -2; non-members': -1.5, -3. Member beats non-member in 3 of 4 pairs.
    auc, score = mia_score([1.0, 2.0], [1.5, 3.0])
    assert auc == pytest.approx(0.75) and score == pytest.approx(0.5)
    # a tie counts half: pairs (1 vs 1) = 0.5, (1 vs 2) = 1, (3 vs 1) = 0, (3 vs 2) = 0 -> 1.5 / 4
    assert mia_score([1.0, 3.0], [1.0, 2.0])[0] == pytest.approx(0.375)
    # members much less likely than non-members is as detectable as much more likely
    assert mia_score([9.0, 8.0], [1.0, 2.0]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="members and non-members"):
        mia_score([], [1.0])


@pytest.fixture(scope="module")
def lume():
    return load_semeval(LUME)


def test_lume_with_reference_generations_scores_one_and_aggregate_zero(lume):
    scores = score_generations(lume.forget, lume.retain, [r.output for r in lume.forget], [r.output for r in lume.retain])
    assert sorted(scores.task_scores) == ["Task1", "Task2", "Task3"]
    values = [v for task in scores.task_scores.values() for v in task.values()]
    assert len(values) == 12 and all(v == pytest.approx(1.0) for v in values)
    assert scores.task_aggregate == 0


def test_lume_with_empty_generations_scores_zero(lume):
    scores = score_generations(lume.forget, lume.retain, [""] * len(lume.forget), [""] * len(lume.retain))
    assert all(v == 0.0 for task in scores.task_scores.values() for v in task.values())
    assert scores.task_aggregate == 0


def test_lume_perfect_unlearning_aggregates_to_one(lume):
    scores = score_generations(lume.forget, lume.retain, [""] * len(lume.forget), [r.output for r in lume.retain])
    assert scores.task_aggregate == pytest.approx(1.0)
    assert len(scores.row_scores) == len(lume.forget) + len(lume.retain)


def test_score_generations_checks_lengths():
    row = Row("a qa0", "Who?", "Ann", "Task2")
    with pytest.raises(ValueError, match="1 forget rows but 2 generations"):
        score_generations([row], [row], ["a", "b"], ["a"])


def test_mean_token_nll_equals_the_models_own_loss(builtin, world):
    texts = [world.forget[0].text, "What is the capital of France? Paris"]
    ours = mean_token_nll(builtin, texts, batch_size=2, progress=False)
    for text, value in zip(texts, ours):
        ids = builtin.to_tokens(text)
        with torch.no_grad():
            reference = builtin.model(input_ids=ids, labels=ids).loss
        assert float(value) == pytest.approx(float(reference), rel=1e-5)


def test_mean_token_nll_counts_special_tokens_as_the_official_scorer_does(builtin, world):
    """The official MIA loss is `model(ids, labels=ids).loss` on whatever the tokenizer returns: with
    a tokenizer that appends EOS, the EOS is a scored token."""
    import copy

    from tokenizers.processors import TemplateProcessing

    appends_eos = copy.deepcopy(builtin.tokenizer)
    eos, eos_id = appends_eos.eos_token, appends_eos.eos_token_id
    appends_eos._tokenizer.post_processor = TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, eos_id)])
    texts = [world.forget[0].text, world.holdout[1].text, "Paris"]
    assert all(appends_eos(t)["input_ids"][-1] == eos_id for t in texts)
    ours = mean_token_nll(dataclasses.replace(builtin, tokenizer=appends_eos), texts, batch_size=3, progress=False)
    for text, value in zip(texts, ours):
        ids = appends_eos(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            official = builtin.model(ids, labels=ids.clone()).loss  # as in the task's evaluate_generations.py
            without_eos = builtin.model(ids[:, :-1], labels=ids[:, :-1].clone()).loss
        assert float(value) == pytest.approx(float(official), rel=1e-5)
        assert float(value) != pytest.approx(float(without_eos), rel=1e-4)  # the EOS really counts


def test_row_encoding_marks_exactly_the_output_tokens(builtin, world):
    rows = [world.forget[0], world.forget[2], world.retain[3]]
    batch = encode_rows(builtin.tokenizer, rows)
    for row, ids, mask, attended in zip(rows, batch.input_ids, batch.target_mask, batch.attention_mask.bool()):
        assert builtin.tokenizer.decode(ids[mask]) == " " + row.output
        assert builtin.tokenizer.decode(ids[attended & ~mask], skip_special_tokens=True) == row.input


def test_evaluate_on_the_builtin_model(builtin, world):
    forget, retain = world.forget[:12], world.retain[:12]
    scores = evaluate(builtin, forget, retain, members=forget, nonmembers=world.holdout[:12],
                      utility=world.general_knowledge[:8], max_new_tokens=64, progress=False)
    task = scores.task_scores["Task2"]
    assert task["forget_knowledge"] == 1.0 and task["retain_knowledge"] == 1.0
    assert task["forget_regurgitation"] == pytest.approx(1.0) and scores.task_aggregate == 0
    assert scores.utility == 1.0 and scores.mia_auc > 0.8
    assert scores.final == pytest.approx((0 + scores.mia_score + 1.0) / 3)
    assert evaluate(builtin, forget[:6], retain[:6], max_new_tokens=8, progress=False).final is None
    assert math.isclose(evaluate(builtin, forget[:6], retain[:6], utility=0.4, max_new_tokens=8, progress=False).utility, 0.4)


def test_evaluate_rejects_bad_input(builtin, world):
    with pytest.raises(ValueError, match="forget set is empty"):
        evaluate(builtin, [], world.retain[:2], progress=False)
    with pytest.raises(ValueError, match="both members and nonmembers"):
        evaluate(builtin, world.forget[:2], world.retain[:2], members=world.forget[:2], progress=False)
    with pytest.raises(TypeError, match="Row objects"):
        evaluate(builtin, [{"id": "x"}], world.retain[:2], progress=False)
