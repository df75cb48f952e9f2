"""Reading module outputs by address with plain forward hooks."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from torch import Tensor, nn


def residual_tensor(output: Tensor | tuple) -> Tensor:
    """The tensor a module hands to the residual stream (first element of a tuple output)."""
    return output[0] if isinstance(output, tuple) else output


ForwardHook = Callable[[nn.Module, tuple, "Tensor | tuple"], "Tensor | tuple | None"]


@contextmanager
def forward_hooks(model: nn.Module, hooks: dict[str, ForwardHook]) -> Iterator[None]:
    """Forward hooks on the modules at the given addresses, removed when the block ends.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
        >>> with forward_hooks(net, {"0": lambda module, args, output: output * 0}):
        ...     net(torch.ones(1, 2)).abs().sum().item()
        0.0
    """
    handles = [model.get_submodule(a).register_forward_hook(h) for a, h in hooks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def record_outputs(model: nn.Module, addresses: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Record the outputs of the modules at `addresses` during the forwards inside the block.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
        >>> with record_outputs(net, ["0"]) as seen:
        ...     _ = net(torch.ones(1, 2))
        >>> seen["0"].shape
        torch.Size([1, 3])
    """
    with _recording(model, addresses, lambda args, output: residual_tensor(output)) as recorded:
        yield recorded


@contextmanager
def record_inputs(model: nn.Module, addresses: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Record the first positional input of the modules at `addresses` (e.g. what the
    unembedding reads) during the forwards inside the block.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
        >>> with record_inputs(net, ["1"]) as seen:
        ...     out = net(torch.ones(1, 2))
        >>> bool((seen["1"].relu() == out).all())
        True
    """
    with _recording(model, addresses, lambda args, output: args[0]) as recorded:
        yield recorded


@contextmanager
def _recording(model: nn.Module, addresses: Sequence[str], pick: Callable[[tuple, Tensor | tuple], Tensor]):
    recorded: dict[str, Tensor] = {}

    def hook_for(address: str):
        def hook(module: nn.Module, args: tuple, output: Tensor | tuple) -> None:
            # a copy: some blocks add into a sublayer's output in place (Falcon's parallel MLP)
            recorded[address] = pick(args, output).detach().clone()

        return hook

    with forward_hooks(model, {a: hook_for(a) for a in addresses}):
        yield recorded
