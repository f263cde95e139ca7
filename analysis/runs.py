"""Run folders -> one DataFrame row per run, and the groupings every table relies on.

`collect_runs(*roots)` reads each run folder through geora.training.rundir.RunFolder (the one
place that knows the layout) and returns one row per run with the columns

    method, model, data, seed, status, train.*, eval.<task>, eval_before.<task>,
    evals.<eval name>.<task>  (later evaluations by scripts/evaluate.py; they also fill
                               eval.<task> for tasks the training run did not score),
    analysis.overall.*, analysis.k, analysis.default_reading, analysis.readings
                              (results.json["analysis"]: the overall aggregate only; the
                               per-layer, per-type and per-module parts stay in the file),
    lr, rank, rho             (train.learning_rate, method.rank, method.rho of config.yaml),
    device                    (env.device: type, name, count),
    limits                    ({column: N} for every score column of the run read from a
                               limited evaluation, eval.limit=N: the tables mark them),
    settings, settings_id     (every setting that tells runs apart, see below),
    run_dir.

**Settings.** `settings` is the run's resolved config.yaml flattened to dotted keys, plus
the settings of its later evaluations (`evals.<name>.<key>`), less the keys that never change
what is trained or scored (IGNORED_SETTINGS: the seed, paths, logging, checkpoint cadence,
thread counts, the evaluation's name and task list). Two runs with equal settings differ in
their seed only. `variants(runs)` splits runs by their settings and labels each part with the
keys that differ ("lr=0.0001"): the tables average over seeds within a part, never across.

**Base.** `base_evaluations(runs)` is the one place that knows where the untrained model's
scores come from (see its docstring).

>>> import tempfile
>>> from geora.training.rundir import RunFolder
>>> root = Path(tempfile.mkdtemp())
>>> RunFolder(root / "geora" / "seed0").write_results({"status": "finished", "method": "geora",
...     "model": "micro", "data": "micro_math", "seed": 0, "eval": {"micro_math": 41.0}})
>>> collect_runs(root)[["method", "seed", "eval.micro_math"]]
  method  seed  eval.micro_math
0  geora     0             41.0
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from geora.evaluation.harness import SUMMARY_FILE
from geora.training.rundir import RunFolder, read_json

# Hyperparameters shown as columns of their own; read from the run's resolved config.
HYPERPARAMETERS = {"lr": ("train", "learning_rate"), "rank": ("method", "rank"),
                   "rho": ("method", "rho")}
# Config keys (fnmatch patterns) that never change what is trained or scored. A later
# evaluation's key evals.<name>.<k> is ignored when eval.<k> is.
IGNORED_SETTINGS = (
    "seed", "run_name", "device", "cpu_threads", "eval_before", "logger.*",
    "train.overwrite", "train.resume", "train.save_steps", "train.save_total_limit",
    "train.logging_steps", "train.check_frozen",
    # what the run logs and analyses afterwards, not what it trains
    "train.track_every", "analysis.track_every", "analysis.premise",
    # the resolved train.learning_rate is what trains; these are its per-method defaults
    "method.learning_rate", "method.learning_rate_large",
    "model.local_path", "data.local_path", "eval.data_dir",          # where files are
    "eval.name", "eval.tasks", "eval.in_domain", "eval.batch_size", "eval.log_samples",
    "eval.num_threads")
# Keys that belong to the method (a reference method is matched on everything else).
METHOD_SETTINGS = ("method.*", "train.learning_rate")
# results.json["analysis"]: the parts kept as columns (by_layer, by_type, modules are not).
ANALYSIS_KEPT = ("schema", "k", "default_reading", "readings", "overall")
SHORT_KEYS = {"train.learning_rate": "lr", "method.rank": "rank", "method.rho": "rho"}
BASE_METHOD = "base"
_ABSENT = "<absent>"


def flatten(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and other values stay as they are."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _results_row(results: dict) -> dict:
    row = flatten({k: v for k, v in results.items() if k not in ("env", "analysis")})
    analysis = results.get("analysis")
    if isinstance(analysis, dict):
        row.update(flatten({k: v for k, v in analysis.items() if k in ANALYSIS_KEPT}, "analysis."))
    return row


def _device(env: dict | None) -> str | None:
    dev = (env or {}).get("device") or {}
    if not dev:
        return None
    text = " ".join(str(dev[k]) for k in ("type", "name") if dev.get(k))
    return f"{text} x{dev['count']}" if dev.get("count") else text


def ignored(key: str, patterns: Sequence[str] = IGNORED_SETTINGS) -> bool:
    """True when `key` matches one of `patterns` (evals.<name>.<k> is read as eval.<k>)."""
    keys = [key]
    parts = key.split(".")
    if parts[0] == "evals" and len(parts) > 2:
        keys.append("eval." + ".".join(parts[2:]))
    return any(fnmatch.fnmatchcase(k, p) for k in keys for p in patterns)


def _canonical(value):
    """A hashable, comparable form of a config value (lists and dicts as sorted JSON)."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def run_settings(run: RunFolder) -> dict:
    """The settings that tell `run` apart from other runs (see the module docstring)."""
    from omegaconf import OmegaConf

    flat = {}
    cfg = run.read_config()
    if cfg is not None:
        try:
            flat = flatten(OmegaConf.to_container(cfg, resolve=True))
        except Exception:  # an interpolation that no longer resolves: compare as written
            flat = flatten(OmegaConf.to_container(cfg, resolve=False))
    for name in run.later_evaluations():
        summary = read_json(run.evaluation(name) / SUMMARY_FILE) or {}
        for key, value in flatten(summary.get("eval") or {}).items():
            flat[f"evals.{name}.{key}"] = value
    return {k: _canonical(v) for k, v in sorted(flat.items()) if not ignored(k)}


def settings_id(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


def collect_runs(*roots: str | Path) -> pd.DataFrame:
    """One row per run folder under `roots` (columns: see the module docstring)."""
    rows = []
    for run in RunFolder.find(*roots):
        results = run.read_results()
        row = _results_row(results)
        settings = run_settings(run)
        for name, keys in HYPERPARAMETERS.items():
            row[name] = settings.get(".".join(keys))
        if row.get("data") is None and settings.get("data.name") is not None:
            row["data"] = settings["data.name"]          # failed runs record no data
        limits = {}
        if settings.get("eval.limit") is not None:   # training's own evaluations
            limits.update({f"{part}.{task}": settings["eval.limit"]
                           for part in ("eval", "eval_before")
                           for task in (results.get(part) or {})})
        later = run.later_evaluations()
        # complete evaluations first: a limited one fills eval.<task> only for a task no
        # complete one scored
        for name in sorted(later, key=lambda n: (settings.get(f"evals.{n}.limit") is not None, n)):
            limit = settings.get(f"evals.{name}.limit")
            for task, score in later[name].items():
                row[f"evals.{name}.{task}"] = score
                if f"eval.{task}" not in row:           # a task training did not score
                    row[f"eval.{task}"] = score
                    if limit is not None:
                        limits[f"eval.{task}"] = limit
                if limit is not None:
                    limits[f"evals.{name}.{task}"] = limit
        row["limits"] = limits
        row["device"] = _device(results.get("env"))
        row["settings"] = settings
        row["settings_id"] = settings_id(settings)
        row["run_dir"] = str(run.path)
        rows.append(row)
    return pd.DataFrame(rows)


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "finished"] if "status" in runs else runs


def failed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] != "finished"] if "status" in runs else runs.iloc[:0]


# --------------------------------------------------------------------------- variants
def _settings_of(runs: pd.DataFrame, ignore: Sequence[str], extra: Sequence[str]) -> list[dict]:
    out = []
    for i in range(len(runs)):
        s = runs["settings"].iloc[i] if "settings" in runs else None
        s = {k: v for k, v in (s if isinstance(s, dict) else {}).items() if not ignored(k, ignore)}
        for col in extra:
            if col in runs:
                s[col] = _canonical(_plain(runs[col].iloc[i]))
        out.append(s)
    return out


def _plain(value):
    """NaN / None -> None, numpy scalars -> Python (for JSON keys and labels)."""
    if isinstance(value, (list, tuple, dict)):
        return value
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


def value_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _sort_value(value):
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def variants(runs: pd.DataFrame, ignore: Sequence[str] = (),
             extra: Sequence[str] = ()) -> list[tuple[str, pd.DataFrame]]:
    """`runs` split by their settings (less the keys matching `ignore`, plus the values of
    the `extra` columns): [(label, runs)], label "" when all agree, else the differing keys,
    e.g. "lr=0.0001, rank=8" (lr, rank, rho first), parts sorted by those values.

    >>> runs = pd.DataFrame({"seed": [0, 1, 0], "settings": [{"train.learning_rate": 1e-4},
    ...     {"train.learning_rate": 1e-4}, {"train.learning_rate": 5e-4}]})
    >>> [(label, list(part.seed)) for label, part in variants(runs)]
    [('lr=0.0001', [0, 1]), ('lr=0.0005', [0])]
    >>> [label for label, _ in variants(runs, ignore=["train.learning_rate"])]
    ['']
    """
    if runs.empty:
        return []
    sets = _settings_of(runs, ignore, extra)
    keys = [json.dumps(s, sort_keys=True, default=str) for s in sets]
    parts: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        parts.setdefault(key, []).append(i)
    if len(parts) == 1:
        return [("", runs)]
    distinct = [sets[idx[0]] for idx in parts.values()]
    names = sorted({k for s in distinct for k in s},
                   key=lambda k: (k not in SHORT_KEYS, list(SHORT_KEYS).index(k) if k in SHORT_KEYS else 0, k))
    differing = [k for k in names if len({json.dumps(s.get(k, _ABSENT), default=str) for s in distinct}) > 1]
    out = []
    for s, idx in zip(distinct, parts.values()):
        label = ", ".join(f"{SHORT_KEYS.get(k, k)}={value_text(s.get(k, _ABSENT))}" for k in differing)
        order = tuple(_sort_value(s.get(k, _ABSENT)) for k in differing)
        out.append((order, label, runs.iloc[idx]))
    return [(label, part) for _, label, part in sorted(out, key=lambda t: t[0])]


def shared_settings(runs: pd.DataFrame) -> str | None:
    """The settings `runs` share apart from the method's own (METHOD_SETTINGS), as one key;
    None when they do not all agree. A reference method is matched on this key."""
    keys = {json.dumps(s, sort_keys=True, default=str)
            for s in _settings_of(runs, METHOD_SETTINGS, ())}
    return keys.pop() if len(keys) == 1 else None


# ------------------------------------------------------------------------------- Base
def _column(runs: pd.DataFrame, name: str) -> list:
    return list(runs[name]) if name in runs else [None] * len(runs)


def _base_settings(settings) -> dict:
    """The settings of an evaluation of the untrained model: the model's and the evaluation's."""
    return {k: v for k, v in (settings if isinstance(settings, dict) else {}).items()
            if k.split(".")[0] in ("model", "eval", "evals")}


def base_evaluations(runs: pd.DataFrame) -> pd.DataFrame:
    """The Base row: the untrained model's evaluation, rows in collect_runs' columns with
    method "base" and scores in eval.<task>. Per model, from the first source that has any:

    1. runs recorded with method "base" (BASE_METHOD): collected like any run folder;
    2. eval_before.<task> of the model's finished training runs (each run evaluates the
       loaded model before training). Runs of one sweep evaluate the same model with the
       same settings, so identical records count once: n is the number of distinct
       evaluations, not of training runs.

    Settings are reduced to the model's and the evaluation's (model.*, eval.*, evals.*), so
    evaluations with other settings stay apart. Base scores are not seeded: they never
    enter a paired difference.
    """
    cols = ["method", "model", "data", "seed", "status", "settings", "settings_id", "run_dir"]
    if runs.empty or "method" not in runs:
        return pd.DataFrame(columns=cols)
    explicit = finished(runs[runs["method"] == BASE_METHOD])
    parts = [explicit.assign(settings=[_base_settings(s) for s in _column(explicit, "settings")])]
    trained = finished(runs[runs["method"] != BASE_METHOD])
    before = [c for c in trained.columns if c.startswith("eval_before.")]
    for model, sel in trained.groupby("model", sort=True):
        if model in set(explicit["model"]) or not before:
            continue
        scores = sel[before].apply(pd.to_numeric, errors="coerce")
        scores.columns = ["eval." + c[len("eval_before."):] for c in before]
        keep = scores.notna().any(axis=1)
        settings = [_base_settings(s) for s in _column(sel, "settings")]
        frame = scores[keep].assign(method=BASE_METHOD, model=model, data=None, seed=None,
                                    status="finished", run_dir=list(sel.loc[keep, "run_dir"])
                                    if "run_dir" in sel else None)
        frame["settings"] = [s for s, k in zip(settings, keep) if k]
        dedupe = frame[list(scores.columns)].astype(str).agg("|".join, axis=1) + \
            frame["settings"].map(lambda s: json.dumps(s, sort_keys=True, default=str))
        parts.append(frame[~dedupe.duplicated()])
    out = pd.concat([p for p in parts if not p.empty], ignore_index=True) if any(
        not p.empty for p in parts) else pd.DataFrame(columns=cols)
    out["settings_id"] = [settings_id(s) for s in out["settings"]]
    return out


# --------------------------------------------------------------------- a plain summary
def summary_table(runs: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Finished runs grouped by model, data, method, lr, rank, rho and `variant` (the other
    settings that differ, "" when none): the mean of each metric over seeds, and n_seeds.
    (`python -m analysis.tables DIR` prints the same with 95% intervals.)"""
    done = finished(runs)
    if metrics is None:
        metrics = [c for c in done.columns if c.startswith(("eval.", "eval_before.", "evals."))
                   or c in ("train.reward_start", "train.reward_end", "train.step_time_s",
                            "train.peak_memory_gib", "train.trainable_params")]
    keys = [k for k in ("model", "data", "method") if k in done]
    frames = []
    for _, group in done.groupby(keys, sort=True, dropna=False) if keys else [((), done)]:
        for label, part in variants(group, ignore=[".".join(v) for v in HYPERPARAMETERS.values()]):
            frames.append(part.assign(variant=label))
    if not frames:
        return pd.DataFrame(columns=[*metrics, "n_seeds"])
    done = pd.concat(frames)
    numeric = done[metrics].apply(pd.to_numeric, errors="coerce")
    index = [done[k].map(lambda v: "-" if _plain(v) is None else v)
             for k in (*keys, *HYPERPARAMETERS, "variant") if k in done]
    grouped = numeric.groupby(index, sort=False)
    table = grouped.mean()
    table["n_seeds"] = grouped.size()
    try:
        return table.sort_index()
    except TypeError:    # a level mixes numbers and "-": keep the order of appearance
        return table
