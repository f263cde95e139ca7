"""Reward functions for GRPO, looked up by name (`train.rewards: [accuracy, format]`).

Every reward follows TRL's contract: `f(completions, **columns) -> list[float | None]`, where
`completions` are strings or chat turns `[{"role": "assistant", "content": ...}]` and the
dataset's other columns (here `final_answer`) arrive as keyword lists of the same length.
Accuracy calls the project's one answer checker, `geora.answers.is_correct` (math-verify,
gold first), the same function the evaluation scores with; it is safe outside the main
thread.

    >>> accuracy_reward([r"so \\boxed{12}", "no answer"], final_answer=["12", "12"])
    [1.0, 0.0]
"""
from __future__ import annotations

import re
from typing import Callable

from geora.answers import is_correct, last_boxed


def completion_text(completion) -> str:
    """The text of one completion: a string, or the content of its last chat turn."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"unsupported completion format {type(completion).__name__}: {completion!r:.80}")


def accuracy_reward(completions: list, final_answer: list, **_) -> list[float]:
    """1.0 when the completion's last \\boxed{} equals `final_answer` (math-verify), else 0.0.

    >>> accuracy_reward([[{"role": "assistant", "content": r"\\boxed{0.5}"}]], final_answer=["1/2"])
    [1.0]
    """
    if len(completions) != len(final_answer):
        raise ValueError(f"accuracy_reward: {len(completions)} completions but "
                         f"{len(final_answer)} final_answer values")
    return [1.0 if is_correct(str(g), completion_text(c)) else 0.0
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
        text = completion_text(c)
        ok = (text.count("\\boxed{") == 1 and bool(_TRAILING_BOXED.search(text))
              and bool(last_boxed(text)))
        out.append(1.0 if ok else 0.0)
    return out


REWARDS: dict[str, Callable[..., list[float | None]]] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
}


def get_rewards(names) -> list[Callable[..., list[float | None]]]:
    """The reward functions for `names` (a list of registry keys), in order."""
    names = list(names)
    if not names:
        raise ValueError("train.rewards is empty: name at least one of " + ", ".join(REWARDS))
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown} in train.rewards; choose from {sorted(REWARDS)}")
    return [REWARDS[n] for n in names]
