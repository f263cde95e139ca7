"""Reward registry: TRL's contract, gold-first checking, chat and plain completions.

    .venv/bin/python -m pytest -q tests/test_rewards.py
"""
import threading

import pytest

from geora.rewards import REWARDS, accuracy_reward, format_reward, get_rewards


def chat(text):
    return [{"role": "assistant", "content": text}]


def test_accuracy_plain_and_chat():
    comps = [r"4 + 3 = 7. \boxed{7}", chat(r"\boxed{7}"), chat(r"\boxed{8}"), "7"]
    assert accuracy_reward(comps, final_answer=["7"] * 4) == [1.0, 1.0, 0.0, 0.0]


def test_accuracy_uses_math_equivalence_and_extra_columns_are_ignored():
    out = accuracy_reward([r"\boxed{0.5}", r"\boxed{\frac{2}{4}}"], final_answer=["1/2", "1/2"],
                          prompts=["p", "q"], difficulty=[1.0, 2.0], trainer_state=None)
    assert out == [1.0, 1.0]


def test_accuracy_length_mismatch_names_the_problem():
    with pytest.raises(ValueError, match="2 completions but 1 final_answer"):
        accuracy_reward(["a", "b"], final_answer=["1"])


def test_accuracy_in_worker_thread():
    # math-verify's own timeouts use signal.alarm, which fails outside the main thread.
    out = []
    t = threading.Thread(target=lambda: out.extend(
        accuracy_reward([r"\boxed{12}", r"\boxed{13}"], final_answer=["12", "12"])))
    t.start(); t.join()
    assert out == [1.0, 0.0]


def test_format_reward():
    assert format_reward([r"so \boxed{3}", r"\boxed{3} more text", r"\boxed{1}\boxed{2}",
                          r"\boxed{}", chat(r"x \boxed{4}")]) == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_registry_lookup_and_unknown_name():
    assert get_rewards(["accuracy", "format"]) == [REWARDS["accuracy"], REWARDS["format"]]
    with pytest.raises(ValueError, match=r"unknown reward\(s\) \['acc'\].*accuracy"):
        get_rewards(["acc"])
    with pytest.raises(ValueError, match="empty"):
        get_rewards([])
