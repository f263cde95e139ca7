"""Red team of the code runner as an RL reward (geora.execution): each attack is a
"solution" that does not solve the task (the square of x) and tries to score anyway, or to
reach outside its sandbox. Every attack must score 0 and leave the canaries outside alone.

Two kinds:
- gaming (verdict) attacks, on both runners ("bwrap" and the "guard" fallback): the verdict
  is decided in the harness process, which the solution never runs in;
- escapes (writes outside through dir_fd/dst_dir_fd/fchmod, shell commands through
  _posixsubprocess.fork_exec and _ctypes.dlsym, other processes' /proc, signals, TCP and
  unix sockets of the host):
  bwrap only (the audit-hook fallback is known not to stop them; skipped with the reason
  where bwrap is absent). Each escape first runs with no sandbox at all against throwaway
  canaries, and must do its damage there: so the attack code works, and a 0 means blocked.
Jobs are batched (execute_many) so the file takes seconds.
"""
from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from geora import sandbox
from geora.execution import Limits, execute, execute_many

HAS_BWRAP = sandbox.bwrap_problem() is None
NEEDS_BWRAP = pytest.mark.skipif(not HAS_BWRAP, reason=f"needs bubblewrap: {sandbox.bwrap_problem()}"
                                 " (the guard fallback does not stop OS-level escapes)")
RUNNERS = [pytest.param("bwrap", marks=NEEDS_BWRAP), "guard"]
NO_SANDBOX = Limits(runner="guard", guard=False, memory_mb=None, timeout_s=20)
# bwrap without the audit hook inside: what the OS sandbox alone contains.
BWRAP_ONLY = Limits(runner="bwrap", guard=False, timeout_s=20)
HONEST = "import math\n\ndef f(x):\n    return x * x\n"
# Several forms of test: ==, abs() and sorted() (builtins a solution may shadow), math.isclose
# (math taken from the solution's globals, as MBPP's tests do), `in`.
TESTS = ["assert f(3) == 9", "assert f(4) == 16", "assert abs(f(2.5) - 6.25) < 1e-9",
         "assert math.isclose(f(1.5), 2.25)", "assert sorted([f(2), f(1)]) == [1, 4]",
         "assert f(-5) in (25,)"]
TEST_FILE = ("import math\nfrom solution import f\n\n\ndef test_three():\n    assert f(3) == 9\n\n\n"
             "def test_four():\n    assert f(4) == 16\n\n\ndef test_close():\n"
             "    assert math.isclose(f(1.5), 2.25)\n")
HUMANEVAL = ("\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate(3) == 9\n"
             "    assert abs(candidate(2.5) - 6.25) < 1e-9\n\ncheck(f)\n")

GAMING = {
    "eq_always_true": "class Any:\n    def __eq__(self, other):\n        return True\n"
                      "    __ne__ = lambda self, other: False\n    __lt__ = __gt__ = __eq__\n"
                      "    __hash__ = object.__hash__\n    def __bool__(self):\n        return True\n"
                      "def f(x):\n    return Any()\n",
    "int_subclass_eq": "class I(int):\n    def __eq__(self, other):\n        return True\n"
                       "    __hash__ = int.__hash__\n    def __sub__(self, o):\n        return 0\n"
                       "def f(x):\n    return I(x)\n",
    "patched_builtins": "import builtins\n_compile = compile\nbuiltins.exec = lambda *a, **k: None\n"
                        "builtins.compile = lambda *a, **k: _compile('pass', 'x', 'exec')\n"
                        "builtins.AssertionError = type('Never', (Exception,), {})\n"
                        "def f(x):\n    return x\n",
    "shadowed_builtins": "def abs(x):\n    return 0\ndef sorted(x):\n    return [1, 4]\n"
                         "def f(x):\n    return x\n",
    "fake_math": "class M:\n    isclose = staticmethod(lambda *a, **k: True)\nmath = M()\n"
                 "def f(x):\n    return x\n",
    "patch_reporter_via_main": (
        "import sys\nfor mod in list(sys.modules.values()):\n"
        "    for name in ('_run', 'run_asserts', 'run_pytest', 'run_program'):\n"
        "        if hasattr(mod, name):\n            setattr(mod, name, lambda *a, **k: True)\n"
        "    for cls in ('Reporter', 'Server', 'Channel'):\n        c = getattr(mod, cls, None)\n"
        "        if isinstance(c, type):\n            c.test = lambda self, ok: None\n"
        "main = sys.modules['__main__']\nmain.__dict__.update(exec=lambda *a, **k: None)\n"
        "def f(x):\n    return x\n"),
    "patch_via_gc": (
        "import gc, os, json\nfor o in gc.get_objects():\n    try:\n"
        "        nonce = o.get('nonce') if isinstance(o, dict) else getattr(o, 'nonce', None)\n"
        "        if isinstance(nonce, str):\n            for fd in range(64):\n"
        "                try:\n                    os.write(fd, f'{nonce} 9 9 9\\n{nonce} end\\n'.encode())\n"
        "                except OSError:\n                    pass\n"
        "        if isinstance(o, dict) and 'op' in o:\n            o.clear()\n"
        "    except Exception:\n        pass\ndef f(x):\n    return x\n"),
    "forged_answers_and_markers": (
        "import os\nfor fd in range(64):\n    try:\n"
        "        os.write(fd, b'x 9 9 9\\nx end\\n{\"ok\": {\"v\": true, \"after\": []}}\\n')\n"
        "    except OSError:\n        pass\ndef f(x):\n    print('PASSED 9 9 9')\n    return x\n"),
    "exit_at_load": "def f(x):\n    return x\nimport os\nos._exit(0)\n",
    "sys_exit_at_load": "def f(x):\n    return x\nraise SystemExit(0)\n",
    "exit_in_call": "import os\ndef f(x):\n    os._exit(0)\n",
    "atexit_markers": "import atexit, os\natexit.register(lambda: os.write(1, b'x 9 9 9\\nx end\\n'))\n"
                      "def f(x):\n    raise SystemExit(0)\n",
    "trace_skips_asserts": (
        "import sys, threading\ndef skip(frame, event, arg):\n"
        "    if event == 'line' and 'test' in frame.f_code.co_filename:\n"
        "        try:\n            frame.f_lineno = frame.f_lineno + 1\n        except Exception:\n"
        "            pass\n    return skip\nsys.settrace(skip)\nthreading.settrace(skip)\n"
        "def f(x):\n    return x\n"),
    "read_hidden_tests": (
        "import os, re, glob\ndef f(x):\n    pattern = re.compile(r'(?:f|candidate)\\(' + re.escape(repr(x)) + r'\\) == (-?\\d+)')\n"
        "    seen = []\n    for top in ['..', os.environ.get('HOME', '.')] + glob.glob('/tmp/geora_exec_*'):\n"
        "        for dirpath, dirs, files in os.walk(top):\n"
        "            if dirpath.count(os.sep) > 6:\n                dirs[:] = []\n"
        "            for name in files:\n                if len(seen) > 3000:\n                    break\n"
        "                path = os.path.join(dirpath, name)\n                seen.append(path)\n"
        "                try:\n                    with open(path, errors='ignore') as fh:\n"
        "                        m = pattern.search(fh.read(1 << 20))\n"
        "                except Exception:\n                    continue\n"
        "                if m:\n                    return int(m.group(1))\n    return x\n"),
    "plant_conftest": (
        "import os\nhook = 'def pytest_runtest_logreport(report):\\n    report.outcome = \"passed\"\\n'\n"
        "for path in ('conftest.py', 'pytest_tmp/conftest.py', '../harness/conftest.py',\n"
        "             '../harness/test_solution.py', '../conftest.py'):\n    try:\n"
        "        os.makedirs(os.path.dirname(path) or '.', exist_ok=True)\n"
        "        with open(path, 'w') as fh:\n            fh.write(hook)\n    except Exception:\n"
        "        pass\ndef f(x):\n    return x\n"),
    "hang": "def f(x):\n    while True:\n        pass\n",
    "huge_answer": "def f(x):\n    return 'x' * (40 << 20)\n",
    "deep_answer": "def f(x):\n    v = []\n    for _ in range(5000):\n        v = [v]\n    return v\n",
}


def _job(mode, solution):
    if mode == "asserts":
        return {"mode": "asserts", "solution": solution, "tests": TESTS}
    if mode == "humaneval":
        return {"mode": "asserts", "solution": solution, "tests": [HUMANEVAL]}
    return {"mode": "pytest", "solution": solution, "test_file": TEST_FILE}


@pytest.fixture(autouse=True)
def _allowed(monkeypatch):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")


@pytest.mark.parametrize("runner", RUNNERS)
def test_gaming_attacks_score_zero(runner):
    limits = Limits(runner=runner, timeout_s=8)
    modes = ("asserts", "humaneval", "pytest")
    cases = [(mode, "honest", HONEST) for mode in modes]
    cases += [(mode, name, src) for name, src in GAMING.items() for mode in modes
              if mode == "asserts" or name in PER_MODE]
    results = execute_many([_job(mode, src) for mode, _, src in cases], limits, workers=4)
    scores = {(mode, name): (r.passed, r.total, r.status) for (mode, name, _), r in zip(cases, results)}
    for mode, total in (("asserts", len(TESTS)), ("humaneval", 1), ("pytest", 3)):
        assert scores[(mode, "honest")] == (total, total, "ok"), scores   # the runner works
    cheated = {k: v for k, v in scores.items() if k[1] != "honest" and v[0] > 0}
    assert cheated == {}


# Attacks run in all three test forms (the rest in asserts form only, to stay fast).
PER_MODE = ("eq_always_true", "patch_reporter_via_main", "patch_via_gc", "exit_in_call",
            "plant_conftest", "read_hidden_tests", "trace_skips_asserts")


def test_the_same_cheats_win_where_the_program_judges_itself():
    """Without the split (a "program" job: solution and tests in one process), cheats score:
    the zeros above come from the split, not from attacks that never worked."""
    reporter = ("import sys\nR = sys.modules['__main__'].Reporter\nend = R.end\n"
                "def cheat(self):\n    self.passed = self.done\n    end(self)\n"
                "R.end = cheat\ndef f(x):\n    return x\n")
    cheats = [(GAMING["eq_always_true"], TESTS[:2] + TESTS[5:]),
              (GAMING["int_subclass_eq"], TESTS[:2]),
              (GAMING["shadowed_builtins"], [TESTS[2], TESTS[4]]),
              (GAMING["fake_math"], [TESTS[3]]),
              (reporter, ["assert f(3) == 9"])]
    jobs = [{"mode": "program", "program": src + "\n" + "\n".join(tests) + "\n"} for src, tests in cheats]
    results = execute_many(jobs, Limits(runner="guard", timeout_s=8), workers=4)
    assert [r.all_passed for r in results] == [True] * len(cheats), results
    # The same solutions against the same tests, judged apart: all fail.
    jobs = [{"mode": "asserts", "solution": src, "tests": tests} for src, tests in cheats]
    assert [r.passed for r in execute_many(jobs, Limits(runner="guard", timeout_s=8), workers=4)] == [0] * 5
    # With no sandbox and no guard, the hidden test file is there to read (one folder up).
    r = execute(_job("pytest", GAMING["read_hidden_tests"]), NO_SANDBOX)
    assert r.passed == 2, r   # the two "f(x) == N" tests its pattern reads


# ----------------------------------------------------------------------------- escapes
SHELL = ("import os\ndef sh(cmd):\n    import _posixsubprocess\n    r, w = os.pipe()\n"
         "    pid = _posixsubprocess.fork_exec([b'/bin/sh', b'-c', cmd.encode()], [b'/bin/sh'], True,"
         " (w,), None, None, -1, -1, -1, -1, -1, -1, r, w, False, False, -1, None, None, None, -1,"
         " None, False)\n    os.close(w)\n    os.read(r, 64)\n    os.waitpid(pid, 0)\n")
CTYPES = ("import os, ctypes, _ctypes\ndef sh(cmd):\n    handle = _ctypes.dlopen(None, os.RTLD_NOW)\n"
          "    system = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p)(_ctypes.dlsym(handle, 'system'))\n"
          "    system(cmd.encode())\n")


def _escapes(canary: Path, victim_pid: int, port: int, unix: list[str]) -> dict[str, str]:
    """Attack name -> a solution that damages `canary` (a folder), kills `victim_pid`,
    connects to `port` or to the unix sockets at `unix`, then returns a wrong answer."""
    c, f = str(canary), str(canary / "canary.txt")
    body = {
        "open_write": f"open({f!r}, 'w').write('pwned')\nopen({c!r} + '/new', 'w').close()",
        "dir_fd_write": f"d = os.open({c!r}, os.O_RDONLY)\n"
                        "fd = os.open('canary.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=d)\n"
                        "os.write(fd, b'pwned')\nos.close(os.open('new', os.O_WRONLY | os.O_CREAT, dir_fd=d))",
        "dst_dir_fd_replace": f"d = os.open({c!r}, os.O_RDONLY)\nopen('mine', 'w').write('pwned')\n"
                              "os.replace('mine', 'canary.txt', dst_dir_fd=d)",
        "fchmod": f"fd = os.open({f!r}, os.O_RDONLY)\nos.fchmod(fd, 0o777)",
        "fork_exec_shell": SHELL + f"sh('echo pwned > {f}; touch {c}/new')",
        "ctypes_system": CTYPES + f"sh('echo pwned > {f}; touch {c}/new')",
        "signal_other_process": f"os.kill({victim_pid}, 9)",
        "shell_kill": SHELL + f"sh('kill -9 {victim_pid}')",
        "socket_out": "import socket\ns = socket.create_connection(('127.0.0.1', %d), timeout=2)\n"
                      "s.sendall(b'pwned')" % port,
    }
    for i, path in enumerate(unix):   # host sockets: read-only mounts do not stop connect()
        body[f"unix_socket_out_{i}"] = (f"import socket\ns = socket.socket(socket.AF_UNIX)\n"
                                        f"s.connect({path!r})\ns.sendall(b'pwned')")
    return {name: "import os\ntry:\n" + "".join(f"    {line}\n" for line in src.splitlines())
            + "except BaseException:\n    pass\ndef f(x):\n    return x\n"
            for name, src in body.items()}


# Reads the environment of every process it can see (plain paths and through a /proc dir_fd).
LEAK_PLAIN = ("import os\nDIR_FD = False\ndef f(x):\n    found = [repr(dict(os.environ))]\n"
              "    pids = [p for p in os.listdir('/proc') if p.isdigit()] + [str(os.getppid())]\n"
              "    for pid in pids:\n        try:\n            found.append(open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1'))\n"
              "        except Exception:\n            pass\n        try:\n            assert DIR_FD\n"
              "            d = os.open('/proc', os.O_RDONLY)\n"
              "            fd = os.open(f'{pid}/environ', os.O_RDONLY, dir_fd=d)\n"
              "            found.append(os.read(fd, 1 << 20).decode('latin-1'))\n        except Exception:\n"
              "            pass\n    return '\\n'.join(found)\n")
LEAK = LEAK_PLAIN.replace("DIR_FD = False", "DIR_FD = True")


def _canary(root: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="geora_canary_", dir=root))
    (folder / "canary.txt").write_text("keep")
    (folder / "canary.txt").chmod(0o644)
    return folder


def _state(folder: Path):
    return sorted((p.name, p.read_bytes(), p.stat().st_mode) for p in folder.iterdir())


def _damage(folder: Path, before, victim: subprocess.Popen, server: socket.socket,
            unix: list[socket.socket]) -> set[str]:
    """What the attacks did: 'files', 'signal', 'socket', 'unix'."""
    out = set()
    if _state(folder) != before:
        out.add("files")
    try:
        victim.wait(timeout=0.05)   # a SIGKILL sent is delivered when the victim next runs
        out.add("signal")
    except subprocess.TimeoutExpired:
        pass
    for label, listener in [("socket", server)] + [("unix", u) for u in unix]:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, socket.timeout):
            continue
        conn.close()
        out.add(label)
    return out


def _unix_listeners() -> list[socket.socket]:
    """Host unix sockets: in /run where writable (bwrap hides /run), and in /var/tmp where
    the seccomp filter is on (the folder is visible, read-only: only the filter stops it)."""
    folders = [d for d, on in (("/run", os.access("/run", os.W_OK)),
                               ("/var/tmp", sandbox.seccomp_filter() is not None
                                and os.access("/var/tmp", os.W_OK))) if on]
    listeners = []
    for folder in folders:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(f"{folder}/geora_redteam_{os.urandom(6).hex()}.sock")
        listener.listen(8)
        listener.setblocking(False)
        listeners.append(listener)
    return listeners


@pytest.fixture
def targets():
    """A canary folder outside /tmp (bwrap shows it read-only; /tmp is private there), a victim
    process, a process holding a secret in its environment, a listening TCP socket and unix
    sockets (`_unix_listeners`); each twice (one set for the control)."""
    root = "/var/tmp" if os.access("/var/tmp", os.W_OK) else None
    made = []
    for _ in range(2):
        secret = "geora-redteam-" + os.urandom(6).hex()
        victim = subprocess.Popen(["sleep", "120"])
        holder = subprocess.Popen(["sleep", "120"], env={"GEORA_REDTEAM_TOKEN": secret})
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        unix = _unix_listeners()
        made.append((_canary(root), victim, server, secret, unix, holder))
    yield [m[:5] for m in made]
    for folder, victim, server, _, unix, holder in made:
        for process in (victim, holder):
            process.kill()
            process.wait()
        server.close()
        for listener in unix:
            os.unlink(listener.getsockname())
            listener.close()
        for p in folder.iterdir():
            p.chmod(0o644)
            p.unlink()
        folder.rmdir()


@NEEDS_BWRAP
def test_escapes_are_contained_by_bwrap(targets):
    runs = {}
    for label, (folder, victim, server, secret, unix), limits in (
            ("no sandbox", targets[0], NO_SANDBOX), ("bwrap", targets[1], BWRAP_ONLY)):
        before = _state(folder)
        attacks = _escapes(folder, victim.pid, server.getsockname()[1],
                           [u.getsockname() for u in unix])
        jobs = [{"mode": "asserts", "solution": src, "tests": TESTS[:2]} for src in attacks.values()]
        jobs.append({"mode": "asserts", "solution": LEAK, "tests": [f"assert {secret!r} in f(0)"]})
        results = execute_many(jobs, limits, workers=4)
        runs[label] = (sum(r.passed for r in results),
                       _damage(folder, before, victim, server, unix))
    # Without a sandbox the attacks work (damage done, the secret read) ...
    unix_too = {"unix"} if targets[0][4] else set()
    assert runs["no sandbox"] == (1, {"files", "signal", "socket"} | unix_too)
    # ... and under bwrap none scores and nothing outside changed.
    assert runs["bwrap"] == (0, set())


@NEEDS_BWRAP
def test_each_escape_alone_is_contained(targets):
    """One attack per job, damage checked after each: without a sandbox each attack does the
    damage it is for (against a fresh canary folder and victim of its own), under bwrap none."""
    folder, victim, server, _, unix = targets[1]
    before = _state(folder)
    attacks = _escapes(folder, victim.pid, server.getsockname()[1], [u.getsockname() for u in unix])
    root = "/var/tmp" if os.access("/var/tmp", os.W_OK) else None
    for name, src in attacks.items():
        r = execute({"mode": "asserts", "solution": src, "tests": TESTS[:2]}, BWRAP_ONLY)
        assert (r.passed, _damage(folder, before, victim, server, unix)) == (0, set()), name
        # The same attack, no sandbox, its own targets: it works.
        own_folder, own_victim = _canary(root), subprocess.Popen(["sleep", "120"])
        try:
            own = _escapes(own_folder, own_victim.pid, server.getsockname()[1],
                           [u.getsockname() for u in unix])[name]
            own_before = _state(own_folder)
            execute({"mode": "asserts", "solution": own, "tests": TESTS[:2]}, NO_SANDBOX)
            done = _damage(own_folder, own_before, own_victim, server, unix)
        finally:
            own_victim.kill()
            own_victim.wait()
            for p in own_folder.iterdir():
                p.chmod(0o644)
                p.unlink()
            own_folder.rmdir()
        kind = ("signal" if name in ("signal_other_process", "shell_kill")
                else "socket" if name == "socket_out" else "unix" if name.startswith("unix")
                else "files")
        assert done == {kind}, (name, done)


def test_guard_keeps_other_processes_proc_and_the_harness_files_out(targets):
    """The fallback's share: plain-path reads of another process's /proc (the environ of the
    trainer) and of the job folder outside the solution's own are refused there too."""
    secret = targets[0][3]
    job = {"mode": "asserts", "solution": LEAK_PLAIN, "tests": [f"assert {secret!r} in f(0)"]}
    guarded, unguarded = execute(job, Limits(runner="guard")), execute(job, NO_SANDBOX)
    assert (guarded.status, guarded.passed) == ("ok", 0), guarded
    assert unguarded.passed == 1   # the same code reads it when nothing stops it


@NEEDS_BWRAP
def test_inside_bwrap():
    """What the solution sees: no capabilities, its own PID namespace, no network but
    loopback, a clean environment, a read-only root, no fork (threads), a private /tmp of
    64 MiB."""
    probe = ("import os\ndef facts():\n"
             "    caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0]\n"
             "    try:\n        open('/usr/geora_probe', 'w')\n        ro = False\n"
             "    except OSError:\n        ro = True\n"
             "    try:\n        pid = os.fork()\n        if pid == 0:\n            os._exit(0)\n"
             "        forked = True\n    except OSError:\n        forked = False\n"
             "    import threading\n    box = []\n    t = threading.Thread(target=box.append, args=(1,))\n"
             "    t.start()\n    t.join()\n"
             "    return {'forked': forked, 'threads': box == [1], 'caps': caps, 'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit()),\n"
             "            'nets': open('/proc/net/dev').read().count(':'),\n"
             "            'env': sorted(os.environ), 'ro': ro, 'tmp': sorted(os.listdir(TEMP)),\n"
             "            'job': [os.listdir(os.path.join(TEMP, t)) for t in os.listdir(TEMP)\n"
             "                    if t not in BOUND]}\n")
    temp = os.path.realpath(tempfile.gettempdir())
    # a checkout or venv under the temp folder is bound back read-only (sandbox._needed_under):
    # the top folders of those binds are the only other entries the solution may see there
    bound = sorted({os.path.relpath(p, temp).split(os.sep)[0]
                    for p in sandbox._needed_under((os.path.realpath("/tmp"), temp))
                    if p.startswith(temp + os.sep)})
    probe = f"TEMP = {temp!r}\nBOUND = {bound!r}\n" + probe + (
        "def fill():\n    n = 0\n    try:\n        for i in range(100):\n"
        "            with open(f'/tmp/big{i}', 'wb') as fh:\n                fh.write(bytes(8 << 20))\n"
        "            n += 1\n    except OSError as e:\n        return n, e.errno\n    finally:\n"
        "        for i in range(n + 1):\n            if os.path.exists(f'/tmp/big{i}'):\n"
        "                os.remove(f'/tmp/big{i}')\n    return n, 0\n")
    tests = ["v = facts()\nassert v['caps'] == '0000000000000000', v",
             "assert max(facts()['pids']) < 10",
             "assert facts()['nets'] == 1",                 # lo only
             "assert 'HF_ALLOW_CODE_EVAL' not in facts()['env'] and 'PATH' in facts()['env']",
             "assert facts()['ro'] is True",
             "assert fill() == (8, 28)",    # the private /tmp (memory) holds 64 MiB: ENOSPC
             # no new processes where the seccomp filter is on (threads work)
             f"v = facts()\nassert v['threads'] and v['forked'] is {sandbox.seccomp_filter() is None}, v",
             # of the host's temp folder only the job's folder, and of that the solution's part
             "v = facts()\njobs = [t for t in v['tmp'] if t not in BOUND]\n"
             "assert len(jobs) == 1 and jobs[0].startswith('geora_exec_'), v\n"
             "assert sorted(set(v['tmp']) - set(jobs)) == BOUND and v['job'] == [['shared']], v"]
    r = execute({"mode": "asserts", "solution": probe, "tests": tests}, BWRAP_ONLY)
    assert (r.passed, r.total, r.status) == (8, 8, "ok"), r
