"""The guarded code runner (geora.execution): each guard stops what it is for, and every
test shows the same program doing the damage without that guard (so the test can fail).

    .venv/bin/python -m pytest -q tests/test_code_sandbox.py
"""
from __future__ import annotations

import time

import pytest

from geora.execution import (CodeExecutionRefused, Limits, execute, execute_many, passes,
                             preflight)

# No OS sandbox (bwrap) and no audit hook: what a program does when nothing stops it.
UNGUARDED = Limits(guard=False, memory_mb=None, runner="guard")


@pytest.fixture(autouse=True)
def _allowed(monkeypatch):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")


def program(src):
    return {"mode": "program", "program": src}


def test_correct_programs_score_one_in_every_mode():
    assert execute(program("assert sum(range(4)) == 6")).all_passed
    r = execute({"mode": "asserts", "setup": "import math", "solution": "def f(x): return math.isqrt(x)",
                 "tests": ["assert f(16) == 4", "assert f(17) == 4", "assert f(9) == 4"]})
    assert (r.status, r.passed, r.total, r.all_passed) == ("ok", 2, 3, False)
    r = execute({"mode": "pytest", "solution": "def f(x):\n    return -x\n",
                 "test_file": "import pytest\nfrom solution import f\n\n"
                              "@pytest.mark.parametrize('x', [0, 1, 2])\ndef test_f(x):\n"
                              "    assert f(x) == -x\n\ndef test_wrong():\n    assert f(1) == 1\n"})
    assert (r.status, r.passed, r.total) == ("ok", 3, 4)


def test_infinite_loop_is_stopped():
    start = time.monotonic()
    r = execute(program("while True:\n    pass"), Limits(timeout_s=0.5))
    assert (r.status, r.share, r.all_passed) == ("timeout", 0.0, False)
    assert time.monotonic() - start < 4
    assert execute(program("for _ in range(10 ** 5):\n    pass"), Limits(timeout_s=5)).all_passed


def test_memory_hog_is_stopped():
    hog = program("block = bytearray(400 * 2 ** 20)\nassert len(block) == 400 * 2 ** 20")
    r = execute(hog, Limits(memory_mb=256))
    assert r.status == "ok" and r.passed == 0  # MemoryError inside the program
    assert execute(hog, Limits(memory_mb=None)).all_passed  # the same program, no limit


def test_fork_loop_is_stopped(tmp_path):
    start = time.monotonic()
    for bomb in ("import os\nwhile True:\n    os.fork()",
                 "import subprocess, sys\nwhile True:\n    subprocess.Popen([sys.executable, '-c', '1'])",
                 "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()"):
        r = execute(program(bomb), Limits(timeout_s=5))
        assert r.passed == 0 and r.status == "ok", r  # refused at the first fork
    assert time.monotonic() - start < 5
    # One fork whose child leaves a mark: it happens without the guard, not with it.
    marker = tmp_path / "forked"
    fork_once = program(f"import os\npid = os.fork()\nif pid == 0:\n"
                        f"    open({str(marker)!r}, 'w').close()\n    os._exit(0)\nos.waitpid(pid, 0)")
    assert execute(fork_once, UNGUARDED).all_passed and marker.exists()
    marker.unlink()
    assert execute(fork_once).passed == 0 and not marker.exists()


def test_write_outside_the_temp_dir_is_stopped(tmp_path):
    target, victim = tmp_path / "escaped.txt", tmp_path / "victim.txt"
    victim.write_text("keep me")
    write = program(f"open({str(target)!r}, 'w').write('x')")
    assert execute(write).passed == 0 and not target.exists()
    assert execute(write, UNGUARDED).all_passed and target.exists()  # the guard is what stops it
    for src in (f"import os\nos.remove({str(victim)!r})",
                f"import os\nos.rename({str(victim)!r}, 'mine.txt')",
                f"import pathlib\npathlib.Path({str(victim)!r}).write_text('gone')",
                f"import os\nos.symlink({str(victim)!r}, 'link')\nopen('link', 'w').write('gone')",
                f"import shutil\nshutil.rmtree({str(tmp_path)!r})"):
        assert execute(program(src)).passed == 0, src
    assert victim.read_text() == "keep me"


def test_the_temp_dir_is_private_and_writable(monkeypatch):
    monkeypatch.setenv("GEORA_TEST_SECRET", "token")
    src = ("import os, tempfile, shutil\n"
           "assert os.environ['HOME'] == os.getcwd() == os.environ['TMPDIR']\n"
           "assert 'GEORA_TEST_SECRET' not in os.environ and 'PYTHONPATH' not in os.environ\n"
           "os.makedirs('a/b'); open('a/b/c.txt', 'w').write('x'); shutil.rmtree('a')\n"
           "fd, path = tempfile.mkstemp(); os.close(fd); os.remove(path)\n"
           "assert os.listdir('.') == []\n")
    assert execute(program(src)).all_passed
    leak = program("import os\nassert os.environ.get('GEORA_TEST_SECRET') == 'token'")
    assert not execute(leak).all_passed


def test_leaving_early_is_not_passing():
    assert not passes("import sys\nsys.exit(0)\nassert False")
    r = execute(program("import os\nos._exit(0)\nassert False"))
    assert r.status == "crashed" and not r.all_passed


def test_tests_finished_before_a_timeout_count_for_the_share():
    r = execute({"mode": "asserts", "solution": "def f(x):\n    while x == 3:\n        pass\n    return x",
                 "tests": ["assert f(1) == 1", "assert f(2) == 2", "assert f(3) == 3"]},
                Limits(timeout_s=4))   # startup of both processes fits on a loaded CI
    assert (r.status, r.passed, r.total, r.all_passed) == ("timeout", 2, 3, False)
    assert r.share == pytest.approx(2 / 3)


def test_jobs_run_in_parallel_in_order():
    jobs = [program(f"import time\ntime.sleep(0.5)\nassert {i} < 3") for i in range(4)]
    start = time.monotonic()
    results = execute_many(jobs, workers=4)
    assert [r.all_passed for r in results] == [True, True, True, False]
    assert time.monotonic() - start < 1.9  # 4 x 0.5 s one after another would take > 2 s
    bad = execute_many([{"mode": "nope"}, program("pass")])
    assert bad[0].status == "error" and "mode 'nope'" in bad[0].detail and bad[1].all_passed


def test_nothing_runs_without_opt_in(monkeypatch):
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL")
    with pytest.raises(CodeExecutionRefused, match="allow_code_execution=true"):
        execute(program("pass"))
    with pytest.raises(CodeExecutionRefused):
        execute_many([program("pass")])


def test_preflight_checks_the_runner():
    preflight(["program", "asserts", "pytest"])
    with pytest.raises(RuntimeError, match="a correct pytest job scored 0/1"):
        preflight(["pytest"], Limits(memory_mb=16))
    with pytest.raises(ValueError, match="unknown test format 'junit'"):
        preflight(["junit"])


# The split jobs (asserts/pytest: solution and tests in separate processes, plain values
# between them) keep the usual idioms of MBPP/HumanEval/KodCode tests working: printing
# (capsys), functions of the tests called by the solution, isinstance and == between the
# solution's own objects included.
IDIOMS_SOLUTION = '''
import collections, numpy as np

class BadInput(ValueError):
    pass

class Stack:
    def __init__(self):
        self.items = []
    def push(self, x):
        self.items.append(x)
    def pop(self):
        if not self.items:
            raise IndexError("pop from empty stack")
        return self.items.pop()
    def __len__(self):
        return len(self.items)

def check(x):
    if x < 0:
        raise BadInput(f"negative: {x}")
    return x

def sort_in_place(xs):
    xs.sort()

def squares(n):
    for i in range(n):
        yield i * i

def point(x, y):
    return collections.namedtuple("P", "x y")(x, y)

def counts(s):
    return collections.Counter(s)

def arr(n):
    return np.arange(n) * 2

def write(path, text):
    with open(path, "w") as f:
        f.write(text)

def greet(name):
    print(f"hello {name}")

def apply_twice(fn, x):
    return fn(fn(x))

def memoize(fn):
    cache = {}
    def wrapper(n):
        if n not in cache:
            cache[n] = fn(n)
        return cache[n]
    return wrapper

from dataclasses import dataclass

@dataclass
class Point:
    x: int
    y: int
'''
IDIOMS_TESTS = '''
import numpy as np
import pytest
from solution import *


def test_class():
    s = Stack()
    s.push(1); s.push(2)
    assert len(s) == 2 and s.pop() == 2 and s.items == [1]

def test_builtin_exception():
    with pytest.raises(IndexError, match="empty"):
        Stack().pop()

def test_own_exception():
    with pytest.raises(BadInput):
        check(-1)
    with pytest.raises(ValueError, match="negative"):
        check(-2)
    assert check(3) == 3

def test_in_place():
    xs = [3, 1, 2]
    assert sort_in_place(xs) is None
    assert xs == [1, 2, 3]

def test_generator_and_plain_types():
    assert list(squares(4)) == [0, 1, 4, 9]
    assert point(1, 2) == (1, 2)
    assert counts("aab") == {"a": 2, "b": 1}

def test_numpy():
    np.testing.assert_array_equal(arr(3), np.array([0, 2, 4]))

def test_files(tmp_path):
    write(str(tmp_path / "out.txt"), "hi")
    assert (tmp_path / "out.txt").read_text() == "hi"

def test_printed(capsys):
    greet("you")
    assert capsys.readouterr().out == "hello you\\n"

def test_functions_of_the_tests():
    assert apply_twice(lambda x: x * 3, 2) == 18
    @memoize
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)
    assert fib(20) == 6765

def test_own_classes():
    assert isinstance(Stack(), Stack) and not isinstance(3, Stack)
    assert Point(1, 2) == Point(1, 2) and Point(1, 2) != Point(2, 1)
    assert Point(1, 2) != (1, 2)
'''


def test_split_jobs_keep_common_test_idioms():
    r = execute({"mode": "pytest", "solution": IDIOMS_SOLUTION, "test_file": IDIOMS_TESTS})
    assert (r.status, r.passed, r.total) == ("ok", 10, 10), r
    r = execute({"mode": "asserts", "solution": IDIOMS_SOLUTION, "setup": "import math",
                 "tests": ["s = Stack()\ns.push(5)\nassert s.pop() == 5", "assert check(2) == 2",
                           "assert math.isclose(arr(2)[1], 2.0)", "assert check(-1) == -1"]})
    assert (r.status, r.passed, r.total) == ("ok", 3, 4), r
    assert "BadInput: negative: -1" in r.detail   # the first failure, for the logs


def test_results_record_names_the_runner_when_code_runs(monkeypatch):
    from geora.sandbox import code_runner, results_record

    off, on = False, True     # the run executes model-written code (train. or eval.allow_code_execution)
    assert results_record(off) == {}
    assert results_record(on)["code_runner"] == code_runner() in ("bwrap", "guard")
    monkeypatch.setenv("GEORA_CODE_RUNNER", "guard")
    assert results_record(on)["code_runner"] == "guard"
    monkeypatch.setenv("GEORA_CODE_RUNNER", "docker")
    with pytest.raises(ValueError, match=r"\$GEORA_CODE_RUNNER is 'docker'; choose one of"):
        results_record(on)
