"""RMU against open-unlearning's code written out (their hook on the decoder layer's output,
their masked MSE, their steering vector), its settings' errors, and a short run through `unlearn`."""

import copy

import pytest
import torch

import causal_unlearn as cu
from causal_unlearn.data.encoding import encode_rows
from causal_unlearn.unlearning import RMU, get_objective
from causal_unlearn.unlearning.loop import _encoder
from causal_unlearn.unlearning.run import _Forward


# ---------------------------------------------------------------- open-unlearning, written out
# src/trainer/unlearn/rmu.py of locuslab/open-unlearning, in float64

def _their_activations(model, batch, layer):
    """forward_with_cache: a forward hook on the module `model.layers.{layer}` (their module_regex)."""
    cache = []
    hook = model.get_submodule(f"model.layers.{layer}").register_forward_hook(
        lambda module, inputs, output: cache.append(output[0] if isinstance(output, tuple) else output))
    with torch.no_grad():
        outputs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    hook.remove()
    return cache[0], outputs


def _their_control_vector(dim, steering_coeff, seed):
    """get_control_vector: torch.rand from the global generator (seeded as the Trainer seeds it)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        random_vector = torch.rand(1, 1, dim)
    return random_vector / torch.norm(random_vector) * steering_coeff


def _their_activation_loss(activation1, activation2, mask, *, as_commented=False):
    """compute_activation_loss, as written there. Their `squared_diff_sum` has shape [b] (the
    comment says [b, 1]) and `num_tokens` [b, 1], so for b > 1 rows the division broadcasts to
    [b, b] and the mean is mean(sum_i) * mean(1 / n_j), not the per-row token mean the comments
    describe. `as_commented` divides row by row, which RMU does; on one row a batch (their WMDP
    experiment's batch size) both are the same."""
    squared_diff = torch.nn.functional.mse_loss(activation1, activation2, reduction="none")
    expanded_mask = mask.unsqueeze(-1).expand_as(squared_diff)
    squared_diff_sum = (squared_diff * expanded_mask).mean(dim=2).sum(dim=(1))
    num_tokens = mask.sum(dim=-1, keepdim=True)
    if as_commented:
        num_tokens = num_tokens.squeeze(-1)
    return (squared_diff_sum / num_tokens).mean()


# ---------------------------------------------------------------- one batch of the built-in model

@pytest.fixture(scope="module")
def edited_case(builtin, world):
    """A copy of the built-in model whose MLPs of layers 1 and 4 are moved by seeded noise (so the
    retain term is not zero), its selection and the original weights."""
    edited = cu.LoadedModel(copy.deepcopy(builtin.model), builtin.tokenizer, builtin.architecture, builtin.name)
    selection = cu.select_parameters(edited, [1, 4])
    original = selection.snapshot()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in selection.parameters.values():
            p.add_(torch.randn(p.shape, generator=g) * 0.3 * p.std())
    forget, retain = [world.forget[0], world.forget[3], world.forget[7]], [world.retain[1], world.retain[4]]
    return edited, selection, original, forget, retain


def _our_terms(edited_case, objective, rows=None):
    edited, selection, original, forget, retain = edited_case
    objective.reset()
    objective.begin(edited, forget, retain, layers=selection.layers)
    forward = _Forward(edited, selection, original, objective, _encoder(edited, retain, "output", None), "no", False)
    rows = rows or [(forget[0], True), (retain[0], False), (forget[1], True), (forget[2], True), (retain[1], False)]
    terms, _ = forward.terms(rows, epoch=0, training=True)
    return {name: value.detach() if name != "loss" else value for name, value in terms.items()}


def _their_terms(builtin, edited, forget, retain, layer, steering_coeff, seed, *, as_commented):
    """compute_loss's forget and retain terms (retain_loss_type EMBED_DIFF), on a forget batch and
    a retain batch as their trainer draws them, the models in float64."""
    edited64, original64 = copy.deepcopy(edited.model).double(), copy.deepcopy(builtin.model).double()
    forget_batch, retain_batch = encode_rows(builtin.tokenizer, forget), encode_rows(builtin.tokenizer, retain)
    # their labels are -100 outside the answer: mask = labels != -100 is the answer mask
    activations, _ = _their_activations(edited64, forget_batch, layer)
    control_vec = _their_control_vector(activations.shape[-1], steering_coeff, seed).to(torch.float64)
    forget_loss = _their_activation_loss(activations, control_vec.expand_as(activations), forget_batch.target_mask,
                                         as_commented=as_commented)
    retain_model, _ = _their_activations(edited64, retain_batch, layer)
    retain_ref, _ = _their_activations(original64, retain_batch, layer)
    retain_loss = _their_activation_loss(retain_model, retain_ref, retain_batch.target_mask, as_commented=as_commented)
    return float(forget_loss), float(retain_loss)


@pytest.mark.parametrize("layer", [None, 6])
def test_rmu_terms_equal_open_unlearning_one_row_a_batch(builtin, edited_case, layer):
    edited, selection, _, forget, retain = edited_case
    steered = 4 if layer is None else layer  # the deepest trained layer by default
    for f, r in ((forget[0], retain[0]), (forget[2], retain[1])):
        terms = _our_terms(edited_case, RMU(layer, steering_coeff=30.0, alpha=0.7, seed=5), [(r, False), (f, True)])
        forget_loss, retain_loss = _their_terms(builtin, edited, [f], [r], steered, 30.0, 5, as_commented=False)
        assert retain_loss > 1e-2  # the noise moved the retain states: the term is really compared
        assert float(terms["forget_mse"]) == pytest.approx(forget_loss, rel=1e-5)
        assert float(terms["retain_mse"]) == pytest.approx(retain_loss, rel=1e-5)
        assert float(terms["loss"].detach()) == pytest.approx(forget_loss + 0.7 * retain_loss, rel=1e-5)
        assert terms["loss"].requires_grad


def test_rmu_terms_on_several_rows_are_the_per_row_token_mean(builtin, edited_case):
    """Several rows of each split in one mixed batch: their formula as its comments describe it
    (each row's token mean, then the mean over rows); their code's broadcast gives another number."""
    edited, _, _, forget, retain = edited_case
    terms = _our_terms(edited_case, RMU(steering_coeff=30.0, alpha=0.7, seed=5))
    forget_loss, retain_loss = _their_terms(builtin, edited, forget, retain, 4, 30.0, 5, as_commented=True)
    assert float(terms["forget_mse"]) == pytest.approx(forget_loss, rel=1e-5)
    assert float(terms["retain_mse"]) == pytest.approx(retain_loss, rel=1e-5)
    broadcast, _ = _their_terms(builtin, edited, forget, retain, 4, 30.0, 5, as_commented=False)
    assert abs(broadcast - forget_loss) > 1e-3 * forget_loss  # rows of different lengths: the two differ


def test_rmu_with_their_token_mean_equals_their_code_on_several_rows(builtin, edited_case):
    """token_mean="open_unlearning": their code's number, broadcast included, on batches of several rows."""
    edited, _, _, forget, retain = edited_case
    terms = _our_terms(edited_case, RMU(steering_coeff=30.0, alpha=0.7, seed=5, token_mean="open_unlearning"))
    forget_loss, retain_loss = _their_terms(builtin, edited, forget, retain, 4, 30.0, 5, as_commented=False)
    assert float(terms["forget_mse"]) == pytest.approx(forget_loss, rel=1e-5)
    assert float(terms["retain_mse"]) == pytest.approx(retain_loss, rel=1e-5)


def test_rmu_nll_retain_equals_their_nll_retain(builtin, edited_case):
    """retain_loss_type NLL: GradDiff's retain loss, the model's own loss on labels (answer tokens)."""
    edited, _, _, forget, retain = edited_case
    objective = RMU(steering_coeff=30.0, alpha=0.7, retain_loss="nll", seed=5)
    assert not objective.needs_reference
    terms = _our_terms(edited_case, objective)
    retain_batch = encode_rows(builtin.tokenizer, retain)
    labels = retain_batch.input_ids.masked_fill(~retain_batch.target_mask, -100)
    with torch.no_grad():
        nll = copy.deepcopy(edited.model).double()(input_ids=retain_batch.input_ids,
                                                   attention_mask=retain_batch.attention_mask, labels=labels).loss
    assert float(terms["loss"].detach()) == pytest.approx(float(terms["forget_mse"] + 0.7 * nll), rel=1e-5)
    assert "retain_mse" not in terms


def test_a_batch_of_one_split_gives_zero_for_the_other(edited_case):
    edited, selection, original, forget, retain = edited_case
    objective = RMU(steering_coeff=30.0)
    objective.begin(edited, forget, retain, layers=selection.layers)
    forward = _Forward(edited, selection, original, objective, _encoder(edited, retain, "output", None), "no", False)
    only_retain, _ = forward.terms([(row, False) for row in retain], epoch=0, training=False)
    only_forget, _ = forward.terms([(row, True) for row in forget], epoch=0, training=False)
    assert float(only_retain["forget_mse"]) == 0.0 and float(only_retain["retain_mse"]) > 0
    assert float(only_forget["retain_mse"]) == 0.0 and float(only_forget["forget_mse"]) > 0


# ---------------------------------------------------------------- the steering vector, settings, errors

def test_steering_vector_is_theirs_from_the_seed():
    for seed in (0, 7):
        ours = RMU(steering_coeff=6.5, seed=seed).steering_vector(128)
        theirs = _their_control_vector(128, 6.5, seed).flatten()
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-7)
        assert torch.equal(ours, RMU(steering_coeff=6.5, seed=seed).steering_vector(128))
        assert float(ours.norm()) == pytest.approx(6.5, rel=1e-6) and bool((ours >= 0).all())
    assert not torch.equal(RMU(seed=0).steering_vector(128), RMU(seed=1).steering_vector(128))


def test_rmu_steers_the_deepest_trained_layer_by_default(builtin, world):
    objective = get_objective("rmu")
    assert (objective.steering_coeff, objective.alpha, objective.retain_loss) == (2.0, 1.0, "embed_diff")
    assert objective.reads == ()
    objective.begin(builtin, world.forget[:2], world.retain[:2], layers=[0, 5, 2])
    assert objective.reads == (builtin.architecture.block_output(5),)
    objective.reset()
    assert objective.reads == ()
    assert RMU(7, steering_coeff=80, alpha=10).label == "rmu (layer 7, c 80, alpha 10)"


@pytest.mark.parametrize("settings, error, message", [
    (dict(steering_coeff=0), ValueError, "steering_coeff must be a finite number > 0"),
    (dict(steering_coeff=float("nan")), ValueError, "steering_coeff"),
    (dict(alpha=-1), ValueError, "alpha must be a finite number >= 0"),
    (dict(retain_loss="kl"), ValueError, "unknown retain_loss 'kl'"),
    (dict(layer=-1), ValueError, "RMU's layer must be an integer >= 0"),
    (dict(layer=2.5), TypeError, "RMU's layer must be an integer"),
    (dict(seed="0"), TypeError, "seed must be an integer"),
    (dict(token_mean="mean"), ValueError, "unknown token_mean 'mean'"),
])
def test_rmu_refuses_bad_settings(settings, error, message):
    with pytest.raises(error, match=message):
        RMU(**settings)


def test_rmu_refuses_a_layer_below_a_trained_one_or_out_of_range(builtin, world):
    forget, retain = world.forget[:2], world.retain[:2]
    with pytest.raises(ValueError, match=r"layer 3, but trained layer\(s\) \[5\] lie above it.*RMU\(layer=5\)"):
        RMU(layer=3).begin(builtin, forget, retain, layers=[2, 5])
    with pytest.raises(ValueError, match=r"out of range.*0\.\.7"):
        RMU(layer=8).begin(builtin, forget, retain, layers=[2])
    with pytest.raises(ValueError, match="no trained layers were given"):
        RMU().begin(builtin, forget, retain)
    with pytest.raises(RuntimeError, match="begin was not called"):
        RMU()(None)
    before = {n: p.detach().clone() for n, p in builtin.model.named_parameters()}
    with pytest.raises(ValueError, match="lie above it"):
        cu.unlearn(builtin, forget, retain, layers=[0, 7], objective=RMU(layer=6), progress=False)
    assert all(torch.equal(p, before[n]) for n, p in builtin.model.named_parameters())


# ---------------------------------------------------------------- a short run

def _distance_to_steering(model, rows, layer, vector):
    """Mean over rows of the answer-token mean of mean_d (h - c u)^2 at the layer's output."""
    batch = encode_rows(model.tokenizer, rows)
    states, _ = _their_activations(model.model, batch, layer)
    return float(_their_activation_loss(states, vector.expand_as(states), batch.target_mask))


def test_unlearn_with_rmu_steers_the_forget_states_and_edits_only_the_trained_layers(builtin, world):
    fresh = cu.LoadedModel(copy.deepcopy(builtin.model), builtin.tokenizer, builtin.architecture, builtin.name)
    before = {n: p.detach().clone() for n, p in fresh.model.named_parameters()}
    forget, retain = world.forget[:12], world.retain[:12]
    vector = RMU().steering_vector(fresh.d_model)
    forget_before = _distance_to_steering(fresh, forget, 7, vector)
    retain_states_before, _ = _their_activations(fresh.model, encode_rows(fresh.tokenizer, retain), 7)
    result = cu.unlearn(fresh, forget, retain, layers=[0, 7], objective="rmu", epochs=2, lr=1e-3, batch_size=6,
                        grad_accum=1, eval_every=None, select="last", progress=False)
    forget_after = _distance_to_steering(fresh, forget, 7, vector)
    assert forget_after < 0.8 * forget_before
    retain_states_after, _ = _their_activations(fresh.model, encode_rows(fresh.tokenizer, retain), 7)
    retain_moved = float((retain_states_after - retain_states_before).pow(2).mean())
    assert retain_moved < forget_before - forget_after  # the retain term holds the retain states
    trained = set(result.selection.names)
    assert trained == {n for n in before if n.startswith(("model.layers.0.mlp.", "model.layers.7.mlp."))}
    for name, p in fresh.model.named_parameters():
        assert (not torch.equal(p, before[name])) == (name in trained), name
    assert {"forget_mse", "retain_mse", "forget_ce", "retain_ce", "loss"} <= set(result.history[0])
    result.revert()
    assert all(torch.equal(p, before[n]) for n, p in fresh.model.named_parameters())
