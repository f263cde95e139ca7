"""The paper's premise from run folders: the table, the figures (geora/geometry/premise.py measures).

    python -m analysis.tables DIR --table premise        # capture shares with chance levels
    python -m analysis.premise DIR --out figures/        # the figures below, from run folders

Reads results.json["analysis"]["premise"] of the full-update runs (FullFT, SparseFT: the
unconstrained update) and the "geometry" records of train_log.jsonl (analysis.track_every).
Every number is the mean over seeds with its 95% Student-t interval (analysis.stats); a
chance line follows every capture line (a random subspace of the same dimensions), and the
Gaussian matrix of the same shapes is the reference for the concentration.

Figures (PNG + PDF): premise_per_layer, premise_per_type (the reach of each initial
subspace, dotted: chance) and geometry_over_training (per method and settings: S_Head,
||dW||/||W0||, and where logged, the reach of GeoRA's, PiSSA's, MiLoRA's and a random
subspace, all with seed bands).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs import collect_runs, finished, variants
from analysis.stats import mean_interval
from analysis.tablekit import Table, interval_text
from geora.training.rundir import read_json

FULL_UPDATE_METHODS = ("fullft", "sparseft")
# Subspaces in the order the table shows them (geora.geometry.premise.SUBSPACES; no torch import here).
SUBSPACES = ("geora", "geora_random_r", "geora_tail_r", "geora_wo_spec", "geora_wo_euc",
             "pissa", "milora", "lora", "random")
LABELS = {"geora": "GeoRA (B0, A0)", "geora_random_r": "Random-r Init", "geora_tail_r": "Tail-r Init",
          "geora_wo_spec": "w/o M_Spec", "geora_wo_euc": "w/o M_Euc", "pissa": "PiSSA (W0 top-r)",
          "milora": "MiLoRA (W0 bottom-r)", "lora": "LoRA (A0 rows only)", "random": "random rank-r pair"}
SIDES = ("left", "right", "reach")
FIGURE_SUBSPACES = ("geora", "pissa", "milora", "random")


# ------------------------------------------------------------------------- reading
def premise_of(run_dir) -> dict | None:
    """results.json["analysis"]["premise"] of a run folder (None when it has none)."""
    res = read_json(Path(run_dir) / "results.json") if isinstance(run_dir, str) else None
    return ((res or {}).get("analysis") or {}).get("premise")


def geometry_of(run_dir) -> list[dict]:
    """The run's geometry records [{"step", "geometry"}] (the last one per step: a resumed
    run logs the steps after its checkpoint again)."""
    from geora.training.rundir import read_log

    recs = {r["step"]: r for r in read_log(Path(run_dir) / "train_log.jsonl") if "geometry" in r}
    return [recs[s] for s in sorted(recs)]


def flat(premise: dict) -> dict:
    """The overall aggregate as columns: conc.top_r, conc.rank90, gauss.*, <sub>.<side>,
    chance.<sub>.<side>."""
    o = premise["overall"]
    row = {"conc.top_r": o["concentration"]["top_r_share"], "conc.rank90": o["concentration"]["rank90"],
           "gauss.top_r": o["concentration_gaussian"]["top_r_share"],
           "gauss.rank90": o["concentration_gaussian"]["rank90"]}
    for sub, shares in o["capture"].items():
        for side in SIDES:
            row[f"{sub}.{side}"] = shares[side]
            row[f"chance.{sub}.{side}"] = o["chance"][sub][side]
    return row


def premise_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished full-update runs with a premise section, one row each: the runs'
    columns plus `flat(premise)` and the section itself ("premise"). One line of error when
    there is nothing to show (no full-update run, or none with the section)."""
    methods = sorted(set(runs.get("method", pd.Series(dtype=str)).dropna()))
    full = finished(runs[runs["method"].isin(FULL_UPDATE_METHODS)]) if methods else runs.iloc[:0]
    if full.empty:
        raise ValueError(f"the premise table needs runs of a full-update method "
                         f"({', '.join(FULL_UPDATE_METHODS)}); found only: {', '.join(methods) or 'none'}")
    rows = []
    for _, r in full.iterrows():
        p = premise_of(r.get("run_dir"))
        if p:
            rows.append({**r.to_dict(), **flat(p), "premise": p})
    if not rows:
        raise ValueError(f"{len(full)} full-update run(s) but none has results.json['analysis']"
                         f"['premise'] (runs before it existed, or analysis.premise=false); "
                         f"e.g. {full['run_dir'].iloc[0]}")
    return pd.DataFrame(rows).reset_index(drop=True)


# ---------------------------------------------------------------------------- table
def _text(values, digits=3) -> tuple[str, dict]:
    iv = mean_interval(values)
    return interval_text(iv, digits), {"value": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n}


def premise_table(frame: pd.DataFrame, name: str = "premise", title: str | None = None,
                  keys=("model", "data", "method"), variant_ignore=()) -> Table:
    """Capture shares (left, right, reach, reach / chance) of every subspace, then the
    concentration, per block of `keys` and settings variant (analysis.runs.variants, less
    the keys matching `variant_ignore`); mean ± t-interval over seeds."""
    t = Table(name, title or "Where the unconstrained RLVR update goes (results.json "
              "['analysis']['premise'], overall, pooled by ||dW||²)", legend=[
        "ours = mean ± half-width of the 95% t-interval over seeds (n = seeds).",
        "left ||P_B dW||², right ||dW P_A||², reach ||dW||² − ||(I−P_B) dW (I−P_A)||² "
        "(what B0·dA + dB·A0 can express), each over ||dW||²; P_B: col span of the method's B0, "
        "P_A: row span of its A0, rank r. chance: the same for a random subspace of those "
        "dimensions (r/m, r/n, r/m + r/n − r²/(mn)).",
        "concentration: share of ||dW||² in dW's own top-r singular directions, and the rank "
        "holding 90% of it; Gaussian: the same for an i.i.d. Gaussian matrix of each shape."])
    for block, sel in frame.groupby(list(keys), sort=True):
        block = ", ".join(f"{k}={v}" for k, v in zip(keys, block if isinstance(block, tuple) else (block,)))
        for label, part in variants(sel, variant_ignore) if "settings" in sel else [("", sel)]:
            head = f"{block} [{label}]" if label else block
            for sub in [s for s in SUBSPACES if f"{s}.reach" in part]:
                row = LABELS.get(sub, sub)
                for src, prefix in (("ours", ""), ("chance", "chance.")):
                    for side in SIDES:
                        text, nums = _text(part[f"{prefix}{sub}.{side}"])
                        t.add(head, "capture of dW by each initial subspace", row, src, side,
                              "—" if nums["n"] == 0 else text, method=sub, variant=label, **nums)
                    ratio = part[f"{sub}.reach"].astype(float) / part[f"chance.{sub}.reach"].astype(float)
                    text, nums = _text(ratio, 2) if src == "ours" else ("1", {})
                    t.add(head, "capture of dW by each initial subspace", row, src,
                          "reach / chance", text, method=sub, variant=label, **nums)
            for src, prefix in (("ours", "conc"), ("Gaussian", "gauss")):
                for col, key, digits in (("top-r share", "top_r", 3), ("rank holding 90%", "rank90", 1)):
                    text, nums = _text(part[f"{prefix}.{key}"], digits)
                    t.add(head, "concentration of dW", "dW" if src == "ours" else "Gaussian matrix",
                          src, col, text, method=src, variant=label, **nums)
    return t


def build_premise(runs: pd.DataFrame, model=None, data=None) -> Table:
    """analysis.tables' --table premise."""
    for key, value in (("model", model), ("data", data)):
        if value is not None and key in runs:
            runs = runs[runs[key] == value]
    return premise_table(premise_frame(runs))


# -------------------------------------------------------------------------- figures
def _per_part(frame: pd.DataFrame, part: str, sub: str, source: str = "capture"):
    """{label: (parts, per-seed rows)} of the reach of `sub` by layer or module type."""
    from analysis.figkit import groups, _num

    out = {}
    for label, sel in groups(frame):
        dicts = [p[part] for p in sel["premise"] if p and p.get(part)]
        if not dicts:
            continue
        keys = list(dicts[0])
        out[label] = (keys, [[_num(((d.get(k) or {}).get(source) or {}).get(sub, {}).get("reach"))
                              for k in keys] for d in dicts])
    return out


def premise_per_part(frame: pd.DataFrame, out: Path, part: str = "by_layer") -> list[Path] | None:
    """The reach of each initial subspace per layer (or module type), one panel per
    method and settings, seed bands; dotted: chance."""
    import matplotlib.pyplot as plt

    from analysis.figkit import _band, _save, source_text

    labels = list(_per_part(frame, part, "geora"))
    if not labels:
        return None
    fig, axes = plt.subplots(1, len(labels), figsize=(4.5 * len(labels), 3.8), squeeze=False)
    for ax, label in zip(axes[0], labels):
        for sub in FIGURE_SUBSPACES:
            keys, vals = _per_part(frame, part, sub)[label]
            x = np.arange(len(keys))
            if np.isnan(np.asarray(vals, dtype=float)).all():    # not measured in these runs
                continue
            line = _band(ax, x, vals, LABELS[sub], marker="o")
            _, chance = _per_part(frame, part, sub, "chance")[label]
            ax.plot(x, np.nanmean(chance, axis=0), ":", color=line.get_color())
        ax.set_xticks(x, keys)
        ax.set_xlabel("layer" if part == "by_layer" else "module type")
        ax.set_ylim(0, 1.02)
        ax.set_title(label, fontsize=9)
    axes[0][0].set_ylabel("reach: share of ||dW||² B0·dA + dB·A0 can express")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, out, source_text(frame))


def geometry_over_training(series: dict, out: Path, source: str) -> list[Path] | None:
    """series: {label: [records per seed]} (geometry_of's records). Panels: S_Head (default
    reading "either") with its chance, ||dW||/||W0||, and, where logged, the reach of
    FIGURE_SUBSPACES; mean over seeds with t-bands."""
    import matplotlib.pyplot as plt

    from analysis.figkit import _band, _save

    series = {k: v for k, v in series.items() if v and all(v)}
    if not series:
        return None
    captured = [k for k, v in series.items() if "capture" in v[0][0]["geometry"]]
    fig, axes = plt.subplots(1, 2 + len(captured), figsize=(4.5 * (2 + len(captured)), 3.8), squeeze=False)
    axes = axes[0]
    for label, per_seed in series.items():
        steps = sorted(set.union(*[{r["step"] for r in recs} for recs in per_seed]))

        def pick(f):    # NaN where a seed has no record at that step (a shorter run)
            by_step = [{r["step"]: r["geometry"] for r in recs} for recs in per_seed]
            return [[f(b[s]) if s in b else np.nan for s in steps] for b in by_step]
        line = _band(axes[0], steps, pick(lambda g: g["s_head"]), label)
        chance = np.nanmean(pick(lambda g: g["s_head_chance"]), axis=0)
        axes[0].plot(steps, chance, ":", color=line.get_color())
        _band(axes[1], steps, pick(lambda g: g["rel_update_norm"]), label)
        if label in captured:
            ax = axes[2 + captured.index(label)]
            for sub in FIGURE_SUBSPACES:
                ln = _band(ax, steps, pick(lambda g, s=sub: g["capture"][s]["reach"]), LABELS[sub])
                ax.plot(steps, np.nanmean(pick(lambda g, s=sub: g["chance"][s]["reach"]), axis=0), ":",
                        color=ln.get_color())
            ax.set_title(f"{label}: reach of each initial subspace (dotted: chance)", fontsize=8)
            ax.set_ylim(0, 1.02)
            ax.legend(fontsize=6)
    axes[0].set_title("S_Head (either, k=16; dotted: chance)", fontsize=9)
    axes[0].set_ylim(0, 1.02)
    axes[1].set_title("||dW|| / ||W0|| (all target matrices)", fontsize=9)
    axes[0].legend(fontsize=6)
    for ax in axes:
        ax.set_xlabel("optimizer step")
    return _save(fig, out, source)


def geometry_series(runs: pd.DataFrame) -> dict:
    """{method [settings]: [geometry records of each seed]} of the finished runs."""
    from analysis.figkit import groups

    out = {}
    for label, sel in groups(runs):
        recs = [geometry_of(d) for d in sel["run_dir"] if isinstance(d, str)]
        recs = [r for r in recs if r]
        if recs:
            out[label] = recs
    return out


def geometry_cost(run_dir, every: int | None = None) -> dict:
    """What the geometry callback cost a run, from its own files: the records' measuring
    time (median) and setup, against the run's median step time (results.json; the step
    timer stops before the callback runs). share_at_every = median measure / every / step
    time (every: the run's own track_every unless given); setup_share_200 = setup / (200
    steps), the micro default run's length."""
    from geora.training.rundir import RunFolder

    recs = geometry_of(run_dir)
    res = RunFolder(run_dir).read_results() or {}
    step = (res.get("train") or {}).get("step_time_s")
    if not recs or not step:
        raise ValueError(f"{run_dir}: no geometry records or no step time (a finished run with "
                         f"analysis.track_every set is needed)")
    times = sorted(r["geometry"]["time_s"] for r in recs)
    every = every or (recs[1]["step"] - recs[0]["step"] if len(recs) > 1 else recs[0]["step"])
    setup = next((r["geometry"]["setup_s"] for r in recs if "setup_s" in r["geometry"]), None)
    measure = times[len(times) // 2]
    return {"method": res.get("method"), "records": len(recs), "step_time_s": step,
            "measure_s": measure, "setup_s": setup, "every": every,
            "share_at_every": measure / every / step,
            "setup_share_200": None if setup is None else setup / (200 * step)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", type=Path, help="folders searched for run folders")
    p.add_argument("--out", type=Path, help="folder for the figures")
    p.add_argument("--with-study", type=Path, metavar="JSON",
                   help="also draw, over training, the runs of an analysis.premise_study file "
                        "(premise_runs.json: records read from checkpoints)")
    p.add_argument("--cost", type=int, nargs="?", const=0, metavar="N",
                   help="print the geometry callback's cost of each run (at every N steps; "
                        "default: the run's own) instead of drawing")
    args = p.parse_args(argv)
    from analysis.figkit import source_text

    runs = collect_runs(*args.roots)
    if runs.empty:
        raise SystemExit(f"error: no run folder under {', '.join(map(str, args.roots))}")
    if args.cost is not None:
        for d in finished(runs)["run_dir"]:
            try:
                print(d, json.dumps(geometry_cost(d, args.cost or None)))
            except ValueError as e:
                print(f"skipped {e}")
        return
    if args.out is None:
        raise SystemExit("error: --out FOLDER is needed to write the figures (or pass --cost)")
    written = []
    try:
        frame = premise_frame(runs)
        for part in ("by_layer", "by_type"):
            written += premise_per_part(frame, args.out / f"premise_{part[3:]}", part) or []
    except ValueError as e:
        print(f"skipped the premise figures: {e}")
    series, source = geometry_series(runs), source_text(runs)
    if args.with_study:
        from analysis.premise_study import study_series

        series.update({f"{k} (checkpoints)": v for k, v in
                       study_series(json.loads(args.with_study.read_text())).items()})
        source += f" | {args.with_study}"
    written += geometry_over_training(series, args.out / "geometry_over_training", source) or []
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
