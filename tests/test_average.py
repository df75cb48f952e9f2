import math

import pytest
import torch

from causal_unlearn.tracing import TOKEN_GROUPS, TraceResult, TraceSettings, average_effects, token_groups

SETTINGS = TraceSettings("m", "GaussianNoise(scale='s3')", 1.0, 10, 10, 0, "prob", "exact")


def fake_trace(scores, subject_range, low=0.0):
    n_tokens = scores.shape[0]
    return TraceResult(prompt="p", subject="s", tokens=[f"t{i}" for i in range(n_tokens)],
                       input_ids=torch.arange(n_tokens), subject_range=subject_range, answer="a", answer_id=0,
                       high=1.0, low=low, known=True, scores={"mlp": scores}, settings=SETTINGS)


def test_token_groups_partition_the_positions():
    groups = token_groups(7, (1, 4))
    assert groups == {"before subject": [0], "first subject token": [1], "middle subject tokens": [2],
                      "last subject token": [3], "first after subject": [4], "further tokens": [5], "last token": [6]}
    one_token = token_groups(4, (1, 2))
    assert one_token["first subject token"] == one_token["last subject token"] == [1]
    assert one_token["middle subject tokens"] == [] and one_token["first after subject"] == [2]


def test_average_by_hand():
    # fact A: 6 tokens, subject [1, 4); fact B: 4 tokens, subject [1, 2) (no middle tokens); one layer
    a = fake_trace(torch.tensor([[0.0], [1.0], [2.0], [4.0], [5.0], [7.0]]), (1, 4), low=0.5)
    b = fake_trace(torch.tensor([[0.0], [3.0], [6.0], [9.0]]), (1, 2), low=1.0)
    effects = average_effects([a, b])
    g = {name: i for i, name in enumerate(TOKEN_GROUPS)}
    mean, count = effects.mean["mlp"][:, 0], effects.count["mlp"][:, 0]
    # last subject token: A 4 - 0.5 = 3.5, B 3 - 1 = 2 -> mean 2.75, sd 1.0607, t(0.975, 1) = 12.706
    assert mean[g["last subject token"]].item() == pytest.approx(2.75)
    half = 12.7062047 * (1.5 / math.sqrt(2)) / math.sqrt(2)
    assert effects.upper["mlp"][g["last subject token"], 0].item() == pytest.approx(2.75 + half, rel=1e-5)
    assert mean[g["middle subject tokens"]].item() == pytest.approx(1.5) and count[g["middle subject tokens"]] == 1
    assert math.isnan(effects.lower["mlp"][g["middle subject tokens"], 0].item())  # one fact: no interval
    assert mean[g["first after subject"]].item() == pytest.approx((4.5 + 5.0) / 2)
    assert count[g["further tokens"]] == 0 and math.isnan(mean[g["further tokens"]].item())
    scores = average_effects([a, b], value="score")
    assert scores.mean["mlp"][g["last token"], 0].item() == pytest.approx(8.0)
    frame = effects.to_dataframe()
    assert len(frame) == len(TOKEN_GROUPS) and set(frame.columns) >= {"group", "mean", "lower", "upper", "n_facts"}


def test_bad_input():
    with pytest.raises(ValueError, match="no traces"):
        average_effects([])
    with pytest.raises(ValueError, match="unknown value"):
        average_effects([fake_trace(torch.zeros(3, 1), (0, 1))], value="ie")


def test_traces_that_do_not_mean_the_same_are_not_averaged():
    from dataclasses import replace

    a = fake_trace(torch.ones(4, 2), (1, 2))
    for name, value in [("model", "gpt2"), ("metric", "logprob"), ("method", "attribution"), ("window", 3)]:
        b = fake_trace(torch.ones(4, 2), (1, 2))
        b.settings = replace(SETTINGS, **{name: value})
        with pytest.raises(ValueError, match=rf"the traces differ in {name}: .*{value!r} \(first at trace 2\)"):
            average_effects([a, a, b])
    broken = fake_trace(torch.tensor([[0.1, float("nan")]] * 4), (1, 2))
    with pytest.raises(ValueError, match=r"trace 1 \('p'\) has NaN or infinite scores in \['mlp'\]"):
        average_effects([a, broken])
