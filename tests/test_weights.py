"""The one snapshot / restore every stage that changes weights goes through (models.weights)."""

import pytest
import torch

from causal_unlearn.models.weights import editing, trainable_only


def _model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).eval()
    model[0].bias.requires_grad_(False)  # a flag the block changes, to be put back
    return model


def _state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _flags(model):
    return {n: p.requires_grad for n, p in model.named_parameters()}


def _train_a_step(model, parameters):
    optimizer = torch.optim.SGD(parameters.values(), lr=0.5)
    model.train()
    model(torch.ones(5, 3)).square().sum().backward()
    optimizer.step()


@pytest.mark.parametrize("error", [RuntimeError("broken"), KeyboardInterrupt()])
def test_editing_puts_every_weight_flag_gradient_and_mode_back_after_an_error(error):
    model = _model()
    before, flags = _state(model), _flags(model)
    chosen = {"2.weight": model[2].weight}
    with pytest.raises(type(error)), editing(model, chosen, keep=True) as original:
        assert [n for n, p in model.named_parameters() if p.requires_grad] == ["2.weight"]
        _train_a_step(model, chosen)
        assert not torch.equal(model[2].weight, original["2.weight"]) and model[2].weight.grad is not None
        raise error
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert _flags(model) == flags and all(p.grad is None for p in model.parameters()) and not model.training


def test_editing_keeps_the_edit_only_when_asked_and_the_block_ends_cleanly():
    model = _model()
    before, flags = _state(model), _flags(model)
    chosen = {"0.weight": model[0].weight}
    with editing(model, chosen) as original:
        _train_a_step(model, chosen)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with editing(model, chosen, keep=True) as original:
        _train_a_step(model, chosen)
        edited = model[0].weight.detach().clone()
    assert torch.equal(original["0.weight"], before["0.weight"]) and torch.equal(model[0].weight, edited)
    assert not torch.equal(edited, before["0.weight"])
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if n != "0.weight")  # nothing else
    assert _flags(model) == flags and model[0].weight.grad is None and not model.training


def test_trainable_only_restores_the_flags_after_an_error():
    model = _model()
    flags = _flags(model)
    with pytest.raises(ValueError), trainable_only(model, {}):
        assert not any(p.requires_grad for p in model.parameters())
        raise ValueError
    assert _flags(model) == flags
