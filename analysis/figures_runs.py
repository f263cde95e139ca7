"""Figures of training and evaluation: the reward curves, final reward and held-out score
against the learning rate, the rank x rho grid, efficiency as ratios to FullFT and the
scores per task. `reward_curves` and `eval_scores` draw into a given axis (notebooks); their
`*_figure` twins write files. Registered for the CLI in analysis/figures.py, which
re-exports them.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.figkit import _band, _save, _skip, default_score, groups, smooth, source_text  # noqa: E402
from analysis.runs import finished  # noqa: E402
from analysis.stats import mean_interval  # noqa: E402


def reward_curves(runs: pd.DataFrame, ax, window: int = 10) -> bool:
    """Draw the training reward (moving mean over `window` steps) per method into `ax`."""
    drawn = False
    for label, sel in groups(runs):
        curves = [smooth(c, window) for c in sel.get("train.reward_per_step", []) if isinstance(c, list) and c]
        if curves:
            n = min(len(c) for c in curves)
            _band(ax, np.arange(1, n + 1), [c[:n] for c in curves], label)
            drawn = True
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"training reward (moving mean, {window} steps)")
    if drawn:
        ax.legend(fontsize=7)
    return drawn


def reward_curves_figure(runs: pd.DataFrame, out: Path, window: int = 10) -> list[Path] | None:
    fig, ax = plt.subplots(figsize=(7, 4))
    if not reward_curves(runs, ax, window):
        plt.close(fig)
        return _skip("reward_curves", "no run has train.reward_per_step")
    return _save(fig, out, source_text(runs))


def _by_value(sel: pd.DataFrame, x: str, y: str):
    xs = sorted(pd.to_numeric(sel[x], errors="coerce").dropna().unique())
    ivs = [mean_interval(sel.loc[pd.to_numeric(sel[x], errors="coerce") == v, y]) for v in xs]
    return np.array(xs), ivs


def lr_robustness(runs: pd.DataFrame, out: Path, score: str | None = None) -> list[Path] | None:
    """Final training reward and held-out score against the learning rate, per method."""
    done = finished(runs)
    score = score or default_score(done)
    if "lr" not in done or done["lr"].nunique(dropna=True) < 2:
        return _skip("lr_robustness", "the runs span fewer than two learning rates")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, y in zip(axes, ("train.reward_end", score)):
        if y is None or y not in done:
            ax.set_title(f"{y}: no data", fontsize=9)
            continue
        for label, sel in groups(done, split=("rank", "rho")):
            xs, ivs = _by_value(sel, "lr", y)
            if not len(xs):
                continue
            mean = np.array([np.nan if iv.mean is None else iv.mean for iv in ivs])
            err = np.array([[0 if iv.low is None else iv.mean - iv.low for iv in ivs],
                            [0 if iv.high is None else iv.high - iv.mean for iv in ivs]])
            ns = "/".join(str(iv.n) for iv in ivs)
            ax.errorbar(xs, mean, yerr=err, marker="o", capsize=3, label=f"{label} (n={ns})")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(y)
        ax.legend(fontsize=7)
    return _save(fig, out, source_text(runs))


def rank_rho_heatmap(runs: pd.DataFrame, out: Path, metric: str | None = None,
                     method: str = "geora") -> list[Path] | None:
    """Mean `metric` (default: the held-out score) of `method` over a rank x rho grid."""
    done = finished(runs)
    done = done[done["method"] == method] if "method" in done else done
    metric = metric or default_score(done)
    if metric is None or metric not in done or not {"rank", "rho"} <= set(done):
        return _skip("rank_rho_heatmap", f"no {method} runs with rank, rho and a score")
    ranks = sorted(done["rank"].dropna().unique())
    rhos = sorted(done["rho"].dropna().unique())
    if len(ranks) * len(rhos) < 2:
        return _skip("rank_rho_heatmap", f"{method} runs cover a single (rank, rho)")
    grid = np.full((len(ranks), len(rhos)), np.nan)
    fig, ax = plt.subplots(figsize=(1.3 * len(rhos) + 3, 0.7 * len(ranks) + 2.5))
    for i, r in enumerate(ranks):
        for j, p in enumerate(rhos):
            iv = mean_interval(done.loc[(done["rank"] == r) & (done["rho"] == p), metric])
            if iv.mean is not None:
                grid[i, j] = iv.mean
                ax.text(j, i, f"{iv.mean:.1f}\n(n={iv.n})", ha="center", va="center", fontsize=7, color="w")
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(rhos)), [f"{p:g}" for p in rhos])
    ax.set_yticks(range(len(ranks)), [f"{r:g}" for r in ranks])
    ax.set_xlabel("rho")
    ax.set_ylabel("rank r")
    ax.set_title(f"{method}: {metric}", fontsize=9)
    fig.colorbar(im, ax=ax)
    return _save(fig, out, source_text(done))


EFFICIENCY = (("train.trainable_params", "trainable parameters"), ("train.step_time_s", "step time"),
              ("train.peak_memory_gib", "peak memory"))


def efficiency(runs: pd.DataFrame, out: Path, reference: str = "fullft") -> list[Path] | None:
    """Trainable parameters, step time and peak memory per method as ratios to `reference`
    (ratio of means; the bar's interval is the method's t-interval over the reference mean)."""
    done = finished(runs)
    ref = done[done["method"] == reference]
    if ref.empty:
        return _skip("efficiency", f"no finished {reference} run to divide by")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, (col, title) in zip(axes, EFFICIENCY):
        base = mean_interval(ref[col]).mean if col in ref else None
        labels, ratios, errs = [], [], []
        for label, sel in groups(done):
            iv = mean_interval(sel[col]) if col in sel else None
            if base and iv and iv.mean is not None:
                labels.append(label)
                ratios.append(iv.mean / base)
                errs.append(0 if iv.low is None else (iv.high - iv.low) / 2 / base)
        ax.bar(range(len(ratios)), ratios, yerr=errs, capsize=3, color="tab:blue")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{title} / {reference}", fontsize=9)
    return _save(fig, out, source_text(runs))


def eval_scores(runs: pd.DataFrame, ax) -> bool:
    """Draw each task's score per method (mean, t-interval bars) into `ax`; dashed: before."""
    done = finished(runs)
    tasks = sorted(c[len("eval."):] for c in done.columns if c.startswith("eval."))
    labelled = list(groups(done))
    if not tasks or not labelled:
        return False
    width = 0.8 / len(labelled)
    for i, (label, sel) in enumerate(labelled):
        ivs = [mean_interval(sel[f"eval.{t}"]) for t in tasks]
        mean = [np.nan if iv.mean is None else iv.mean for iv in ivs]
        err = [0 if iv.low is None else iv.half_width for iv in ivs]
        ax.bar(np.arange(len(tasks)) + i * width, mean, width, yerr=err, capsize=2, label=label)
    for j, t in enumerate(tasks):
        col = f"eval_before.{t}"
        if col in done:
            ax.hlines(pd.to_numeric(done[col], errors="coerce").mean(), j - 0.1, j + 0.9,
                      colors="k", linestyles="dashed")
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks, rotation=20)
    ax.set_ylabel("score (%); dashed: before training")
    ax.legend(fontsize=7)
    return True


def eval_scores_figure(runs: pd.DataFrame, out: Path) -> list[Path] | None:
    fig, ax = plt.subplots(figsize=(7, 4))
    if not eval_scores(runs, ax):
        plt.close(fig)
        return _skip("eval_scores", "no finished run has eval.<task> scores")
    return _save(fig, out, source_text(runs))
