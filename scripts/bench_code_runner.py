"""Throughput of the code runner (programs/s), before and after the sandbox, on one batch of
real-shaped jobs, in rounds that take turns so a busy minute of the machine slows all alike.

    python scripts/bench_code_runner.py                      # 2 rounds, --json benchmarks/results/...
    python scripts/bench_code_runner.py --rounds 3 --workers 2 --json /tmp/code_runner.json

Runners compared (the same jobs, the same `execute_many` thread pool):
- before: the runner of commit --before (default f312ae5, the last one without the sandbox):
  one guarded process per job, solution and tests in it;
- guard:  this runner without bwrap (the fallback): two processes per asserts/pytest job;
- bwrap:  this runner in bubblewrap (skipped where bwrap cannot run).
Each round runs every runner on every shape; the rounds rotate which runner goes first. The
runners must agree on every score (else the script stops).
The batch: MBPP-shaped asserts jobs (3 asserts), HumanEval-shaped check(candidate) jobs and
KodCode-shaped pytest files (3 tests), each half right and half wrong (plus one that raises
at import), as a GRPO group of completions would be.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geora import sandbox  # noqa: E402
from geora.fileio import atomic_write_json  # noqa: E402
from geora.execution import Limits, execute_many  # noqa: E402

MBPP = ("def max_of_three(a, b, c):\n    return max(a, b, c)\n",
        ["assert max_of_three(1, 2, 3) == 3", "assert max_of_three(5, 2, 3) == 5",
         "assert max_of_three(-1, -2, -3) == -1"])
HUMANEVAL = ("from typing import List\n\n\ndef evens(xs: List[int]) -> List[int]:\n"
             "    return [x for x in xs if x % 2 == 0]\n",
             "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate([1, 2, 3, 4]) == [2, 4]\n"
             "    assert candidate([]) == []\n\ncheck(evens)\n")
KODCODE = ("def word_count(text):\n    counts = {}\n    for w in text.split():\n"
           "        counts[w] = counts.get(w, 0) + 1\n    return counts\n",
           "import pytest\nfrom solution import word_count\n\n\ndef test_empty():\n"
           "    assert word_count('') == {}\n\n\ndef test_words():\n"
           "    assert word_count('a b a') == {'a': 2, 'b': 1}\n\n\n"
           "@pytest.mark.parametrize('s', ['x', 'y y'])\ndef test_keys(s):\n"
           "    assert set(word_count(s)) == set(s.split())\n")
WRONG = {"max_of_three": "def max_of_three(a, b, c):\n    return a\n",
         "evens": "def evens(xs):\n    return xs\n",
         "word_count": "def word_count(text):\n    return {w: 1 for w in text.split()}\n"}


def batch(n_each: int) -> dict[str, list[dict]]:
    """Jobs by shape: n_each of each, every other one wrong (the MBPP shape has one more,
    a solution that raises at import)."""
    shapes = {"asserts_mbpp": [], "humaneval_check": [], "pytest_kodcode": []}
    for i in range(n_each):
        right = i % 2 == 0
        shapes["asserts_mbpp"].append({"mode": "asserts", "tests": MBPP[1],
                                       "solution": MBPP[0] if right else WRONG["max_of_three"]})
        shapes["humaneval_check"].append({"mode": "asserts", "tests": [HUMANEVAL[1]],
                                          "solution": HUMANEVAL[0] if right else WRONG["evens"]})
        shapes["pytest_kodcode"].append({"mode": "pytest", "test_file": KODCODE[1],
                                         "solution": KODCODE[0] if right else WRONG["word_count"]})
    shapes["asserts_mbpp"].append({"mode": "asserts", "solution": "raise ImportError('no')\n",
                                   "tests": MBPP[1]})
    return shapes


def old_runner(commit: str, folder: Path):
    """geora/execution.py and its child as of `commit`, imported from `folder`."""
    for name in ("execution.py", "_sandbox_child.py"):
        text = subprocess.run(["git", "show", f"{commit}:geora/{name}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        (folder / name).write_text(text)
    spec = importlib.util.spec_from_file_location("old_execution", folder / "execution.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_execution"] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default="f312ae5", help="commit of the runner before the sandbox")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--each", type=int, default=8, help="jobs of each shape per batch")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/code_runner_cpu.json"))
    args = ap.parse_args()
    os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    load_before = os.getloadavg()
    shapes = batch(args.each)
    with tempfile.TemporaryDirectory() as tmp:
        old = old_runner(args.before, Path(tmp))
        runners = {"before": lambda jobs: old.execute_many(jobs, old.Limits(), args.workers),
                   "guard": lambda jobs: execute_many(jobs, Limits(runner="guard"), args.workers)}
        if sandbox.bwrap_problem() is None:
            runners["bwrap"] = lambda jobs: execute_many(jobs, Limits(runner="bwrap"), args.workers)
        names = list(runners)
        times = {name: {shape: [] for shape in shapes} for name in names}
        scores = {name: {} for name in names}
        for round_ in range(args.rounds):
            k = round_ % len(names)        # each round starts with the next runner
            for name in names[k:] + names[:k]:
                for shape, jobs in shapes.items():
                    start = time.perf_counter()
                    results = runners[name](jobs)
                    times[name][shape].append(time.perf_counter() - start)
                    scores[name][shape] = [(r.passed, r.total, r.status) for r in results]
    if len({json.dumps(s) for s in scores.values()}) != 1:
        raise SystemExit(f"the runners disagree on the scores: {scores}")
    n_jobs = sum(len(j) for j in shapes.values())
    # Per runner: the median over rounds of (all jobs / the round's total time), and per shape.
    totals = {k: [sum(v[s][r] for s in shapes) for r in range(args.rounds)] for k, v in times.items()}
    per_s = {k: n_jobs / statistics.median(v) for k, v in totals.items()}
    per_shape = {k: {s: round(len(shapes[s]) / statistics.median(v[s]), 2) for s in shapes}
                 for k, v in times.items()}
    record = {
        "jobs": n_jobs, "shapes": {s: len(j) for s, j in shapes.items()},
        "workers": args.workers, "rounds": args.rounds, "before_commit": args.before,
        "seconds_per_round": {k: [round(t, 3) for t in v] for k, v in totals.items()},
        "programs_per_s": {k: round(v, 2) for k, v in per_s.items()},
        "programs_per_s_by_shape": per_shape,
        "relative_to_before": {k: round(v / per_s["before"], 3) for k, v in per_s.items()},
        "scores_agree": True,
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg(), "python": platform.python_version(),
                    "platform": platform.platform(), "bwrap": sandbox.bwrap_path()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps(record, indent=1))
    if args.json:
        atomic_write_json(args.json, record)


if __name__ == "__main__":
    main()
