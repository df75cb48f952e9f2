"""Parameter selection, the objectives against hand computations, and the training loop's
guarantees: only the chosen weights move, revert is exact, saving round-trips, bad input fails."""

import math

import pytest
import torch
import torch.nn.functional as F

import causal_unlearn as cu
from causal_unlearn.data.encoding import EncodedBatch
from causal_unlearn.unlearning import (
    NPO, SHA256, SHA256KL, GradientAscent, GradientDifference, KLMinimization, LossInputs, Objective, SimNPO,
    get_objective,
)

# a short, fast run: enough steps to move the weights
QUICK = dict(epochs=1, lr=1e-3, batch_size=4, grad_accum=2, eval_every=2, progress=False)


# ---------------------------------------------------------------- parameter selection

def test_select_parameters_counts_the_chosen_modules(builtin):
    selection = cu.select_parameters(builtin, [2, 0, 2], modules="mlp")
    assert selection.layers == [0, 2]
    expected = sum(p.numel() for layer in (0, 2) for p in builtin.module(f"model.layers.{layer}.mlp").parameters())
    assert selection.count == expected == 2 * 3 * 128 * 512
    assert selection.share == pytest.approx(expected / sum(p.numel() for p in builtin.model.parameters()))
    attn = cu.select_parameters(builtin, [1], modules="attn")
    assert all(name.startswith("model.layers.1.self_attn.") for name in attn.names) and attn.count == 4 * 128 * 128
    block = cu.select_parameters(builtin, [1], modules="all")
    assert block.count == sum(p.numel() for p in builtin.module("model.layers.1").parameters())


@pytest.mark.parametrize("layers, message", [([], "no layers"), ([8], r"out of range.*0\.\.7"), ([-1], "out of range")])
def test_select_parameters_rejects_bad_layers(builtin, layers, message):
    with pytest.raises(ValueError, match=message):
        cu.select_parameters(builtin, layers)


def test_select_parameters_rejects_unknown_modules_and_empty_modules(builtin):
    with pytest.raises(ValueError, match="unknown modules"):
        cu.select_parameters(builtin, [0], modules="mlps")
    # OLMo (v1) layer norms have no parameters: a block's norm holds nothing to train
    spec = builtin.architecture
    from dataclasses import replace

    normless = cu.LoadedModel(builtin.model, builtin.tokenizer,
                              replace(spec, mlp_module_path="model.layers.{layer}.input_layernorm"), "x")
    with pytest.raises(ValueError, match="hold no parameters"):
        cu.select_parameters(normless, [0])


# ---------------------------------------------------------------- objectives, by hand

def _inputs(seed=0, reference=False, epoch=0, training=True):
    """Two forget rows and two retain rows of random logits over a 7-token vocabulary."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 5, 7, generator=g)
    ids = torch.randint(0, 7, (4, 5), generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0], [0, 0, 0, 1, 1], [0, 1, 1, 1, 1]], dtype=torch.bool)
    batch = EncodedBatch(ids, torch.ones_like(ids), mask)
    ref = torch.randn(4, 5, 7, generator=g)
    is_forget = torch.tensor([True, False, True, False])
    return LossInputs(logits, batch, is_forget, epoch, training, reference_logits_fn=(lambda: ref) if reference else None), ref


def _token_nll(logits, ids, mask, rows):
    """Per-row lists of -log p(token) for masked tokens, one loop at a time."""
    out = []
    for b in rows:
        out.append([-F.log_softmax(logits[b, t - 1], -1)[ids[b, t]] for t in range(1, ids.shape[1]) if mask[b, t]])
    return out


def _mean_ce(inputs, rows, logits=None):
    values = [v for row in _token_nll(inputs.logits if logits is None else logits, inputs.batch.input_ids,
                                      inputs.batch.target_mask, rows) for v in row]
    return sum(values) / len(values)


FORGET, RETAIN = [0, 2], [1, 3]


def test_gradient_ascent_and_difference_by_hand():
    inputs, _ = _inputs()
    forget_ce, retain_ce = _mean_ce(inputs, FORGET), _mean_ce(inputs, RETAIN)
    assert float(GradientAscent()(inputs)["loss"]) == pytest.approx(float(-forget_ce), rel=1e-6)
    terms = GradientDifference(retain_weight=0.5)(inputs)
    assert float(terms["loss"]) == pytest.approx(float(-forget_ce + 0.5 * retain_ce), rel=1e-6)


def test_sha256_alpha_baseline_is_the_mean_of_epoch_zero_batch_means():
    sha = SHA256()
    batches = [_inputs(seed)[0] for seed in range(3)]
    retain_ces = [float(_mean_ce(b, RETAIN)) for b in batches]
    for b in batches:
        terms = sha(b)
        assert float(terms["alpha"]) == 1.2
        assert float(terms["loss"]) == pytest.approx(float(-_mean_ce(b, FORGET) + 1.2 * _mean_ce(b, RETAIN)), abs=1e-6)
    sha.end_epoch(0)
    # the public code's divisor bug would give sum / number of examples (= / 6 here), not / 3
    assert sha.baseline == pytest.approx(sum(retain_ces) / 3)
    later, _ = _inputs(seed=7, epoch=1)
    later_retain = float(_mean_ce(later, RETAIN))
    sha.baseline, sha.alpha_max = later_retain - 1.0, 2.8  # one nat above: 0.3 * 6 + 0.8 = 2.6 by hand
    assert float(sha(later)["alpha"]) == pytest.approx(2.6)
    sha.alpha_max = 2.3  # the public code's cap
    assert float(sha(later)["alpha"]) == pytest.approx(2.3)
    sha.baseline = later_retain + 0.5  # below the baseline: alpha_start
    assert float(sha(later)["alpha"]) == 1.2
    sha.reset()
    assert sha.baseline is None


def test_sha256_alpha_formula_and_cap():
    sha = SHA256(alpha_max=2.8)
    sha.baseline = 2.0
    assert sha.alpha(1.0) == 1.2  # no excess over the baseline
    # by hand: 6 ** 0.1 = 1.196, 6 ** 0.5 = 2.449, 6 ** 0.9 = 5.016
    assert sha.alpha(2.1) == 1.2  # 0.3 * 1.196 + 0.8 = 1.159 -> 1.2
    assert sha.alpha(2.5) == 1.5  # 0.3 * 2.449 + 0.8 = 1.535 -> 1.5
    assert sha.alpha(2.9) == 2.3  # 0.3 * 5.016 + 0.8 = 2.305 -> 2.3
    assert sha.alpha(3.0) == 2.6  # 0.3 * 6 + 0.8
    assert sha.alpha(10.0) == 2.8


def test_kl_terms_by_hand():
    inputs, ref = _inputs(reference=True)
    kls = []
    for b in RETAIN:
        for t in range(1, 5):
            if inputs.batch.target_mask[b, t]:
                p = F.softmax(ref[b, t - 1], -1)
                kls.append((p * (p.log() - F.log_softmax(inputs.logits[b, t - 1], -1))).sum())
    expected_kl = sum(kls) / len(kls)
    terms = KLMinimization()(inputs)
    assert float(terms["retain_kl"]) == pytest.approx(float(expected_kl), rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(float(-_mean_ce(inputs, FORGET) + expected_kl), rel=1e-5)
    sha_kl = SHA256KL(kl_weight=2.0)(inputs)
    assert float(sha_kl["loss"]) == pytest.approx(
        float(-_mean_ce(inputs, FORGET) + 1.2 * _mean_ce(inputs, RETAIN) + 2 * expected_kl), rel=1e-5)


def test_npo_and_simnpo_by_hand():
    inputs, ref = _inputs(reference=True)
    logp = [-sum(row) for row in _token_nll(inputs.logits, inputs.batch.input_ids, inputs.batch.target_mask, FORGET)]
    logp_ref = [-sum(row) for row in _token_nll(ref, inputs.batch.input_ids, inputs.batch.target_mask, FORGET)]
    lengths = [len(row) for row in _token_nll(inputs.logits, inputs.batch.input_ids, inputs.batch.target_mask, FORGET)]
    beta = 0.1
    npo = sum(-2 / beta * math.log(1 / (1 + math.exp(beta * float(a - b)))) for a, b in zip(logp, logp_ref)) / 2
    terms = NPO(beta=beta, retain_weight=0.3)(inputs)
    assert float(terms["npo"]) == pytest.approx(npo, rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(npo + 0.3 * float(_mean_ce(inputs, RETAIN)), rel=1e-5)
    beta, gamma = 2.5, 0.5
    simnpo = sum(-2 / beta * math.log(1 / (1 + math.exp(beta * float(a) / n + gamma))) for a, n in zip(logp, lengths)) / 2
    assert float(SimNPO(beta=beta, gamma=gamma)(inputs)["simnpo"]) == pytest.approx(simnpo, rel=1e-5)


def test_a_batch_without_forget_rows_contributes_zero_forget_loss():
    inputs, _ = _inputs(reference=True)
    inputs.is_forget = torch.zeros(4, dtype=torch.bool)
    for objective in (GradientAscent(), NPO(), SimNPO()):
        terms = objective(inputs)
        assert all(torch.isfinite(v) for v in terms.values())
    assert float(GradientAscent()(inputs)["loss"]) == 0.0


def test_get_objective():
    assert {name: type(get_objective(name)).__name__ for name in cu.unlearning.OBJECTIVES} == {
        "sha256": "SHA256", "sha256_kl": "SHA256KL", "grad_ascent": "GradientAscent", "grad_diff": "GradientDifference",
        "kl": "KLMinimization", "npo": "NPO", "simnpo": "SimNPO", "rmu": "RMU"}
    custom = SHA256(alpha_max=2.8)
    assert get_objective(custom) is custom
    with pytest.raises(ValueError, match="unknown objective 'dpo'"):
        get_objective("dpo")


# ---------------------------------------------------------------- the loop

@pytest.fixture
def fresh(builtin):
    """A private copy of the built-in model, so a failed test cannot leak edited weights."""
    import copy

    return cu.LoadedModel(copy.deepcopy(builtin.model), builtin.tokenizer, builtin.architecture, builtin.name)


def test_only_the_selected_weights_move_and_revert_is_exact(fresh, world):
    before = {n: p.detach().clone() for n, p in fresh.model.named_parameters()}
    flags = {n: p.requires_grad for n, p in fresh.model.named_parameters()}
    result = cu.unlearn(fresh, world.forget[:8], world.retain[:8], layers=[1, 6], objective="grad_diff", **QUICK)
    trained = set(result.selection.names)
    assert trained == {n for n in before if n.startswith(("model.layers.1.mlp.", "model.layers.6.mlp."))}
    for name, p in fresh.model.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == (name in trained), name
        assert p.grad is None or name in trained
    assert {n: p.requires_grad for n, p in fresh.model.named_parameters()} == flags
    assert all(torch.equal(result.deltas[n], result.edited[n] - before[n]) for n in trained)
    result.revert()
    assert all(torch.equal(p, before[n]) for n, p in fresh.model.named_parameters())
    result.apply()
    assert all(torch.equal(dict(fresh.model.named_parameters())[n], result.edited[n]) for n in trained)


def test_history_evaluations_and_callbacks(fresh, world):
    seen = {"begin": 0, "step": 0, "evaluate": 0, "end": 0}

    class Counter(cu.UnlearnCallback):
        def on_train_begin(self, settings):
            seen["begin"] += 1
            assert settings["total_steps"] == 4

        def on_step(self, record):
            seen["step"] += 1

        def on_evaluate(self, record):
            seen["evaluate"] += 1

        def on_train_end(self, result):
            seen["end"] += 1

    # 16 rows, batches of 4, 2 per step: 2 steps per epoch, 2 epochs
    result = cu.unlearn(fresh, world.forget[:8], world.retain[:8], layers=[0], objective="sha256",
                        **{**QUICK, "epochs": 2}, callbacks=[Counter()])
    assert seen == {"begin": 1, "step": 4, "evaluate": 3, "end": 1}
    assert [r["step"] for r in result.history] == [1, 2, 3, 4]
    assert [r["step"] for r in result.evaluations] == [0, 2, 4]
    assert {"loss", "forget_ce", "retain_ce", "alpha", "lr"} <= set(result.history[0])
    assert result.history[0]["lr"] == 1e-3 and result.history[-1]["lr"] == pytest.approx(1e-3 / 4)
    assert {"joint_loss", "forget_answer_accuracy", "retain_token_accuracy"} <= set(result.evaluations[0])
    assert result.evaluations[0]["forget_answer_accuracy"] == 1.0
    best = min(result.evaluations, key=lambda r: r["joint_loss"])
    assert result.selected_step == best["step"]
    assert len(result.to_dataframe()) == 4 and len(result.to_dataframe("evaluations")) == len(result.evaluations)


def test_save_pretrained_reloads_and_scores_the_same(fresh, world, tmp_path):
    result = cu.unlearn(fresh, world.forget[:8], world.retain[:8], layers=[0, 7], objective="grad_diff",
                        **{**QUICK, "lr": 3e-3})
    result.save_pretrained(tmp_path / "edited")
    reloaded = cu.load_model(tmp_path / "edited", device="cpu")
    ids = fresh.to_tokens(world.forget[1].text)
    assert torch.equal(reloaded.logits(ids), fresh.logits(ids))
    score = dict(max_new_tokens=32, progress=False)
    assert cu.evaluate(reloaded, world.forget[:8], world.retain[:8], **score).to_dict() == \
        cu.evaluate(fresh, world.forget[:8], world.retain[:8], **score).to_dict()
    assert (tmp_path / "edited" / "unlearning.json").is_file()
    result.revert()


class _Explodes(Objective):
    name = "explodes"

    def __init__(self, after):
        self.after, self.calls = after, 0

    def __call__(self, inputs):
        self.calls += 1
        ce = inputs.mean_nll("forget")
        if inputs.training and self.calls > self.after:
            ce = ce * float("nan")
        return {"loss": -ce, "forget_ce": ce}


def _unchanged(lm, before):
    return all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())


def test_a_nan_loss_stops_with_the_step_and_term_and_restores_the_original(fresh, world):
    before = {n: p.detach().clone() for n, p in fresh.model.named_parameters()}
    with pytest.raises(cu.UnlearningDivergedError, match=r"'loss' became nan at optimizer step 3 .*original weights "
                                                         r"again.*after step 1") as caught:
        # two batches per step, so the 5th batch is the first of step 3
        cu.unlearn(fresh, world.forget[:12], world.retain[:12], layers=[0], objective=_Explodes(after=4),
                   **{**QUICK, "eval_every": None, "select": "last"})
    assert _unchanged(fresh, before)
    so_far = caught.value.result
    assert so_far.is_reverted and so_far.selected_step == 1 and len(so_far.history) == 2
    so_far.apply()  # the weights after step 1, the last whose losses were all finite
    weights = dict(fresh.model.named_parameters())
    assert all(torch.equal(weights[n], so_far.edited[n]) for n in so_far.edited)
    assert all(torch.isfinite(w).all() for w in so_far.edited.values()) and not _unchanged(fresh, before)
    so_far.revert()
    assert _unchanged(fresh, before)


class _NanGradientAtLastStep(Objective):
    """A finite loss whose gradient is NaN (sqrt at 0) in the last step's batches: the weights,
    not the loss, become non-finite, and only after the last optimizer step."""

    name = "nan_gradient"

    def __init__(self, last_step_from_call):
        self.first_bad, self.calls = last_step_from_call, 0

    def __call__(self, inputs):
        ce = inputs.mean_nll("forget")
        if inputs.training:
            self.calls += 1
            if self.calls >= self.first_bad:
                ce = ce + torch.sqrt((ce - ce.detach()) ** 2)
        return {"loss": -ce, "forget_ce": ce}


@pytest.mark.parametrize("select", ["last", "lowest_joint_loss"])
def test_a_divergence_at_the_last_step_is_caught_under_either_selection(fresh, world, select):
    before = {n: p.detach().clone() for n, p in fresh.model.named_parameters()}
    settings = {**QUICK, "epochs": 1, "eval_every": 1, "select": select}  # 24 rows, batches of 4: 3 steps of 2
    with pytest.raises(cu.UnlearningDivergedError, match=r"weight 'model.layers.0.mlp.\w+.weight' became NaN or "
                                                         r"infinite at optimizer step 3") as caught:
        cu.unlearn(fresh, world.forget[:12], world.retain[:12], layers=[0], objective=_NanGradientAtLastStep(5),
                   **settings)
    assert _unchanged(fresh, before)
    so_far = caught.value.result
    assert so_far.selected_step == 2 and all(torch.isfinite(w).all() for w in so_far.edited.values())


class _Interrupt(cu.UnlearnCallback):
    def on_step(self, record):
        if record["step"] == 2:
            raise KeyboardInterrupt


def test_an_interrupted_run_restores_the_original_and_keeps_the_run_so_far(fresh, world):
    before = {n: p.detach().clone() for n, p in fresh.model.named_parameters()}
    flags = {n: p.requires_grad for n, p in fresh.model.named_parameters()}
    with pytest.raises(KeyboardInterrupt, match="interrupted after 2 of 3 optimizer steps") as caught:
        cu.unlearn(fresh, world.forget[:12], world.retain[:12], layers=[0], objective="grad_diff",
                   callbacks=[_Interrupt()], **{**QUICK, "eval_every": None, "select": "last"})
    assert isinstance(caught.value, cu.UnlearningInterrupted)
    assert _unchanged(fresh, before) and flags == {n: p.requires_grad for n, p in fresh.model.named_parameters()}
    so_far = caught.value.result
    so_far.apply()
    assert not _unchanged(fresh, before) and so_far.selected_step == 1
    so_far.revert()
    assert _unchanged(fresh, before)


def test_any_error_inside_the_run_restores_the_original(fresh, world):
    class Broken(cu.UnlearnCallback):
        def on_step(self, record):
            raise RuntimeError("the dashboard broke")

    before = {n: p.detach().clone() for n, p in fresh.model.named_parameters()}
    with pytest.raises(RuntimeError, match="the dashboard broke") as caught:
        cu.unlearn(fresh, world.forget[:12], world.retain[:12], layers=[0], objective="grad_diff",
                   callbacks=[Broken()], **{**QUICK, "eval_every": None, "select": "last"})
    assert _unchanged(fresh, before)
    assert "the model holds its original weights again" in "".join(caught.value.__notes__)


def test_unlearn_rejects_bad_input(builtin, world):
    forget, retain = world.forget[:4], world.retain[:4]
    with pytest.raises(ValueError, match="forget set is empty"):
        cu.unlearn(builtin, [], retain, layers=[0])
    with pytest.raises(ValueError, match="retain set is empty"):
        cu.unlearn(builtin, forget, [], layers=[0])
    with pytest.raises(ValueError, match=r"forget row 1 is missing field\(s\) \['output'\]"):
        cu.unlearn(builtin, [forget[0].to_dict(), {"id": "x qa0", "input": "q", "task": "T"}], retain, layers=[0])
    with pytest.raises(ValueError, match="out of range"):
        cu.unlearn(builtin, forget, retain, layers=[12])
    with pytest.raises(ValueError, match="empty output"):
        cu.unlearn(builtin, [cu.Row("x qa0", "q", " ", "T")], retain, layers=[0])
    with pytest.raises(ValueError, match="needs evaluations"):
        cu.unlearn(builtin, forget, retain, layers=[0], eval_every=None)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        cu.unlearn(builtin, forget, retain, layers=[0], epochs=0)
    with pytest.raises(ValueError, match="unknown loss_on 'prompt'; use 'output' .* 'text' or 'distinct'"):
        cu.unlearn(builtin, forget, retain, layers=[0], loss_on="prompt")


def test_the_distinct_loss_adds_only_the_forget_prompts_own_tokens(builtin, world):
    from causal_unlearn.unlearning.loop import _encoder

    task = world.unlearning_task()
    rows = [task.forget[1], task.retain[1]]  # a forget and a retain question
    encode = _encoder(builtin, task.retain, "distinct", None)
    batch = encode(rows, torch.tensor([True, False]))
    plain = _encoder(builtin, task.retain, "output", None)(rows, torch.tensor([True, False]))
    added = batch.target_mask & ~plain.target_mask
    assert not added[1].any()  # retain rows: the output only
    retain_vocabulary = {i for r in task.retain for i in builtin.tokenizer(r.input)["input_ids"]}
    added_ids = batch.input_ids[0][added[0]].tolist()
    assert added_ids and not set(added_ids) & retain_vocabulary
    prompt_ids = builtin.tokenizer(rows[0].input)["input_ids"]
    assert set(added_ids) == set(prompt_ids) - retain_vocabulary - {prompt_ids[0]}  # all of them, BOS aside


def test_overlapping_forget_and_retain_rows_warn_with_the_count(fresh, world):
    with pytest.warns(UserWarning, match="2 row\\(s\\) are in both"):
        result = cu.unlearn(fresh, world.forget[:4], world.retain[:4] + world.forget[:2], layers=[0],
                            **{**QUICK, "eval_every": None, "select": "last"})
    result.revert()


def test_compare_tabulates_every_run_and_leaves_the_model_as_it_was(fresh, world):
    before = {n: p.detach().clone() for n, p in fresh.model.named_parameters()}
    table = cu.compare_layer_sets(fresh, world.forget[:6], world.retain[:6], objectives=["grad_diff", NPO(beta=0.2)],
                       layer_sets={"first": [0], "last two": [6, 7]}, max_new_tokens=40,
                       **{**QUICK, "eval_every": None, "select": "last"})
    assert list(zip(table.objective, table.layer_set)) == [
        ("none", "original"), ("grad_diff", "first"), ("grad_diff", "last two"), ("npo", "first"), ("npo", "last two")]
    assert list(table.trainable) == [0, 196608, 393216, 196608, 393216]
    assert table["Task2/forget_knowledge"].iloc[0] == 1.0 and table.seconds.iloc[1] > 0
    assert all(torch.equal(p, before[n]) for n, p in fresh.model.named_parameters())
    with pytest.raises(ValueError, match="no layer sets"):
        cu.compare_layer_sets(fresh, world.forget[:2], world.retain[:2], layer_sets={})


def test_an_interrupt_inside_compare_leaves_every_weight_as_it_was(fresh, world):
    """The second run is interrupted mid-way, after the first run's edit was scored and reverted."""
    class InterruptSecondRun(cu.UnlearnCallback):
        runs = 0

        def on_train_begin(self, settings):
            InterruptSecondRun.runs += 1

        def on_step(self, record):
            if InterruptSecondRun.runs == 2:
                raise KeyboardInterrupt

    before = {n: p.detach().clone() for n, p in fresh.model.named_parameters()}
    flags = {n: p.requires_grad for n, p in fresh.model.named_parameters()}
    with pytest.raises(KeyboardInterrupt):
        cu.compare_layer_sets(fresh, world.forget[:4], world.retain[:4], objectives=["grad_diff"],
                              layer_sets={"first": [0], "last": [7]}, max_new_tokens=8, callbacks=[InterruptSecondRun()],
                              **{**QUICK, "eval_every": None, "select": "last"})
    assert InterruptSecondRun.runs == 2
    assert _unchanged(fresh, before) and flags == {n: p.requires_grad for n, p in fresh.model.named_parameters()}
    assert all(p.grad is None for p in fresh.model.parameters())


def test_the_reference_logits_are_the_original_models(fresh, world, builtin):
    seen = []

    class Recorder(GradientAscent):
        needs_reference = True

        def __call__(self, inputs):
            if inputs.training:
                seen.append((inputs.batch, inputs.reference_logits(), inputs.logits.detach()))
            return super().__call__(inputs)

    result = cu.unlearn(fresh, world.forget[:8], world.retain[:8], layers=[0, 7], objective=Recorder(),
                        **{**QUICK, "epochs": 2, "eval_every": None, "select": "last"})
    batch, reference, edited = seen[-1]  # after three optimizer steps
    with torch.no_grad():
        original = builtin.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.allclose(reference, original, atol=1e-5)
    assert not torch.allclose(edited, original, atol=1e-3)
    result.revert()


# ---------------------------------------------------------------- stand-in targets

def test_stand_in_prompts_swap_whole_subject_names():
    from causal_unlearn.data.stand_ins import stand_in_prompts

    rows = [cu.Row("a-qa0", "What is Ann Teal's phone number?", "1", "T"), cu.Row("b-qa0", "Where does Ann Teale live?", "2", "T"),
            cu.Row("c-sc1", "Ann met Ann Teal.", "3", "T")]
    prompts = stand_in_prompts(rows, {"Ann Teal": "Mia Holt", "Ann Teale": "Eve Lund", "Ann": "Zoe"})
    assert prompts == {"a-qa0": "What is Mia Holt's phone number?", "b-qa0": "Where does Eve Lund live?",
                       "c-sc1": "Zoe met Mia Holt."}
    with pytest.raises(ValueError, match=r"1 row\(s\) name none of the 1 subjects \(first: 'b-qa0'\)"):
        stand_in_prompts(rows[:2], {"Ann Teal": "Mia Holt"})
    with pytest.raises(ValueError, match="map to themselves"):
        stand_in_prompts(rows, {"Ann Teal": "Ann Teal"})
    with pytest.raises(ValueError, match="no subjects"):
        stand_in_prompts(rows, {})


def test_world_stand_ins_are_never_seen_people_of_the_same_sex(world):
    from causal_unlearn.data import names

    prompts = world.stand_ins()
    assert list(prompts) == [row.id for row in world.forget] and prompts == world.stand_ins()
    known = {person.name for person in world.people}
    for person in world.people_in("forget"):
        questions = [prompts[row.id] for row in world.forget if row.id.startswith(person.uid) and row.kind == "qa"]
        stand_in = questions[0].removeprefix("What is the birth date of ").removesuffix("?")
        assert stand_in not in known and person.name not in " ".join(questions)
        first_names = names.FEMALE_FIRST_NAMES if person.female else names.MALE_FIRST_NAMES
        assert stand_in.split()[0] in first_names
    assert world.stand_ins(seed=2) != prompts


def _stand_in_case(builtin, world, **settings):
    """A batch of two forget and two retain rows, the edited model's logits made up by adding
    noise to the original's, and a StandIn whose original model is `builtin` (counted)."""
    from causal_unlearn.data.encoding import encode_rows
    from causal_unlearn.unlearning import StandIn

    forget, retain = [world.forget[0], world.forget[2]], [world.retain[1], world.retain[3]]
    rows = [forget[0], retain[0], forget[1], retain[1]]
    batch = encode_rows(builtin.tokenizer, rows)
    calls = []

    def original_logits(b):
        calls.append(len(b))
        with torch.no_grad():
            return builtin.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits

    edited = original_logits(batch) + torch.randn(batch.input_ids.shape + (len(builtin.tokenizer),),
                                                  generator=torch.Generator().manual_seed(0))
    calls.clear()
    objective = StandIn(world.stand_ins(), **settings)
    objective.begin(builtin, forget, retain)
    inputs = LossInputs(edited, batch, torch.tensor([True, False, True, False]), 0, True, source_rows=rows,
                        original_logits_fn=original_logits)
    return objective, inputs, forget, calls


def test_stand_in_terms_by_hand(builtin, world):
    from causal_unlearn.data.encoding import encode_rows

    objective, inputs, forget, calls = _stand_in_case(builtin, world, excess_weight=0.7, retain_weight=1.3)
    kl, excess = [], []
    for position, row in zip([0, 2], forget):
        alone = encode_rows(builtin.tokenizer, [row])
        stand_in = encode_rows(builtin.tokenizer, [cu.Row(row.id, world.stand_ins()[row.id], row.output, row.task)])
        with torch.no_grad():
            target_logits = builtin.model(input_ids=stand_in.input_ids).logits[0]
        answer = [t for t in range(alone.input_ids.shape[1]) if alone.target_mask[0, t]]
        stand_answer = [t for t in range(stand_in.input_ids.shape[1]) if stand_in.target_mask[0, t]]
        assert len(answer) == len(stand_answer) > 0
        for t, s in zip(answer, stand_answer):
            target = F.log_softmax(target_logits[s - 1], -1)
            edited = F.log_softmax(inputs.logits[position, t - 1], -1)
            kl.append(float((target.exp() * (target - edited)).sum()))
            token = alone.input_ids[0, t]
            excess.append(max(0.0, float(edited[token] - target[token])))
    terms = objective(inputs)
    expected_kl, expected_excess = sum(kl) / len(kl), sum(excess) / len(excess)
    assert float(terms["forget_kl"]) == pytest.approx(expected_kl, rel=1e-4)
    assert float(terms["forget_excess"]) == pytest.approx(expected_excess, rel=1e-4) and expected_excess > 0
    retain_ce = float(_mean_ce(inputs, RETAIN))
    assert float(terms["loss"]) == pytest.approx(expected_kl + 0.7 * expected_excess + 1.3 * retain_ce, rel=1e-4)
    assert calls == [2]  # one forward for both stand-in prompts; then they are kept
    objective(inputs)
    assert calls == [2]


def test_stand_in_recomputes_targets_beyond_its_cache(builtin, world):
    objective, inputs, _, calls = _stand_in_case(builtin, world, cache_bytes=0)
    first = objective(inputs)
    second = objective(inputs)
    assert calls == [2, 2] and torch.equal(first["loss"], second["loss"])


def test_stand_in_rejects_missing_or_unchanged_prompts(builtin, world):
    from causal_unlearn.unlearning import StandIn

    forget = world.forget[:3]
    with pytest.raises(ValueError, match="needs a stand-in prompt per forget row id"):
        StandIn({})
    with pytest.raises(ValueError, match=rf"1 forget row\(s\) have no stand-in prompt \(first: '{forget[2].id}'\)"):
        StandIn({row.id: "x" for row in forget[:2]}).begin(builtin, forget, world.retain[:2])
    with pytest.raises(ValueError, match=r"1 stand-in prompt\(s\) equal their forget prompt"):
        StandIn({**world.stand_ins(), forget[1].id: forget[1].input}).begin(builtin, forget, world.retain[:2])
    with pytest.raises(ValueError, match=r"'stand_in' needs a stand-in prompt per forget row.*world.stand_ins\(\)"):
        get_objective("stand_in")


def test_stand_in_unlearning_targets_the_original_model_on_stand_in_prompts(fresh, world, builtin):
    from causal_unlearn.unlearning import StandIn

    objective = StandIn(world.stand_ins())
    # no evaluation before training: most targets are computed after the weights have moved
    result = cu.unlearn(fresh, world.forget[:8], world.retain[:8], layers=[0, 7], objective=objective,
                        **{**QUICK, "epochs": 3, "lr": 2e-3, "grad_accum": 1, "eval_every": None, "select": "last"})
    by_epoch = [[h for h in result.history if h["epoch"] == e] for e in (0, 2)]
    first, last = ({k: sum(h[k] for h in steps) / len(steps) for k in steps[0]} for steps in by_epoch)
    assert last["forget_excess"] < 0.7 * first["forget_excess"] and last["forget_ce"] > first["forget_ce"] + 1
    # the targets were computed mid-run with the original weights swapped in: they are the untouched model's
    inputs = _stand_in_case(builtin, world)[1]
    prompts = world.stand_ins()
    for row in world.forget[:8]:
        answer, cached = objective._targets[row]
        reference = StandIn(prompts)
        reference.begin(builtin, [row], [])
        expected_answer, expected = reference._targets_for(inputs, [row])[0]
        assert torch.equal(answer, expected_answer) and torch.allclose(cached, expected, atol=1e-5)
    result.revert()


def _one_step_gradient_norm(lm, rows, objective):
    """The gradient norm of one full-batch step, by autograd on a copy (the loop's own code is not used)."""
    from causal_unlearn.data.encoding import encode_rows
    from causal_unlearn.unlearning.objectives import LossInputs

    twin = lm.copy()
    batch = encode_rows(lm.tokenizer, [row for row, _ in rows])
    is_forget = torch.tensor([f for _, f in rows])
    logits = twin.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    objective(LossInputs(logits, batch, is_forget, 0, True))["loss"].backward()
    trained = [p for n, p in twin.model.named_parameters() if n.startswith(("model.layers.1.mlp.",))]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in trained])).item()


def test_gradient_clipping_reports_the_unclipped_norm_and_changes_the_run(fresh, world):
    forget, retain = world.forget[:6], world.retain[:6]
    settings = dict(layers=[1], objective="grad_diff", epochs=3, lr=1e-3, batch_size=12, grad_accum=1,
                    eval_every=None, select="last", progress=False)
    clipped = cu.unlearn(fresh, forget, retain, max_grad_norm=1e-3, **settings)
    clipped_weights = clipped.edited
    clipped.revert()
    free = cu.unlearn(fresh, forget, retain, max_grad_norm=None, **settings)
    free.revert()
    rows = [(r, True) for r in forget] + [(r, False) for r in retain]
    expected = _one_step_gradient_norm(fresh, rows, cu.unlearning.GradientDifference())
    assert clipped.history[0]["grad_norm"] == pytest.approx(expected, rel=1e-4) == free.history[0]["grad_norm"]
    assert expected > 1e-3  # so clipping acted, and the runs part after the first step (Adam ignores one scale)
    assert not all(torch.allclose(clipped_weights[n], w) for n, w in free.edited.items())


def test_gradient_checkpointing_gives_the_same_weights(fresh, world):
    settings = dict(layers=[0, 2], objective="npo", epochs=1, lr=1e-3, batch_size=6, grad_accum=1, eval_every=None,
                    select="last", progress=False)
    def run(**extra):
        saved = [0]  # elements autograd keeps for the backward

        def pack(tensor):
            saved[0] += tensor.numel()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            result = cu.unlearn(fresh, world.forget[:6], world.retain[:6], **settings, **extra)
        result.revert()
        return result, saved[0]

    (plain, plain_saved), (checkpointed, checkpointed_saved) = run(), run(gradient_checkpointing=True)
    assert checkpointed_saved < plain_saved / 3  # the blocks' activations were recomputed, not kept
    for name, weight in plain.edited.items():
        torch.testing.assert_close(checkpointed.edited[name], weight, atol=1e-6, rtol=0)
    assert not fresh.model.is_gradient_checkpointing and not any(m.training for m in fresh.model.modules())


def test_bf16_autocast_keeps_fp32_master_weights_and_tracks_the_fp32_run(fresh, world):
    settings = dict(layers=[1], objective="grad_diff", epochs=1, lr=1e-3, batch_size=6, grad_accum=1,
                    eval_every=1, select="last", progress=False)
    exact = cu.unlearn(fresh, world.forget[:6], world.retain[:6], **settings)
    exact.revert()
    mixed = cu.unlearn(fresh, world.forget[:6], world.retain[:6], mixed_precision="bf16", **settings)
    mixed.revert()
    assert all(w.dtype == torch.float32 for w in mixed.edited.values())
    first, second = exact.history[0]["loss"], mixed.history[0]["loss"]
    assert first != second and second == pytest.approx(first, rel=5e-2)  # bf16 forwards, not fp32 ones


@pytest.mark.parametrize("settings, error, message", [
    (dict(learning_rate=1e-3), TypeError, r"unknown unlearning setting\(s\) \['learning_rate'\]"),
    (dict(config=dict(lr=1e-3)), TypeError, "config must be an UnlearnConfig"),
    (dict(max_grad_norm=0), ValueError, "max_grad_norm must be a finite number > 0"),
    (dict(mixed_precision="fp8"), ValueError, "unknown mixed_precision 'fp8'"),
    (dict(gradient_checkpointing="yes"), TypeError, "gradient_checkpointing must be True or False"),
])
def test_bad_unlearning_settings_are_refused(builtin, world, settings, error, message):
    with pytest.raises(error, match=message):
        cu.unlearn(builtin, world.forget[:2], world.retain[:2], layers=[0], progress=False, **settings)


def test_a_config_and_keywords_combine(fresh, world):
    config = cu.UnlearnConfig(epochs=1, lr=1e-3, batch_size=4, grad_accum=1, eval_every=None, select="last")
    result = cu.unlearn(fresh, world.forget[:4], world.retain[:4], layers=[0], config=config, seed=3, progress=False)
    result.revert()
    assert result.settings["lr"] == 1e-3 and result.settings["seed"] == 3 and result.settings["max_grad_norm"] == 1.0
