"""Low-rank adapters (`unlearn(..., adapter=LoRA(...))`): only the adapters train, the result is
W + B @ A * alpha / rank on the adapted weights and nothing else, and the model keeps its own
modules whatever happens."""

import pytest
import torch

import causal_unlearn as cu

QUICK = dict(epochs=1, lr=3e-3, batch_size=4, grad_accum=1, eval_every=None, select="last", progress=False)
RANK, ALPHA = 4, 8.0


def tree(lm):
    return [(name, type(module), module.training) for name, module in lm.model.named_modules()]


def weights(lm):
    return {name: p.detach().clone() for name, p in lm.model.named_parameters()}


def flags(lm):
    return {name: p.requires_grad for name, p in lm.model.named_parameters()}


@pytest.fixture(scope="module")
def run(builtin, world):
    """One run on a copy: the model, what it was before, and the result."""
    lm = builtin.copy()
    before = dict(weights=weights(lm), tree=tree(lm), flags=flags(lm), attributes=set(vars(lm.model)))
    # weight decay would move every entry of a trained weight: the base weights must not train
    result = cu.unlearn(lm, world.forget[:8], world.retain[:8], layers=[0, 7], objective="grad_diff",
                        adapter=cu.LoRA(rank=RANK, alpha=ALPHA), weight_decay=0.1, **QUICK)
    return lm, before, result


def test_only_the_adapted_weights_change_each_by_its_rank_r_product(run):
    lm, before, result = run
    adapted = {f"model.layers.{layer}.mlp.{name}.weight" for layer in (0, 7) for name in ("gate_proj", "up_proj", "down_proj")}
    assert set(result.edited) == set(result.original) == adapted
    for name, p in lm.model.named_parameters():
        if name not in adapted:
            assert torch.equal(p, before["weights"][name]), name
            continue
        module = name.removesuffix(".weight")
        a = result.adapter[f"{module}.lora_A.weight"].double()  # rank x in
        b = result.adapter[f"{module}.lora_B.weight"].double()  # out x rank
        assert a.shape == (RANK, p.shape[1]) and b.shape == (p.shape[0], RANK)
        expected = b @ a * (ALPHA / RANK)
        change = p.detach().double() - before["weights"][name].double()
        assert expected.abs().max() > 1e-4, name  # it trained
        torch.testing.assert_close(change, expected, atol=1e-6, rtol=0)
        assert torch.equal(p, result.edited[name]) and torch.equal(result.original[name], before["weights"][name])
        singular = torch.linalg.svdvals(change)
        assert singular[RANK] < 1e-4 * singular[0], name  # beyond rank r only float32 rounding
    assert result.settings["adapter"]["parameters"] == sum(t.numel() for t in result.adapter.values())


def test_the_model_keeps_its_own_modules_flags_and_attributes(run):
    lm, before, _ = run
    assert tree(lm) == before["tree"] and flags(lm) == before["flags"]
    assert set(vars(lm.model)) == before["attributes"]  # no peft_config left behind
    assert all(p.grad is None for p in lm.model.parameters())


def test_revert_and_apply_are_bit_exact(run):
    lm, before, result = run
    result.revert()
    try:
        assert all(torch.equal(p, before["weights"][n]) for n, p in lm.model.named_parameters())
    finally:
        result.apply()
    assert all(torch.equal(lm.model.get_parameter(n), w) for n, w in result.edited.items())


def test_save_pretrained_writes_the_merged_model_and_the_adapter_for_peft(run, builtin, tmp_path):
    from peft import PeftModel

    lm, before, result = run
    result.save_pretrained(tmp_path)
    reloaded = cu.load_model(str(tmp_path))
    assert all(torch.equal(reloaded.model.get_parameter(n), w) for n, w in result.edited.items())
    # peft's own loader puts the adapter on the original model; merged, it is the edited model
    merged = PeftModel.from_pretrained(builtin.copy().model, str(tmp_path / "adapter")).merge_and_unload()
    for name, weight in result.edited.items():
        torch.testing.assert_close(merged.get_parameter(name), weight, atol=1e-6, rtol=0)


class _Interrupt(cu.UnlearnCallback):
    def on_step(self, record):
        if record["step"] == 2:
            raise KeyboardInterrupt


def test_an_interrupt_leaves_the_model_as_it_was(builtin, world):
    lm = builtin.copy()
    before, modules, trainable = weights(lm), tree(lm), flags(lm)
    with pytest.raises(cu.UnlearningInterrupted, match="interrupted after 2 of 4") as caught:
        cu.unlearn(lm, world.forget[:8], world.retain[:8], layers=[1], modules="attn", objective="grad_diff",
                   adapter=cu.LoRA(rank=2, target=("q_proj", "v_proj")), callbacks=[_Interrupt()], **QUICK)
    assert tree(lm) == modules and flags(lm) == trainable and set(vars(lm.model)) == set(vars(builtin.model))
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())
    so_far = caught.value.result  # the run after step 1, merged, only in the chosen projections
    assert so_far.selected_step == 1 and sorted(so_far.edited) == ["model.layers.1.self_attn.q_proj.weight",
                                                                  "model.layers.1.self_attn.v_proj.weight"]
    so_far.apply()
    for name in so_far.edited:
        module = name.removesuffix(".weight")
        a, b = (so_far.adapter[f"{module}.lora_{x}.weight"].double() for x in "AB")
        change = lm.model.get_parameter(name).detach().double() - before[name].double()
        torch.testing.assert_close(change, b @ a * (16.0 / 2), atol=1e-6, rtol=0)
    so_far.revert()
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())


@pytest.mark.filterwarnings("ignore:after 2 optimizer step")
def test_a_reference_objective_starts_from_the_original_model(builtin, world):
    """B starts at zero: at step 0 the adapted model is the original, so KL(original || edited) is 0."""
    lm = builtin.copy()
    result = cu.unlearn(lm, world.forget[:4], world.retain[:4], layers=[7], objective="kl", adapter=cu.LoRA(rank=2),
                        **{**QUICK, "eval_every": 1})
    assert result.evaluations[0]["step"] == 0 and abs(result.evaluations[0]["retain_kl"]) < 1e-7
    result.revert()


def test_bad_settings_are_refused_before_training(builtin, world):
    with pytest.raises(ValueError, match="LoRA rank must be an integer >= 1, got 0"):
        cu.LoRA(rank=0)
    with pytest.raises(ValueError, match="LoRA alpha must be a finite number > 0"):
        cu.LoRA(alpha=-1.0)
    with pytest.raises(TypeError, match="pass modules='attn' to unlearn"):
        cu.LoRA(target="attn")
    lm = builtin.copy()
    before, modules = weights(lm), tree(lm)
    rows = dict(forget=world.forget[:4], retain=world.retain[:4], objective="grad_diff", **QUICK)
    with pytest.raises(ValueError, match=r"unknown LoRA target\(s\) \['q_proj'\]: the linear modules of the mlp "
                                         r"modules of layers \[0\] are \['down_proj', 'gate_proj', 'up_proj'\]"):
        cu.unlearn(lm, layers=[0], adapter=cu.LoRA(target=("q_proj",)), **rows)
    with pytest.raises(ValueError, match="LoRA rank 128 is not below the smallest side"):
        cu.unlearn(lm, layers=[0], adapter=cu.LoRA(rank=128), **rows)
    with pytest.raises(ValueError, match="Components edit chosen heads"):
        cu.unlearn(lm, layers=cu.Components(heads={1: (0,)}), adapter=cu.LoRA(), **rows)
    with pytest.raises(TypeError, match="adapter must be a LoRA"):
        cu.unlearn(lm, layers=[0], adapter={"rank": 8}, **rows)
    assert tree(lm) == modules and all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())


def test_gpt2_conv1d_gets_the_transposed_product():
    """GPT-2's Conv1D stores its weight as in x out: its change is (B @ A)^T * scaling."""
    from tiny_models import tiny_model, tiny_tokenizer

    lm = cu.load_model(tiny_model("gpt2"), tiny_tokenizer())
    before, modules = weights(lm), tree(lm)
    forget = [cu.Row(f"p{i}qa0", "Ann Teal was born in", "Denver", "Task2") for i in range(2)]
    retain = [cu.Row(f"q{i}qa0", "What is the capital of France?", "Paris", "Task2") for i in range(2)]
    result = cu.unlearn(lm, forget, retain, layers=[1], modules="all", objective="grad_diff",
                        adapter=cu.LoRA(rank=2, alpha=4.0), **{**QUICK, "lr": 1e-2})
    assert sorted(result.edited) == [f"transformer.h.1.{m}.weight" for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                                             "mlp.c_proj")]
    assert result.settings["adapter"]["fan_in_fan_out"] and tree(lm) == modules
    for name, p in lm.model.named_parameters():
        if name not in result.edited:
            assert torch.equal(p, before[name]), name  # the layer norms of the block too
            continue
        module = name.removesuffix(".weight")
        a, b = (result.adapter[f"{module}.lora_{x}.weight"].double() for x in "AB")
        expected = (b @ a).T * 2.0
        assert expected.abs().max() > 1e-5
        torch.testing.assert_close(p.detach().double() - before[name].double(), expected, atol=1e-6, rtol=0)
