"""What every figure shares (analysis.figures, analysis.premise): the seed-band line, the
saved PNG + PDF with the source at its foot, the skip note, the per-method groups of runs
and results.json["analysis"] of a run. The figures themselves: analysis/figures_weights.py
(the weight analysis) and analysis/figures_runs.py (training and evaluation); the registry
and the CLI: analysis/figures.py.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.stats import mean_interval  # noqa: E402
from analysis.runs import finished  # noqa: E402
from geora.training.rundir import RunFolder  # noqa: E402

HYPER = ("lr", "rank", "rho")
SCORE_PREFERENCE = ("eval.math500", "eval.micro_math_1k", "eval.micro_math", "eval.aime24")


def smooth(values: list[float], window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    x = np.asarray(values, dtype=float)
    c = np.cumsum(np.insert(x, 0, 0.0))
    n = np.arange(1, len(x) + 1)
    lo = np.maximum(0, n - window)
    return (c[n] - c[lo]) / (n - lo)


def groups(runs: pd.DataFrame, split: tuple[str, ...] = HYPER):
    """(label, runs) per method, split further by the hyperparameters in `split` that vary
    within that method; sorted by method, then value."""
    for method, sel in finished(runs).groupby("method", sort=True):
        keys = [h for h in split if h in sel and sel[h].nunique(dropna=True) > 1]
        if not keys:
            yield str(method), sel
            continue
        for vals, sub in sel.groupby(keys, sort=True, dropna=False):
            vals = vals if isinstance(vals, tuple) else (vals,)
            yield f"{method} " + " ".join(f"{k}={v:g}" for k, v in zip(keys, vals)), sub


def source_text(runs: pd.DataFrame) -> str:
    """'source: <common folder> | geora n=3, lora n=3': where the figure's runs came from."""
    done = finished(runs)
    dirs = [str(d) for d in done.get("run_dir", pd.Series(dtype=str)).dropna()]
    root = os.path.commonpath(dirs) if dirs else "runs given in memory"
    counts = ", ".join(f"{m} n={c}" for m, c in done["method"].value_counts().sort_index().items())
    return f"source: {root} | {counts}"


@lru_cache(maxsize=4096)
def _read_results(path: str) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def analysis_of(row: pd.Series) -> dict | None:
    """results.json["analysis"] of a run: an `analysis` column of dicts, else the file."""
    value = row.get("analysis")
    if isinstance(value, dict):
        return value
    run_dir = row.get("run_dir")
    if isinstance(run_dir, str) and RunFolder(run_dir).results.is_file():
        return _read_results(str(RunFolder(run_dir).results)).get("analysis")
    return None


def _band(ax, x, per_seed: list[list[float]], label: str, color=None, **kw):
    """Mean over seeds (rows) at each x, with the t-interval shaded where n >= 2."""
    ivs = [mean_interval(col) for col in zip(*per_seed)]
    mean = np.array([np.nan if iv.mean is None else iv.mean for iv in ivs])
    lo = np.array([np.nan if iv.low is None else iv.low for iv in ivs])
    hi = np.array([np.nan if iv.high is None else iv.high for iv in ivs])
    line, = ax.plot(x, mean, label=f"{label} (n={len(per_seed)})", color=color, **kw)
    if np.isfinite(lo).any():
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def _save(fig, out: Path, source: str) -> list[Path]:
    fig.text(0.01, 0.01, source, fontsize=6, ha="left", va="bottom", color="0.3")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=130)
    plt.close(fig)
    return paths


def _skip(name: str, why: str) -> None:
    print(f"skipped {name}: {why}")


def _num(x) -> float:
    return np.nan if x is None else float(x)


def default_score(runs: pd.DataFrame) -> str | None:
    cols = [c for c in runs.columns if c.startswith("eval.")]
    return next((c for c in SCORE_PREFERENCE if c in cols), cols[0] if cols else None)
