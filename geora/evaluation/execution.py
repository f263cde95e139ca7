"""The evaluation's names for the code runner, which lives in geora.execution (shared with
the training's code reward): HumanEval/MBPP programs are judged there (passes_tests), only
with eval.allow_code_execution=true (which sets HF_ALLOW_CODE_EVAL=1)."""
from geora.execution import (ALLOW_ENV, DEFAULT_TIMEOUT_S, CodeExecutionRefused,  # noqa: F401
                             execution_allowed, passes, passes_tests)
