"""The micro study of the premise: FullFT runs' updates read back from their checkpoints.

    python run.py -m experiment=micro_premise_study           # 9 FullFT runs (conf/experiment/)
    python -m analysis.premise_study multirun/micro_premise_study --out results/micro_premise_study

For every finished full-update run under the sweep and every checkpoint it kept
(checkpoints/checkpoint-N/model.safetensors), the update dW = W_N - W0 of each target matrix
is measured exactly as a run measures it: the geometry record of geora.training.geometry
(S_Head, ||dW||/||W0||, capture by each initial subspace) and geora.geometry.premise's section
(concentration, capture by layer and module type). W0 is the run's own model, loaded from
its config.yaml; the runs of a sweep that share it share the initial subspaces, built once.
This reads runs that were trained without analysis.track_every, at the checkpoints' cadence.

Writes to --out: premise_runs.json (per run and step: the geometry record and the premise's
overall aggregate; by layer and module type at the last step), table.md (the capture table
at the last checkpoint step every run has, the reach over training, GeoRA - PiSSA paired
over seeds), and the figures
premise_by_layer, premise_by_type, geometry_over_training (analysis.premise).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

from analysis import render
from analysis.premise import (FIGURE_SUBSPACES, FULL_UPDATE_METHODS, LABELS, flat,
                              geometry_over_training, premise_per_part, premise_table)
from analysis.runs import collect_runs, finished
from analysis.stats import mean_interval, paired_difference, format_difference
from geora.fileio import atomic_write_json, atomic_write_text
from geora.training.rundir import RunFolder

_STEP = re.compile(r"checkpoint-(\d+)$")
KEEP_DETAIL_AT = 50          # the step the study's runs of different lengths share


def checkpoints(run_dir) -> list[tuple[int, Path]]:
    """[(step, weights file)] of a run's kept checkpoints, by step."""
    found = []
    for d in RunFolder(run_dir).checkpoints.glob("checkpoint-*"):
        m = _STEP.search(d.name)
        if m and (d / "model.safetensors").is_file():
            found.append((int(m.group(1)), d / "model.safetensors"))
    return sorted(found)


class UpdateReader:
    """One prepared FullFT model of W0 and its geometry callback; `read(weights)` loads a
    checkpoint's weights into it and measures the update."""

    def __init__(self, model_cfg, k: int = 16, rho: float = 0.2):
        import geora
        from geora.models import load_model
        from geora.training.geometry import GeometryCallback

        base, _ = load_model(model_cfg, device="cpu", dtype="float32")
        self.model = geora.prepare_model(base, "fullft", keep_initial=True)
        self.targets = set(geora.surgery.get_state(self.model).targets)
        self.callback = GeometryCallback(self.model, 1, "-", k=k, capture=True, rho=rho)
        self.callback.prepare()
        self.k, self.rho = k, rho

    def read(self, weights: Path) -> tuple[dict, dict]:
        """(geometry record, premise section without per-matrix detail) of W(weights) - W0."""
        import torch
        from safetensors.torch import load_file

        from geora.geometry.premise import premise_summary
        from geora.training.weight_analysis import update_items

        state = load_file(str(weights))
        missing = sorted(t for t in self.targets if f"{t}.weight" not in state)
        if missing:
            raise ValueError(f"{weights}: no weights for {missing[:3]} (not a full model checkpoint)")
        with torch.no_grad():
            self.model.load_state_dict(state, strict=False)
            subs = {m: c["subspaces"] for m, c in self.callback.cache.items()}
            premise = premise_summary(update_items(self.model, None), r=self.k, rho=self.rho,
                                      modules=False, subspaces=subs)
        return self.callback.measure(), premise


def read_sweep(root: Path) -> list[dict]:
    """Every finished full-update run's checkpoints, measured (module docstring)."""
    runs = finished(collect_runs(root))
    runs = runs[runs["method"].isin(FULL_UPDATE_METHODS)] if not runs.empty else runs
    if runs.empty:
        raise ValueError(f"no finished full-update run ({', '.join(FULL_UPDATE_METHODS)}) under {root}")
    readers: dict[str, UpdateReader] = {}
    out = []
    for _, r in runs.sort_values(["lr", "seed"]).iterrows():
        cfg = RunFolder(r["run_dir"]).read_config()
        key = json.dumps(dict(cfg.model), sort_keys=True, default=str)
        if key not in readers:
            readers[key] = UpdateReader(cfg.model, k=int(cfg.analysis.k))
        steps = []
        for step, weights in checkpoints(r["run_dir"]):
            geometry, premise = readers[key].read(weights)
            steps.append({"step": step, "geometry": geometry, "premise": premise})
            print(f"{Path(r['run_dir']).name} step {step}: S_Head {geometry['s_head']:.3f}, "
                  f"reach GeoRA {geometry['capture']['geora']['reach']:.3f} / PiSSA "
                  f"{geometry['capture']['pissa']['reach']:.3f}", flush=True)
        for s in steps:            # by layer / type at the last step and step 50 only (small file)
            if s is not steps[-1] and s["step"] != KEEP_DETAIL_AT:
                s["premise"] = {k: v for k, v in s["premise"].items() if k not in ("by_layer", "by_type")}
        out.append({"run_dir": str(r["run_dir"]), "method": r["method"], "model": r["model"],
                    "data": r["data"], "seed": int(r["seed"]), "lr": float(r["lr"]),
                    "settings": r["settings"], "status": "finished", "steps": steps})
    return out


def common_step(study: list[dict]) -> int:
    """The last checkpoint step every run has (runs of different lengths compare there)."""
    steps = set.intersection(*[{s["step"] for s in run["steps"]} for run in study])
    if not steps:
        raise ValueError("the runs share no checkpoint step")
    return max(steps)


def final_frame(study: list[dict], step: int | None = None) -> pd.DataFrame:
    """One row per run at checkpoint `step` (default: common_step), in analysis.premise's
    frame layout; the per-layer and per-type parts are kept for each run's last step only."""
    step = common_step(study) if step is None else step
    rows = []
    for run in study:
        at = next((s for s in run["steps"] if s["step"] == step), None)
        if at is not None:
            rows.append({k: v for k, v in run.items() if k != "steps"} | flat(at["premise"])
                        | {"premise": at["premise"], "step": step})
    return pd.DataFrame(rows)


def study_series(study: list[dict]) -> dict:
    """{method lr=...: [each seed's geometry records]}: analysis.premise.geometry_over_training's input."""
    series = {}
    for run in study:
        series.setdefault(f"{run['method']} lr={run['lr']:g}", []).append(
            [{"step": s["step"], "geometry": s["geometry"]} for s in run["steps"]])
    return series


def _cell(values, digits: int = 3, n: bool = True) -> str:
    """'0.612 ± 0.009 (n=3)' (mean ± t half-width over seeds); '—' when there is none."""
    m = mean_interval(values)
    if m.mean is None:
        return "—"
    half = f" ± {m.half_width:.{digits}f}" if m.low is not None else ""
    return f"{m.mean:.{digits}f}{half}" + (f" (n={m.n})" if n else "")


def over_training(study: list[dict]) -> str:
    """Markdown: per learning rate and checkpoint step, the concentration and the reach of
    FIGURE_SUBSPACES (mean ± t-interval over seeds), then GeoRA - PiSSA paired over seeds."""
    head = ["lr", "step", "top-r share (Gaussian's)", *(f"reach {LABELS[s]}" for s in FIGURE_SUBSPACES),
            "reach GeoRA − PiSSA (paired)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for lr in sorted({r["lr"] for r in study}):
        runs = [r for r in study if r["lr"] == lr]
        for step in sorted(set.union(*[{s["step"] for s in r["steps"]} for r in runs])):
            pairs = [(r, s) for r in runs for s in r["steps"] if s["step"] == step]
            overall = [s["premise"]["overall"] for _, s in pairs]
            reach = {x: {r["seed"]: s["geometry"]["capture"][x]["reach"] for r, s in pairs}
                     for x in FIGURE_SUBSPACES}
            conc = _cell([o["concentration"]["top_r_share"] for o in overall])
            gauss = _cell([o["concentration_gaussian"]["top_r_share"] for o in overall], n=False)
            d = paired_difference(reach["geora"], reach["pissa"])
            cells = [f"{lr:g}", str(step), f"{conc} ({gauss})",
                     *(_cell(list(reach[x].values())) for x in FIGURE_SUBSPACES), format_difference(d, 3)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", type=Path, help="the sweep folder (e.g. multirun/micro_premise_study)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for premise_runs.json, table.md, figures")
    p.add_argument("--step", type=int,
                   help="the checkpoint step of the table (default: the last one every run has)")
    p.add_argument("--reuse", action="store_true",
                   help="read --out/premise_runs.json instead of the checkpoints")
    args = p.parse_args(argv)
    try:
        if args.reuse:
            study = json.loads((args.out / "premise_runs.json").read_text())
        else:
            study = read_sweep(args.sweep)
            atomic_write_json(args.out / "premise_runs.json", study)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    frame = final_frame(study, args.step)
    # runs of different lengths meet at one step; the constant schedule makes a run's first
    # N steps the same whatever its max_steps, and lr_scale only names the learning rate
    table = premise_table(frame, "premise", f"The micro premise study: FullFT's update at step "
                          f"{int(frame['step'].iloc[0])}, the checkpoint every run has",
                          variant_ignore=("train.max_steps", "lr_scale"))
    source = f"source: {args.sweep} | " + ", ".join(
        f"lr={lr:g} n={n}" for lr, n in frame.groupby("lr").size().items())
    text = (render.markdown(table) + "\n## Over training (every kept checkpoint)\n\n" + over_training(study)
            + f"\n{source}\n")
    atomic_write_text(args.out / "table.md", text)
    written = [args.out / "table.md"]
    for part in ("by_layer", "by_type"):
        written += premise_per_part(frame, args.out / f"premise_{part[3:]}", part) or []
    written += geometry_over_training(study_series(study), args.out / "geometry_over_training",
                                      source) or []
    print(text)
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
