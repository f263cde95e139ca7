"""Which process this is, under `accelerate launch` / torchrun: the one place that reads the
launchers' environment variables (RANK, WORLD_SIZE, LOCAL_RANK). A plain `python run.py` is
process 0 of 1.

>>> import os
>>> env = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
>>> process_rank(env), world_size(env), local_rank(env), is_main_process(env)
(1, 4, 1, False)
>>> process_rank({}), world_size({}), local_rank({}), is_main_process({})
(0, 1, None, True)
"""
from __future__ import annotations

import os
from typing import Mapping


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
