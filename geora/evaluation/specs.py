"""Turn catalogue task names into lm-eval task specs: local data, repeats, guards.

Each task becomes an inline lm-eval group `geora:<name>` whose members are registered
tasks with overrides (lm-eval merges a member dict onto the registered YAML); the headline
score is the member's metric, or, for MMLU read from one local file, the size-weighted
mean over its subjects (as lm-eval's mmlu group). This is lm-eval's public config route;
nothing of lm-eval is copied. With `eval.data_dir`, the member reads the local file in the
hub data set's columns through the `json` builder instead of the hub.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from geora.evaluation.catalog import TaskInfo, task_info
from geora.evaluation.execution import ALLOW_ENV, CodeExecutionRefused
from geora.evaluation.settings import EvalSettings
from geora.models import HubUnavailableError


class DatasetUnavailableError(HubUnavailableError):
    """A hub data set is neither cached nor reachable, and no local file replaces it."""


def group_name(name: str) -> str:
    return f"geora:{name}"


def refuse_code_execution(settings: EvalSettings) -> None:
    """Raise before any model is loaded if a task would run model-written code unasked."""
    code = [t for t in settings.tasks if task_info(t).runs_code]
    if code and not settings.allow_code_execution:
        raise CodeExecutionRefused(
            f"tasks {code} run model-written Python to score it; this is off by default. "
            f"Allow it with eval.allow_code_execution=true (it runs in bubblewrap where "
            f"installed, else a guarded subprocess; {ALLOW_ENV}=1 is set for the run).")


def local_file(info: TaskInfo, data_dir: str, split: str) -> Path:
    path = Path(data_dir) / info.local_files[split]
    if not path.is_file():
        raise FileNotFoundError(
            f"task {info.name!r}: eval.data_dir={data_dir!r} has no {info.local_files[split]} "
            f"(a JSON-lines file in the columns of the hub data set {info.hub_id!r})")
    _check_columns(info, path)
    return path


def _check_columns(info: TaskInfo, path: Path) -> None:
    """Every record of `path` has info.required_columns, else one line naming the file."""
    if not info.required_columns:
        return
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not JSON ({e.msg})") from None
            missing = [c for c in info.required_columns if not isinstance(doc, dict) or c not in doc]
            if missing:
                raise ValueError(f"{path}:{i}: a {info.label} record needs "
                                 f"{', '.join(missing)} (task {info.name!r} reads "
                                 f"{', '.join(info.required_columns)})")


def _only_subject(dataset, column: str, value: str):
    return dataset.filter(lambda doc: doc[column] == value)


def _local_overrides(info: TaskInfo, data_dir: str) -> dict[str, Any]:
    files = {split: str(local_file(info, data_dir, split)) for split in info.local_files}
    (test_split,) = files  # every catalogue task reads one split
    return {"dataset_path": "json", "dataset_name": None,
            "dataset_kwargs": {"data_files": files}, "test_split": test_split,
            "training_split": None, "validation_split": None, "fewshot_split": None}


def _subtask_values(path: Path, column: str) -> list[str]:
    values = set()
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                doc = json.loads(line)
                if column not in doc:
                    raise ValueError(f"{path}:{i} has no {column!r} column")
                values.add(str(doc[column]))
    return sorted(values)


def check_hub_dataset(info: TaskInfo) -> bool:
    """True if the hub data set is cached (go offline), False if the hub is reachable;
    else DatasetUnavailableError naming the id and the eval.data_dir override."""
    from geora.models import cached_snapshot, hub_reachable

    if cached_snapshot(info.hub_id, repo_type="dataset") is not None:
        return True
    if hub_reachable():   # not cached (or cached incompletely): is the hub there?
        return False
    files = ", ".join(info.local_files.values())
    raise DatasetUnavailableError(
        f"task {info.name!r} needs the data set {info.hub_id!r}"
        f"{f' (config {info.hub_config!r})' if info.hub_config else ''}, which is not in the "
        f"local Hugging Face cache, and the hub cannot be reached. Put {files} (same columns) "
        f"in a folder and pass eval.data_dir=/path/to/folder.")


def build_specs(settings: EvalSettings, known_tasks: set[str] | None = None
                ) -> tuple[list[dict[str, Any]], dict[str, list[str]], bool]:
    """(lm-eval task specs, {task: lm-eval names its score comes from}, offline) for
    `settings.tasks`. `offline` is True when no task needs the network. `known_tasks`:
    registered lm-eval names, to check MMLU subjects."""
    refuse_code_execution(settings)
    specs, sources, offline = [], {}, True
    for name in settings.tasks:
        info = task_info(name)
        overrides: dict[str, Any] = {}
        if settings.repeats_for(name) is not None and info.sampled:
            overrides["repeats"] = settings.repeats_for(name)
        members: list[dict[str, Any]] | list[str]
        if info.hub_id is None:  # generated (micro): no data to find
            members = [{"task": info.lm_task, **overrides}]
        elif settings.data_dir is not None:
            overrides.update(_local_overrides(info, settings.data_dir))
            if info.subtask_column:  # a group read from one file: one member per subject
                path = Path(overrides["dataset_kwargs"]["data_files"]["test"])
                members = []
                for value in _subtask_values(path, info.subtask_column):
                    sub = info.subtask_pattern.format(value)
                    if known_tasks is not None and sub not in known_tasks:
                        raise ValueError(f"{path}: {info.subtask_column}={value!r} is not a "
                                         f"{info.label} subject (no lm-eval task {sub!r})")
                    members.append({"task": sub, **overrides, "process_docs": functools.partial(
                        _only_subject, column=info.subtask_column, value=value)})
            else:
                members = [{"task": info.lm_task, **overrides}]
        else:
            offline = check_hub_dataset(info) and offline
            members = [{"task": info.lm_task, **overrides}] if overrides else [info.lm_task]
        # No aggregate_metric_list here: lm-eval 0.4.13 passes an inline group's keys on
        # to its member tasks, whose config rejects that key. The harness aggregates.
        specs.append({"group": group_name(name), "task": members})
        sources[name] = [m if isinstance(m, str) else m["task"] for m in members]
    return specs, sources, offline


class environment:
    """Context manager: set environment variables (and the libraries' cached copies of the
    offline flags) for one evaluation, restore them afterwards."""

    def __init__(self, offline: bool, allow_code: bool):
        self.values = {"HF_ALLOW_CODE_EVAL": "1" if allow_code else None}
        if offline:
            self.values |= {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
        self.offline = offline

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.values}
        for k, v in self.values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self.flags = []
        if self.offline:  # both libraries read the flag once, at import
            import datasets.config
            import huggingface_hub.constants as hub_constants
            for mod, attr in ((datasets.config, "HF_HUB_OFFLINE"),
                              (datasets.config, "HF_DATASETS_OFFLINE"),
                              (hub_constants, "HF_HUB_OFFLINE")):
                if hasattr(mod, attr):
                    self.flags.append((mod, attr, getattr(mod, attr)))
                    setattr(mod, attr, True)
        return self

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for mod, attr, v in self.flags:
            setattr(mod, attr, v)
        return False
