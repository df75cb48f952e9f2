import math

import numpy as np
import pytest
import torch

from causal_unlearn.tracing import TOKEN_GROUPS, TraceResult, TraceSettings, average_effects, token_groups

SETTINGS = TraceSettings("m", "GaussianNoise(scale='s3')", 1.0, 10, 10, 0, "prob", "exact")


def fake_trace(scores, subject_range, low=0.0, kind="mlp", **more_scores):
    n_tokens = scores.shape[0]
    return TraceResult(prompt="p", subject="s", tokens=[f"t{i}" for i in range(n_tokens)],
                       input_ids=torch.arange(n_tokens), subject_range=subject_range, answer="a", answer_id=0,
                       high=1.0, low=low, known=True, scores={kind: scores, **more_scores}, settings=SETTINGS)


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


def test_head_effects_average_per_group_layer_and_head():
    # two facts scored per (token, layer, head): A has 6 tokens, subject [1, 4); B 4 tokens, subject [1, 2)
    n_layers, n_heads = 2, 3
    heads_a = torch.arange(6 * n_layers * n_heads, dtype=torch.float32).reshape(6, n_layers, n_heads) / 10
    heads_b = torch.arange(4 * n_layers * n_heads, dtype=torch.float32).flip(0).reshape(4, n_layers, n_heads) / 7
    a = fake_trace(heads_a, (1, 4), low=0.5, kind="head", mlp=torch.ones(6, n_layers))
    b = fake_trace(heads_b, (1, 2), low=1.0, kind="head", mlp=torch.ones(4, n_layers))
    effects = average_effects([a, b])
    assert effects.kinds == ["head", "mlp"] and effects.mean["mlp"].shape == (len(TOKEN_GROUPS), n_layers)
    for table in (effects.mean, effects.lower, effects.upper, effects.count):
        assert table["head"].shape == (len(TOKEN_GROUPS), n_layers, n_heads)
    # each group's positions written out by hand (the last token is "last token" only)
    positions = {
        "before subject": ([0], [0]), "first subject token": ([1], [1]), "middle subject tokens": ([2], []),
        "last subject token": ([3], [1]), "first after subject": ([4], [2]), "further tokens": ([], []),
        "last token": ([5], [3]),
    }
    critical = 12.7062047  # Student's t at 0.975 with one degree of freedom
    for g, group in enumerate(TOKEN_GROUPS):
        per_fact = [(scores[rows].numpy() - low).mean(0) for scores, low, rows in
                    ((heads_a, 0.5, positions[group][0]), (heads_b, 1.0, positions[group][1])) if rows]
        assert (effects.count["head"][g] == len(per_fact)).all(), group
        if not per_fact:
            assert effects.mean["head"][g].isnan().all()
            continue
        mean = np.mean(per_fact, axis=0)
        np.testing.assert_allclose(effects.mean["head"][g].numpy(), mean, rtol=1e-6, atol=1e-6, err_msg=group)
        if len(per_fact) == 2:
            half = critical * np.std(per_fact, axis=0, ddof=1) / np.sqrt(2)
            np.testing.assert_allclose(effects.upper["head"][g].numpy(), mean + half, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(effects.lower["head"][g].numpy(), mean - half, rtol=1e-5, atol=1e-6)
        else:
            assert effects.lower["head"][g].isnan().all()  # one fact: no interval
    # one cell by hand: last subject token (A: token 3, B: token 1), layer 1, head 2: A holds 23 / 10 there and
    # B (its numbers backwards) 12 / 7, less their lows
    by_hand = ((2.3 - 0.5) + (12 / 7 - 1.0)) / 2
    assert effects.mean["head"][TOKEN_GROUPS.index("last subject token"), 1, 2].item() == pytest.approx(by_hand)
    scores = average_effects([a, b], value="score")
    assert scores.mean["head"][TOKEN_GROUPS.index("last token"), 0, 0].item() == pytest.approx((30 / 10 + 5 / 7) / 2)

    frame = effects.to_dataframe()
    heads = frame[frame.kind == "head"]
    assert len(heads) == len(TOKEN_GROUPS) * n_layers * n_heads and frame[frame.kind == "mlp"]["unit"].isna().all()
    row = heads[(heads.group == "last subject token") & (heads.layer == 1) & (heads.unit == 2)]
    assert row["mean"].item() == pytest.approx(by_hand) and row["n_facts"].item() == 2
    with pytest.raises(ValueError, match="per head"):
        effects.by_layer("head", "last token")
    wider = fake_trace(torch.zeros(4, n_layers, n_heads + 1), (1, 2), kind="head", mlp=torch.ones(4, n_layers))
    with pytest.raises(ValueError, match="'head' scores differ in shape"):
        average_effects([a, wider])
