"""Reward functions for GRPO, looked up by name (`train.rewards: [accuracy, format]`).

Every reward follows TRL's contract: `f(completions, **columns) -> list[float | None]`, where
`completions` are strings or chat turns `[{"role": "assistant", "content": ...}]` and the
dataset's other columns (`final_answer`, `tests`, ...) arrive as keyword lists of the same
length (geora.data.schemas makes them). None marks a sample the reward could not score
(the code runner itself failed); TRL leaves it out.

- accuracy: math, `final_answer` by the project's one answer checker,
  `geora.answers.is_correct` (math-verify, gold first), which the evaluation also scores with.
- choice: multiple choice, the final letter (see `final_choice`) against `final_answer`.
- code / code_share: the completion's last ```python block run against `tests` by
  geora.execution (an OS sandbox, the verdicts decided outside the program's process); 1 if every test passes (code, the default, as
  pass@1 scores) or the share of tests passed (code_share). Runs only with
  train.allow_code_execution=true: the pipeline calls `check_code_execution_allowed` at start.
- format: shaping, one trailing \\boxed{}.

Every reward reads only the answer (`answer_part`): with Qwen3 in thinking mode
(model.enable_thinking=true) the text after the last </think>; a completion still inside
<think> has given no answer and scores 0. The evaluation reads its completions the same way.

    >>> accuracy_reward([r"so \\boxed{12}", "no answer"], final_answer=["12", "12"])
    [1.0, 0.0]
    >>> choice_reward([r"Iron deficiency. \\boxed{B}", "Answer: C"], final_answer=["B", "B"])
    [1.0, 0.0]
"""
from __future__ import annotations

import logging
import os
import re
from collections import Counter
from typing import Callable, Iterable

from geora.answers import is_correct, last_boxed
from geora.execution import (ALLOW_ENV, CodeExecutionRefused, Limits, execute_many,
                             execution_allowed, preflight)

log = logging.getLogger(__name__)


def completion_text(completion) -> str:
    """The text of one completion: a string, or the content of its last chat turn."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"unsupported completion format {type(completion).__name__}: {completion!r:.80}")


def accuracy_reward(completions: list, final_answer: list, **_) -> list[float]:
    """1.0 when the answer's last \\boxed{} equals `final_answer` (math-verify), else 0.0;
    a box inside the thinking does not count.

    >>> accuracy_reward([[{"role": "assistant", "content": r"\\boxed{0.5}"}]], final_answer=["1/2"])
    [1.0]
    >>> accuracy_reward([r"<think>\\boxed{3}</think> \\boxed{4}", r"<think>\\boxed{4}"],
    ...                 final_answer=["4", "4"])
    [1.0, 0.0]
    """
    if len(completions) != len(final_answer):
        raise ValueError(f"accuracy_reward: {len(completions)} completions but "
                         f"{len(final_answer)} final_answer values")
    return [1.0 if is_correct(str(g), answer_part(completion_text(c))) else 0.0
            for c, g in zip(completions, final_answer)]


_TRAILING_BOXED = re.compile(r"\\boxed\{.*\}\s*$", re.DOTALL)


def format_reward(completions: list, **_) -> list[float]:
    """1.0 when the completion ends with one non-empty \\boxed{...} answer, else 0.0.

    A shaping reward for models that must learn to commit to an answer; it never checks
    correctness.

    >>> format_reward([r"3 + 4 = 7. \\boxed{7}", r"\\boxed{1} \\boxed{2}", "7"])
    [1.0, 0.0, 0.0]
    """
    out = []
    for c in completions:
        text = answer_part(completion_text(c))
        ok = (text.count("\\boxed{") == 1 and bool(_TRAILING_BOXED.search(text))
              and bool(last_boxed(text)))
        out.append(1.0 if ok else 0.0)
    return out


THINK_START, THINK_END = "<think>", "</think>"   # Qwen3's thinking block (plain tokens)


def answer_part(text: str) -> str:
    """What follows the thinking: the text after the last </think>; "" while a <think> is
    still open (a completion cut off mid-thought has given no answer); else all of it.

    >>> answer_part("<think>so 4</think> It is 4."), answer_part("<think>so"), answer_part("4")
    (' It is 4.', '', '4')
    """
    if THINK_END in text:
        return text[text.rfind(THINK_END) + len(THINK_END):]
    return "" if THINK_START in text else text


# One letter, "(B)" or "B", then nothing, or ".", ":" or ")" and the option's text; "(B) Iron"
# too. "A and B", "A, B" or a word are not an answer.
_BOXED_LETTER = re.compile(r"^(?:\(([A-Za-z])\)(?:\s+\S.*)?|([A-Za-z]))(?:[.:)].*)?$", re.DOTALL)
_STATED_LETTER = re.compile(
    r"^(?i:(?:the\s+)?(?:final\s+)?(?:correct\s+)?(?:answer|option)(?:\s+is)?)\s*[:：]?\s*"
    r"\(?([A-J])\)?(?:[.)]|\s|$)")
_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}")


def final_choice(text: str, stated: bool = True) -> str | None:
    """The option letter a completion commits to, upper case, or None.

    1. The last \\boxed{...} (after any </think>): its content, with \\text{}-style wrappers
       and $ removed, must be one letter, optionally in parentheses, optionally followed by
       ".", ":" or ")" and the option's text ("B", "b", "(B)", "B. Iron", "(B) Iron"); "Iron",
       "A, B" or "A and B" give None (a boxed non-letter is no answer; the last box counts).
    2. With no \\boxed{} and `stated`: the last non-empty line, markdown */_/# stripped, of
       the form "[The] [final] [correct] answer|option [is][:] X" with X in A-J (upper case).

    >>> [final_choice(t) for t in [r"\\boxed{\\text{(C)}}", r"\\boxed{B. Iron}", "**Answer: D**",
    ...                             r"\\boxed{Iron}", "I think B", r"<think>A</think> \\boxed{c}"]]
    ['C', 'B', 'D', None, None, 'C']
    """
    text = answer_part(text)
    boxed = last_boxed(text)
    if boxed is not None:
        inner = _WRAPPERS.sub(r"\1", boxed).replace("$", "").strip()
        match = _BOXED_LETTER.match(inner)
        return (match.group(1) or match.group(2)).upper() if match else None
    if not stated:
        return None
    lines = [ln.strip(" \t*_#>") for ln in text.splitlines() if ln.strip(" \t*_#>")]
    match = _STATED_LETTER.match(lines[-1]) if lines else None
    return match.group(1) if match else None


def choice_reward(completions: list, final_answer: list, **_) -> list[float]:
    """1.0 when the completion's final option letter (`final_choice`) is `final_answer`."""
    if len(completions) != len(final_answer):
        raise ValueError(f"choice_reward: {len(completions)} completions but "
                         f"{len(final_answer)} final_answer values")
    return [1.0 if final_choice(completion_text(c)) == str(g).strip().upper() else 0.0
            for c, g in zip(completions, final_answer)]


_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def final_code_block(text: str) -> str | None:
    """The last fenced code block labelled python/py/python3 or unlabelled (a block cut off
    by the length limit counts up to the end), after any </think>; None if there is none.

    >>> final_code_block("Plan.\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1\\n'
    """
    blocks = [body for lang, body in _FENCE.findall(answer_part(text))
              if lang.lower() in ("", "python", "py", "python3")]
    return blocks[-1] if blocks else None


class CodeReward:
    """The code reward: each completion's final code block run against its row's tests.

    Columns: `tests` (list of str), `test_format` ("asserts": each entry a snippet run after
    `test_setup` and the solution; "pytest": one pytest file importing `from solution
    import ...`). scoring "all" (1 if every test passes, else 0) or "share" (tests passed /
    tests). A completion without a code block scores 0 without running anything; a job the
    runner could not run scores None and is logged. Never raises for what a program does.
    `last_statuses` counts the runner's outcomes (ok, timeout, crashed, error, no_code) of
    the last batch.
    """

    def __init__(self, scoring: str = "all", limits: Limits = Limits(), workers: int | None = None):
        if scoring not in ("all", "share"):
            raise ValueError(f"code reward scoring={scoring!r}: choose 'all' or 'share'")
        self.scoring, self.limits, self.workers = scoring, limits, workers
        self.__name__ = "code_reward" if scoring == "all" else "code_share_reward"
        self.last_statuses: Counter = Counter()

    def __call__(self, completions: list, tests: list, test_format: list,
                 test_setup: list | None = None, **_) -> list[float | None]:
        if not len(completions) == len(tests) == len(test_format):
            raise ValueError(f"{self.__name__}: {len(completions)} completions, {len(tests)} "
                             f"tests, {len(test_format)} test_format values")
        setups = test_setup if test_setup is not None else [""] * len(completions)
        scores: list[float | None] = [0.0] * len(completions)
        jobs, where = [], []
        for i, completion in enumerate(completions):
            code = final_code_block(completion_text(completion))
            if code is None:
                continue
            if test_format[i] == "pytest":
                jobs.append({"mode": "pytest", "solution": code, "test_file": tests[i][0]})
            else:
                jobs.append({"mode": str(test_format[i]), "solution": code,
                             "tests": list(tests[i]), "setup": setups[i] or ""})
            where.append(i)
        results = execute_many(jobs, self.limits, self.workers)
        self.last_statuses = Counter(r.status for r in results)
        self.last_statuses["no_code"] = len(completions) - len(jobs)
        for i, r in zip(where, results):
            if r.status == "error":
                scores[i] = None
                log.warning("%s: the code runner failed on sample %d: %s", self.__name__, i, r.detail)
            else:
                scores[i] = r.share if self.scoring == "share" else float(r.all_passed)
        return scores


REWARDS: dict[str, Callable[..., list[float | None]]] = {
    "accuracy": accuracy_reward,
    "choice": choice_reward,
    "code": CodeReward("all"),
    "code_share": CodeReward("share"),
    "format": format_reward,
}
CODE_REWARDS = frozenset({"code", "code_share"})
# The columns each reward reads (besides completions): the data must have them.
REWARD_COLUMNS: dict[str, tuple[str, ...]] = {
    "accuracy": ("final_answer",), "choice": ("final_answer",), "format": (),
    "code": ("tests", "test_format"), "code_share": ("tests", "test_format"),
}


def get_rewards(names, *, code_limits: Limits | None = None, code_workers: int | None = None
                ) -> list[Callable[..., list[float | None]]]:
    """The reward functions for `names` (a list of registry keys), in order; the code rewards
    with `code_limits` / `code_workers` when given."""
    names = list(names)
    if not names:
        raise ValueError("train.rewards is empty: name at least one of " + ", ".join(REWARDS))
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown} in train.rewards; choose from {sorted(REWARDS)}")
    out = []
    for n in names:
        reward = REWARDS[n]
        if n in CODE_REWARDS and (code_limits is not None or code_workers is not None):
            reward = CodeReward(reward.scoring, code_limits or reward.limits, code_workers)
        out.append(reward)
    return out


def check_reward_columns(names: Iterable[str], columns: Iterable[str], data_name: str) -> None:
    """ValueError (one line) when the data lacks a column one of the rewards reads."""
    columns = set(columns)
    for name in names:
        missing = [c for c in REWARD_COLUMNS.get(name, ()) if c not in columns]
        if missing:
            raise ValueError(f"train.rewards has {name!r}, which reads column(s) {missing} that "
                             f"data {data_name!r} lacks (it has {sorted(columns)})")


def check_code_execution_allowed(names: Iterable[str], allowed: bool,
                                 test_formats: Iterable[str] = ()) -> None:
    """Call at the start of a run. A code reward without train.allow_code_execution=true
    stops here with one line (CodeExecutionRefused). When allowed, switches execution on
    for this process ({ALLOW_ENV}=1) and, for each test format the data uses, checks that a
    correct program passes and a write outside the sandbox is refused (RuntimeError)."""
    code = [n for n in names if n in CODE_REWARDS]
    if not code:
        return
    if not allowed:
        raise CodeExecutionRefused(
            f"train.rewards {code} run model-written Python to score it; this is off by default. "
            "Allow it with train.allow_code_execution=true (it runs in bubblewrap where "
            "installed, else a guarded subprocess; see docs/code-sandbox.md)")
    if not execution_allowed():
        os.environ[ALLOW_ENV] = "1"
    formats = sorted(set(test_formats))
    if formats:
        preflight(formats)
