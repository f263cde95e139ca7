"""Tables from run folders, ours beside the paper's numbers.

    python -m analysis.tables multirun                              # every run, averaged over seeds
    python -m analysis.tables multirun --table main                 # the paper's main table
    python -m analysis.tables multirun --table ablation --out tables/   # also tables/ablation.{md,tex,csv}

Tables (analysis.paper_tables): runs, main, ablation, domains, efficiency, lr, sizes, analysis,
premise (analysis.premise).
Markdown goes to stdout; --out DIR writes <table>.md, <table>.tex (booktabs) and <table>.csv
(long form: one line per cell with every number behind it). Seeds are shown as mean ± the
95% t-interval with n; a method without runs is shown as "missing", failed runs are listed
under the table, and runs whose settings differ (learning rate, rank, evaluation settings,
...) are shown on separate lines, never averaged together.

Runs are read by analysis.runs.collect_runs (through geora.training.rundir.RunFolder); the
paper's labels map to ours in analysis.paper_tables (PAPER_METHODS, PAPER_BENCHMARKS), its
numbers are analysis/paper_results.csv.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> RunFolder(root / "geora" / "seed0").write_results({"status": "finished", "method": "geora",
...     "model": "micro", "data": "micro_math", "seed": 0, "eval": {"micro_math": 41.0}})
>>> print(render.markdown(build_table("runs", collect_runs(root))).splitlines()[4])
| Method |  | reward start | reward end | micro_math |
"""
from __future__ import annotations

import argparse
from pathlib import Path

from analysis import render
from analysis.paper_tables import (ALIASES, PAPER_BENCHMARKS, PAPER_CSV, PAPER_METHODS,  # noqa: F401
                                   PAPER_MODELS, TABLES, build_table)
from analysis.runs import base_evaluations, collect_runs, summary_table  # noqa: F401
from geora.training.rundir import RunFolder  # noqa: F401  (the doctest)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", type=Path, help="folders searched for run folders (results.json)")
    p.add_argument("--table", default="runs", choices=[*TABLES, *ALIASES], help="which table (default: runs)")
    p.add_argument("--model", help="only runs of this model (default: the paper's model when present)")
    p.add_argument("--data", help="only runs trained on this data set")
    p.add_argument("--out", type=Path, help="folder to write <table>.md, .tex and .csv into")
    args = p.parse_args(argv)

    try:
        runs = collect_runs(*args.roots)
        if runs.empty:
            raise ValueError(f"no run folder (results.json with a status) under {', '.join(map(str, args.roots))}")
        table = build_table(args.table, runs, model=args.model, data=args.data)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(render.markdown(table), end="")
    if args.out:
        for path in render.write(table, args.out):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
