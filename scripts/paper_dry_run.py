"""Every paper experiment, shrunk to run on a CPU, then every paper table and figure built
from its run folders and checked: each row and column of the paper's tables holds a number
(of S_Head, present: after one step of a random model it is 0/0; UNDEFINED_AFTER_ONE_STEP).

    python scripts/paper_dry_run.py                                  # all (make paper-dry-run)
    python scripts/paper_dry_run.py --experiments paper_main_qwen3_8b --out /tmp/dry
    python scripts/paper_dry_run.py --tables-only                    # rebuild and check the tables

Each job is the experiment's own config (model, data, train, eval, method list) with the
SHRINK overrides: a random-init two-layer model with the bundled Qwen3 tokenizer, the
fixture data (tests/fixtures/train, tests/fixtures/eval), one GRPO step of 2 prompts x 2
completions of 8 tokens, two problems per benchmark. The numbers are meaningless; what is
proven is the wiring: configs -> run.py -m -> run folders -> analysis.tables / figures.
Exits non-zero, naming each gap, when a job fails or a table lacks a required cell.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from analysis.paper_tables import (ABLATION_AVG, ABLATION_METHODS, MAIN_BENCHMARKS,  # noqa: E402
                                   MAIN_METHODS, TRAINED_METHODS)

# The one list of overrides that shrinks a paper job to seconds on a CPU. vocab_size is the
# Qwen3 tokenizer's (Llama's own 128256 is smaller than the tokenizer's 151669 ids); every
# linear layer has both sides >= 32 (k_proj: 1 head x 32 -> hidden 32), the largest rank swept.
SHRINK = """
model.random_init=true model.tokenizer_path=bundled:qwen3 model.dtype=float32
model.arch.vocab_size=151936 model.arch.hidden_size=32 model.arch.num_hidden_layers=2
model.arch.num_attention_heads=2 model.arch.num_key_value_heads=1 model.arch.head_dim=32
model.arch.intermediate_size=64 model.arch.tie_word_embeddings=true device=cpu cpu_threads=1
train.bf16=false train.gradient_checkpointing=false train.max_steps=1 train.num_generations=2
train.prompts_per_step=2 train.gradient_accumulation_steps=1 train.max_completion_length=8
train.save_steps=100 data.test_size=0 eval.limit=2 eval.max_gen_toks=8 eval.batch_size=4
eval.data_dir=tests/fixtures/eval eval.allow_code_execution=true
""".split()

# experiment -> (its training fixture, the job folder name inside the sweep folder)
EXPERIMENTS = {
    "paper_main_qwen3_8b": ("deepmath_103k", "${method.name}"),
    "paper_ablation_qwen3_4b": ("deepmath_103k", "${method.name}"),
    "paper_medical_qwen3_8b": ("medqa", "${method.name}"),
    "paper_code_qwen3_8b": ("kodcode_light_rl_10k", "${method.name}"),
    "paper_lr_qwen3_4b": ("deepmath_103k", "${method.name}_lr${train.learning_rate}"),
    "paper_rank_rho_qwen3_4b": ("deepmath_103k", "r${method.rank}_rho${method.rho}"),
    "paper_sizes": ("deepmath_103k", "${model.name}_${method.name}"),
}
# table -> (the experiments it reads, required rows (our method names), required columns;
# None: every column of the table; "sweep": the experiment's swept methods / learning rates).
# Every cell the paper reports is required as well.
TABLES = {
    "main": (("paper_main_qwen3_8b",), MAIN_METHODS, MAIN_BENCHMARKS),
    "ablation": (("paper_ablation_qwen3_4b",), ABLATION_METHODS, None),
    "domains": (("paper_medical_qwen3_8b", "paper_code_qwen3_8b"), ("geora", "lora"), None),
    "efficiency": (("paper_main_qwen3_8b",), TRAINED_METHODS, None),
    "analysis": (("paper_main_qwen3_8b",), (), ()),
    "lr": (("paper_lr_qwen3_4b",), "sweep", "sweep"),
    "sizes": (("paper_sizes",), "sweep", ABLATION_AVG),
}
# Cells that must be present but may be empty here: one GRPO step of a random model earns no
# reward, so every advantage, and so every weight update, is exactly zero, and S_Head (the
# share of the update in W0's top-k subspace) is 0/0.
UNDEFINED_AFTER_ONE_STEP = {("analysis", "S_Head")}
FIGURES = {"lr_robustness": "paper_lr_qwen3_4b", "rank_rho_heatmap": "paper_rank_rho_qwen3_4b"}


def sweep(experiment: str) -> dict[str, list[str]]:
    """{swept key: values} of conf/experiment/<experiment>.yaml (hydra.sweeper.params)."""
    cfg = OmegaConf.load(ROOT / "conf" / "experiment" / f"{experiment}.yaml")
    return {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}


def job_command(experiment: str, out: Path, overrides: list[str] = ()) -> list[str]:
    data, subdir = EXPERIMENTS[experiment]
    extra = ["train.allow_code_execution=true"] if data == "kodcode_light_rl_10k" else []
    # train.overwrite=true: a second dry run replaces the first's folders (as `make demo`)
    return [sys.executable, "run.py", "-m", f"experiment={experiment}", *SHRINK, *extra, "train.overwrite=true",
            f"data.local_path=tests/fixtures/train/{data}.jsonl",
            f"hydra.sweep.dir={out / experiment}", f"hydra.sweep.subdir={subdir}", *overrides]


def required_cells(table: str, frame: pd.DataFrame) -> set[tuple[str, str, str]]:
    """{(section, method, column)} that must hold a number of ours: the paper's reported cells
    and the rows x columns of TABLES (rows "sweep": the experiment's swept methods)."""
    experiments, rows, columns = TABLES[table]
    paper = frame[(frame["source"] == "paper") & (frame["text"].astype(str) != "—")]
    cells = set(zip(paper["section"], paper["method"], paper["column"]))
    if rows == "sweep":
        rows = sweep(experiments[0])["method"]
    if columns == "sweep":     # analysis.paper_tables.build_lr's column labels
        columns = [f"lr={float(lr):g}" for lr in sweep(experiments[0])["train.learning_rate"]]
    for section in frame["section"].unique():
        ours = frame[(frame["source"] == "ours") & (frame["section"] == section)]
        cols = ours["column"].unique() if columns is None else columns
        cells |= {(section, m, c) for m in rows for c in cols}
    return cells


def check_table(table: str, frame: pd.DataFrame) -> list[str]:
    """The required cells of `table` (its CSV, analysis.render) absent or without a number of ours."""
    ours = frame[frame["source"] == "ours"]
    cells = {(s, m, c): pd.notna(v) for s, m, c, v in zip(ours["section"], ours["method"], ours["column"],
                                                          ours["value"])}
    gaps = []
    for s, m, c in sorted(required_cells(table, frame), key=str):
        where = f"{table}: {m} / {c}" + (f" (section {s})" if s else "")
        if (s, m, c) not in cells:
            gaps.append(f"{where}: no such row and column")
        elif not cells[s, m, c] and (table, s) not in UNDEFINED_AFTER_ONE_STEP:
            gaps.append(f"{where}: no number")
    if table == "sizes":   # one section per swept model
        models = {s.removeprefix("model=") for s in frame["section"].unique()}
        # a swept size's run is named <size>_base under checkpoint=base (the default), <size> under post
        gaps += [f"sizes: no section for model {m}" for m in sweep("paper_sizes")["model"]
                 if m not in models and f"{m}_base" not in models]
    return gaps


def run(cmd: list[str]) -> int:
    print("$", shlex.join(map(str, cmd)), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def cli(module, argv: list[str]) -> str | None:
    """`python -m <module> <argv>`, in this process (one import for every table): None, or
    the error it exits with."""
    print("$ python -m", module.__name__, shlex.join(argv), flush=True)
    try:
        module.main(argv)
    except SystemExit as e:
        return str(e)
    return None


def build(out: Path, tables_: tuple[str, ...] = tuple(TABLES), with_figures: bool = True) -> list[str]:
    """Build, print and check each of `tables_` with a run folder of its experiments under
    `out`, and the figures; the gaps found."""
    from analysis import figures, tables

    gaps, built = [], 0
    for table in tables_:
        experiments = TABLES[table][0]
        dirs = [str(out / e) for e in experiments if (out / e).is_dir()]
        if not dirs:
            continue
        built += 1
        gaps += [f"{e}: not run" for e in experiments if not (out / e).is_dir()]
        error = cli(tables, [*dirs, "--table", table, "--out", str(out / "tables")])
        if error:
            gaps.append(f"{table}: analysis.tables failed: {error}")
            continue
        csv = pd.read_csv(out / "tables" / f"{table}.csv", dtype={"section": str}).fillna({"section": ""})
        gaps += check_table(table, csv)
    for figure, experiment in FIGURES.items() if with_figures else ():
        if (out / experiment).is_dir():
            cli(figures, [str(out / experiment), "--out", str(out / "figures" / experiment)])
            if not (out / "figures" / experiment / f"{figure}.png").is_file():
                gaps.append(f"figure {figure} was not written from {out / experiment}")
    return gaps if built else gaps + [f"no table built: no paper experiment folder under {out}"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS),
                   metavar="NAME", help=f"which to run (default: all: {', '.join(EXPERIMENTS)})")
    p.add_argument("--out", type=Path, default=Path("multirun/paper_dry_run"),
                   help="sweep folders go to OUT/<experiment>, tables to OUT/tables, figures to OUT/figures/<experiment>")
    p.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE",
                   help="more Hydra overrides for every job, e.g. method=base,geora (a smaller sweep)")
    p.add_argument("--tables-only", action="store_true", help="build and check the tables of OUT; run nothing")
    args = p.parse_args(argv)
    out = args.out.resolve()
    start, failed = time.time(), []
    for experiment in [] if args.tables_only else args.experiments:
        if run(job_command(experiment, out, args.override)):
            failed.append(f"{experiment}: a job failed (its results.json says why)")
    gaps = failed + build(out)
    print(f"\npaper dry run: {time.time() - start:.0f} s wall, output in {out}")
    if gaps:
        raise SystemExit("FAILED:\n  " + "\n  ".join(gaps))
    print("every paper table has all its rows and columns")


if __name__ == "__main__":
    main()
