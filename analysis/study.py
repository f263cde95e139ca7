"""The learning-rate study's report: one table with intervals, paired differences to GeoRA
at the same multiple of each method's default learning rate, and the study's figures.

    python -m analysis.study multirun/micro_lr_study --out docs/figures/micro_lr_study

prints Markdown (the table: mean ± 95% t-interval half-width (n) per method x learning
rate; then the paired differences to the reference method over shared seeds, bootstrap
interval) and writes the figures lr_robustness, reward_curves (default learning rate),
s_head_per_layer and nss_per_layer (default learning rate) as PNG + PDF. The untrained
model's scores (Base row) are read from <sweep>/base/eval_results.json when present
(scripts/evaluate.py model=micro eval=micro_large hydra.run.dir=<sweep>/base).

Columns are found by what the runs hold: the held-out math score is the first of
eval.micro_math_1k, eval.micro_math, eval.math500 present; S_Head is the analysis' default
reading (results.json["analysis"]). A run's learning-rate multiple `lr_scale` is its
train.learning_rate over its method's default (method.learning_rate), both read from the
run's resolved config.

>>> runs = pd.DataFrame({"method": ["geora", "geora", "lora", "lora"], "seed": [0, 1, 0, 1],
...     "lr_scale": [1.0] * 4, "lr": [5e-4] * 4, "status": ["finished"] * 4,
...     "eval.micro_math_1k": [60.0, 62.0, 58.0, 59.0]})
>>> study_table(runs, columns={"math": "eval.micro_math_1k"})["math"].tolist()
['61.0 ± 12.7 (n=2)', '58.5 ± 6.4 (n=2)']
>>> paired_to(runs, "eval.micro_math_1k")["text"].tolist()
['-2.5 [-3.0, -2.0] (n=2)']
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from analysis.stats import format_interval, mean_interval, paired_table
from analysis.render import frame_markdown as markdown
from analysis.runs import finished
from analysis.tables import collect_runs
from geora.evaluation.harness import SUMMARY_FILE
from geora.training.rundir import RunFolder

MATH_SCORES = ("eval.micro_math_1k", "eval.micro_math", "eval.math500")
PROBES = {"reverse": ("eval.micro_reverse_1k", "eval.micro_reverse"),
          "sort": ("eval.micro_sort_1k", "eval.micro_sort")}
BASE_FOLDER = "base"


def _first(runs: pd.DataFrame, candidates) -> str | None:
    return next((c for c in candidates if c in runs), None)


def default_columns(runs: pd.DataFrame) -> dict[str, str]:
    """{label: column} of the study's table, for the columns these runs hold."""
    reading = "either"
    if "analysis.default_reading" in runs:
        found = runs["analysis.default_reading"].dropna()
        reading = str(found.iloc[0]) if len(found) else reading
    cols = {"math": _first(runs, MATH_SCORES),
            **{name: _first(runs, c) for name, c in PROBES.items()},
            "reward_end": "train.reward_end",
            "s_head": f"analysis.overall.s_head.{reading}",
            "s_head_chance": f"analysis.overall.s_head_chance.{reading}",
            "nss_full": "analysis.overall.nss.full",
            "unchanged": "analysis.overall.unchanged_frac"}
    return {k: v for k, v in cols.items() if v is not None and v in runs}


def with_lr_scale(runs: pd.DataFrame) -> pd.DataFrame:
    """Adds `lr_scale` = train.learning_rate / method.learning_rate of each run's config."""
    scales = []
    for run_dir in runs.get("run_dir", pd.Series([None] * len(runs))):
        cfg = RunFolder(run_dir).read_config() if isinstance(run_dir, str) else None
        lr = OmegaConf.select(cfg, "train.learning_rate") if cfg is not None else None
        default = OmegaConf.select(cfg, "method.learning_rate") if cfg is not None else None
        scales.append(round(float(lr) / float(default), 6) if lr and default else None)
    out = runs.copy()
    out["lr_scale"] = scales
    return out


def study_table(runs: pd.DataFrame, columns: dict[str, str] | None = None,
                by: tuple[str, ...] = ("method", "lr_scale", "lr"), digits: int = 3) -> pd.DataFrame:
    """One row per group of `by`: each column over the finished runs as 'mean ± half-width
    (n=..)' (scores in percent with one decimal, fractions with `digits`), and `failed`, the
    number of runs of the group that ended with status "failed" (e.g. diverged)."""
    columns = columns or default_columns(runs)
    keys = [k for k in by if k in runs]
    rows = []
    for key, every in runs.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        failed = int((every["status"] == "failed").sum()) if "status" in every else 0
        group = every[every["status"] == "finished"] if "status" in every else every
        row = {**dict(zip(keys, key)), "failed": failed}
        for label, col in columns.items():
            iv = mean_interval(group[col]) if col in group else mean_interval([])
            percent = col.startswith("eval")
            row[label] = format_interval(iv, 1 if percent else digits)
        rows.append(row)
    return pd.DataFrame(rows)


def paired_to(runs: pd.DataFrame, metric: str, reference: str = "geora",
              by: tuple[str, ...] = ("lr_scale",), digits: int = 1) -> pd.DataFrame:
    """Each method's paired difference to `reference` on `metric` over the seeds both ran,
    at the same learning-rate multiple (analysis.stats.paired_table)."""
    return paired_table(finished(runs), metric, reference=reference, by=by, digits=digits)


def base_scores(sweep: str | Path) -> dict[str, float] | None:
    """The untrained model's scores recorded once for the sweep (<sweep>/base/), or None."""
    path = Path(sweep) / BASE_FOLDER / SUMMARY_FILE   # scripts/evaluate.py's output folder
    return json.loads(path.read_text(encoding="utf-8"))["scores"] if path.is_file() else None


def figures(runs: pd.DataFrame, out: Path, score: str | None, default_scale: float = 1.0) -> list[Path]:
    """The study's figures into `out`; per-layer figures and reward curves at `default_scale`."""
    from analysis import figures as fig

    at_default = runs[runs["lr_scale"] == default_scale] if "lr_scale" in runs else runs
    written = []
    for name, make in (("lr_robustness", lambda o: fig.lr_robustness(runs, o, score)),
                       ("reward_curves", lambda o: fig.reward_curves_figure(at_default, o)),
                       ("s_head_per_layer", lambda o: fig.s_head_per_layer(at_default, o)),
                       ("nss_per_layer", lambda o: fig.nss_per_layer(at_default, o))):
        written += make(out / name) or []
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", type=Path, help="the study's sweep folder (multirun/micro_lr_study)")
    p.add_argument("--out", type=Path, help="folder for the figures (none: no figures)")
    p.add_argument("--reference", default="geora", help="method the paired differences are to")
    args = p.parse_args(argv)
    runs = collect_runs(args.sweep)
    if runs.empty:
        raise SystemExit(f"no results.json under {args.sweep}")
    runs = with_lr_scale(runs)
    cols = default_columns(runs)
    base = base_scores(args.sweep)
    if base:
        print("Base (untrained, once): " + ", ".join(f"{k} {v:.1f}" for k, v in base.items()))
    print(markdown(study_table(runs, cols)))
    for label in ("math", "reverse", "sort", "reward_end"):
        if label in cols:
            print(f"\nPaired difference to {args.reference}, {label} ({cols[label]}):")
            print(markdown(paired_to(runs, cols[label], args.reference,
                                     digits=1 if label != "reward_end" else 3)))
    if args.out:
        for path in figures(runs, args.out, cols.get("math")):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
