"""The processes an unlearning run is spread over (`accelerate launch`, `torchrun`), and the few
collective operations the loop needs: sums of gradients and evaluation totals, a stop flag
every process sees, and the gathering of SHA256's epoch-0 retain losses."""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor


_FINISHED: list = []  # the closing barriers' work objects, alive until the interpreter frees them


@dataclass(frozen=True)
class Processes:
    """This process's rank among `world` processes (rank 0 of 1 when run alone).

    Examples:
        >>> Processes.current()
        Processes(rank=0, world=1)
    """

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Processes:
        """The processes of this launch: a process group already set up, or the one `accelerate
        launch`/`torchrun` describe in the environment (set up here, through accelerate, with
        gloo on CPU and NCCL on CUDA), or this process alone."""
        if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            PartialState()
            # set up here, so closed here: a process that exits with the group's worker threads
            # still running can abort ("terminate called without an active exception")
            atexit.register(_close_process_group)
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        """End a multi-process run cleanly: wait for every process, then take the process group
        down (each process calls it last; a process that exits while another still works, with
        the group alive, can abort the launch).

        Examples:
            >>> Processes.current().close()  # alone, nothing to close
        """
        if self.world > 1 and dist.is_initialized():
            barrier = dist.barrier(async_op=True)
            barrier.wait()
            # the barrier's work holds the collectives still in flight when it began, with their
            # tensors; held here, the main thread frees it, not a gloo worker thread during the
            # interpreter's shutdown, where taking the GIL aborts the process (pytorch#179291)
            _FINISHED.append(barrier)
            dist.destroy_process_group()

    def share(self, items: Sequence, *, pad: bool = False) -> list:
        """This process's share of `items` (every `world`-th, from its rank); with `pad`, filled
        with None to the length of the largest share, so that every process gets as many."""
        mine = list(items[self.rank :: self.world])
        return mine + [None] * (-(-len(items) // self.world) - len(mine)) if pad else mine

    def sum_(self, tensors: Sequence[Tensor]) -> None:
        """Sum each tensor over the processes, in place."""
        if self.world > 1:
            for tensor in tensors:
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether `flag` is true on any process (every process gets the same answer)."""
        if self.world == 1:
            return flag
        value = torch.tensor([float(flag)], device=device)
        self.sum_([value])
        return bool(value.item() > 0)

    def gather(self, values: list[float]) -> list[float]:
        """The values of every process, rank 0's first."""
        if self.world == 1:
            return list(values)
        gathered: list[list[float] | None] = [None] * self.world
        dist.all_gather_object(gathered, list(values))
        return [value for part in gathered for value in part]


def _close_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
