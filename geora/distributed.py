"""Which process this is, under `accelerate launch` / torchrun: the one place that reads the
launchers' environment variables (RANK, WORLD_SIZE, LOCAL_RANK). A plain `python run.py` is
process 0 of 1. Also the few collective steps the pipeline needs (a barrier, gathering one
small object per process), which are no-ops in a single process.

>>> import os
>>> env = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
>>> process_rank(env), world_size(env), local_rank(env), is_main_process(env)
(1, 4, 1, False)
>>> process_rank({}), world_size({}), local_rank({}), is_main_process({})
(0, 1, None, True)
>>> gather_from_processes("only me")        # one process: nothing to gather
['only me']
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping

import torch
from torch import nn


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def process_rank(env: Mapping[str, str] | None = None) -> int:
    """Global rank of this process (0 without a launcher)."""
    return int(_env(env).get("RANK", "0"))


def world_size(env: Mapping[str, str] | None = None) -> int:
    """Number of training processes (1 without a launcher)."""
    return int(_env(env).get("WORLD_SIZE", "1"))


def local_rank(env: Mapping[str, str] | None = None) -> int | None:
    """This process's GPU index on its machine, or None without a launcher."""
    value = _env(env).get("LOCAL_RANK")
    return None if value is None else int(value)


def is_main_process(env: Mapping[str, str] | None = None) -> bool:
    """Rank 0: the process that evaluates and writes the run's files."""
    return process_rank(env) == 0


def _process_group(cpu: bool = False) -> bool:
    """True when several processes run; starts their process group if it is not running
    yet, through accelerate's PartialState (which the Trainer reuses later): gloo for
    `cpu` training, else the accelerator's backend (nccl on CUDA). `cpu` must match the
    Trainer's `use_cpu`, or the Trainer would find a state of the wrong kind."""
    if world_size() <= 1:
        return False
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        from accelerate import PartialState

        PartialState(cpu=cpu)
    return True


def wait_for_everyone(*, cpu: bool = False) -> None:
    """Barrier: every process waits here until all have arrived (no-op in one process);
    `cpu`: the run trains on the CPU (see _process_group)."""
    if _process_group(cpu):
        torch.distributed.barrier()


def gather_from_processes(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every process (picklable, small objects)."""
    if not _process_group():
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


@torch.no_grad()
def trainable_checksum(model: nn.Module) -> str:
    """sha256 of the names, dtypes, shapes and bytes of every trainable parameter: equal
    on two processes exactly when their trained parameters are bitwise equal.

    >>> from geora.models import tiny_model
    >>> trainable_checksum(tiny_model()) == trainable_checksum(tiny_model())
    True
    """
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.requires_grad:
            digest.update(f"{name}:{p.dtype}:{tuple(p.shape)}".encode())
            digest.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
