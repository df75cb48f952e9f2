"""Changing a model's weights for a while, and putting them back: the one snapshot / restore that
unlearning, relearning, the layer-set ablation and the attacks that need gradients share."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping

import torch
from torch import Tensor, nn


def snapshot(parameters: Mapping[str, nn.Parameter]) -> dict[str, Tensor]:
    """Detached copies of `parameters`, to put back bit for bit with `load` (a sharded
    parameter's copy is its own shard).

    Examples:
        >>> layer = torch.nn.Linear(2, 2)
        >>> saved = snapshot(dict(layer.named_parameters()))
        >>> saved["weight"].equal(layer.weight), saved["weight"] is layer.weight
        (True, False)
    """
    return {name: p.detach().clone() for name, p in parameters.items()}


@torch.no_grad()
def load(parameters: Mapping[str, nn.Parameter], weights: Mapping[str, Tensor]) -> None:
    """Copy `weights` (from `snapshot`) into `parameters`, in place.

    Examples:
        >>> layer = torch.nn.Linear(2, 2)
        >>> saved = snapshot(dict(layer.named_parameters()))
        >>> _ = layer.weight.data.add_(1.0)
        >>> load(dict(layer.named_parameters()), saved)
        >>> layer.weight.equal(saved["weight"])
        True
    """
    for name, p in parameters.items():
        p.copy_(weights[name])


@contextmanager
def trainable_only(module: nn.Module, parameters: Mapping[str, nn.Parameter]) -> Iterator[None]:
    """Within the block only `parameters` require grad (so only they get gradients and optimizer
    state); every flag is as before on leaving.

    Examples:
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        >>> with trainable_only(model, {"1.weight": model[1].weight}):
        ...     [n for n, p in model.named_parameters() if p.requires_grad]
        ['1.weight']
        >>> all(p.requires_grad for p in model.parameters())
        True
    """
    flags = [(p, p.requires_grad) for p in module.parameters()]
    chosen = {id(p) for p in parameters.values()}
    try:
        for p, _ in flags:
            p.requires_grad_(id(p) in chosen)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def editing(module: nn.Module, parameters: Mapping[str, nn.Parameter], *, keep: bool = False
            ) -> Iterator[dict[str, Tensor]]:
    """Change `parameters` of `module` within the block: only they require grad, and the block gets
    their original weights. On leaving, every weight is put back bit for bit (with `keep`, only
    when the block raised: an error or an interrupt), and so are the requires-grad flags, the
    gradients (none) and the train / eval mode.

    Examples:
        >>> model = torch.nn.Linear(2, 2)
        >>> before = model.weight.clone()
        >>> with editing(model, dict(model.named_parameters())) as original:
        ...     _ = model.weight.data.add_(1.0)
        ...     moved = not model.weight.equal(original["weight"])
        >>> moved, model.weight.equal(before), model.weight.grad is None
        (True, True, True)
    """
    original = snapshot(parameters)
    was_training = module.training
    clean = False
    try:
        with trainable_only(module, parameters):
            yield original
        clean = True
    finally:
        if not (keep and clean):
            load(parameters, original)
        for p in parameters.values():
            p.grad = None
        module.train(was_training)
