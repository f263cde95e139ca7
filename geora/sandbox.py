"""The operating-system sandbox of the code runner (geora.execution): bubblewrap (`bwrap`).

Written here because no maintained Python package wraps bwrap; bwrap itself (Debian's
`bubblewrap`, `apt-get install -y bubblewrap`) does the isolation. Each sandboxed process gets:
- a read-only view of the whole file system (`--ro-bind / /`), with well-known credential
  files of $HOME (~/.ssh, ~/.netrc, the Hugging Face token, ...) hidden behind empty ones;
- a private, empty /tmp (tmpfs) plus the job's own folder(s), writable, bound at their host
  path (so a path a test passes to the solution means the same file on both sides); /run
  hidden too (its unix sockets: a read-only mount does not stop a connect());
- new user, PID, network, IPC, UTS and cgroup namespaces (`--unshare-all`): no network, and a
  /proc that shows only the sandbox's own processes (not the trainer's environ or memory);
- a seccomp filter (libseccomp, where installed) that refuses new unix sockets (a read-only
  mount does not stop connect() to the host's sockets; /run is hidden as well) and new
  processes (threads allowed);
- no capabilities (`--cap-drop ALL`), a new session (`--new-session`: no terminal injection),
  death with the runner (`--die-with-parent`) and a clean environment (`--clearenv` + the
  few variables given).
Where bwrap is missing or cannot create namespaces here, `code_runner()` answers "guard" and
the runner falls back to the Python audit-hook guard alone (one warning line per process).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

RUNNERS = ("bwrap", "guard")
RUNNER_ENV = "GEORA_CODE_RUNNER"   # force one: "bwrap" (error if unusable) or "guard"
# Each tmpfs (private /tmp, hidden folders) is memory: capped, or a program writing files
# in a loop fills the host's RAM before the time limit.
TMPFS = ("--size", str(64 << 20), "--tmpfs")
# Credentials a process running as this user could otherwise read (relative to $HOME).
HIDDEN_IN_HOME = (".ssh", ".netrc", ".git-credentials", ".pypirc", ".aws", ".docker",
                  ".cache/huggingface", ".huggingface", ".config/gcloud", ".kaggle", ".gnupg")


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=None)
def seccomp_filter() -> bytes | None:
    """A seccomp program (BPF, built by libseccomp) for the sandboxed processes:
    - socket(AF_UNIX, ...) fails with EACCES: read-only mounts do not stop connect() to the
      host's unix sockets wherever they are; socketpair() stays allowed;
    - new processes fail with EACCES (fork, vfork, clone without CLONE_THREAD; clone3 says
      ENOSYS so that glibc uses clone): threads work, fork loops and shell commands do not,
      also as root, where RLIMIT_NPROC is not enforced.
    Other ABIs (x32, i386 int 0x80) are killed by libseccomp's default. None where libseccomp
    is not installed (Debian: libseccomp2)."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
    except OSError:
        return None

    class ArgCmp(ctypes.Structure):   # struct scmp_arg_cmp
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    allow, refuse = 0x7FFF0000, 0x00050000 | errno.EACCES   # SCMP_ACT_ALLOW, SCMP_ACT_ERRNO
    ctx = lib.seccomp_init(allow)
    if not ctx:
        return None
    no_syscall = 0x00050000 | errno.ENOSYS
    clone_thread = 0x00010000
    # (syscall, action, condition on an argument or None)
    rules = [("socket", refuse, ArgCmp(0, 4, socket.AF_UNIX, 0)),          # arg0 == AF_UNIX
             ("clone", refuse, ArgCmp(0, 7, clone_thread, 0)),  # (flags & CLONE_THREAD) == 0
             ("clone3", no_syscall, None),   # flags out of reach: glibc falls back to clone
             ("fork", refuse, None), ("vfork", refuse, None)]
    try:
        with tempfile.TemporaryFile() as out:
            for name, action, cond in rules:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr < 0:       # not a syscall on this architecture (fork on arm64)
                    continue
                if lib.seccomp_rule_add_array(ctx, action, nr, int(cond is not None),
                                              ctypes.byref(cond) if cond is not None else None):
                    return None
            if lib.seccomp_export_bpf(ctx, out.fileno()):
                return None
            out.seek(0)
            return out.read() or None
    finally:
        lib.seccomp_release(ctx)


_use_seccomp = True   # off when bwrap refuses the filter here (see bwrap_problem)


@functools.lru_cache(maxsize=None)
def bwrap_problem() -> str | None:
    """None when bwrap runs a process in a sandbox here, else why not (one line). Tried with
    the seccomp filter first, then without it (the filter is then left out)."""
    global _use_seccomp
    if bwrap_path() is None:
        return "bwrap not found (install Debian's bubblewrap: apt-get install -y bubblewrap)"
    argv = [sys.executable, "-I", "-B", "-c", "import json"]
    problem = None
    for with_filter in ((True, False) if seccomp_filter() else (False,)):
        _use_seccomp = with_filter
        try:
            probe = popen(argv, (), env={}, cwd="/", stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
            _, err = probe.communicate(timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"bwrap failed to start: {e}"
        if probe.returncode == 0:
            if not _use_seccomp and seccomp_filter():
                log.warning("code runner: bwrap refused the seccomp filter here; running "
                            "without it (unix sockets outside /run and /tmp stay reachable)")
            return None
        tail = err.decode("utf-8", "replace").strip().splitlines()
        problem = f"bwrap cannot create a sandbox here: {tail[-1] if tail else probe.returncode}"
    return problem


def popen(argv: list[str], writable: Iterable[str | Path], env: dict[str, str], cwd: str,
          pass_fds: Iterable[int] = (), **kw) -> subprocess.Popen:
    """`argv` started in bwrap (see `command`), with the seccomp filter where it is used."""
    fds, bpf = list(pass_fds), seccomp_filter() if _use_seccomp else None
    read_end = None
    if bpf:   # bwrap reads the program from a descriptor; a few hundred bytes fit a pipe
        read_end, write_end = os.pipe()
        os.write(write_end, bpf)
        os.close(write_end)
        fds.append(read_end)
    try:
        return subprocess.Popen(command(argv, writable, env, cwd, seccomp_fd=read_end),
                                cwd=cwd, env=env, pass_fds=fds, **kw)
    finally:
        if read_end is not None:
            os.close(read_end)


@functools.lru_cache(maxsize=None)
def _warn_fallback(why: str) -> None:
    log.warning("code runner: no OS sandbox (%s); using the Python audit-hook guard alone, "
                "which a determined program can get past", why)


def code_runner(requested: str | None = None) -> str:
    """The runner in use: "bwrap" (OS sandbox) or "guard" (audit hook only). `requested`
    (or $GEORA_CODE_RUNNER) forces one; "bwrap" where it cannot work is an error."""
    want = requested or os.environ.get(RUNNER_ENV) or "auto"
    if want not in (*RUNNERS, "auto"):
        where = "the code runner setting" if requested else f"${RUNNER_ENV}"
        raise ValueError(f"{where} is {want!r}; choose one of {RUNNERS} or auto")
    if want == "guard":
        return "guard"
    problem = bwrap_problem()
    if problem is None:
        return "bwrap"
    if want == "bwrap":
        raise RuntimeError(f"code runner 'bwrap' asked for, but {problem}")
    _warn_fallback(problem)
    return "guard"


def code_runner_info() -> dict:
    """For results.json: {"code_runner": "bwrap"|"guard", "code_runner_detail": ...}."""
    runner = code_runner()
    detail = (f"bubblewrap at {bwrap_path()}, seccomp filter "
              + ("on" if _use_seccomp and seccomp_filter() else "off")
              if runner == "bwrap" else bwrap_problem() or f"forced by ${RUNNER_ENV}")
    return {"code_runner": runner, "code_runner_detail": detail}


def results_record(executes_code: bool) -> dict:
    """{"code_runner": ..., "code_runner_detail": ...} for a run's results.json when the run
    executes model-written code (train. or eval.allow_code_execution=true), else {}."""
    return code_runner_info() if executes_code else {}


def _hidden_credentials(home: str | None) -> list[str]:
    """bwrap arguments that cover credential files and folders under `home` (those that exist)."""
    if not home or not os.path.isdir(home):
        return []
    args = []
    for rel in HIDDEN_IN_HOME:
        path = os.path.join(home, rel)
        if os.path.isdir(path) and not os.path.islink(path):
            args += [*TMPFS, path]
        elif os.path.isfile(path) and not os.path.islink(path):
            args += ["--ro-bind", "/dev/null", path]
    return args


def _needed_under(hidden: tuple[str, ...]) -> list[str]:
    """The interpreter, its libraries and this package where they live under a folder the
    sandbox hides (a checkout or venv in /tmp): bound back read-only."""
    needed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                            os.path.dirname(sys.executable),
                                            os.path.dirname(os.path.dirname(__file__)))}
    return sorted(p for p in needed if os.path.isdir(p) and any(
        p == h or p.startswith(h + os.sep) for h in hidden))


def command(argv: list[str], writable: Iterable[str | Path], env: dict[str, str] | None = None,
            cwd: str | Path | None = None, seccomp_fd: int | None = None) -> list[str]:
    """`argv` wrapped in bwrap: read-only root, private /tmp, the `writable` folders bound
    read-write at their own paths, no network, own PID namespace, clean `env`."""
    args = [bwrap_path() or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            *TMPFS, "/tmp", *_hidden_credentials(os.path.expanduser("~"))]
    # A read-only mount does not stop connect() to a unix socket in it: the host's service
    # sockets (/run/docker.sock, dbus, databases) are hidden with /run (/var/run links there).
    for runtime in ("/run", "/var/run"):
        if os.path.isdir(runtime) and not os.path.islink(runtime):
            args += [*TMPFS, runtime]
    temp = os.path.realpath(tempfile.gettempdir())   # where the job folders are: all hidden,
    if temp != "/tmp" and temp != "/":               # then the job's own parts bound back
        args += [*TMPFS, temp]
    for path in _needed_under((os.path.realpath("/tmp"), temp)):
        args += ["--ro-bind", path, path]
    for folder in writable:
        args += ["--bind", str(folder), str(folder)]
    args += ["--unshare-all", "--cap-drop", "ALL", "--die-with-parent", "--new-session",
             "--clearenv"]
    for key, value in (env or {}).items():
        args += ["--setenv", key, value]
    if cwd is not None:
        args += ["--chdir", str(cwd)]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    return [*args, "--", *argv]


def python_argv(script: Path, *extra: str) -> list[str]:
    """The interpreter running this process, isolated (-I: no PYTHON* variables, no user site,
    no script folder on sys.path) and writing no bytecode (-B)."""
    return [sys.executable, "-I", "-B", str(script), *extra]
