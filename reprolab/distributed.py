"""Data-parallel training through torchrun (DDP): launching, sharding and the few collectives training needs.

`train.num_processes > 1` makes the train stage replace itself with `torchrun --standalone`, which
starts that many copies of the stage on this machine (gloo on the CPU, NCCL on GPUs). Every process
draws the same batch order and takes its own slice of each batch; DDP averages the gradients, and the
loss of each slice is weighted so that the step equals one process's step on the whole batch up to
float summation order.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """This process's place in the job; one process is rank 0 of a world of 1."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = Context()


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch_with_torchrun(module: str, num_processes: int) -> None:
    """Replace this process with torchrun running `module` in `num_processes` local processes.

    exec, not a child: signals from DVC or the shell (SIGINT/SIGTERM) reach torchrun, which passes
    them to every worker, and each saves its part of the checkpoint before exiting.
    """
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={num_processes}", "-m", module]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def init(device_type: str) -> Context:
    """Join the torchrun job (or return the single-process context when not launched by it)."""
    if not launched_by_torchrun():
        return SINGLE_PROCESS
    context = Context(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    if device_type == "cuda":
        torch.cuda.set_device(context.local_rank)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return context


def process_device(device: torch.device, context: Context) -> torch.device:
    """Under DDP on GPUs each process drives the GPU of its local rank."""
    if device.type == "cuda" and context.distributed:
        return torch.device("cuda", context.local_rank)
    return device


def shutdown(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch: np.ndarray, context: Context) -> tuple[np.ndarray, float]:
    """This process's rows of a global batch and the weight of their mean loss in the batch mean.

    DDP averages gradients over processes, so a slice of n rows out of N carries n * world / N. A
    process left without rows (a last batch smaller than the world) still joins the all-reduce: it
    runs one row with weight 0.
    """
    mine = np.array_split(batch, context.world_size)[context.rank]
    if len(mine) == 0:
        return batch[:1], 0.0
    return mine, len(mine) * context.world_size / len(batch)


def _collective_device() -> torch.device:
    """NCCL reduces GPU tensors only; gloo reduces CPU tensors."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sum_over_processes(value: float, context: Context) -> float:
    if not context.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return float(tensor.item())


def any_process(flag: int, context: Context) -> int:
    """The largest value of `flag` over processes (a signal number seen by any of them)."""
    if not context.distributed:
        return flag
    tensor = torch.tensor([flag], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def from_main(value, context: Context):
    """Rank 0's `value` on every process (validation scores, so every rank takes the same decisions)."""
    if not context.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value, context: Context) -> list:
    """Every process's `value`, in rank order."""
    if not context.distributed:
        return [value]
    values = [None] * context.world_size
    dist.all_gather_object(values, value)
    return values


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()
