"""The child side of geora.execution: run one model-written program and report its tests.

Started by geora.execution (program jobs) as `python -I -B _sandbox_child.py` in a fresh
temporary directory (cwd, HOME and TMPDIR), with a scrubbed environment and its own session. It reads
one JSON job from stdin, then, before any model-written code runs:
  1. points stdout/stderr at /dev/null (the report goes to a private copy of stdout);
  2. sets resource limits: address space, CPU seconds, file size, open files, core dumps,
     and, when asked, the number of processes (RLIMIT_NPROC: per user, not enforced for root);
  3. installs an audit hook (sys.addaudithook, which nothing can remove) that refuses
     writes, deletions, renames and directory changes outside the temporary directory,
     starting processes (fork, exec, spawn, system, subprocess), signalling other
     processes, raising resource limits, network connections, reading another process's
     /proc or another job's folder, and, through ctypes, loading
     libraries from outside the Python installation or looking up any C function that is not
     part of Python's C API.
Each test's outcome is reported as it finishes: a line `<nonce> <passed> <done> <total>`;
the last line `<nonce> end` means the job ran to its end. This file uses only the standard
library; it is not imported by the package. (Asserts and pytest jobs run split in two
processes instead: _sandbox_rpc.py.)

The audit hook is a best-effort guard, not a security boundary: code that reaches
_posixsubprocess, ctypes' dlsym, raw syscalls or dir_fd arguments can get past it. It is the
inner layer under bubblewrap (geora/sandbox.py) and the only one in the "guard" fallback.
The limits and the hook are shared with the split jobs' solution server (_sandbox_rpc.py).
"""
import builtins
import json
import os
import resource
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# Events refused whatever their arguments: new processes, group signals, raised limits,
# network connections.
REFUSED = frozenset({
    "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system",
    "subprocess.Popen", "pty.spawn", "os.killpg", "resource.setrlimit", "resource.prlimit",
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
})
# Events that change the file system: positions of the path arguments, and of a dir_fd.
PATH_EVENTS = {
    "os.remove": ((0,), 1), "os.rmdir": ((0,), 1), "os.mkdir": ((0,), 2),
    "os.chmod": ((0,), 2), "os.chown": ((0,), 3), "os.utime": ((0,), 3),
    "os.truncate": ((0,), None), "os.chflags": ((0,), None), "os.setxattr": ((0,), None),
    "os.removexattr": ((0,), None), "os.rename": ((0, 1), 2), "os.link": ((0, 1), 2),
    "os.symlink": ((1,), 2), "shutil.rmtree": ((0,), 1),
}


def set_limits(limits):
    """RLIMIT_* soft = hard, so the program cannot raise them again."""
    for name, value in (("AS", limits.get("memory_bytes")), ("CPU", limits.get("cpu_s")),
                        ("FSIZE", limits.get("file_size_bytes")), ("NOFILE", limits.get("open_files")),
                        ("CORE", 0), ("NPROC", limits.get("max_processes"))):
        if value is not None:
            resource.setrlimit(getattr(resource, "RLIMIT_" + name), (int(value), int(value)))


def install_guard(root, hidden=None):
    """The audit hook described in the module docstring, confined to `root`; no path that
    starts with `hidden` outside `root` (the job folders: this job's harness files, other
    jobs' tests) may be read or listed, nor /proc of another process (environ, memory, fds)."""
    root = os.path.realpath(root)
    realpath, join, getcwd, fspath, readlink = (os.path.realpath, os.path.join, os.getcwd,
                                                os.fspath, os.readlink)
    own_pid = os.getpid()
    libraries = tuple(realpath(p) + os.sep for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})

    def inside(path, dir_fd=None):
        if isinstance(path, int):           # an already open descriptor: checked when opened
            return True
        path = fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        # dir_fd: None or negative (AT_FDCWD) means relative to the working directory.
        base = (readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None and dir_fd >= 0
                else getcwd())
        full = realpath(join(base, path))
        return full == root or full.startswith(root + os.sep) or full == os.devnull

    prefixes = tuple(realpath(p) + os.sep for p in {sys.prefix, sys.base_prefix})

    def secret(path):
        """Another process's /proc entry, or the job folder outside `root` (reads)."""
        if isinstance(path, int):
            return False
        path = fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if path.startswith(prefixes):    # the interpreter's own files (imports): no realpath
            return False
        full = realpath(join(getcwd(), path))
        if full.startswith("/proc/"):
            pid = full.split("/")[2]
            return pid.isdigit() and int(pid) != own_pid
        if hidden and full.startswith(hidden):
            return not (full == root or full.startswith(root + os.sep))
        return False

    def refuse(event, detail=""):
        raise PermissionError(f"sandbox: {event} {detail}refused (outside {root})")

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (flags or 0) & WRITE_FLAGS or (mode and any(c in mode for c in "wax+"))
            if writing and not inside(path):
                refuse(event, f"{path!r} for writing ")
            if secret(path):
                refuse(event, f"{path!r} ")
        elif event in ("os.listdir", "os.scandir"):
            if args and args[0] is not None and secret(args[0]):
                refuse(event, f"{args[0]!r} ")
        elif event in PATH_EVENTS:
            positions, fd_at = PATH_EVENTS[event]
            dir_fd = args[fd_at] if fd_at is not None and fd_at < len(args) else None
            for i in positions:
                if not inside(args[i], dir_fd):
                    refuse(event, f"{args[i]!r} ")
        elif event == "os.kill":
            if args[0] not in (own_pid, 0):
                refuse(event, f"pid {args[0]} ")
        elif event == "ctypes.dlopen":
            # The running binary (ctypes itself) and libraries of installed packages (torch
            # loads its own); not libc and the like.
            if args[0] is not None and not realpath(str(args[0])).startswith(libraries):
                refuse(event, f"{args[0]!r} ")
        elif event == "ctypes.dlsym":
            # Python's C API only (numpy, torch use PyCapsule_*): fork, unlink, syscall and
            # every other C function stay out of reach.
            name = args[1] if isinstance(args[1], str) else ""
            if not name.startswith(("Py", "_Py")):
                refuse(event, f"{args[1]!r} ")
        elif event == "sqlite3.connect":
            if args[0] != ":memory:" and not inside(args[0]):
                refuse(event, f"{args[0]!r} ")
        elif event in REFUSED:
            refuse(event)

    sys.addaudithook(hook)


class Reporter:
    def __init__(self, fd, nonce, total):
        self.fd, self.nonce, self.total, self.passed, self.done = fd, nonce, total, 0, 0

    def test(self, ok):
        self.done += 1
        self.passed += bool(ok)
        self.total = max(self.total, self.done)
        self._line(f"{self.passed} {self.done} {self.total}")

    def _line(self, text):
        os.write(self.fd, f"{self.nonce} {text}\n".encode())

    def end(self):
        self._line(f"{self.passed} {self.done} {self.total}")
        self._line("end")


def _run(code, filename, namespace):
    """Run code; True if it finished without raising (SystemExit included: a program that
    exits early has not shown that its tests pass)."""
    try:
        exec(compile(code, filename, "exec"), namespace)
        return True
    except BaseException:  # noqa: BLE001 - any failure of model code is a failed test
        return False


def run_program(job, report):
    report.test(_run(job["program"], "program.py", {"__name__": "__main__", "__builtins__": builtins}))


def main():
    job = json.loads(sys.stdin.read())
    nonce, root = job.pop("nonce"), os.getcwd()
    report_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    report = Reporter(report_fd, nonce, int(job.get("expected_tests") or 1))
    try:
        set_limits(job.get("limits") or {})
    except BaseException as e:  # noqa: BLE001 - a setup failure is the sandbox's, not the program's
        os.write(report_fd, f"{nonce} setup-error {json.dumps(repr(e)[:300])}\n".encode())
        os._exit(3)
    if job.get("guard", True):
        install_guard(root, job.get("hidden"))
    try:
        run_program(job, report)
    except BaseException as e:  # noqa: BLE001 - the runner itself failed: model code's own
        # exceptions are caught test by test and never arrive here.
        os.write(report_fd, f"{nonce} runner-error {json.dumps(repr(e)[:300])}\n".encode())
        os._exit(4)
    report.end()
    os._exit(0)  # skip atexit handlers the program may have registered


if __name__ == "__main__":
    main()
