"""The run folder: environment info, the JSON-lines training log, run states.

A run folder holds `config.yaml` (resolved), `overrides.yaml`, `train_log.jsonl`, `checkpoints/`,
`adapter/`, `export/`, `results.json` (written last: its `status` says "finished" or
"failed") and, for a failed run, `failure.json`. Every file is written atomically
(geora.fileio), so a crash never leaves a half-written file behind.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path


from transformers import TrainerCallback

from geora.fileio import git_info, package_versions

PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "hydra-core",
            "omegaconf", "lm-eval", "math-verify", "vllm", "deepspeed", "geora")


class RunExistsError(RuntimeError):
    """The run folder holds a finished run (or one with another config) and overwrite is off."""


def read_json(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def env_info(device: str) -> dict:
    """Package versions, git commit and dirty flag, Python, platform and device."""
    import torch

    versions = package_versions(PACKAGES)
    dev = {"type": str(device), "name": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count()}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        dev.update(name=torch.cuda.get_device_name(), count=torch.cuda.device_count())
    return {"packages": versions, **git_info(), "python": sys.version.split()[0],
            "platform": platform.platform(), "device": dev}


def run_state(run_dir: str | Path) -> str:
    """"new" (nothing there), "finished", "failed", or "partial" (started, not finished)."""
    run_dir = Path(run_dir)
    results = read_json(run_dir / "results.json")
    if results is not None:
        return str(results.get("status", "finished"))
    if (run_dir / "config.yaml").is_file():
        return "partial"
    return "new"


def clear_run(run_dir: str | Path) -> None:
    """Remove what a previous run wrote (train.overwrite=true). Hydra's log file stays."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "overrides.yaml", "train_log.jsonl", "results.json",
                 "failure.json", "checkpoints", "adapter", "export", "eval", "eval_before"):
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


class JsonlLogCallback(TrainerCallback):
    """Appends every Trainer log record (loss, reward, kl, ...) as one JSON line, with step,
    wall time and the seconds since the previous record, and flushes it at once so that a
    killed run keeps its log. A resumed run appends to the same file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._last = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.time()
        rec = {"step": state.global_step, "time": now,
               "dt": None if self._last is None else now - self._last, **logs}
        self._last = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, default=float) + "\n")
            f.flush()


def read_log(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a killed run may be cut short
            continue
    return out
