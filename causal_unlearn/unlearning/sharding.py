"""Sharding a model over the processes of a launch with torch's FSDP2 (ZeRO-3's layout): each
process holds 1/N of every weight, gradient and AdamW state, and a block's weights are gathered
only for its own forward and backward."""

from __future__ import annotations

from torch import Tensor
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.unlearning.processes import Processes


def shard_model(model: LoadedModel) -> LoadedModel:
    """Shard `model` in place over this launch's processes (`torchrun --nproc-per-node N`):
    `fully_shard` on every block, then on the whole model. Returns `model`, whose parameters
    are now DTensors; `unlearn` trains it as it trains any model, and every process must make
    the same calls, since each forward gathers weights from all of them.

    Sharding is for training: trace, copy or generate with an unsharded model, and save the
    result with `UnlearnResult.save_pretrained` (it gathers the full weights on rank 0).

    Examples:
        >>> import causal_unlearn as cu
        >>> cu.shard_model(cu.load_model("olmo-tiny-bios"))  # a single process has nothing to shard over
        Traceback (most recent call last):
        ...
        ValueError: shard_model spreads a model over several processes, and this is the only one; launch with torchrun --nproc-per-node N (or accelerate launch), or train unsharded
    """
    processes = Processes.current()
    if processes.world == 1:
        raise ValueError("shard_model spreads a model over several processes, and this is the only one; launch with "
                         "torchrun --nproc-per-node N (or accelerate launch), or train unsharded")
    if model.is_remote_only:
        raise ValueError(f"{model.name}'s weights are not on this machine (meta device); load it with its weights")
    if model.is_sharded:
        return model
    mesh = init_device_mesh(model.device.type, (processes.world,))
    for layer in range(model.n_layers):
        fully_shard(model.module(model.architecture.block_output(layer)), mesh=mesh)
    fully_shard(model.model, mesh=mesh)
    return model


def reshard(model: LoadedModel) -> None:
    """Free every gathered weight, so the next forward gathers the shards as they are now
    (the root module keeps its weights gathered after a forward otherwise)."""
    for module in model.model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def local_shard(tensor: Tensor) -> Tensor:
    """This process's shard of a sharded tensor (a DTensor); any other tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def full_tensor(tensor: Tensor) -> Tensor:
    """The whole of a sharded tensor, gathered from every process (a collective: every process
    calls it); any other tensor itself."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
