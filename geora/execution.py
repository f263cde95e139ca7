"""Run model-written Python against its tests: the one code runner of the code reward
(training) and the HumanEval/MBPP metrics (evaluation). Fit to be an RL reward, where a policy
is optimised to find holes: see docs/code-sandbox.md for the threat model and its tests.

Written here because lm-eval's code metric (`evaluate.load("code_eval")`) is fetched from the
hub at import time, and TRL ships no code-execution reward. Two layers:

1. Isolation by the operating system (geora/sandbox.py): each process runs in bubblewrap
   (`bwrap`) with a read-only root, a private /tmp plus its job folder, no network, its own
   PID namespace (no /proc of the trainer), no capabilities and a clean environment. Where
   bwrap is missing or cannot work, the runner falls back to the Python audit-hook guard
   alone ("guard", one warning line); `code_runner()` says which is active.
   In both: a wall-clock limit (process groups killed), RLIMIT_AS/CPU/FSIZE/NOFILE, and
   (unless Limits.guard=False) the audit hook of geora/_sandbox_child.py, which refuses writes
   outside the job folder, new processes, signals, sockets and most of ctypes.
2. Verdicts decided outside the solution's process ("asserts" and "pytest" jobs): the
   solution runs in a server process that answers calls with plain values only; the tests
   run in a separate harness process that compares them and reports (geora/_sandbox_rpc.py,
   geora/_sandbox_harness.py). A solution cannot reach the reporter, builtins or the test code,
   return an object whose __eq__ is always True, exit early or print fake results to pass.

Nothing runs unless code execution was allowed (eval.allow_code_execution=true or
train.allow_code_execution=true, which set HF_ALLOW_CODE_EVAL=1 as HF's code_eval expects).

Three kinds of job (dicts), all scored as tests passed out of tests run:
    {"mode": "asserts", "solution": src, "tests": [...], "setup": src}   each test snippet
    {"mode": "pytest", "solution": src, "test_file": src}   pytest file, `from solution import f`
    {"mode": "program", "program": src}   1 test: runs to its end. The program decides its own
        verdict here (one process): for preflight checks and plain scripts, not for rewards.

    >>> import os; os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    >>> passes("assert sorted([2, 1]) == [1, 2]"), passes("open('/usr/x', 'w')")
    (True, False)
    >>> r = execute({"mode": "asserts", "solution": "def f(x): return 2 * x",
    ...              "tests": ["assert f(1) == 2", "assert f(2) == 5"]})
    >>> (r.passed, r.total, r.status, r.share)
    (1, 2, 'ok', 0.5)
"""
from __future__ import annotations

import json
import math
import os
import secrets
import signal
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from geora import sandbox
from geora.sandbox import code_runner, code_runner_info, python_argv  # noqa: F401

ALLOW_ENV = "HF_ALLOW_CODE_EVAL"
DEFAULT_TIMEOUT_S = 10.0
CHILD = Path(__file__).resolve().parent / "_sandbox_child.py"
RPC = Path(__file__).resolve().parent / "_sandbox_rpc.py"
MODES = ("program", "asserts", "pytest")
PREFIX = "geora_exec_"   # job folders; the fallback guard hides all but a job's own


class CodeExecutionRefused(PermissionError):
    """Model-written code would run, but code execution was not allowed."""


def execution_allowed() -> bool:
    return os.environ.get(ALLOW_ENV, "0") == "1"


@dataclass(frozen=True)
class Limits:
    """Per-job limits. Defaults suit MBPP/HumanEval/KodCode-sized programs."""
    timeout_s: float = DEFAULT_TIMEOUT_S   # wall clock for the whole job
    memory_mb: int | None = 2048           # RLIMIT_AS (virtual memory; numpy+pytest need ~0.6 GB)
    cpu_s: int | None = None               # RLIMIT_CPU; None: ceil(timeout_s) + 1
    file_size_mb: int | None = 16          # RLIMIT_FSIZE: largest file it may write
    open_files: int | None = 256           # RLIMIT_NOFILE
    max_processes: int | None = None       # RLIMIT_NPROC: per USER (all its processes and
    #   threads), not enforced for root; None leaves it to the audit hook, which refuses
    #   every new process whatever the user.
    guard: bool = True                     # the audit hook (writes, processes, network)
    runner: str | None = None              # "bwrap" | "guard" | None: bwrap where it works

    def child_limits(self) -> dict[str, int | None]:
        mb = 1 << 20
        return {"memory_bytes": None if self.memory_mb is None else self.memory_mb * mb,
                "cpu_s": self.cpu_s if self.cpu_s is not None else math.ceil(self.timeout_s) + 1,
                "file_size_bytes": None if self.file_size_mb is None else self.file_size_mb * mb,
                "open_files": self.open_files, "max_processes": self.max_processes}


@dataclass(frozen=True)
class ExecutionResult:
    passed: int
    total: int
    status: str        # ok | timeout | crashed (no end report: killed, os._exit, limit) | error
    detail: str = ""   # why, for logs: stderr tail, the sandbox's own error

    @property
    def all_passed(self) -> bool:
        return self.status == "ok" and self.total > 0 and self.passed == self.total

    @property
    def share(self) -> float:
        """Tests passed / tests, counting those finished before a timeout or crash."""
        return self.passed / self.total if self.total else 0.0


def _require_allowed() -> None:
    if not execution_allowed():
        raise CodeExecutionRefused(
            "this runs model-written code; allow it with eval.allow_code_execution=true "
            f"(evaluation) or train.allow_code_execution=true (training), which set {ALLOW_ENV}=1")


def _check_job(job: dict[str, Any]) -> int:
    """The number of tests the job announces; ValueError for a malformed job."""
    mode = job.get("mode")
    needs = {"program": ("program",), "asserts": ("solution", "tests"),
             "pytest": ("solution", "test_file")}.get(mode)
    if needs is None:
        raise ValueError(f"execution job mode {mode!r}: choose one of {MODES}")
    missing = [k for k in needs if k not in job]
    if missing:
        raise ValueError(f"execution job ({mode}) lacks {missing}")
    return len(job["tests"]) if mode == "asserts" else 1


def _environment(tmp: str) -> dict[str, str]:
    """Nothing of the parent's environment (tokens, proxies, PYTHONPATH) reaches the child."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp,
            "LANG": "C.UTF-8", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _drain(proc: subprocess.Popen, wait_s: float = 5.0) -> tuple[bytes, bytes]:
    """What a killed child wrote. A descendant that left its process group could hold the
    pipes open forever: after `wait_s` they are closed and what they held is dropped."""
    try:
        return proc.communicate(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()
        proc.wait()
        return b"", b""


def _parse(stdout: bytes, nonce: str, expected: int) -> tuple[int, int, str | None, bool, str]:
    """(passed, total, setup error, ended, why the first test failed) from the child's
    report lines (see the child)."""
    passed, total, setup_error, ended, why = 0, expected, None, False, ""
    for line in stdout.decode("utf-8", "replace").splitlines():
        head, _, rest = line.partition(" ")
        if head != nonce:
            continue
        if rest.startswith(("setup-error", "runner-error")):
            setup_error = rest
        elif rest.startswith("why "):
            try:
                why = str(json.loads(rest[4:]))[:300]
            except ValueError:
                why = rest[4:304]
        elif rest.startswith("end"):
            ended = True
        else:
            p, d, t = (int(x) for x in rest.split())
            passed, total = p, max(t, d, expected)
    return passed, total, setup_error, ended, why


def _start(runner: str, role: str | None, writable: list[str], cwd: str,
           **kw) -> subprocess.Popen:
    """One side of a job started: the program child (role None) or the split job's server /
    harness, inside bwrap or (fallback) as a plain subprocess; its own session either way."""
    argv = python_argv(CHILD) if role is None else python_argv(RPC, role)
    kw.update(env=_environment(cwd), start_new_session=True, close_fds=True)
    if runner == "bwrap":
        return sandbox.popen(argv, writable, cwd=cwd, **kw)
    return subprocess.Popen(argv, cwd=cwd, **kw)


def _wait(proc: subprocess.Popen, payload: bytes, timeout_s: float) -> tuple[bytes, bytes, bool]:
    """(stdout, stderr, timed out) of `proc` fed `payload`; its process group killed after."""
    try:
        out, err = proc.communicate(payload, timeout=timeout_s)
        return out, err, False
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = _drain(proc)
        return out, err, True
    finally:
        _kill_group(proc.pid)  # anything it started that is still alive


def _run_program(job: dict, payload: dict, limits: Limits, runner: str, tmp: str):
    """The program job: one process runs program and verdict alike (see the module doc)."""
    proc = _start(runner, None, [tmp], tmp, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)
    return proc, *_wait(proc, json.dumps({**job, **payload}).encode(), limits.timeout_s)


def _run_split(job: dict, payload: dict, limits: Limits, runner: str, tmp: str):
    """An asserts/pytest job: the solution in one process (server), the tests and the verdicts
    in another (harness), talking through two pipes (geora/_sandbox_rpc.py)."""
    shared, private = os.path.join(tmp, "shared"), os.path.join(tmp, "harness")
    os.mkdir(shared)
    os.mkdir(private)
    to_server, from_harness = os.pipe()[::-1]    # (write end, read end)
    from_server, to_harness = os.pipe()
    fds = (to_server, from_harness, from_server, to_harness)
    try:
        server = _start(runner, "server", [shared], shared,
                        stdin=from_harness, stdout=to_harness, stderr=subprocess.DEVNULL)
        try:
            harness = _start(runner, "harness", [shared, private], private,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, pass_fds=(from_server, to_server))
        except BaseException:
            _kill_group(server.pid)
            server.wait()
            raise
    finally:
        for fd in fds:
            os.close(fd)
    payload = {**job, **payload, "shared": shared, "from_server": from_server,
               "to_server": to_server}
    try:
        result = harness, *_wait(harness, json.dumps(payload).encode(), limits.timeout_s)
    finally:
        _kill_group(server.pid)
        server.wait()
    return result


def execute(job: dict[str, Any], limits: Limits = Limits()) -> ExecutionResult:
    """Run one job (see the module doc) under `limits`; never raises for what the program
    does. Raises CodeExecutionRefused unless code execution was allowed."""
    _require_allowed()
    expected = _check_job(job)
    runner = sandbox.code_runner(limits.runner)
    nonce = secrets.token_hex(16)
    payload = {"nonce": nonce, "limits": limits.child_limits(), "guard": limits.guard,
               "expected_tests": expected, "hidden": os.path.join(tempfile.gettempdir(), PREFIX)}
    run = _run_program if job["mode"] == "program" else _run_split
    with tempfile.TemporaryDirectory(prefix=PREFIX, ignore_cleanup_errors=True) as tmp:
        try:
            proc, out, err, timed_out = run(job, payload, limits, runner, tmp)
        except OSError as e:
            return ExecutionResult(0, expected, "error", f"could not start the runner: {e}")
    passed, total, setup_error, ended, why = _parse(out, nonce, expected)
    if setup_error is not None:
        return ExecutionResult(0, total, "error", f"the sandbox failed: {setup_error}")
    if timed_out:
        return ExecutionResult(passed, total, "timeout", f"wall clock > {limits.timeout_s} s")
    if not ended:
        why = (f"signal {-proc.returncode}" if proc.returncode < 0
               else f"exit status {proc.returncode}")
        tail = err.decode("utf-8", "replace")[-300:]
        return ExecutionResult(passed, total, "crashed", f"{why} {tail}".strip())
    return ExecutionResult(passed, total, "ok", why)


def execute_many(jobs: Iterable[dict[str, Any]], limits: Limits = Limits(),
                 workers: int | None = None) -> list[ExecutionResult]:
    """`execute` over many jobs in parallel (threads that each wait on one child process),
    results in the jobs' order. workers: None = the number of CPUs."""
    jobs = list(jobs)
    if not jobs:
        return []
    _require_allowed()
    workers = max(1, min(len(jobs), workers or os.cpu_count() or 1))

    def one(job):
        try:
            return execute(job, limits)
        except CodeExecutionRefused:
            raise
        except Exception as e:  # noqa: BLE001 - a malformed job or an OS error is reported,
            return ExecutionResult(0, 1, "error", repr(e))  # not raised: the batch goes on

    if workers == 1:
        return [one(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, jobs))


def passes(program: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True when `program` (solution + asserts) runs to its end within `timeout_s`. The
    program decides its own verdict: for scoring a model's code use `passes_tests`."""
    return execute({"mode": "program", "program": program}, Limits(timeout_s=timeout_s)).all_passed


def passes_tests(solution: str, tests: list[str], setup: str = "",
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True when every test snippet passes against `solution`, judged outside the solution's
    process (an "asserts" job; HumanEval: tests=[test + "check(entry_point)"])."""
    job = {"mode": "asserts", "solution": solution, "tests": list(tests), "setup": setup}
    return execute(job, Limits(timeout_s=timeout_s)).all_passed


_KNOWN_GOOD = {
    "program": {"mode": "program", "program": "def f(x):\n    return x + 1\nassert f(1) == 2\n"},
    "asserts": {"mode": "asserts", "solution": "def f(x):\n    return x + 1\n",
                "tests": ["assert f(1) == 2", "assert f(-1) == 0"]},
    "pytest": {"mode": "pytest", "solution": "def f(x):\n    return x + 1\n",
               "test_file": "import pytest\nfrom solution import f\n\n\ndef test_f():\n"
                            "    assert f(1) == 2\n    with pytest.raises(TypeError):\n"
                            "        f()\n"},
}


def preflight(modes: Iterable[str] = MODES, limits: Limits = Limits()) -> None:
    """Check at start that the runner works here: a known-good program passes in every mode
    asked for (pytest installed, limits not too tight) and a write outside the temporary
    directory is refused. RuntimeError with one line otherwise."""
    for mode in modes:
        if mode not in _KNOWN_GOOD:
            raise ValueError(f"unknown test format {mode!r}; choose from {MODES}")
        result = execute(_KNOWN_GOOD[mode], limits)
        if not result.all_passed:
            raise RuntimeError(f"code execution does not work here: a correct {mode} job scored "
                               f"{result.passed}/{result.total} ({result.status}: "
                               f"{result.detail or 'no detail'})")
    if limits.guard:
        with tempfile.TemporaryDirectory(prefix="geora_preflight_") as outside:
            target = os.path.join(outside, "written")
            execute({"mode": "program", "program": f"open({target!r}, 'w').write('x')"}, limits)
            if os.path.exists(target):
                raise RuntimeError("code execution guard does not work here: a sandboxed "
                                   f"program wrote {target}")
