"""Collect run folders into one table and set reproduced numbers beside the paper's.

    python -m analysis.tables outputs multirun                 # every run found, one row each
    python -m analysis.tables multirun --table main_math       # the paper's main table, ours beside it
    python -m analysis.tables multirun --table ablation --out tables/

Run folders are found and read through geora.training.rundir.RunFolder (the one place that
knows their layout): results.json, the resolved config, and the evaluations made later by
`scripts/evaluate.py run_dir=...` (columns evals.<eval name>.<task>; they also fill
eval.<task> for tasks the training run did not score). Scores are averaged over seeds
(mean, std and n shown); paper numbers come from analysis/paper_results.csv.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> RunFolder(root / "geora" / "seed0").write_results({"status": "finished", "method": "geora",
...     "model": "micro", "data": "micro_math", "seed": 0, "eval": {"micro_math": 41.0}})
>>> collect_runs(root)[["method", "seed", "eval.micro_math"]]
  method  seed  eval.micro_math
0  geora     0             41.0
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from geora.training.rundir import RunFolder

PAPER_CSV = Path(__file__).resolve().parent / "paper_results.csv"

# The paper's row labels -> our method names (geora.available_methods()).
PAPER_METHODS = {"GeoRA": "geora", "LoRA": "lora", "PiSSA": "pissa", "MiLoRA": "milora",
                 "FullFT": "fullft", "Random-r Init": "geora_random_r",
                 "Tail-r Init": "geora_tail_r", "w/o M_Spec": "geora_wo_spec",
                 "w/o M_Euc": "geora_wo_euc"}
# The paper's column labels -> our evaluation task names (geora/evaluation/catalog.py).
PAPER_BENCHMARKS = {"AIME24": "aime24", "AIME25": "aime25", "MATH500": "math500",
                    "OlymMATH": "olymmath", "HumanEval": "humaneval", "MMLU": "mmlu",
                    "IFEval": "ifeval", "MedQA": "medqa", "MBPP": "mbpp"}
PAPER_MODELS = {"Qwen3-8B": "qwen3_8b", "Qwen3-4B": "qwen3_4b"}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "env":
            out.update(_flatten(v, key + "."))
        elif k != "env":
            out[key] = v
    return out


# Hyperparameters that tell runs of one method apart; read from the run's resolved config.
HYPERPARAMETERS = {"lr": ("train", "learning_rate"), "rank": ("method", "rank"),
                   "rho": ("method", "rho")}


def _hyperparameters(run: RunFolder) -> dict:
    cfg = run.read_config()
    if cfg is None:
        return {}
    from omegaconf import OmegaConf

    return {name: OmegaConf.select(cfg, ".".join(keys), default=None)
            for name, keys in HYPERPARAMETERS.items()}


def collect_runs(*roots: str | Path) -> pd.DataFrame:
    """One row per run folder under `roots`: method, model, data, seed, status, train.*,
    eval.<task>, eval_before.<task>, evals.<eval name>.<task> (later evaluations), the
    hyperparameters lr, rank, rho, and run_dir."""
    rows = []
    for run in RunFolder.find(*roots):
        row = _flatten(run.read_results())
        row.update(_hyperparameters(run))
        for name, scores in run.later_evaluations().items():
            for task, score in scores.items():
                row[f"evals.{name}.{task}"] = score
                row.setdefault(f"eval.{task}", score)   # a task training did not score
        row["run_dir"] = str(run.path)
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(runs: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Finished runs grouped by (model, data, method, lr, rank, rho): mean of each metric over seeds, and n."""
    done = runs[runs.get("status", "finished") == "finished"] if "status" in runs else runs
    if metrics is None:
        metrics = [c for c in done.columns if c.startswith(("eval.", "eval_before.", "evals."))
                   or c in ("train.reward_start", "train.reward_end", "train.step_time_s",
                            "train.peak_memory_gib", "train.trainable_params")]
    numeric = done[metrics].apply(pd.to_numeric, errors="coerce")
    keys = [done[k].fillna("-") for k in ("model", "data", "method", *HYPERPARAMETERS) if k in done]
    grouped = numeric.groupby(keys)
    table = grouped.mean()
    table["n_seeds"] = grouped.size()
    return table


def paper_comparison(runs: pd.DataFrame, table: str = "main_math") -> pd.DataFrame:
    """The paper's numbers for `table` (main_math, ablation, domains, analysis) with ours
    beside them: mean and std over seeds of the matching eval score (NaN where not run)."""
    paper = pd.read_csv(PAPER_CSV)
    paper = paper[paper["table"] == table].copy()
    if paper.empty:
        known = sorted(pd.read_csv(PAPER_CSV)["table"].unique())
        raise ValueError(f"unknown paper table {table!r}; choose one of {known}")
    done = runs[runs["status"] == "finished"] if "status" in runs else runs
    ours_mean, ours_std, ours_n = [], [], []
    for _, row in paper.iterrows():
        sel = done
        if row["model"] in PAPER_MODELS and "model" in sel:
            sel = sel[sel["model"] == PAPER_MODELS[row["model"]]]
        if row["method"] == "Base":
            col = f"eval_before.{PAPER_BENCHMARKS.get(row['benchmark'], row['benchmark'])}"
        else:
            sel = sel[sel["method"] == PAPER_METHODS.get(row["method"], "?")] if "method" in sel else sel.iloc[:0]
            bench = row["benchmark"]
            col = ("train.reward_end" if bench == "Reward"
                   else f"eval.{PAPER_BENCHMARKS.get(bench, bench)}")
        vals = pd.to_numeric(sel[col], errors="coerce").dropna() if col in sel else pd.Series(dtype=float)
        ours_mean.append(vals.mean() if len(vals) else float("nan"))
        ours_std.append(vals.std() if len(vals) > 1 else float("nan"))
        ours_n.append(len(vals))
    paper["ours"], paper["ours_std"], paper["ours_n"] = ours_mean, ours_std, ours_n
    return paper.rename(columns={"score": "paper"}).reset_index(drop=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", type=Path, help="folders searched for results.json")
    p.add_argument("--table", help="a paper table to set ours beside: main_math, ablation, domains")
    p.add_argument("--out", type=Path, help="folder to write CSV and Markdown into")
    args = p.parse_args(argv)

    runs = collect_runs(*args.roots)
    if runs.empty:
        raise SystemExit(f"no results.json under {', '.join(map(str, args.roots))}")
    result = paper_comparison(runs, args.table) if args.table else summary_table(runs)
    print(result.to_string(float_format=lambda x: f"{x:.2f}"))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = args.table or "runs"
        result.to_csv(args.out / f"{name}.csv")
        print(f"wrote {args.out / (name + '.csv')}")


if __name__ == "__main__":
    main()
