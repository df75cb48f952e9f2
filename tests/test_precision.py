"""The audit's 4-bit copy: bitsandbytes NF4 weights checked against the NF4 rounding written out
here in float64, the model passed in left bit for bit, the copy still answering as the original,
and the audit asking it beside the int8 and bf16 copies (or saying why it cannot)."""

from __future__ import annotations

import sys

import bitsandbytes as bnb  # the dev extra installs it (without it the audit skips the 4-bit copy)
import pytest
import torch
from torch import nn

import causal_unlearn as cu
from causal_unlearn.auditing import generation_recall, nf4_weights
from causal_unlearn.auditing.audit import per_form

# The 16 levels of NormalFloat4 (Dettmers et al. 2023, QLoRA, appendix E), as the paper lists them
NF4_LEVELS = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
], dtype=torch.float64)


def nf4_reference(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each run of `group_size` weights (row-major) scaled by its largest magnitude, rounded to
    the nearest NF4 level and scaled back, in float64."""
    groups = weight.double().reshape(-1, group_size)
    absmax = groups.abs().amax(dim=1, keepdim=True)
    nearest = (groups / absmax).unsqueeze(-1).sub(NF4_LEVELS).abs().argmin(-1)
    return (NF4_LEVELS[nearest] * absmax).reshape(weight.shape)


def _dequantized(linear) -> torch.Tensor:
    return bnb.functional.dequantize_4bit(linear.weight.data, linear.weight.quant_state).double()


@pytest.mark.parametrize("group_size", [64, 128])
def test_nf4_copy_rounds_every_block_linear_to_nf4_and_leaves_the_model_alone(builtin, group_size):
    before = {name: p.detach().clone() for name, p in builtin.model.named_parameters()}
    quantized = nf4_weights(builtin, group_size=group_size)
    assert all(torch.equal(p, before[name]) for name, p in builtin.model.named_parameters())
    originals = {name: m for name, m in builtin.model.named_modules() if isinstance(m, nn.Linear)}
    four_bit = {name: m for name, m in quantized.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    # every linear of the blocks is 4-bit; the output embedding (tied to the input embedding) is not
    assert set(four_bit) == set(originals) - {"lm_head"} and len(four_bit) == 7 * builtin.n_layers
    assert type(quantized.model.lm_head) is nn.Linear
    for name, linear in four_bit.items():
        weight = originals[name].weight
        # two 4-bit codes per stored byte, one float32 scale per group
        assert linear.weight.dtype == torch.uint8 and linear.weight.numel() * 2 == weight.numel()
        state = linear.weight.quant_state
        assert linear.weight.quant_type == "nf4" and state.absmax.numel() * group_size == weight.numel()
        dequantized = _dequantized(linear)
        assert not torch.equal(dequantized, weight.double())
        torch.testing.assert_close(dequantized, nf4_reference(weight, group_size), rtol=1e-6, atol=1e-7)
        levels = [group.unique().numel() for group in dequantized.reshape(-1, group_size)]
        assert max(levels) <= 16
    # what is not a block linear is the original's, bit for bit
    kept = {name: p for name, p in quantized.model.named_parameters() if not name.endswith("proj.weight")}
    assert kept and all(torch.equal(p, before[name]) for name, p in kept.items())
    assert quantized.dtype == builtin.dtype and quantized.device == builtin.device


def test_nf4_copy_answers_as_the_original(builtin, world):
    """On the unedited model the 4-bit copy keeps what the original recalls: on these 120 probes
    (every tenth first question or cloze prompt of forget and retain people) both recall all 120,
    on every fifth (240) the copy keeps every hit of the original; the logits move a little (at
    most 1.70 on this prompt)."""
    probes = per_form(world.probes("forget") + world.probes("retain"), 1)[::10]
    quantized = nf4_weights(builtin)
    ids = builtin.to_tokens("What is the capital of France?")
    difference = (quantized.logits(ids) - builtin.logits(ids)).abs().max()
    assert 0 < difference < 4
    original = generation_recall(builtin, probes, max_new_tokens=24, progress=False)
    copy = generation_recall(quantized, probes, max_new_tokens=24, progress=False)
    kept = sum(a and b for a, b in zip(original, copy)) / sum(original)
    assert sum(original) > 0.9 * len(probes) and kept >= 0.9


def test_nf4_weights_refuses_bad_input(builtin, monkeypatch):
    with pytest.raises(ValueError, match=r"group_size must be one of bitsandbytes' block sizes \(32, 64"):
        nf4_weights(builtin, group_size=100)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'causal_unlearn\[bitsandbytes\]'"):
        nf4_weights(builtin)


def test_audit_asks_the_nf4_copy_beside_int8_and_bf16_or_says_why_not(builtin, world, monkeypatch):
    task = world.unlearning_task()
    people = {p.name for split in ("forget", "retain") for p in world.people_in(split)[:2]}
    probes = per_form([p for p in task.probes if p.subject in people and p.form != "opening"], 1)
    small = cu.UnlearningTask(forget=task.forget, retain=task.retain, members=[], nonmembers=[], utility=[],
                              probes=probes)
    config = cu.AuditConfig(checks=("precision",), max_new_tokens=24)
    result = cu.audit(builtin, builtin.copy(), small, config=config, progress=False)
    columns = set(result.table().columns)
    assert columns == {"edited, int8", "edited, bf16", "edited, nf4"} and result.skipped == {}
    assert result.summary()["nf4_recall_forget"] > 0.8
    assert "edited, nf4" in {trace.name for trace in result.plot().data}
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    plan = cu.plan_audit(small, config)
    assert plan.checks == ("precision",) and "pip install" in plan.skipped["precision: nf4"]
    with pytest.warns(cu.AuditSkipWarning, match=r"'precision: nf4'.*bitsandbytes"):
        without = cu.audit(builtin, builtin.copy(), small, config=config, progress=False)
    assert set(without.table().columns) == {"edited, int8", "edited, bf16"}
    assert "nf4_recall_forget" not in without.summary()
