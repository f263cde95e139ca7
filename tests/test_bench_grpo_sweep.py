"""scripts/bench_grpo_sweep.py: runs take turns strictly, the summary pairs steps and
notices a difference, bad arguments and a dead peer stop with a clear message.

    .venv/bin/python -m pytest -q tests/test_bench_grpo_sweep.py
    .venv/bin/python -m pytest -q -m slow tests/test_bench_grpo_sweep.py   # + end to end (~40 s)
"""
import json
import multiprocessing as mp
import time

import pytest

from tests.test_bench_step import load_script

sweep = load_script("bench_grpo_sweep")


def _take_turns(sync, index, count, steps, log):
    turns = sweep.Turns(sync, index, count)
    turns.ready()
    for k in range(steps):
        turns.wait()
        with open(log, "a") as f:
            f.write(f"{index} {k} start\n")
        time.sleep(0.003)
        with open(log, "a") as f:
            f.write(f"{index} {k} end\n")
        turns.done()


def test_runs_take_turns_step_by_step(tmp_path):
    count, steps, log = 3, 4, tmp_path / "log"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_take_turns, args=(tmp_path, i, count, steps, log))
             for i in reversed(range(count))]      # started in the wrong order on purpose
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    lines = log.read_text().split("\n")[:-1]
    expected = [f"{i} {k} {e}" for k in range(steps) for i in range(count)
                for e in ("start", "end")]
    assert lines == expected


def test_a_run_without_peers_stops_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "WAIT_LIMIT_S", 0.05)
    turns = sweep.Turns(tmp_path, 1, 2)
    with pytest.raises(TimeoutError, match="run 1: waited .* for turn 1 in .*did another run stop"):
        turns.wait()
    with pytest.raises(ValueError, match="run index 2 outside 0..1"):
        sweep.Turns(tmp_path, 2, 2)


def _records(times, cpu_scale=1.0):
    return [{"step": k + 1, "start": 0.0, "wall_s": t, "cpu_s": t * cpu_scale}
            for k, t in enumerate(times)]


def test_summary_pairs_steps_skips_warmup_and_notices_a_difference():
    ref = [9.0, 1.0, 2.0, 1.0, 2.0, 1.0]                  # step 1 (9.0) is warm-up
    records = {"fullft": _records(ref),
               "lora": _records([0.1] + [t * 0.8 for t in ref[1:]], cpu_scale=0.5),
               "same": _records(ref)}
    out = sweep.summarise(records, skip=1)
    assert out["fullft"]["steps"] == 5 and out["fullft"]["step_s"] == 1.0
    assert out["fullft"]["ratio"] == 1.0 and out["fullft"]["ratio_ci95"] is None
    assert out["lora"]["ratio"] == pytest.approx(0.8)
    assert out["lora"]["cpu_ratio"] == pytest.approx(0.4)     # lora cpu 0.5x of its wall
    low, high = out["lora"]["ratio_ci95"]
    assert low == pytest.approx(0.8) and high == pytest.approx(0.8)
    assert out["same"]["ratio"] == 1.0
    # pairing is by step number: a run that recorded only some steps pairs those
    partial = {"fullft": _records(ref), "lora": _records(ref)[3:]}
    assert sweep.summarise(partial, skip=1)["lora"]["steps"] == 3
    with pytest.raises(ValueError, match="lora: no step after the first 6"):
        sweep.summarise({"fullft": _records(ref + [1.0]), "lora": _records(ref)}, skip=6)


def test_median_interval_covers_the_median_and_is_seeded():
    values = [1.0, 1.1, 0.9, 1.2, 0.8, 1.05, 0.95]
    low, high = sweep.median_interval(values)
    assert low <= sweep.median(values) <= high and low < high
    assert sweep.median_interval(values) == (low, high)


class Work:
    def run(self, x, *, twice=False):
        time.sleep(0.002)
        return 2 * x if twice else x


def test_phases_add_up_the_wrapped_calls_and_keep_their_results(monkeypatch):
    monkeypatch.setattr(sweep, "PHASES", {(__name__, "Work", "run"): "run_s"})
    monkeypatch.setattr(Work, "run", Work.run)     # undone after the test
    clock = {}
    sweep.time_phases(clock)
    assert Work().run(3) == 3 and Work().run(3, twice=True) == 6
    assert clock["run_s"] >= 0.004


def test_a_repeated_method_gets_its_own_label():
    assert sweep.run_labels(["fullft", "lora", "fullft", "fullft"]) == [
        "fullft", "lora", "fullft.2", "fullft.3"]


@pytest.mark.parametrize("argv, message", [
    (["--methods", "lora"], "give two or more runs"),
    (["--methods", "lora,,"], "give two or more runs"),
    (["--steps", "2", "--skip", "2"], "--steps 2 must exceed --skip 2"),
])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        sweep.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_end_to_end(tmp_path):
    """Two micro runs of 3 steps through run.py, taking turns; JSON written, no overlap."""
    out = sweep.main(["--methods", "fullft,lora", "--steps", "3", "--skip", "1",
                      "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "s.json")])
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["results"] == out["results"] and set(out["results"]) == {"fullft", "lora"}
    steps = sorted((r["start"], r["start"] + r["wall_s"]) for rs in out["per_step"].values()
                   for r in rs)
    assert len(steps) == 6
    assert all(end <= nxt_start for (_, end), (nxt_start, _) in zip(steps, steps[1:]))
