"""Run a model-written Python program against its tests, in a separate process with a timeout.

Written here because lm-eval's code metric (`evaluate.load("code_eval")`) is fetched from the
hub at import time and cannot run offline. A subprocess (not exec in this process) keeps a
crashing, looping or state-mutating program away from the evaluator; it is NOT a sandbox:
the program runs with this user's rights, which is why it needs an explicit opt-in
(eval.allow_code_execution=true, which sets HF_ALLOW_CODE_EVAL=1 as HF's code_eval expects).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

ALLOW_ENV = "HF_ALLOW_CODE_EVAL"
DEFAULT_TIMEOUT_S = 10.0


class CodeExecutionRefused(PermissionError):
    """Model-written code would run, but code execution was not allowed."""


def execution_allowed() -> bool:
    return os.environ.get(ALLOW_ENV, "0") == "1"


def passes(program: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True when `program` (solution + asserts) exits with status 0 within `timeout_s`.

    >>> import os; os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    >>> passes("assert 1 + 1 == 2"), passes("assert 1 + 1 == 3")
    (True, False)
    """
    if not execution_allowed():
        raise CodeExecutionRefused(
            "this task runs model-written code; allow it with eval.allow_code_execution=true "
            f"(sets {ALLOW_ENV}=1)")
    with tempfile.TemporaryDirectory(prefix="geora_exec_") as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(program)
        try:
            # -I: isolated mode (no user site, no PYTHON* env vars, cwd not on sys.path).
            done = subprocess.run([sys.executable, "-I", path], cwd=tmp, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0
