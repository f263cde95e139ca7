"""The trusted side of a split job (see _sandbox_rpc): runs the tests, with every name they
take from the solution served over a pipe by the solution's own process, and reports each
test's verdict to geora.execution on a private copy of stdout:
`<nonce> <passed> <done> <total>` per test, `<nonce> end` once all have run.

Started as `python -I -B _sandbox_rpc.py harness` with the job (JSON) on stdin; the two pipe
ends to the server are the descriptors the job names. Standard library only (and pytest).
"""
import ast
import builtins
import importlib
import json
import os
import sys
import types

if __package__:   # imported as geora._sandbox_harness (pytest's doctest collection)
    from geora._sandbox_child import Reporter, set_limits
    from geora._sandbox_rpc import MAX_LINE, MUTABLE, RemoteError, _as_plain, decode, encode
else:             # run by _sandbox_rpc.py, with this folder on sys.path (no package import)
    from _sandbox_child import Reporter, set_limits
    from _sandbox_rpc import MAX_LINE, MUTABLE, RemoteError, _as_plain, decode, encode

ENDED = "the solution's process has ended"
# Modules the tests may read from the solution's globals (`import math` there, not in the
# tests): these names are always the harness's own module, whatever the solution bound to
# them (a fake `math` with an isclose that is always True stays out). Any other module the
# solution hands over is the harness's own if it is one of these or already imported here,
# else an opaque handle.
LOCAL_MODULES = frozenset({
    "bisect", "cmath", "collections", "decimal", "fractions", "functools", "heapq",
    "itertools", "math", "numpy", "operator", "re", "statistics"})


class Channel:
    """Requests to the solution's server; every answer is decoded into plain values or
    handles here (nothing the server sends is ever run)."""

    def __init__(self, rfd, wfd):
        self.rfile, self.wfd, self.dead = os.fdopen(rfd, "rb"), wfd, None
        self.handles, self.stand_ins, self.callbacks = {}, {}, {}

    def write(self, message):
        data = memoryview((json.dumps(message) + "\n").encode())
        try:
            while data:
                data = data[os.write(self.wfd, data):]
        except OSError:
            self.dead = ENDED
            raise RemoteError(self.dead) from None

    def read(self):
        """The next message from the server, a dict; RemoteError (and dead) otherwise."""
        try:
            line = self.rfile.readline(MAX_LINE + 1)
        except OSError:
            line = b""
        if not line.endswith(b"\n"):
            self.dead = ENDED if not line else "the solution's answer was too long"
            raise RemoteError(self.dead)
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            message = None
        if type(message) is not dict:
            self.dead = "the solution's process sent a garbled answer"
            raise RemoteError(self.dead)
        return message

    def request(self, message):
        if self.dead:
            raise RemoteError(self.dead)
        self.write(message)
        answer = self.read()
        while "cb" in answer:              # the solution calls a function of the tests
            self.write(self.call_back(answer))
            answer = self.read()
        failed, value = answer.get("exc"), answer.get("ok")
        printed = [str(answer.get("out") or ""), str(answer.get("err") or "")]
        for text, stream in zip(printed, (sys.stdout, sys.stderr)):
            if text:    # (pytest's capture, else /dev/null)
                stream.write(text)
        if failed is not None:
            raise self.exception(failed)
        return value

    def call_back(self, message):
        """Run the tests' function the solution called, on plain values; the answer to send."""
        function = self.callbacks.get(message["cb"]) if isinstance(message["cb"], int) else None
        try:
            if function is None:
                raise RemoteError(f"no function {message['cb']!r} was passed to the solution")
            result = function(*[self.value(a) for a in message.get("a", [])],
                              **{str(k): self.value(v) for k, v in message.get("k", {}).items()})
            return {"ok": self.send(result)}
        except Exception as e:  # noqa: BLE001 - the tests' function failed: the solution sees it
            return {"exc": {"n": type(e).__name__, "m": str(e)[:1000]}}

    def value(self, obj):
        return decode(obj, self.resolve)

    def resolve(self, obj):
        if "x" in obj:
            return self.stand_in(obj["x"], obj.get("n"), obj.get("b"))
        ref, kind, name = obj["r"], obj.get("k"), str(obj.get("n"))
        if kind == "module" and (name in sys.modules or name.partition(".")[0] in LOCAL_MODULES):
            return importlib.import_module(name)
        if not isinstance(ref, int):
            raise ValueError(f"bad handle {ref!r}")
        if ref not in self.handles:
            self.handles[ref] = Remote(self, ref, name)
        return self.handles[ref]

    def stand_in(self, ref, name, base):
        """One local exception class per remote one, under the nearest builtin base."""
        key = ("x", ref)
        if key not in self.stand_ins:
            parent = getattr(builtins, str(base), None)
            if not (isinstance(parent, type) and issubclass(parent, Exception)):
                parent = Exception
            self.stand_ins[key] = type(str(name), (parent,), {"__module__": "solution"})
        return self.stand_ins[key]

    def exception(self, info):
        name, message = str(info.get("n")), str(info.get("m"))
        if info.get("x") is not None:
            cls = self.stand_in(info["x"], name, info.get("b"))
        else:
            cls = getattr(builtins, name, None)
            if not (isinstance(cls, type) and issubclass(cls, Exception)):
                cls = RemoteError
        try:
            return cls(message)
        except Exception:  # noqa: BLE001 - a class wanting other arguments (UnicodeError)
            return RemoteError(f"{name}: {message}")

    def send(self, value):
        """A value of the tests, for the solution: plain values and handles only."""
        def handle(v):
            if isinstance(v, Remote):
                return {"r": object.__getattribute__(v, "_ref")}
            plain = _as_plain(v)
            if plain is not None:
                return encode(plain, handle)
            if callable(v) and not isinstance(v, type):   # called back over the pipe
                self.callbacks[id(v)] = v
                return {"cb": id(v)}
            raise TypeError(f"the sandbox cannot pass a {type(v).__name__} to the solution")
        return encode(value, handle)

    def call(self, ref, args, kwargs):
        answer = self.request({"op": "call", "r": ref, "a": [self.send(a) for a in args],
                               "k": {str(k): self.send(v) for k, v in kwargs.items()}})
        for where, new in answer.get("after", []):    # the solution changed an argument
            old = args[where] if isinstance(where, int) else kwargs.get(where)
            _update(old, self.value(new))
        return self.value(answer["v"])

    def op(self, ref, name, *args):
        return self.value(self.request({"op": name, "r": ref, "a": [self.send(a) for a in args]}))


def _update(old, new):
    """The solution's in-place change of a list/dict/set/bytearray argument, made here."""
    if type(old) not in MUTABLE or type(new) is not type(old):
        return
    if isinstance(old, (list, bytearray)):
        old[:] = new
    else:
        old.clear()
        old.update(new)


class Remote:
    """An object of the solution, by reference. Compares and hashes by identity: `==`
    never asks the solution."""
    __slots__ = ("_channel", "_ref", "_name")

    def __init__(self, channel, ref, name):
        for key, value in (("_channel", channel), ("_ref", ref), ("_name", name)):
            object.__setattr__(self, key, value)

    def _op(self, name, *args):
        return object.__getattribute__(self, "_channel").op(
            object.__getattribute__(self, "_ref"), name, *args)

    def __call__(self, *args, **kwargs):
        return self._channel.call(self._ref, args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._channel.value(self._channel.request({"op": "getattr", "r": self._ref, "n": name}))

    def __setattr__(self, name, value):
        self._channel.request({"op": "setattr", "r": self._ref, "n": name,
                               "a": [self._channel.send(value)]})

    def __iter__(self):
        return self._op("iter")

    def __next__(self):
        return self._op("next")

    def __len__(self):
        return self._op("len")

    def __bool__(self):   # one bit, asked once: no more than returning True or False
        return self._op("bool") is True

    def __eq__(self, other):
        """Two objects of the solution: its own == decides (it made both, as in one process).
        Anything else: identity (a plain expected value never meets the solution's __eq__)."""
        if isinstance(other, Remote):
            return self is other or self._op("eq", other) is True
        return NotImplemented

    __hash__ = object.__hash__

    def __instancecheck__(self, value):   # isinstance(x, <a class of the solution>)
        return self._op("isinstance", value) is True

    def __getitem__(self, key):
        return self._op("getitem", key)

    def __setitem__(self, key, value):
        self._op("setitem", key, value)

    def __delitem__(self, key):
        self._op("delitem", key)

    def __str__(self):
        return str(self._op("str"))

    def __repr__(self):
        return str(self._op("repr"))


def free_names(sources, bound):
    """Names the test sources read that neither they (at top level), setup nor builtins give."""
    names = set()
    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return sorted(names - set(bound) - set(dir(builtins)))


def from_solution(channel, names):
    """{name: value} for the names the solution defines; module names as local modules."""
    got = channel.request({"op": "names", "names": list(names)})
    out = {}
    for name in names:
        if name in got:
            out[name] = (importlib.import_module(name) if name in LOCAL_MODULES
                         else channel.value(got[name]))
    return out


def run_asserts(job, channel, report, loaded):
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    ok = loaded and _run(job.get("setup", ""), "setup.py", namespace, report)
    if ok:
        try:
            namespace.update(from_solution(channel, free_names(job["tests"], namespace)))
        except Exception:  # noqa: BLE001 - the solution's process ended: every test fails
            ok = False
    for i, test in enumerate(job["tests"]):
        passed = ok and _run(test, f"test_{i}.py", namespace, report)
        report.test(passed)


def _run(code, filename, namespace, report=None):
    try:
        exec(compile(code, filename, "exec"), namespace)
        return True
    except BaseException as e:  # noqa: BLE001 - a failing test, whatever it raised
        if report is not None and not getattr(report, "why_sent", False):
            report.why_sent = True   # the first failure's reason, for the logs
            report._line("why " + json.dumps(f"{filename}: {type(e).__name__}: {e}"[:300]))
        return False


def solution_module(channel):
    """`solution`, for `from solution import f`: names fetched from the server when read."""
    module = types.ModuleType("solution")

    def __getattr__(name):
        if name == "__all__":
            return [str(n) for n in channel.request({"op": "public"})]
        if name.startswith("__"):
            raise AttributeError(name)
        got = from_solution(channel, [name])
        if name not in got:
            raise AttributeError(f"module 'solution' has no attribute {name!r}")
        return got[name]

    module.__getattr__ = __getattr__
    return module


def run_pytest(job, channel, reporter, loaded):
    root = os.getcwd()
    for name, text in (("test_solution.py", job["test_file"]), ("pytest.ini", "[pytest]\n")):
        with open(os.path.join(root, name), "w", encoding="utf-8") as f:
            f.write(text)
    if not loaded:
        return                          # the solution did not load: no test passes
    sys.modules["solution"] = solution_module(channel)
    import pytest

    def why(report):   # the first failure's last line, for the logs
        if report.failed and not getattr(reporter, "why_sent", False):
            reporter.why_sent = True
            last = (report.longreprtext.strip().splitlines() or [""])[-1]
            reporter._line("why " + json.dumps(f"{report.nodeid}: {last}"[:300]))

    class Tally:  # pytest calls hooks by argument name: `report` is pytest's TestReport
        def pytest_collectreport(self, report):
            why(report)

        def pytest_runtest_logreport(self, report):
            if report.skipped:
                return
            if report.when == "call" or (report.when == "setup" and report.failed):
                why(report)
                reporter.test(report.passed)

    args = [os.path.join(root, "test_solution.py"), "-q", "-p", "no:cacheprovider",
            "-c", os.path.join(root, "pytest.ini"), "--rootdir", root,
            f"--basetemp={os.path.join(job['shared'], 'pytest_tmp')}"]
    code = pytest.main(args, plugins=[Tally()])
    if int(code) == pytest.ExitCode.USAGE_ERROR:
        raise RuntimeError("pytest rejected its arguments (USAGE_ERROR)")


def _undumpable():
    """Not ptrace-able nor its memory readable by other processes of this user (the fallback
    runner's solution is one)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)   # PR_SET_DUMPABLE = 4
    except Exception:  # noqa: BLE001 - best effort: bwrap's PID namespace is the real wall
        pass


def run_harness():
    _undumpable()
    job = json.loads(sys.stdin.read())
    nonce = job["nonce"]
    report_fd = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    report = Reporter(report_fd, nonce, int(job.get("expected_tests") or 1))
    try:
        set_limits(job.get("limits") or {})
        channel = Channel(job["from_server"], job["to_server"])
        channel.request({"op": "init", "limits": job.get("limits"), "guard": job.get("guard"),
                         "hidden": job.get("hidden")})
    except BaseException as e:  # noqa: BLE001 - the runner's failure, not the program's
        os.write(report_fd, f"{nonce} setup-error {json.dumps(repr(e)[:300])}\n".encode())
        os._exit(3)
    try:
        channel.request({"op": "load", "solution": job["solution"], "setup": job.get("setup", "")})
        loaded = True
    except Exception:  # noqa: BLE001 - the solution raised (or exited) at load
        loaded = False
    try:
        if job["mode"] == "asserts":
            run_asserts(job, channel, report, loaded)
        else:
            run_pytest(job, channel, report, loaded)
    except BaseException as e:  # noqa: BLE001 - the harness itself failed
        os.write(report_fd, f"{nonce} runner-error {json.dumps(repr(e)[:300])}\n".encode())
        os._exit(4)
    report.end()
    os._exit(0)
