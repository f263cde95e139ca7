"""Figures from run folders: training reward per method, and evaluation before/after.

    python -m analysis.figures multirun --out figures/

writes reward_curves.png (mean training reward per step, smoothed over a window, one line
per method, averaged over seeds) and eval_scores.png (each task's score per method after
training, with the base model's score as a dashed line). Reads only results.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.tables import collect_runs  # noqa: E402


def smooth(values: list[float], window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    x = np.asarray(values, dtype=float)
    c = np.cumsum(np.insert(x, 0, 0.0))
    n = np.arange(1, len(x) + 1)
    lo = np.maximum(0, n - window)
    return (c[n] - c[lo]) / (n - lo)


def reward_curves(runs: pd.DataFrame, ax, window: int = 10) -> None:
    done = runs[runs["status"] == "finished"] if "status" in runs else runs
    for method, group in done.groupby("method"):
        curves = [smooth(c, window) for c in group["train.reward_per_step"] if isinstance(c, list) and c]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        mean = np.mean([c[:n] for c in curves], axis=0)
        ax.plot(np.arange(1, n + 1), mean, label=f"{method} (n={len(curves)})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"training reward (moving mean, {window} steps)")
    ax.legend(fontsize=8)


def eval_scores(runs: pd.DataFrame, ax) -> None:
    done = runs[runs["status"] == "finished"] if "status" in runs else runs
    tasks = sorted(c[len("eval."):] for c in done.columns if c.startswith("eval."))
    methods = sorted(done["method"].unique())
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        sel = done[done["method"] == method]
        means = [pd.to_numeric(sel[f"eval.{t}"], errors="coerce").mean() for t in tasks]
        ax.bar(np.arange(len(tasks)) + i * width, means, width, label=method)
    for j, t in enumerate(tasks):
        col = f"eval_before.{t}"
        if col in done:
            base = pd.to_numeric(done[col], errors="coerce").mean()
            ax.hlines(base, j - 0.1, j + 0.9, colors="k", linestyles="dashed")
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks, rotation=20)
    ax.set_ylabel("score (%); dashed: before training")
    ax.legend(fontsize=8)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", type=Path, help="folders searched for results.json")
    p.add_argument("--out", type=Path, default=Path("figures"))
    p.add_argument("--window", type=int, default=10, help="moving-average window (steps)")
    args = p.parse_args(argv)
    runs = collect_runs(*args.roots)
    if runs.empty:
        raise SystemExit(f"no results.json under {', '.join(map(str, args.roots))}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in (("reward_curves", lambda ax: reward_curves(runs, ax, args.window)),
                       ("eval_scores", lambda ax: eval_scores(runs, ax))):
        fig, ax = plt.subplots(figsize=(7, 4))
        draw(ax)
        fig.tight_layout()
        fig.savefig(args.out / f"{name}.png", dpi=120)
        plt.close(fig)
        print(f"wrote {args.out / (name + '.png')}")


if __name__ == "__main__":
    main()
