"""Data-parallel training under torchrun (one process per GPU, or several CPU processes).

`train()` calls `init_distributed` itself: started by torchrun (RANK/WORLD_SIZE/LOCAL_RANK in the
environment) it joins the process group (nccl on CUDA, gloo on CPU); started plainly it is a
single process and nothing here does anything. Only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import datetime
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn

# Rank 0 validates alone while the others wait at a barrier; full-frame validation can take
# minutes, longer than the default collective timeout.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:<local_rank> when a GPU is visible, else cpu; 'cuda' without a GPU is an error."""
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', found {preference!r}")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: 'cuda' was requested but no CUDA device is visible; "
                           "use device: auto or cpu, or check CUDA_VISIBLE_DEVICES and the driver")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(device_preference: str = "auto") -> DistContext:
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistContext(device=resolve_device(device_preference))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return DistContext(rank, world_size, local_rank, device)


def wrap_model(model: nn.Module, context: DistContext, *, sync_batchnorm: bool = False,
               find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around `model` when there is more than one process.

    `find_unused_parameters` defaults to False: it costs a graph traversal every step, and every
    trainable parameter of every variant receives a gradient (tests/test_gpu_ready.py checks it).
    DLA-34's `base.level3.project` and `base.level4.project`, built as in the reference so that its
    checkpoints load but never run, are frozen (requires_grad False), so DDP does not wait for
    them. SyncBatchNorm needs CUDA; on CPU it is skipped with a warning.
    """
    if not context.distributed:
        return model
    if sync_batchnorm and context.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif sync_batchnorm:
        warnings.warn("sync_batchnorm needs CUDA; training with per-process BatchNorm statistics")
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def sum_over_processes(values: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum a small tensor over processes, so every rank logs and checks the same numbers."""
    if not context.distributed:
        return values
    values = values.detach().clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_from_main(value: object, context: DistContext) -> object:
    if not context.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(context: DistContext) -> None:
    if context.distributed:
        dist.barrier()


def shutdown(context: DistContext, *, wait: bool = True) -> None:
    """Leave the process group; `wait=False` after an error, when the other ranks may be gone."""
    if context.distributed and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def launch_command(nproc: int, args: Sequence[str], *, python: str | None = None) -> list[str]:
    """Command line that runs `micml.engine.train` with `args` on `nproc` processes.

    nproc <= 1: `python -m micml.engine.train ...`; otherwise
    `torchrun --standalone --nproc-per-node N -m micml.engine.train ...`, using the torchrun
    installed beside `python` (so the workflow's environment, not whatever is first on PATH).
    """
    python = python or sys.executable
    if nproc <= 1:
        return [python, "-m", "micml.engine.train", *map(str, args)]
    torchrun = Path(python).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [python, "-m", "torch.distributed.run"]
    return [*launcher, "--standalone", "--nproc-per-node", str(int(nproc)), "-m", "micml.engine.train", *map(str, args)]
