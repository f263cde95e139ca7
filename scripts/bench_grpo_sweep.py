"""The GRPO step of several methods through the real pipeline (`run.py`: TRL's GRPOTrainer
with this project's defaults), in runs that take turns step by step.

    python scripts/bench_grpo_sweep.py                        # fullft,lora,geora; micro; 40 steps
    python scripts/bench_grpo_sweep.py --methods fullft,lora,geora,pissa --steps 60 --json out.json
    python scripts/bench_grpo_sweep.py --methods fullft,fullft,lora   # + a FullFT control run
    python scripts/bench_grpo_sweep.py --out /tmp/sweep -- train.num_generations=4  # + overrides

Why take turns: runs one after the other see the machine at different times. On this
project's 2-core machine the same sequential sweep, run twice in opposite orders, put
GeoRA's step at 0.89x of FullFT's in one and 1.03x in the other: the order moved the ratio
more than the methods did. Here one process per method starts `run.py method=M
train.max_steps=N eval=none ...`; all of them load before anyone steps (a barrier), and
then they take turns: run i computes its step k only after run i-1 finished its step k. At
most one step computes at any time, and the steps k of all methods are neighbours in time,
so a slow minute of the machine slows them alike. A method listed twice runs twice (the
second labelled M.2): two runs doing the same work show the measurement's own spread.

A step is timed from the moment its run gets the turn to the end of its optimizer step
(the Trainer's `on_step_end`: generation, rewards, forward, backward, clipping, AdamW),
in wall time and in process CPU time, and split into TRL's generation, its loss forward
(`compute_loss`) and the backward (`Accelerator.backward`). Checkpoints are off
(`train.save_steps` > steps) so that no run writes one while another computes. Reported per
method: the median step over steps --skip+1 .. N; and, paired with the first method (the
reference), the median over k of (step k / reference step k) with a bootstrap 95% interval
of that median. The runs differ only in the method (with its own default learning rate):
the same seed, data and sampling, so the completions, and with them the work per step,
drift apart only as the policies learn differently.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.002          # how often a waiting run looks at the turn file
# A run waiting longer than this for its turn stops: a last resort, since the sweep itself
# stops every run as soon as one fails; long enough for many methods' real-model steps.
WAIT_LIMIT_S = 6 * 3600.0


# ------------------------------------------------------------------------- taking turns
class Turns:
    """Run `index` of `count` in the folder `sync`: `wait()` returns when it is its turn for
    its next step, `done()` hands the turn on. The turn file holds the number of steps all
    runs have finished: run i's step k (0-based) is turn k * count + i. Writes are atomic
    (os.replace), and only the run holding the turn writes."""

    def __init__(self, sync: str | Path, index: int, count: int):
        if not 0 <= index < count:
            raise ValueError(f"run index {index} outside 0..{count - 1}")
        self.sync, self.index, self.count = Path(sync), index, count
        self.step = 0
        self.turn_file = self.sync / "turn"

    def ready(self) -> None:
        """Say this run is loaded, and wait until every run is (the barrier)."""
        (self.sync / f"ready.{self.index}").touch()
        self._wait_for(lambda: all((self.sync / f"ready.{i}").exists()
                                   for i in range(self.count)), "every run to load")

    def finished_steps(self) -> int:
        try:
            return int(self.turn_file.read_text() or 0)
        except (FileNotFoundError, ValueError):   # not written yet
            return 0

    def wait(self) -> None:
        mine = self.step * self.count + self.index
        self._wait_for(lambda: self.finished_steps() == mine, f"turn {mine}")

    def done(self) -> None:
        tmp = self.sync / f"turn.{self.index}.tmp"
        tmp.write_text(str(self.step * self.count + self.index + 1))
        os.replace(tmp, self.turn_file)
        self.step += 1

    def _wait_for(self, condition, what: str) -> None:
        start = time.monotonic()
        while not condition():
            if time.monotonic() - start > WAIT_LIMIT_S:
                raise TimeoutError(f"run {self.index}: waited {WAIT_LIMIT_S:.0f} s for {what} "
                                   f"in {self.sync} (did another run stop?)")
            time.sleep(POLL_S)


def timing_callbacks(turns: Turns, record: list, phase_clock: dict):
    """(first, last): Trainer callbacks to put before and after every other one. `first`
    waits for the turn at each step's start, `last` records the step's wall and CPU time
    (and the seconds `phase_clock` gathered during it) and hands the turn on at its end."""
    from transformers import TrainerCallback

    clock = {}

    class WaitForTurn(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            turns.ready()

        def on_step_begin(self, args, state, control, **kwargs):
            turns.wait()
            phase_clock.clear()
            clock["start"] = time.time()
            clock["wall"], clock["cpu"] = time.perf_counter(), time.process_time()

    class HandOn(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            record.append({"step": state.global_step, "start": clock["start"],
                           "wall_s": time.perf_counter() - clock["wall"],
                           "cpu_s": time.process_time() - clock["cpu"], **phase_clock})
            turns.done()

    return WaitForTurn(), HandOn()


PHASES = {  # where a GRPO step spends its time: (module, class, method) -> phase name
    ("trl", "GRPOTrainer", "_generate_single_turn"): "generate_s",
    ("trl", "GRPOTrainer", "compute_loss"): "forward_s",
    ("accelerate", "Accelerator", "backward"): "backward_s",
}


def time_phases(phase_clock: dict) -> None:
    """Wrap the methods in PHASES so that each call adds its wall time to phase_clock."""
    import importlib

    for (module, cls_name, name), phase in PHASES.items():
        cls = getattr(importlib.import_module(module), cls_name)
        method = getattr(cls, name)

        def timed(*args, _method=method, _phase=phase, **kwargs):
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                phase_clock[_phase] = phase_clock.get(_phase, 0.0) + time.perf_counter() - start

        setattr(cls, name, timed)


def worker(index: int, count: int, sync: Path, run_args: list[str]) -> None:
    """One run of the sweep: run.py with `run_args`, its Trainer taking turns with the others."""
    import runpy

    sys.path.insert(0, str(ROOT))
    import geora.training.grpo as grpo

    turns, record, phase_clock = Turns(sync, index, count), [], {}
    time_phases(phase_clock)
    build_trainer = grpo.build_trainer

    def build_taking_turns(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        first, last = timing_callbacks(turns, record, phase_clock)
        trainer.callback_handler.callbacks.insert(0, first)
        trainer.add_callback(last)
        return trainer

    grpo.build_trainer = build_taking_turns   # geora.training.pipeline imports it per call
    sys.argv = [str(ROOT / "run.py")] + run_args
    try:
        runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise
    (sync / f"steps.{index}.json").write_text(json.dumps(record))


# ------------------------------------------------------------------------------ summary
def median(values) -> float:
    import numpy as np
    return float(np.median(np.asarray(values, dtype=float)))


def median_interval(values, confidence: float = 0.95, n_resamples: int = 4000,
                    seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of `values`."""
    import numpy as np
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    boot = np.median(x[rng.integers(0, len(x), size=(n_resamples, len(x)))], axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return float(low), float(high)


def summarise(records: dict[str, list[dict]], skip: int) -> dict[str, dict]:
    """records: {method: [{step, wall_s, cpu_s}, ...]} in method order, the first the
    reference. Steps <= skip are dropped; ratios pair equal step numbers."""
    kept = {m: {r["step"]: r for r in rs if r["step"] > skip} for m, rs in records.items()}
    reference = next(iter(kept))
    out = {}
    for method, steps in kept.items():
        if not steps:
            raise ValueError(f"{method}: no step after the first {skip} to summarise")
        shared = sorted(set(steps) & set(kept[reference]))
        entry = {"steps": len(steps),
                 "step_s": median([r["wall_s"] for r in steps.values()]),
                 "step_cpu_s": median([r["cpu_s"] for r in steps.values()])}
        for phase in PHASES.values():   # median seconds per step in each phase, where timed
            if all(phase in r for r in steps.values()):
                entry[phase] = median([r[phase] for r in steps.values()])
        for clock in ("wall", "cpu"):
            ratios = [steps[k][f"{clock}_s"] / kept[reference][k][f"{clock}_s"] for k in shared]
            key = "ratio" if clock == "wall" else "cpu_ratio"
            entry[key] = median(ratios)
            entry[key + "_ci95"] = (list(median_interval(ratios))
                                    if len(ratios) > 1 and method != reference else None)
        out[method] = entry
    return out


# ---------------------------------------------------------------------------- controller
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="fullft,lora,geora",
                    help="comma-separated method names (conf/method); the first is the reference; "
                         "a repeated method runs again (labelled M.2, ...): the noise floor")
    ap.add_argument("--steps", type=int, default=40, help="GRPO steps per run")
    ap.add_argument("--skip", type=int, default=2, help="first steps left out (warm-up)")
    ap.add_argument("--out", default=None, help="run folders and logs (default: a new temp folder)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sync", default=None, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="extra run.py overrides (after --)")
    args = ap.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    if args.worker is None:
        if len(args.methods) < 2:
            ap.error(f"--methods {','.join(args.methods)!r}: give two or more runs")
        if args.steps <= args.skip:
            ap.error(f"--steps {args.steps} must exceed --skip {args.skip}")
    return args


def run_labels(methods: list[str]) -> list[str]:
    """One name per run: the method, and M.2, M.3, ... for its repeats."""
    seen: dict[str, int] = {}
    labels = []
    for method in methods:
        seen[method] = seen.get(method, 0) + 1
        labels.append(method if seen[method] == 1 else f"{method}.{seen[method]}")
    return labels


def run_overrides(method: str, steps: int, folder: Path, extra: list[str]) -> list[str]:
    return [f"method={method}", f"train.max_steps={steps}", f"train.save_steps={steps + 1}",
            "eval=none", "eval_before=false", "analysis.enabled=false", "train.overwrite=true",
            f"hydra.run.dir={folder}", *extra]


def main(argv=None) -> dict:
    import tempfile

    args = parse_args(argv)
    if args.worker is not None:
        worker(args.worker, args.count, Path(args.sync), args.overrides)
        return {}
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="grpo_sweep_"))
    sync = out_dir / "turns"
    sync.mkdir(parents=True, exist_ok=True)
    for stale in sync.iterdir():
        stale.unlink()
    load_before = os.getloadavg()
    procs, labels = [], run_labels(args.methods)
    for i, (method, label) in enumerate(zip(args.methods, labels)):
        log = open(out_dir / f"{label}.log", "w")
        cmd = [sys.executable, __file__, "--worker", str(i), "--count", str(len(args.methods)),
               "--sync", str(sync), "--",
               *run_overrides(method, args.steps, out_dir / label, args.overrides)]
        procs.append((label, subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT),
                      log))
    while any(p.poll() is None for _, p, _ in procs):   # until all end or one fails
        if any(p.poll() not in (None, 0) for _, p, _ in procs):
            break
        time.sleep(0.5)
    failed = next((label for label, p, _ in procs if p.poll() not in (None, 0)), None)
    for _, p, log in procs:
        if p.poll() is None:
            p.terminate()
            p.wait()
        log.close()
    if failed:
        raise SystemExit(f"bench_grpo_sweep: the {failed} run failed; see {out_dir / failed}.log")
    records = {label: json.loads((sync / f"steps.{i}.json").read_text())
               for i, label in enumerate(labels)}
    import torch
    import transformers
    import trl

    out = {
        "benchmark": "grpo_step_turns",
        "command": "python run.py " + " ".join(run_overrides("M", args.steps, Path("<out>/M"),
                                                             args.overrides)),
        "methods": args.methods, "runs": labels, "reference": labels[0], "steps": args.steps,
        "skip": args.skip,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch "
                   f"{torch.__version__}, {torch.get_num_threads()} torch threads",
        "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "trl": trl.__version__},
        "results": summarise(records, args.skip),
        "per_step": records,
    }
    report(out)
    if args.json:
        sys.path.insert(0, str(ROOT))
        from geora.fileio import atomic_write_json
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, out)
    return out


def report(out: dict) -> None:
    print(f"GRPO step, runs taking turns, {out['steps']} steps (first {out['skip']} left out); "
          f"ratios to {out['reference']}, median over steps [bootstrap 95%]")
    phases = [p for p in PHASES.values() if all(p in r for r in out["results"].values())]
    print(f"{'method':<12}{'step s':>9}{'x wall':>22}{'cpu s':>9}{'x cpu':>22}"
          + "".join(f"{p[:-2]:>10}" for p in phases))
    for name, r in out["results"].items():
        def ratio(key):
            ci = r[key + "_ci95"]
            return f"{r[key]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        print(f"{name:<12}{r['step_s']:>9.3f}{ratio('ratio'):>22}{r['step_cpu_s']:>9.3f}"
              f"{ratio('cpu_ratio'):>22}" + "".join(f"{r[p]:>10.3f}" for p in phases))


if __name__ == "__main__":
    main()
