"""Claiming a run folder for a config: what its state (new, unfinished, finished) allows.

A finished run is refused unless train.overwrite=true; an unfinished one resumes from its
last checkpoint when its config is the same (keys in RESUME_FREE_KEYS may differ); a
changed config with no checkpoint starts again (nothing was trained); with a checkpoint it
is refused. `prepare_run_dir` runs under the folder's lock (RunFolder.locked).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from geora.config.sections import TrainConfig
from geora.training.rundir import RunExistsError, RunFolder
from geora.training.settings import RunSettings

log = logging.getLogger(__name__)

# Keys that may differ between the first start of a run and its resumption (the weight
# analysis reads the trained model and changes nothing that is trained).
RESUME_FREE_KEYS = ("train.overwrite", "train.resume", "device", "logger", "analysis")


def _comparable(cfg: DictConfig) -> dict:
    """The config as compared for a resume: resolved, RESUME_FREE_KEYS dropped, and a key a
    group's schema gained since the run started read as its default (so a run started
    before an upgrade of the schema still resumes)."""
    from geora.config import SCHEMAS
    from geora.config.sections import schema_defaults

    c = OmegaConf.to_container(cfg, resolve=True)
    for group, schema in SCHEMAS.items():
        if isinstance(c.get(group), dict):
            c[group] = {**schema_defaults(schema), **c[group]}
    for key in RESUME_FREE_KEYS:
        head, _, leaf = key.rpartition(".")
        node = c.get(head, {}) if head else c
        if isinstance(node, dict):
            node.pop(leaf, None)
    return c


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def refuse_finished(train: TrainConfig, run: RunFolder) -> None:
    """RunExistsError for a finished run the config does not overwrite (reads only)."""
    if run.state() == "finished" and not train.overwrite:
        raise RunExistsError(
            f"{run.path} holds a finished run (results.json). Refusing to overwrite it: pass "
            f"train.overwrite=true to start again, or choose another run_name / hydra.run.dir")


def prepare_run_dir(settings: RunSettings, run_dir: str | Path | RunFolder) -> str | None:
    """Checks the folder's state against the run's config, claims it (config.yaml: the
    composed config, settings.config) and returns
    the checkpoint to resume or None. Called under the folder's lock: the temporary files
    of a killed run are cleared, and log records after the checkpoint dropped (the resumed
    run logs those steps again).

    Raises RunExistsError for a finished run (no overwrite), or an unfinished one with
    checkpoints and another config (a changed config with nothing to resume restarts)."""
    from geora.training.resume import checkpoint_step

    cfg, train = settings.config, settings.train
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    refuse_finished(train, run)
    state = run.state()
    if state != "new" and (state == "finished" or train.overwrite):
        run.clear()
        state = "new"
    run.clear_stale_temporaries()
    last = run.last_checkpoint()
    old = run.read_config() if state != "new" else None
    changed = _diff(_comparable(old), _comparable(cfg)) if old is not None else []
    if changed and last:
        raise RunExistsError(
            f"{run.path} holds an unfinished run with another config "
            f"({'; '.join(changed[:5])}). Pass train.overwrite=true to discard it, or "
            f"choose another run_name")
    if changed:   # e.g. a bad value found after loading: nothing trained, nothing to keep
        log.warning("%s: the unfinished run there has another config and no checkpoint "
                    "(%s): starting it again", run.path, "; ".join(changed[:5]))
        run.clear()
    run.forget_outcome()  # a failed run is being retried
    if last and train.resume == "never":
        raise RunExistsError(f"{run.path} has checkpoints but train.resume=never; "
                             f"pass train.overwrite=true to start again")
    run.truncate_log(checkpoint_step(last) if last else 0)
    run.write_config(cfg)
    return last


