"""Figures from run folders, one function per figure, each written as PNG and PDF.

    python -m analysis.figures multirun/micro/micro_math --out figures/

writes, where the runs hold the data (a figure without data is skipped with a note):
s_head_per_layer, nss_per_layer (results.json["analysis"]), mask_overlap (a GeoRA run's
adapter/mask_stats.json), reward_curves (train.reward_per_step), lr_robustness (final reward
and held-out score against the learning rate), rank_rho_heatmap, efficiency (ratios to
FullFT) and eval_scores. `singular_spectra(w0, w1, out)` takes tensors (call it from Python).

Every line is the mean over seeds with its 95% Student-t band (analysis.stats; no band
where n = 1), and every figure prints its source (folder and runs per method) at its foot.
Runs of one method that differ in lr, rank or rho are drawn apart ("pissa lr=0.0001").
`reward_curves(runs, ax)` and `eval_scores(runs, ax)` draw into a given axis (notebooks);
their `*_figure` twins write files like the rest.
"""
from __future__ import annotations

import argparse
import json
import os
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.stats import mean_interval  # noqa: E402
from analysis.runs import finished  # noqa: E402
from geora.persistence import STATS_FILE  # noqa: E402
from geora.training.rundir import RunFolder  # noqa: E402
from analysis.tables import collect_runs  # noqa: E402

HYPER = ("lr", "rank", "rho")
SCORE_PREFERENCE = ("eval.math500", "eval.micro_math_1k", "eval.micro_math", "eval.aime24")


# --------------------------------------------------------------------------- helpers
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


# Every figure `python -m analysis.figures` makes: name -> make(runs, out, options) returning
# the files written, or None after printing why the runs lack its data. A new figure is one
# function with the @figure decorator; the CLI and the tests iterate this registry.
FIGURES: dict = {}


def figure(name: str):
    """Register `make(runs, out, options)` as the figure `name` (options: the CLI's
    window, reading, score)."""
    def register(make):
        if name in FIGURES:
            raise ValueError(f"figure {name!r} registered twice")
        FIGURES[name] = make
        return make
    return register


# ------------------------------------------------------------------- analysis figures
def _per_layer(runs, pick):
    """{label: (layers, per-seed rows)} of pick(layer_agg) from results.json["analysis"]."""
    out = {}
    for label, sel in groups(runs):
        rows = [a["by_layer"] for a in (analysis_of(r) for _, r in sel.iterrows())
                if a and a.get("by_layer")]
        if not rows:
            continue
        layers = sorted({int(i) for r in rows for i in r}, key=int)
        out[label] = (layers, [[_num(pick(r.get(str(i), {}))) for i in layers] for r in rows])
    return out


def _num(x) -> float:
    return np.nan if x is None else float(x)


def s_head_per_layer(runs: pd.DataFrame, out: Path, reading: str | None = None) -> list[Path] | None:
    """S_Head per layer, one line per method (seed bands); dotted: each one's chance level."""
    rows = [a for a in (analysis_of(r) for _, r in finished(runs).iterrows()) if a]
    if not rows:
        return _skip("s_head_per_layer", "no run has results.json['analysis']")
    reading = reading or rows[0].get("default_reading", "either")
    data = _per_layer(runs, lambda agg: (agg.get("s_head") or {}).get(reading))
    chance = _per_layer(runs, lambda agg: (agg.get("s_head_chance") or {}).get(reading))
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (layers, vals) in data.items():
        line = _band(ax, layers, vals, label, marker="o")
        if label in chance:
            c_layers, c_vals = chance[label]
            ax.plot(c_layers, np.nanmean(c_vals, axis=0), ":", color=line.get_color())
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"S_Head ({reading}, k={rows[0].get('k', '?')})")
    ax.set_ylim(0, 1.02)
    ax.set_title("Share of the update in W0's top-k subspace (dotted: chance level)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, out, source_text(runs))


def nss_per_layer(runs: pd.DataFrame, out: Path) -> list[Path] | None:
    """NSS per layer in its three scopes (full, top-k, delta), one line per method."""
    panels = {s: _per_layer(runs, lambda agg, s=s: (agg.get("nss") or {}).get(s))
              for s in ("full", "topk", "delta")}
    if not any(panels.values()):
        return _skip("nss_per_layer", "no run has results.json['analysis']")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, (scope, data) in zip(axes, panels.items()):
        for label, (layers, vals) in data.items():
            _band(ax, layers, vals, label, marker="o")
        ax.set_title(f"NSS {scope}", fontsize=9)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("normalised spectral shift")
    axes[-1].legend(fontsize=7)
    return _save(fig, out, source_text(runs))


def mask_overlap(mask_stats: dict | None, out: Path, source: str = "") -> list[Path] | None:
    """Jaccard and intersection of M_spec and M_euc per layer x module type, with the
    aggregates over each row and column (summed counts), from a mask_stats.json dict."""
    from geora.geometry.summary import layer_index, module_type, type_sort_key
    from geora.linalg import stats_from_counts

    modules = (mask_stats or {}).get("modules") or {}
    modules = {n: s for n, s in modules.items() if "count_union" in s}
    if not modules:
        return _skip("mask_overlap", "no mask_stats.json with M_spec / M_euc counts")
    layers = sorted({layer_index(n) for n in modules} - {None})
    types = sorted({module_type(n) for n in modules}, key=type_sort_key)
    count_keys = ("n", "count_a", "count_b", "count_intersection", "count_union")

    def cell(sel):
        if not sel:
            return None
        return stats_from_counts({k: sum(s[k] for s in sel) for k in count_keys})

    grid = [[cell([s for n, s in modules.items() if layer_index(n) == li and module_type(n) == t])
             for t in types] for li in layers]
    for r, li in enumerate(layers):
        grid[r].append(cell([s for n, s in modules.items() if layer_index(n) == li]))
    grid.append([cell([s for n, s in modules.items() if module_type(n) == t]) for t in types]
                + [cell(list(modules.values()))])
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(grid) + 2))
    for ax, key, paper in zip(axes, ("jaccard", "intersection"), (0.128, 0.0455)):
        vals = np.array([[np.nan if c is None else c[key] for c in row] for row in grid])
        im = ax.imshow(vals, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(vals):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(len(types) + 1), [*types, "all"])
        ax.set_yticks(range(len(grid)), [*map(str, layers), "all"])
        ax.set_xlabel("module type")
        ax.set_ylabel("layer")
        ax.set_title(f"{key} of M_spec and M_euc (paper, Qwen3-8B: {paper})", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.04)
    return _save(fig, out, source or "source: mask statistics given in memory")


def singular_spectra(w0, w1, out: Path, name: str = "", source: str = "", k: int = 16) -> list[Path]:
    """Singular values of one matrix before (W0) and after (W1) training, and their change."""
    import torch

    s0 = torch.linalg.svdvals(torch.as_tensor(w0).float()).cpu().numpy()
    s1 = torch.linalg.svdvals(torch.as_tensor(w1).float()).cpu().numpy()
    i = np.arange(1, len(s0) + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.semilogy(i, s0, label="before (W0)")
    a.semilogy(i, s1, "--", label="after (W1)")
    b.plot(i, s1 - s0)
    for ax in (a, b):
        ax.axvline(k, color="0.6", lw=0.8, ls=":")
        ax.set_xlabel("index i (dotted: k)")
    a.set_ylabel("singular value")
    b.set_ylabel("sigma_i(W1) - sigma_i(W0)")
    a.set_title(f"spectrum {name}".strip(), fontsize=9)
    a.legend(fontsize=7)
    return _save(fig, out, source or f"source: tensors given in memory ({name or 'one matrix'})")


# -------------------------------------------------------------------- run-level figures
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


def default_score(runs: pd.DataFrame) -> str | None:
    cols = [c for c in runs.columns if c.startswith("eval.")]
    return next((c for c in SCORE_PREFERENCE if c in cols), cols[0] if cols else None)


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


def mask_stats_of(runs: pd.DataFrame) -> tuple[dict | None, str]:
    """The first finished run's adapter/mask_stats.json (masks depend on the model only)."""
    for _, row in finished(runs).iterrows():
        path = RunFolder(str(row.get("run_dir", ""))).adapter / STATS_FILE
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8")), f"source: {path}"
    return None, ""


# ----------------------------------------------------------------- the registered set
@figure("s_head_per_layer")
def _s_head(runs, out, options):
    return s_head_per_layer(runs, out, options.get("reading"))


@figure("nss_per_layer")
def _nss(runs, out, options):
    return nss_per_layer(runs, out)


@figure("mask_overlap")
def _mask_overlap(runs, out, options):
    stats, source = mask_stats_of(runs)
    return mask_overlap(stats, out, source)


@figure("reward_curves")
def _reward_curves(runs, out, options):
    return reward_curves_figure(runs, out, options.get("window", 10))


@figure("lr_robustness")
def _lr_robustness(runs, out, options):
    return lr_robustness(runs, out, options.get("score"))


@figure("rank_rho_heatmap")
def _rank_rho(runs, out, options):
    return rank_rho_heatmap(runs, out, options.get("score"))


@figure("efficiency")
def _efficiency(runs, out, options):
    return efficiency(runs, out)


@figure("eval_scores")
def _eval_scores(runs, out, options):
    return eval_scores_figure(runs, out)


def _premise_part(runs, out, part: str, name: str):
    from analysis.premise import premise_frame, premise_per_part

    try:
        frame = premise_frame(runs)
    except ValueError as e:         # no run of a full-update method
        return _skip(name, str(e))
    return premise_per_part(frame, out, part) or _skip(name, "no per-part premise records")


@figure("premise_layer")
def _premise_layer(runs, out, options):
    return _premise_part(runs, out, "by_layer", "premise_layer")


@figure("premise_type")
def _premise_type(runs, out, options):
    return _premise_part(runs, out, "by_type", "premise_type")


@figure("geometry_over_training")
def _geometry_over_training(runs, out, options):
    from analysis.premise import geometry_over_training, geometry_series

    series = geometry_series(runs)
    if not series:
        return _skip("geometry_over_training", "no run logged geometry records "
                     "(analysis.track_every)")
    return geometry_over_training(series, out, source_text(runs)) or \
        _skip("geometry_over_training", "no geometry records to draw")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", type=Path, help="folders searched for results.json")
    p.add_argument("--out", type=Path, default=Path("figures"))
    p.add_argument("--window", type=int, default=10, help="moving-average window (steps)")
    p.add_argument("--reading", help="S_Head reading (default: the analysis' default)")
    p.add_argument("--score", help="held-out score column, e.g. eval.math500 (default: guessed)")
    args = p.parse_args(argv)
    runs = collect_runs(*args.roots)
    if runs.empty:
        raise SystemExit(f"no results.json under {', '.join(map(str, args.roots))}")
    options = {"window": args.window, "reading": args.reading, "score": args.score}
    for name, make in FIGURES.items():
        for path in make(runs, args.out / name, options) or []:
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
