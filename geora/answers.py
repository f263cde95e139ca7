"""The one answer checker: training rewards and evaluation metrics both call `is_correct`.

math-verify parses and compares (gold FIRST: `verify(gold, answer)` is not symmetric).
Its own timeouts use signal.alarm, which raises outside the main thread (TRL may score
rewards in worker threads), so they are switched off there; the caller bounds time instead.
"""
from __future__ import annotations

import threading


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced; None if absent.

    >>> last_boxed(r"so \\boxed{3} then \\boxed{\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j].strip()
    return None


def _wrap_gold(gold: str) -> str:
    gold = str(gold).strip()
    # A bare LaTeX gold such as "(x+1)^2" does not parse on its own; "$...$" makes it math.
    if "\\boxed" in gold or gold.startswith("$"):
        return gold
    return f"${gold}$"


def is_correct(gold: str, completion: str) -> bool:
    """True when the completion's final answer equals `gold` under math-verify.

    The completion's answer is its last \\boxed{}; a completion without one is wrong
    (the model must commit to an answer).

    >>> is_correct("1/2", r"... so \\boxed{0.5}")
    True
    """
    from math_verify import parse, verify

    boxed = last_boxed(completion)
    if boxed is None:
        return False
    in_main = threading.current_thread() is threading.main_thread()
    # raise_on_error=False: math-verify itself turns a malformed or timed-out expression
    # into an empty parse / False, so a bad answer is a wrong answer, never a crash
    # mid-training; anything else raised here is a real error and propagates.
    kw = {"raise_on_error": False} | ({} if in_main else {"parsing_timeout": None})
    gold_parsed = parse(_wrap_gold(gold), **kw)
    answer_parsed = parse(f"\\boxed{{{boxed}}}", **kw)
    if not gold_parsed or not answer_parsed:
        return False
    vkw = {"raise_on_error": False} | ({} if in_main else {"timeout_seconds": None})
    return bool(verify(gold_parsed, answer_parsed, **vkw))
