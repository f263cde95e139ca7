"""Verdicts outside the solution's process: the two sides of geora.execution's "asserts" and
"pytest" jobs, and the plain-value protocol between them.

    python -I -B _sandbox_rpc.py server    the model's solution (untrusted), in its own sandbox
    python -I -B _sandbox_rpc.py harness   the tests (from the data), in another process

The harness runs the tests; every name the tests take from the solution (`f`, `candidate`,
`from solution import f`) is a proxy whose calls go down a pipe to the server, which runs the
solution and answers with *plain values* only: None, bool, int, float, complex, str, bytes
and lists, tuples, sets, dicts of them (numpy scalars and arrays too), each rebuilt by the
harness as an exact builtin object. Anything else comes back as an opaque handle that
never meets a plain expected value through its own __eq__, and whose calls, attributes,
iteration, len, item access, str/repr and truth value are further round trips. Exceptions
come back by name: a builtin exception class is raised as itself, the solution's own
exception classes as local stand-ins (one per remote class, so pytest.raises works).

So the solution never runs in the process that decides: it cannot patch the reporter, the
test code, builtins, `exec` or pytest there, skip asserts with a trace function, return an
object whose __eq__ is always True, exit early to look successful or print fake markers
(its stdout goes nowhere). It never sees the tests' expected values (only a call's arguments)
nor the test file. What it can still do is what any solution can: return values.

What the solution prints during a call (sys.stdout/sys.stderr) is printed again in the
harness, so pytest's capsys sees it. A function of the tests passed to the solution stays in
the harness and is called back over the pipe (plain values again); isinstance() with one of
the solution's classes and == between two of the solution's own objects are asked of the
solution. Not supported (such a test fails): passing other objects of the tests to the
solution; patching the solution's internals or builtins.input from the tests (mock).
Standard library only (and pytest in the harness for pytest files; numpy if installed).
"""
import base64
import builtins
import contextlib
import io
import json
import os
import sys
import types

MAX_LINE = 16 << 20           # the largest message either side accepts (bytes)
MAX_PRINTED = 1 << 20         # what a call may print (characters), passed on to the tests
MUTABLE = (list, dict, set, bytearray)


class RemoteError(Exception):
    """The solution failed in a way that has no local exception class (or its process ended)."""


# ------------------------------------------------------------------ the plain-value codec
def encode(value, handle, depth=0):
    """A JSON-ready form of `value`: JSON scalars as themselves, containers and other plain
    types as one-key tagged dicts; `handle(value)` encodes anything else (or raises)."""
    if depth > 100:
        raise ValueError("value nested more than 100 levels")
    t = type(value)
    if value is None or t in (bool, str):
        return value
    if t is int or t is float:
        return value
    enc = lambda v: encode(v, handle, depth + 1)  # noqa: E731
    if t is list:
        return {"l": [enc(v) for v in value]}
    if t is tuple:
        return {"t": [enc(v) for v in value]}
    if t is dict:
        return {"d": [[enc(k), enc(v)] for k, v in value.items()]}
    if t is set or t is frozenset:
        return {"s" if t is set else "f": [enc(v) for v in value]}
    if t is bytes or t is bytearray:
        return {"b" if t is bytes else "ba": base64.b64encode(bytes(value)).decode()}
    if t is complex:
        return {"c": [value.real, value.imag]}
    return handle(value)


def decode(obj, resolve, depth=0):
    """The value `encode` gave; `resolve(tagged dict)` for handles. Builds builtins only."""
    if depth > 100:
        raise ValueError("value nested more than 100 levels")
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if type(obj) is not dict:
        raise ValueError(f"not a plain value: {type(obj).__name__}")
    if "r" in obj or "x" in obj or "cb" in obj:   # a handle or a callback: the resolver's
        return resolve(obj)
    if len(obj) != 1:
        raise ValueError(f"not a plain value: a dict with keys {sorted(obj)[:5]}")
    dec = lambda v: decode(v, resolve, depth + 1)  # noqa: E731
    (tag, body), = obj.items()
    if tag == "l":
        return [dec(v) for v in body]
    if tag == "t":
        return tuple(dec(v) for v in body)
    if tag == "d":
        return {dec(k): dec(v) for k, v in body}
    if tag in ("s", "f"):
        return (set if tag == "s" else frozenset)(dec(v) for v in body)
    if tag in ("b", "ba"):
        return (bytes if tag == "b" else bytearray)(base64.b64decode(body, validate=True))
    if tag == "c":
        return complex(float(body[0]), float(body[1]))
    if tag == "nd":
        import numpy  # a plain numeric/string array: kinds b i u f c U S only
        dtype = numpy.dtype(str(body[0]))
        if dtype.kind not in "biufcUS":
            raise ValueError(f"array dtype {dtype} is not plain")
        return numpy.array(dec(body[2]), dtype=dtype).reshape([int(n) for n in body[1]])
    raise ValueError(f"not a plain value: tag {tag!r}")


# ------------------------------------------------------------------ server (untrusted side)
def _as_plain(value):
    """Subclasses of plain types (IntEnum, namedtuple, OrderedDict, Counter) and numpy values
    as the plain value they stand for; None when there is none."""
    for base in (int, float, str, bytes):
        if isinstance(value, base):
            return base.__new__(base, value)
    for base in (tuple, list, dict, set, frozenset):
        if isinstance(value, base):
            return base(base.__iter__(value)) if base is not dict else dict(dict.items(value))
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic):
        return value.item()
    return None


class Server:
    def __init__(self, rfd, wfd):
        self.rfile, self.wfd = os.fdopen(rfd, "rb"), wfd
        self.namespace, self.from_setup, self.broken = {}, {}, None
        self.objects, self.refs = {}, {}          # ref -> object, id(object) -> ref

    def ref(self, value):
        key = id(value)
        if key not in self.refs:
            self.refs[key] = len(self.objects)
            self.objects[self.refs[key]] = value
        return self.refs[key]

    def handle(self, value):
        if isinstance(value, types.ModuleType):
            return {"r": self.ref(value), "k": "module", "n": value.__name__}
        numpy = sys.modules.get("numpy")
        if numpy is not None and type(value) is numpy.ndarray and value.dtype.kind in "biufcUS":
            return {"nd": [value.dtype.str, list(value.shape), self.enc(value.tolist())]}
        plain = _as_plain(value)
        if plain is not None:
            return self.enc(plain)
        if isinstance(value, type) and issubclass(value, BaseException):
            return {"x": self.ref(value), "n": value.__name__, "b": _builtin_base(value)}
        kind = "class" if isinstance(value, type) else "object"
        return {"r": self.ref(value), "k": kind, "n": getattr(value, "__name__", type(value).__name__)}

    def enc(self, value):
        return encode(value, self.handle)

    def dec(self, obj):
        return decode(obj, self.resolve)

    def resolve(self, obj):
        if "cb" in obj:   # a function of the tests: calling it asks the harness
            return lambda *args, **kwargs: self.call_back(obj["cb"], args, kwargs)
        return self.objects[obj.get("r", obj.get("x"))]

    def call_back(self, ref, args, kwargs):
        """Call the tests' function `ref` in the harness; requests it makes meanwhile (a
        callback that calls the solution again) are served here until its answer comes."""
        self.reply({"cb": ref, "a": [self.enc(a) for a in args],
                    "k": {str(k): self.enc(v) for k, v in kwargs.items()}})
        while True:
            line = self.rfile.readline()
            if not line:
                os._exit(0)
            message = json.loads(line)
            if "op" in message:
                self.step(message)
            elif "exc" in message:
                info = message["exc"]
                cls = getattr(builtins, str(info.get("n")), None)
                cls = cls if isinstance(cls, type) and issubclass(cls, Exception) else RemoteError
                raise cls(str(info.get("m")))
            else:
                return self.dec(message.get("ok"))

    def load(self, req):
        self.namespace = {"__name__": "solution", "__builtins__": builtins}
        exec(compile(req.get("setup", ""), "setup.py", "exec"), self.namespace)
        self.from_setup = dict(self.namespace)     # the objects themselves: compared by identity
        exec(compile(req["solution"], "solution.py", "exec"), self.namespace)

    def answer(self, req):
        op = req["op"]
        if op == "names":   # what the solution defined (not what setup alone did)
            return {n: self.enc(self.namespace[n]) for n in req["names"]
                    if n in self.namespace and self.from_setup.get(n, self) is not self.namespace[n]}
        if op == "public":
            return sorted(n for n in self.namespace if not n.startswith("_"))
        target = self.objects[req["r"]] if "r" in req else None
        args = [self.dec(a) for a in req.get("a", [])]
        if op == "call":
            kwargs = {k: self.dec(v) for k, v in req.get("k", {}).items()}
            result = target(*args, **kwargs)
            after = [[i, self.enc(a)] for i, a in enumerate(args) if type(a) in MUTABLE]
            after += [[k, self.enc(v)] for k, v in kwargs.items() if type(v) in MUTABLE]
            return {"v": self.enc(result), "after": after}
        if op == "getattr":
            return self.enc(getattr(target, req["n"]))
        if op == "setattr":
            return setattr(target, req["n"], args[0])
        if op in ("iter", "next", "len", "str", "repr", "bool"):
            fn = {"iter": iter, "next": next, "len": len, "str": str, "repr": repr, "bool": bool}[op]
            return self.enc(fn(target))
        if op in ("getitem", "setitem", "delitem"):
            return self.enc(getattr(target, f"__{op}__")(*args))
        if op == "eq":           # two objects of the solution: its own == decides
            return bool(target == args[0])
        if op == "isinstance":   # isinstance(value, one of the solution's classes)
            return bool(isinstance(args[0], target))
        raise ValueError(f"unknown request {op!r}")

    def reply(self, message):
        data = (json.dumps(message) + "\n").encode()
        if len(data) > MAX_LINE:
            data = (json.dumps({"exc": {"n": "RemoteError", "b": "Exception",
                                        "m": "the value is too large to send back"}}) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.wfd, view):]

    def serve(self):
        while True:
            line = self.rfile.readline()
            if not line:
                os._exit(0)
            self.step(json.loads(line))

    def step(self, req):
        """Answer one request (writes the reply)."""
        out, err = io.StringIO(), io.StringIO()   # what the solution prints, for capsys
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                if req["op"] == "load":
                    self.load(req)
                    message = {"ok": None}
                elif self.broken is not None:
                    raise self.broken
                else:
                    message = {"ok": self.answer(req)}
        except BaseException as e:  # noqa: BLE001 - the solution's failure is an answer
            if req["op"] == "load":
                self.broken = e
            message = {"exc": self.describe(e)}
        if req["op"] != "load":
            message.update(out=out.getvalue()[:MAX_PRINTED], err=err.getvalue()[:MAX_PRINTED])
        try:
            self.reply(message)
        except BaseException as e:  # noqa: BLE001 - unencodable: say so
            self.reply({"exc": {"n": "RemoteError", "b": "Exception", "m": repr(e)[:300]}})

    def describe(self, exc):
        try:
            text = str(exc)[:1000]
        except BaseException:  # noqa: BLE001
            text = ""
        cls = type(exc)
        own = None if getattr(builtins, cls.__name__, None) is cls else self.ref(cls)
        return {"n": cls.__name__, "b": _builtin_base(cls), "m": text, "x": own}


def _builtin_base(cls):
    for base in cls.__mro__:
        if getattr(builtins, base.__name__, None) is base and issubclass(base, Exception):
            return base.__name__
    return "Exception"


def run_server():
    """stdin: requests; stdout: answers. Both moved to private descriptors first, fd 0-2 to
    /dev/null (the solution's prints and input() reach nothing)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _sandbox_child as child   # the limits and the audit hook
    rfd, wfd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    server = Server(rfd, wfd)
    first = json.loads(server.rfile.readline() or "{}")   # {"op": "init", "limits", "guard"}
    child.set_limits(first.get("limits") or {})
    if first.get("guard"):   # the job folders (harness's files) hidden from the solution
        child.install_guard(os.getcwd(), first.get("hidden"))
    server.reply({"ok": None})
    server.serve()


if __name__ == "__main__" and sys.argv[1:] == ["server"]:
    run_server()
elif __name__ == "__main__" and sys.argv[1:] == ["harness"]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _sandbox_harness import run_harness
    run_harness()
