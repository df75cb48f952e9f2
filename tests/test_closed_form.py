"""Closed-form deletion (MEMIT's edit with a deleting target): the applied change is MEMIT's
formula, written out here in float64 from states recorded one prompt at a time; other keys move no
more than the least-squares objective allows; revert is bit-exact; the facts go and the retain
people stay; bad input is refused and an error on the way leaves the original weights."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

import causal_unlearn as cu
from causal_unlearn.unlearning import closed_form
from causal_unlearn.unlearning.closed_form import DeletionConfig, delete_facts

LAMBDA = 50.0


@pytest.fixture(scope="module")
def setup(builtin, world):
    facts = world.facts_to_trace("forget")[:14]  # two people, seven facts each
    retain = world.people_in("retain")[:12]
    text = [f"{row.input} {row.output}" for row in world.retain[:72]] + [" ".join(world.bios(p)[:3]) for p in retain]
    return builtin, world, facts, text


@pytest.fixture(scope="module")
def setup64(setup):
    """The built-in model in float64: the states of batched and single-prompt forwards then agree
    to 1e-15, so the update can be checked against the formula to 1e-6."""
    lm, *rest = setup
    lm64 = lm.copy()
    lm64.model.double()
    return lm64, *rest


def subject_last(tokenizer, prompt: str, subject: str) -> int:
    encoded = tokenizer(prompt, return_offsets_mapping=True)
    end = prompt.index(subject) + len(subject)
    return max(i for i, (a, b) in enumerate(encoded["offset_mapping"]) if b > a and a < end)


@torch.no_grad()
def states(lm, prompts_and_subjects, layer: int, z_layer: int):
    """Per prompt, run alone: the down projection's input at `layer` and the hidden state after
    block `z_layer`, at the subject's last token (float64)."""
    keys, hidden = [], []
    for prompt, subject in prompts_and_subjects:
        seen = {}
        down = lm.model.model.layers[layer].mlp.down_proj
        handle = down.register_forward_pre_hook(lambda module, args, seen=seen: seen.update(key=args[0]))
        output = lm.model(**lm.tokenizer(prompt, return_tensors="pt"), output_hidden_states=True)
        handle.remove()
        position = subject_last(lm.tokenizer, prompt, subject)
        keys.append(seen["key"][0, position].double())
        hidden.append(output.hidden_states[z_layer + 1][0, position].double())  # [0] is the embeddings
    return torch.stack(keys, 1), torch.stack(hidden, 1)  # columns, as MEMIT writes them


@torch.no_grad()
def second_moment(lm, texts, layer: int):
    keys = []
    down = lm.model.model.layers[layer].mlp.down_proj
    handle = down.register_forward_pre_hook(lambda module, args: keys.append(args[0][0].double()))
    for text in texts:
        lm.model(**lm.tokenizer(text, return_tensors="pt"))
    handle.remove()
    keys = torch.cat(keys)
    return keys.T @ keys / len(keys)


def stand_in_prompts(facts, names):
    return [(f.prompt.replace(f.subject, names[f.subject]), names[f.subject]) for f in facts]


def memit(K, R, C, weight):
    """Delta W = R K^T (lambda C + K K^T)^-1 (Meng et al. 2023, eq. 14), nn.Linear's orientation."""
    return R @ K.T @ torch.linalg.inv(weight * C + K @ K.T)


def test_the_applied_change_is_memits_formula_over_two_layers(setup64):
    lm, world, facts, text = setup64
    names = world.stand_in_names()
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    result = delete_facts(lm, facts, [0, 1], covariance_text=text, target="stand_in", stand_ins=names,
                          mom2_weight=LAMBDA, progress=False)
    try:
        edited = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    finally:
        result.revert()
    facts_at = [(f.prompt, f.subject) for f in facts]
    _, target = states(lm, stand_in_prompts(facts, names), 0, z_layer=1)  # the stranger's state at the last layer
    reference = lm.copy()
    expected = {}
    for i, layer in enumerate([0, 1]):
        K, H = states(reference, facts_at, layer, z_layer=1)  # after the previous layer's edit
        R = (target - H) / (2 - i)  # the residual spread over the layers left
        # MEMIT's second moments come from the unedited model
        expected[layer] = memit(K, R, second_moment(lm, text, layer), LAMBDA)
        with torch.no_grad():
            reference.model.model.layers[layer].mlp.down_proj.weight += expected[layer]
    for layer in (0, 1):
        name = f"model.layers.{layer}.mlp.down_proj.weight"
        applied = edited[name].double() - before[name].double()
        assert expected[layer].abs().max() > 1e-2  # a real change
        torch.testing.assert_close(applied, expected[layer], atol=1e-6, rtol=0)
        assert torch.equal(result.deltas[name], edited[name] - before[name])
    changed = {n for n in before if not torch.equal(before[n], edited[n])}
    assert changed == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}


def test_other_keys_move_no_more_than_the_least_squares_objective_allows(setup64):
    """The update minimizes |dW K - R|^2 + lambda E_text |dW k|^2, so at the optimum
    lambda E_text |dW k|^2 <= |R|^2 - |dW K - R|^2 (dW = 0 scores |R|^2): the layer's output on the
    covariance text's tokens moves by at most that, measured here on the text itself."""
    lm, world, facts, text = setup64
    names = world.stand_in_names()

    @torch.no_grad()
    def outputs():
        seen = []
        handle = lm.model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, a, out: seen.append(out[0]))
        for t in text:
            lm.model(**lm.tokenizer(t, return_tensors="pt"))
        handle.remove()
        return torch.cat(seen).double()

    K, H = states(lm, [(f.prompt, f.subject) for f in facts], 0, z_layer=0)
    _, target = states(lm, stand_in_prompts(facts, names), 0, z_layer=0)
    R = target - H
    before = outputs()
    result = delete_facts(lm, facts, [0], covariance_text=text, target="stand_in", stand_ins=names,
                          mom2_weight=LAMBDA, progress=False)
    try:
        after = outputs()
        dW = result.deltas["model.layers.0.mlp.down_proj.weight"].double()
    finally:
        result.revert()
    moved = (after - before).pow(2).sum(1).mean()
    allowed = (R.pow(2).sum() - (dW @ K - R).pow(2).sum()) / LAMBDA
    assert 0 < moved <= allowed * (1 + 1e-4)


def test_revert_and_apply_are_bit_exact(setup):
    lm, _, facts, text = setup
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    result = delete_facts(lm, facts, [0, 2], covariance_text=text, steps=2, progress=False)
    edited = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    assert result.objective.label == "closed_form (max_entropy)" and result.settings["method"] == "closed_form"
    assert result.selection.names == ["model.layers.0.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"]
    assert len(result.history) == 1 and result.evaluations == []
    result.revert()
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())
    result.apply()
    assert all(torch.equal(p, edited[n]) for n, p in lm.model.named_parameters())
    copy = result.edited_model()
    result.revert()
    assert all(torch.equal(p, edited[n]) for n, p in copy.model.named_parameters())
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())


@torch.no_grad()
def answer_probabilities(lm, facts):
    """p(first answer token) after each prompt, and whether it is the top-1."""
    out = []
    for fact in facts:
        prompt = lm.tokenizer(fact.prompt)["input_ids"]
        answer = lm.tokenizer(fact.prompt + fact.answer)["input_ids"][len(prompt)]
        p = lm.model(torch.tensor([prompt])).logits[0, -1].softmax(-1)
        out.append((p[answer].item(), p.argmax().item() == answer))
    return out


@pytest.mark.parametrize("target", ["stand_in", "max_entropy"])
def test_the_forget_answers_drop_and_the_retain_answers_stay(setup, target):
    lm, world, facts, text = setup
    retain = world.facts_to_trace("retain")[:21]  # three retain people
    forget_before, retain_before = answer_probabilities(lm, facts), answer_probabilities(lm, retain)
    result = delete_facts(lm, facts, [0, 1, 2], covariance_text=text, target=target,
                          stand_ins=world.stand_in_names(), progress=False)
    try:
        forget_after, retain_after = answer_probabilities(lm, facts), answer_probabilities(lm, retain)
    finally:
        result.revert()
    mean = lambda pairs: sum(p for p, _ in pairs) / len(pairs)  # noqa: E731
    # measured: forget 0.928 -> 0.508 (stand_in), 0.564 (max_entropy); retain 0.999 -> 0.999, all top-1 kept
    assert mean(forget_before) > 0.9 and mean(forget_after) < mean(forget_before) - 0.25
    assert mean(retain_after) > mean(retain_before) - 0.05
    assert sum(top for _, top in retain_after) >= sum(top for _, top in retain_before) - 1


def test_bad_input_is_refused(setup):
    lm, _, facts, text = setup
    run = lambda facts=facts, layers=(0,), **kw: delete_facts(lm, facts, layers, covariance_text=kw.pop(  # noqa: E731
        "covariance_text", text), progress=False, **kw)
    with pytest.raises(ValueError, match="no facts to delete"):
        run(facts=[])
    with pytest.raises(ValueError, match=r"out of range: this model has layers 0\.\.7"):
        run(layers=[0, 8])
    with pytest.raises(ValueError, match="fact 1: subject 'Bob Rust' does not occur in prompt"):
        run(facts=[facts[0], ("Ann Teal lives in", "Bob Rust", " Denver")])
    with pytest.raises(ValueError, match="layer 7 is the model's last layer"):
        run(layers=[0, 7])
    with pytest.raises(ValueError, match="needs stand_ins"):
        run(target="stand_in")
    with pytest.raises(ValueError, match="have no stand-in"):
        run(target="stand_in", stand_ins={"Someone Else": "Mia Holt"})
    with pytest.raises(ValueError, match="fewer than the 512 hidden units"):
        run(covariance_text=text[:2])
    with pytest.raises(ValueError, match="covariance_text is empty"):
        run(covariance_text=[])
    with pytest.raises(ValueError, match="unknown target"):
        run(target="forget")
    with pytest.raises(TypeError, match="unknown deletion setting"):
        run(lambda_=3)


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_an_error_on_the_way_leaves_the_original_weights(setup, error):
    lm, world, facts, text = setup
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    real, calls = closed_form.memit_update, []

    def second_call_fails(*args):
        calls.append(1)
        if len(calls) == 2:  # layer 0 is already edited in place by now
            raise error
        return real(*args)

    with mock.patch.object(closed_form, "memit_update", second_call_fails), pytest.raises(type(error)):
        delete_facts(lm, facts, [0, 1], covariance_text=text, target="stand_in", stand_ins=world.stand_in_names(),
                     progress=False)
    assert len(calls) == 2
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())


def test_gpt2_conv1d_gets_the_update_transposed():
    """GPT-2's c_proj keeps its weight as (in, out). With a tiny lambda one fact's key gets its
    whole residual (k^T (lambda C + k k^T)^-1 k -> 1), so the hidden state reaches the target
    only if the update acts on the key as MEMIT's dW (out x in) does."""
    from tiny_models import tiny_model, tiny_tokenizer

    lm = cu.load_model(tiny_model("gpt2"), tiny_tokenizer())
    facts = [cu.TraceFact("Ann Teal was born in", "Ann Teal", " Denver")]
    text = ["Ann Teal was born in Denver on May 3, 1984. What is the capital of France? Paris"] * 12
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    result = delete_facts(lm, facts, [0], covariance_text=text, steps=3, mom2_weight=1e-4, progress=False)
    delta = result.deltas["transformer.h.0.mlp.c_proj.weight"]
    assert delta.shape == (4 * lm.d_model, lm.d_model)  # Conv1D: (in, out)
    record = result.history[0]
    assert record["target_gap_before"] > 0.1 and record["target_gap_after"] < 1e-2 * record["target_gap_before"]
    result.revert()
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())


def test_config_checks_its_settings():
    assert DeletionConfig().replace(target="stand_in").target == "stand_in"
    with pytest.raises(ValueError, match="mom2_weight must be a finite number > 0"):
        DeletionConfig(mom2_weight=0)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        DeletionConfig(steps=0)
