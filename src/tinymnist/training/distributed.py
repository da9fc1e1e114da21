"""Data-parallel training under torchrun, with PyTorch's own DistributedDataParallel.

Nothing here does anything unless torchrun (or any launcher that sets the same variables)
started the process with WORLD_SIZE > 1: a plain `tinymnist train` never initializes a
process group and pays nothing.

Semantics, the same at every world size: ``batch_size`` is the *global* batch; each step
every rank takes its share of the same slice of the epoch's permutation (the permutation
comes from the run's seed, identical on all ranks), and the loss is scaled so that DDP's
gradient average equals the gradient of the mean loss over the global batch. The learning
rate and the schedule therefore need no change with the number of processes. BatchNorm
statistics are computed per rank on its share of the batch (as with plain DDP).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> Context:
    """What torchrun told this process; a single-process context when it is not under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Context()
    return Context(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(ctx: Context, device: torch.device) -> torch.device:
    """Join the process group (nccl on CUDA, gloo otherwise); returns this rank's device."""
    if not ctx.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_rank(code: int):
    """End a torchrun worker process now, skipping the interpreter's shutdown; never returns.

    Why: with torch 2.13 a gloo worker thread can still be releasing its last collectives
    (and the tensors they hold, which belong to Python) when the main thread has returned
    and the interpreter is shutting down. Releasing a Python tensor needs the GIL; a thread
    that asks for it during shutdown is ended, and the rank aborts ("terminate called without
    an active exception", SIGABRT) after a run that succeeded. Seen here in 3 of 41 runs of
    the torchrun test on a busy 2-core machine, and once in CI. Destroying the process group
    does not stop those threads once a DDP Reducer has been built on it, even after the
    Reducer is deleted (the group's worker threads outlive ``destroy_process_group``; without
    a Reducer they are joined), and a rank that fails with an error never reaches the
    teardown at all. So every rank ends here instead, after a good run or an error. The same
    crash at shutdown is known upstream (pytorch/pytorch#179291, an atexit teardown, closed
    unmerged). Everything the run writes is written and closed by then; only the standard
    streams still need flushing.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away (`| head`), a closed stream
            stream.flush()
    os._exit(code)


def all_reduce_sum(ctx: Context, tensor: torch.Tensor) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def shard(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's contiguous share of a global batch; shares differ in size by at most one,
    and together they are the batch, each element once."""
    n = batch.shape[0]
    start = rank * n // world_size
    return batch[start:(rank + 1) * n // world_size]


class RankStopped(RuntimeError):
    """Rank 0 failed (and said why itself); the other ranks stop with this one-line reason."""


def on_main(ctx: Context, work, device: torch.device):
    """``work()`` on rank 0 alone, the others waiting for it; returns its result there and None
    on the others. Should it raise (an output folder that already holds a run, data that cannot
    be read), the others learn so and raise ``RankStopped`` instead of dying with a traceback
    in their next collective when rank 0's process is gone. ``device``: this rank's (nccl
    broadcasts from CUDA memory only)."""
    if not ctx.enabled:
        return work()
    failed = torch.zeros(1, device=device)
    result = None
    if ctx.is_main:
        try:
            result = work()
        except BaseException:
            failed += 1
            with contextlib.suppress(Exception):  # should the others be gone, rank 0's own error still comes out
                dist.broadcast(failed, 0)
            raise
    dist.broadcast(failed, 0)
    if failed.item():
        raise RankStopped(f"rank 0 stopped with an error (its message is above); rank {ctx.rank} stops too")
    return result


def main_first(ctx: Context, load, device: torch.device):
    """Run ``load(fetch)`` on rank 0 first (it may download and cache), then on the others
    from the cache it left, so that only one process ever fetches."""
    result = on_main(ctx, lambda: load(True), device)
    return result if ctx.is_main else load(False)
