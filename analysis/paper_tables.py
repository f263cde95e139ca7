"""The paper's tables, ours beside them: one builder per table, each `runs -> Table`.

The paper's labels map to our method and task names here and nowhere else (PAPER_METHODS,
PAPER_BENCHMARKS, PAPER_MODELS, PAPER_DATA); its numbers are analysis/paper_results.csv.

| table | ours per row (method x settings variant) | the paper's |
|---|---|---|
| runs | reward and every eval task of each (model, data) | - |
| main | Base + FullFT, LoRA, PiSSA, MiLoRA, SparseFT, GeoRA on the seven benchmarks; Δ vs GeoRA | Qwen3-8B |
| ablation | GeoRA and its four ablations: Reward, four math scores, Avg; Δ vs GeoRA | Qwen3-4B |
| domains | MedQA after medical RLVR, MBPP after code RLVR; Δ vs GeoRA | GeoRA, LoRA |
| efficiency | trainable parameters, step time, peak memory and their ratios to FullFT | GeoRA, SparseFT |
| lr | final reward and each held-out score per learning rate | (a claim, no numbers) |
| sizes | per model (by size), each method's scores | (a claim, no numbers) |
| analysis | results.json["analysis"]: S_Head readings with chance, NSS, sparsity, masks | PiSSA, GeoRA |
| premise | full-update runs: capture of dW by each initial subspace, with chance; concentration (analysis.premise) | (a claim, no numbers) |

Runs are grouped in blocks (model, data; efficiency also by device). Without --model/--data a
table shows the paper's (model, data) block when the runs have it, else every block; the
notes name what was left out.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs import BASE_METHOD, base_evaluations, failed, finished
from analysis.tablekit import Column, Group, Table, count_text, method_rows

PAPER_CSV = Path(__file__).resolve().parent / "paper_results.csv"
# The paper's row labels -> our method names (geora.available_methods(); "base": untrained).
PAPER_METHODS = {"Base": BASE_METHOD, "FullFT": "fullft", "LoRA": "lora", "PiSSA": "pissa",
                 "MiLoRA": "milora", "SparseFT": "sparseft", "GeoRA": "geora",
                 "Random-r Init": "geora_random_r", "Tail-r Init": "geora_tail_r",
                 "w/o M_Spec": "geora_wo_spec", "w/o M_Euc": "geora_wo_euc"}
# The paper's column labels -> our evaluation task names (geora/evaluation/catalog.py).
PAPER_BENCHMARKS = {"AIME24": "aime24", "AIME25": "aime25", "MATH500": "math500",
                    "OlymMATH": "olymmath", "HumanEval": "humaneval", "MMLU": "mmlu",
                    "IFEval": "ifeval", "MedQA": "medqa", "MBPP": "mbpp"}
# Either checkpoint of the paper's model (model.name: <size>_base under checkpoint=base, the
# default, <size> under checkpoint=post); the two stay in separate blocks.
PAPER_MODELS = {"Qwen3-8B": ("qwen3_8b_base", "qwen3_8b"), "Qwen3-4B": ("qwen3_4b_base", "qwen3_4b")}
PAPER_DATA = {"DeepMath-103K": "deepmath_103k"}
LABELS = {ours: paper for paper, ours in PAPER_METHODS.items()} | {"dora": "DoRA", "adalora": "AdaLoRA"}

MAIN_METHODS = ("base", "fullft", "lora", "pissa", "milora", "sparseft", "geora")
TRAINED_METHODS = MAIN_METHODS[1:]
ABLATION_METHODS = ("geora", "geora_random_r", "geora_tail_r", "geora_wo_spec", "geora_wo_euc")
# The lr table's rows: always the adapters `paper_lr_qwen3_4b` sweeps (a "missing" line when
# a block lacks one); FullFT only in a block that ran it (the micro lr study does).
LR_METHODS = ("lora", "pissa", "milora", "geora")
LR_IF_RUN = ("fullft",)
MAIN_BENCHMARKS = ("AIME24", "AIME25", "MATH500", "OlymMATH", "HumanEval", "MMLU", "IFEval")
# The paper's ablation Avg is the mean of these four (checked by `ablation_avg_check`).
ABLATION_AVG = ("AIME24", "AIME25", "MATH500", "OlymMATH")
# Domain column -> (what trained it, our training data sets for that domain).
DOMAINS = {"MedQA": ("medical RLVR", ("medqa",)),
           "MBPP": ("code RLVR", ("kodcode_light_rl_10k", "mbpp_train"))}
REFERENCE = "geora"
# The paper prints S_Head and NSS without a formula: its numbers beside ours compare values of
# quantities that may differ, so they carry this mark and the legend says so.
DAGGER = "†"
UNKNOWN_DEFINITION = (f"{DAGGER} The paper gives no definition of S_Head or NSS (no formula, "
                      "scope, k or averaging): its values are printed for reference, and agreement "
                      "or disagreement with ours is not a result.")
RESOLVED = ("Δ = method − GeoRA over the seeds both ran (mean, 95% percentile bootstrap "
            "interval, n); * = both the bootstrap and the paired-t interval exclude 0.")
OURS = ("ours = mean ± half-width of the 95% t-interval over seeds (n = seeds; n=1: no interval); "
        "missing = no finished run with this score; — = not reported by the paper (paper line) or "
        "nothing to compare (Δ line).")


# ------------------------------------------------------------------------- the paper
def paper_rows(table: str) -> pd.DataFrame:
    """paper_results.csv rows of `table` (main_math, ablation, domains, analysis,
    efficiency), the printed score kept as text beside its value."""
    paper = pd.read_csv(PAPER_CSV, dtype=str)
    sel = paper[paper["table"] == table].copy()
    if sel.empty:
        raise ValueError(f"{PAPER_CSV}: no rows of table {table!r}")
    unknown = set(sel["method"]) - set(PAPER_METHODS)
    if unknown:
        raise ValueError(f"{PAPER_CSV}: method labels {sorted(unknown)} are not in PAPER_METHODS")
    sel["value"] = sel["score"].astype(float)
    return sel.reset_index(drop=True)


def paper_cells(table: str, text=lambda row: row["score"]) -> dict:
    """{(our method, the paper's column label): printed text} of `table`."""
    return {(PAPER_METHODS[r["method"]], r["benchmark"]): text(r) for _, r in paper_rows(table).iterrows()}


def ablation_avg_check() -> pd.DataFrame:
    """Per ablation row: the paper's Avg and the mean of ABLATION_AVG it should equal."""
    p = paper_rows("ablation").pivot(index="method", columns="benchmark", values="value")
    return pd.DataFrame({"paper_avg": p["Avg"], "mean_of_four": p[list(ABLATION_AVG)].mean(axis=1),
                         "difference": p["Avg"] - p[list(ABLATION_AVG)].mean(axis=1)})


# --------------------------------------------------------------------------- blocks
def _blocks(table: Table, runs: pd.DataFrame, metrics: list[str], keys=("model", "data"),
            prefer: dict | None = None, only: dict | None = None,
            methods: tuple | None = None) -> list[tuple[dict, pd.DataFrame]]:
    """[(key values, runs)] of the trained runs (of `methods`, if given) with a value in
    `metrics`. `only` filters (--model, --data); without it, the `prefer` block alone when
    present. A block of failed runs only is named in the notes, not shown."""
    trained = runs[runs["method"] != BASE_METHOD] if "method" in runs else runs
    for k, v in (only or {}).items():
        if v is not None:
            trained = trained[trained[k] == v] if k in trained else trained.iloc[:0]
    blocks = []
    if not trained.empty:
        frame = trained.assign(**{k: trained[k].fillna("?") if k in trained else "?" for k in keys})
        for values, sel in frame.groupby(list(keys), sort=True):
            values = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
            cols = [m for m in metrics if m in sel]
            mine = finished(sel if methods is None else sel[sel["method"].isin(methods)])
            if not mine.empty and cols and mine[cols].apply(pd.to_numeric, errors="coerce").notna().any().any():
                blocks.append((values, sel))
            else:
                table.note(f"not shown: {_title(values)} ({len(sel)} runs, none with this table's scores)")
                for _, r in failed(sel).iterrows():
                    table.note(f"failed run ({r.get('method')}, seed {r.get('seed')}): {r.get('run_dir')}")
    def preferred(values: dict) -> bool:
        return all(values.get(k) in (v if isinstance(v, tuple) else (v,)) for k, v in prefer.items())

    chosen = [b for b in blocks if prefer and preferred(b[0])]
    if chosen and not any((only or {}).values()):
        for values, sel in blocks:
            if values not in [c[0] for c in chosen]:
                table.note(f"not shown: {_title(values)} ({len(sel)} runs); pick it with --model/--data")
        blocks = chosen
    if not blocks:
        empty = {k: (only or {}).get(k) or (prefer or {}).get(k, "none") for k in keys}
        empty = {k: " or ".join(v) if isinstance(v, tuple) else v for k, v in empty.items()}
        table.note("no runs found for this table: every cell is missing")
        blocks = [(empty, runs.iloc[:0])]
    return blocks


def _title(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _of_model(runs: pd.DataFrame, model) -> pd.DataFrame:
    """The rows of `runs` (e.g. base_evaluations) of `model`."""
    return runs[runs["model"] == model] if "model" in runs else runs.iloc[:0]


def _score_columns(benchmarks, digits=2) -> list[Column]:
    return [Column(b, f"eval.{PAPER_BENCHMARKS[b]}", paper=b, digits=digits) for b in benchmarks]


def _other_tasks(runs: pd.DataFrame, known: set[str]) -> list[str]:
    return sorted(c[len("eval."):] for c in runs.columns
                  if c.startswith("eval.") and c[len("eval."):] not in known)


# --------------------------------------------------------------------------- builders
def build_runs(runs: pd.DataFrame, model=None, data=None) -> Table:
    t = Table("runs", "Every run, averaged over seeds", legend=[OURS])
    base = base_evaluations(runs)
    tasks = _other_tasks(runs, set())
    cols = [Column("reward start", "train.reward_start", digits=3),
            Column("reward end", "train.reward_end", digits=3)] + \
        [Column(task, f"eval.{task}") for task in tasks]
    for values, sel in _blocks(t, runs, [c.metric for c in cols], only={"model": model, "data": data}):
        own_base = _of_model(base, values["model"])
        method_rows(t, block=_title(values), section="", groups=[Group(pd.concat([sel, own_base]), cols)],
                    methods=[BASE_METHOD] if not own_base.empty else [], labels={})
    return t


def build_main(runs: pd.DataFrame, model=None, data=None) -> Table:
    t = Table("main", "Main results: math RLVR (the paper: Qwen3-8B, DeepMath-103K)",
              legend=[OURS, RESOLVED, "Base: the untrained model's evaluation (no seeds, no Δ)."])
    cols = _score_columns(MAIN_BENCHMARKS)
    base = base_evaluations(runs)
    prefer = {"model": PAPER_MODELS["Qwen3-8B"], "data": PAPER_DATA["DeepMath-103K"]}
    for values, sel in _blocks(t, runs, [c.metric for c in cols], prefer=prefer,
                               only={"model": model, "data": data}):
        with_base = pd.concat([sel, _of_model(base, values["model"])])
        method_rows(t, block=_title(values), section="", groups=[Group(with_base, cols)], methods=MAIN_METHODS,
                    labels=LABELS, paper=paper_cells("main_math"), reference=REFERENCE)
    t.note("SparseFT is not in the paper's main table (only its step time, in the efficiency table).")
    return t


def build_ablation(runs: pd.DataFrame, model=None, data=None) -> Table:
    check = ablation_avg_check()
    off = check[check["difference"].abs() > 0.01]   # beyond rounding
    t = Table("ablation", "Ablations of GeoRA (the paper: Qwen3-4B)", legend=[
        OURS, RESOLVED, "Reward: the mean training reward of the last 10% of logged steps (results.json train.reward_end).",
        "Avg: per run, the mean of AIME24, AIME25, MATH500 and OlymMATH (the paper's Avg is that "
        f"mean for {len(check) - len(off)} of its {len(check)} rows"
        + "".join(f"; {m} prints {r.paper_avg:.2f} where its four scores average {r.mean_of_four:.2f}"
                  for m, r in off.iterrows()) + ")."])
    runs = runs.copy()
    four = [f"eval.{PAPER_BENCHMARKS[b]}" for b in ABLATION_AVG]
    runs["avg"] = runs[four].apply(pd.to_numeric, errors="coerce").mean(axis=1, skipna=False) \
        if set(four) <= set(runs) else np.nan
    cols = [Column("Reward", "train.reward_end", paper="Reward")] + _score_columns(ABLATION_AVG) + \
        [Column("Avg", "avg", paper="Avg")]
    prefer = {"model": PAPER_MODELS["Qwen3-4B"], "data": PAPER_DATA["DeepMath-103K"]}
    for values, sel in _blocks(t, runs, [c.metric for c in cols], prefer=prefer,
                               only={"model": model, "data": data}, methods=ABLATION_METHODS):
        method_rows(t, block=_title(values), section="", groups=[Group(sel, cols)], extras=False,
                    methods=ABLATION_METHODS, labels=LABELS, paper=paper_cells("ablation"), reference=REFERENCE)
    return t


def build_domains(runs: pd.DataFrame, model=None, data=None) -> Table:
    t = Table("domains", "Other domains: MedQA after medical RLVR, MBPP after code RLVR "
              "(the paper does not name its model)", legend=[OURS, RESOLVED])
    metrics = [f"eval.{PAPER_BENCHMARKS[d]}" for d in DOMAINS]
    for values, sel in _blocks(t, runs, metrics, keys=("model",), only={"model": model}):
        groups = []
        for label, (what, datasets) in DOMAINS.items():
            chosen = (data,) if data else datasets
            part = sel[sel["data"].isin(chosen)] if "data" in sel else sel.iloc[:0]
            column = Column(f"{label} ({what})", f"eval.{PAPER_BENCHMARKS[label]}", paper=label)
            groups.append(Group(part, [column]))
            t.explain(f"{label}: runs trained on data {' or '.join(chosen)}.")
        method_rows(t, block=_title(values), section="", groups=groups, methods=("geora", "lora"),
                    labels=LABELS, paper=paper_cells("domains"), reference=REFERENCE)
    return t


EFFICIENCY_LEGEND = [
    OURS, "ratio = mean(method) / mean(FullFT), FullFT runs of the same model, data, device and "
    "settings apart from the method and its learning rate; interval: delta method on the log scale, "
    "Welch df; n = method runs / FullFT runs.",
    "step time: each run's median optimizer step; peak memory: torch's peak allocated memory on a "
    "GPU, the process' peak resident memory on a CPU."]


def build_efficiency(runs: pd.DataFrame, model=None, data=None) -> Table:
    t = Table("efficiency", "Efficiency, as ratios to FullFT measured in the same sweep",
              legend=list(EFFICIENCY_LEGEND))
    paper = paper_cells("efficiency", lambda r: r["score"] + ("B" if r["benchmark"] == "trainable_params_B" else ""))
    params, step, memory = "train.trainable_params", "train.step_time_s", "train.peak_memory_gib"
    cols = [Column("trainable params", params, paper="trainable_params_B", fmt=count_text),
            Column("params / FullFT", params, paper="trainable_frac_of_fullft", digits=4, ratio_to="fullft"),
            Column("step time (s)", step, digits=2),
            Column("step time / FullFT", step, paper="step_time_vs_fullft", digits=3, ratio_to="fullft"),
            Column("peak memory (GiB)", memory, digits=2),
            Column("memory / FullFT", memory, paper="vram_vs_fullft", digits=3, ratio_to="fullft")]
    prefer = {"model": PAPER_MODELS["Qwen3-8B"], "data": PAPER_DATA["DeepMath-103K"]}
    for values, sel in _blocks(t, runs, [c.metric for c in cols], keys=("model", "data", "device"),
                               prefer=prefer, only={"model": model, "data": data}):
        method_rows(t, block=_title(values), section="", groups=[Group(sel, cols)],
                    methods=TRAINED_METHODS, labels=LABELS, paper=paper)
    return t


def build_lr(runs: pd.DataFrame, model=None, data=None) -> Table:
    t = Table("lr", "Learning-rate robustness: final reward and held-out scores per learning rate",
              legend=[OURS, "The paper states (no numbers): GeoRA keeps a high reward across learning "
                            "rates; PiSSA and MiLoRA degrade sharply at high learning rates."])
    tasks = [PAPER_BENCHMARKS[b] for b in MAIN_BENCHMARKS if f"eval.{PAPER_BENCHMARKS[b]}" in runs] + \
        _other_tasks(runs, set(PAPER_BENCHMARKS.values()))
    metrics = [("final reward (train.reward_end)", "train.reward_end", 3)] + \
        [(f"held-out {task} (eval.{task})", f"eval.{task}", 2) for task in tasks]
    for values, sel in _blocks(t, runs, [m for _, m, _ in metrics], only={"model": model, "data": data}):
        lrs = sorted(pd.to_numeric(sel.get("lr", pd.Series(dtype=float)), errors="coerce").dropna().unique())
        if not lrs:
            t.note(f"{_title(values)}: no run records a learning rate (config.yaml)")
        for title, metric, digits in metrics:
            cols = [Column(f"lr={lr:g}", metric, digits=digits, where=("lr", lr)) for lr in lrs] or \
                [Column("lr=?", metric, digits=digits)]
            ran = set(sel["method"]) if "method" in sel else set()
            methods = tuple(m for m in LR_IF_RUN if m in ran) + LR_METHODS
            method_rows(t, block=_title(values), section=title, groups=[Group(sel, cols)], methods=methods,
                        labels=LABELS, variant_ignore=("train.learning_rate",))
    return t


def _size(model: str, runs: pd.DataFrame) -> tuple:
    total = pd.to_numeric(runs.get("train.total_params", pd.Series(dtype=float)), errors="coerce").dropna()
    if len(total):
        return (0, float(total.median()), model)
    m = re.search(r"(\d+(?:[_.]\d+)?)b", model.lower())
    return (1, float(m.group(1).replace("_", ".")) * 1e9, model) if m else (2, 0.0, model)


def build_sizes(runs: pd.DataFrame, model=None, data=None) -> Table:
    t = Table("sizes", "Model sizes: each method's scores per model (the paper states results "
              "for Qwen and Llama models from 1.5B to 32B, without numbers)", legend=[OURS, RESOLVED])
    base = base_evaluations(runs)
    known = set(PAPER_BENCHMARKS.values())
    cols = _score_columns(MAIN_BENCHMARKS) + [Column(task, f"eval.{task}") for task in _other_tasks(runs, known)]
    for values, sel in _blocks(t, runs, [c.metric for c in cols], keys=("data",), only={"data": data}):
        models = [m for m in sel["model"].dropna().unique() if model in (None, m)] if "model" in sel else []
        for m in sorted(models, key=lambda m: _size(str(m), sel[sel["model"] == m])) or [model or "none"]:
            part = pd.concat([_of_model(sel, m), _of_model(base, m)])
            method_rows(t, block=_title(values), section=f"model={m}", groups=[Group(part, cols)],
                        methods=MAIN_METHODS, labels=LABELS, reference=REFERENCE)
    return t


def with_mask_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """runs plus masks.<key> columns (frac_a = M_spec, frac_b = M_euc, intersection, union,
    jaccard) from each run's adapter/mask_stats.json aggregate (NaN where there is none)."""
    from geora.persistence import STATS_FILE   # torch; only this table needs it
    from geora.training.rundir import RunFolder, read_json

    keys = ("frac_a", "frac_b", "intersection", "union", "jaccard")
    rows = []
    for run_dir in runs.get("run_dir", pd.Series([None] * len(runs))):
        stats = read_json(RunFolder(run_dir).adapter / STATS_FILE) if isinstance(run_dir, str) else None
        agg = (stats or {}).get("aggregate") or {}
        rows.append({f"masks.{k}": agg.get(k, np.nan) for k in keys})
    columns = pd.DataFrame(rows, columns=[f"masks.{k}" for k in keys])
    return pd.concat([runs.reset_index(drop=True), columns], axis=1)


def _analysis_columns(runs: pd.DataFrame) -> tuple[str, list, dict[str, list[Column]]]:
    """The default S_Head reading, the k of the runs, and the columns of each section."""
    from geora.geometry import metrics as m     # torch; only this table needs it

    readings = next((list(r) for r in runs.get("analysis.readings", pd.Series(dtype=object))
                     if isinstance(r, list)), list(m.S_HEAD_READINGS))
    defaults = runs.get("analysis.default_reading", pd.Series(dtype=object)).dropna()
    default = defaults.mode().iloc[0] if len(defaults) else m.DEFAULT_READING
    ks = sorted(pd.to_numeric(runs.get("analysis.k", pd.Series(dtype=float)), errors="coerce").dropna().unique())
    o = "analysis.overall."
    s_head = [Column(f"{r} (default)" if r == default else r, f"{o}s_head.{r}", digits=3,
                     chance=f"{o}s_head_chance.{r}", paper="S_Head" if r == default else None)
              for r in [default] + [r for r in readings if r != default]]
    nss = [Column(f"NSS {s}", f"{o}nss.{s}", paper="NSS", digits=3) for s in m.NSS_SCOPES] + \
        [Column("unchanged (bf16)", f"{o}unchanged_frac", digits=3),
         Column("exactly zero", f"{o}zero_frac", digits=3)]
    masks = [Column("M_spec", "masks.frac_a", digits=4), Column("M_euc", "masks.frac_b", digits=4),
             Column("M_spec ∩ M_euc", "masks.intersection", paper="mask_intersection_frac", digits=4),
             Column("M_spec ∪ M_euc", "masks.union", digits=4),
             Column("Jaccard", "masks.jaccard", paper="mask_jaccard", digits=4)] + \
        [Column(f"updated in {name}", f"{o}masks.{key}.updated_in_mask", digits=3,
                chance=f"{o}masks.{key}.updated_in_mask_chance")
         for key, name in (("spec", "M_spec"), ("euc", "M_euc"), ("union", "the union"))]
    return default, ks, {"S_Head": s_head, "NSS and update sparsity": nss, "Masks (GeoRA family)": masks}


def build_analysis(runs: pd.DataFrame, model=None, data=None) -> Table:
    runs = with_mask_stats(runs) if not runs.empty else runs
    default, ks, sections = _analysis_columns(runs)
    t = Table("analysis", "Where the updates went (results.json['analysis'], overall aggregate)", legend=[
        OURS, f"S_Head: share of the update in W0's top-k singular subspace (k = "
        f"{', '.join(f'{k:g}' for k in ks) or '?'}), default reading {default!r}; chance line: its "
        "value for a random update of the same shapes.",
        f"{UNKNOWN_DEFINITION} The paper's NSS does not name its scope: it is shown under each of "
        "ours. Its S_Head is shown on the default reading's line.",
        "Masks: fractions of entries (adapter/mask_stats.json); 'updated in': share of the updated "
        "entries inside the mask, chance = the mask's share of entries."])
    paper = paper_cells("analysis", lambda r: ("≤ " if r["benchmark"].endswith("_max") else "") + r["score"])
    paper = {(method, "S_Head" if b == "S_Head_max" else b): v for (method, b), v in paper.items()}
    paper = {key: f"{v} {DAGGER}" if key[1] in ("S_Head", "NSS") else v for key, v in paper.items()}
    prefer = {"model": PAPER_MODELS["Qwen3-8B"], "data": PAPER_DATA["DeepMath-103K"]}
    metrics = [c.metric for cols in sections.values() for c in cols]
    for values, sel in _blocks(t, runs, metrics, prefer=prefer, only={"model": model, "data": data}):
        for title, cols in sections.items():
            part, methods = sel, TRAINED_METHODS
            if title.startswith("Masks"):     # the methods with masks (and GeoRA, the paper's)
                has = [c.metric for c in cols if c.metric in sel]
                part, methods = (sel[sel[has].notna().any(axis=1)] if has else sel.iloc[:0]), ("geora",)
            method_rows(t, block=_title(values), section=title, groups=[Group(part, cols)], methods=methods,
                        labels=LABELS, paper=paper, variant_extra=("analysis.k", "analysis.default_reading"))
    return t


def build_premise(runs: pd.DataFrame, model=None, data=None) -> Table:
    from analysis.premise import build_premise as build   # the premise's own module
    return build(runs, model=model, data=data)


TABLES = {"runs": build_runs, "main": build_main, "ablation": build_ablation, "domains": build_domains,
          "efficiency": build_efficiency, "lr": build_lr, "sizes": build_sizes, "analysis": build_analysis,
          "premise": build_premise}
ALIASES = {"main_math": "main"}


def build_table(name: str, runs: pd.DataFrame, model: str | None = None, data: str | None = None) -> Table:
    """The table `name` (TABLES; main_math = main) of `runs` (analysis.runs.collect_runs)."""
    key = ALIASES.get(name, name)
    if key not in TABLES:
        raise ValueError(f"unknown table {name!r}; choose one of {', '.join(TABLES)}")
    if model is not None and "model" in runs and model not in set(runs["model"]):
        found = sorted(set(runs["model"].dropna()))
        raise ValueError(f"--model {model!r}: no run of that model; found {found}")
    return TABLES[key](runs, model=model, data=data)

