"""Synthetic RLVR tasks for the bundled micro model, generated deterministically from a seed.

Tasks (TASKS):
- "math" (in-domain): multi-step integer arithmetic word problems in 4 difficulty levels
  (more operations, bigger numbers, multiplication from level 3). Records carry the
  DeepMath-103K field names (`question`, `final_answer`, `difficulty`, `topic`,
  `r1_solution_1`) so one loader and one reward serve both.
- "reverse", "sort" (out-of-domain probes, the analogue of the paper's HumanEval / MMLU /
  IFEval columns): reverse or sort a short list of digits or words; exact-match answers.

Every solution ends in `\\boxed{answer}`. Train and test never share a question: an item
belongs to a split by a hash of its question text, and `make_split` draws until it has `n`
distinct items of the requested split. `is_correct_micro` is the one scorer of a micro
answer (the evaluation tasks and the pretraining script call it).

>>> item = make_split("math", "test", 1)[0]
>>> sorted(item)
['difficulty', 'final_answer', 'question', 'r1_solution_1', 'task', 'topic']
>>> is_correct_micro("reverse", "3, 2, 1", r"so \\boxed{3, 2, 1}")
True
"""
from __future__ import annotations

import hashlib
import random

from geora.answers import is_correct, last_boxed

TASKS = ("math", "reverse", "sort")
SPLITS = ("train", "test")
TEST_SHARE = 10  # one question in TEST_SHARE (by hash) is a test question
LEVELS = (1, 2, 3, 4)
MAX_DRAWS_PER_ITEM = 1000  # bound on rejection sampling; far above what any task needs

NAMES = ("Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivy", "Jon", "Kim",
         "Leo", "Mia", "Ned", "Owen", "Pia", "Sam", "Tess", "Uma", "Zoe")
ITEMS = ("apples", "books", "coins", "pens", "cards", "eggs", "shells", "stamps", "toys",
         "cups", "rocks", "seeds")
# Probe words: distinct first letters, so an alphabetical sort is a sort by first letter.
WORDS = ("ant", "bee", "cat", "dog", "elk", "fox", "gnu", "hen", "ice", "jam", "kit", "log",
         "map", "nut", "owl", "pig", "rat", "sun", "tea", "van", "web", "yak", "zoo")

# Difficulty level -> (number of operations, max of the starting amount, max operand,
#                      whether "times" steps may occur).
LEVEL_SPEC = {1: (1, 20, 9, False), 2: (2, 50, 30, False), 3: (2, 99, 50, True),
              4: (3, 99, 99, True)}


def _split_of(question: str) -> str:
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") % TEST_SHARE == 0 else "train"


def _math_item(rng: random.Random) -> dict:
    """One word problem: a start amount, then 1-3 add / take / multiply events."""
    level = rng.choice(LEVELS)
    n_ops, start_max, operand_max, allow_times = LEVEL_SPEC[level]
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(2, start_max)
    sentences = [f"{name} has {value} {item}."]
    steps = []  # "a op b = c" lines of the worked solution
    for _ in range(n_ops):
        ops = ["+", "-"] + (["*"] if allow_times and value <= 200 else [])
        op = rng.choice(ops)
        if op == "-" and value < 2:
            op = "+"
        if op == "+":
            b = rng.randint(1, operand_max)
            sentences.append(rng.choice((f"{name} gets {b} more.", f"{name} finds {b} more.")))
            new = value + b
        elif op == "-":
            b = rng.randint(1, min(value - 1, operand_max))
            sentences.append(rng.choice((f"{name} gives away {b}.", f"{name} loses {b}.")))
            new = value - b
        else:
            b = rng.randint(2, 5)
            sentences.append(f"{name} gets {b} times as many.")
            new = value * b
        steps.append(f"{value} {op} {b} = {new}.")
        value = new
    question = " ".join(sentences) + f" How many {item} does {name} have now?"
    solution = " ".join(steps) + f" \\boxed{{{value}}}"
    return {"question": question, "final_answer": str(value), "difficulty": float(level),
            "topic": "micro/arithmetic", "r1_solution_1": solution, "task": "math"}


def _probe_list(rng: random.Random, task: str) -> list[str]:
    length = rng.randint(3, 6)
    if rng.random() < 0.5:
        return [str(rng.randint(0, 9)) for _ in range(length)]
    if task == "sort":  # distinct first letters keep the alphabetical order unambiguous
        return rng.sample(WORDS, length)
    return [rng.choice(WORDS) for _ in range(length)]


def _sorted_list(items: list[str]) -> list[str]:
    return sorted(items, key=int) if items[0].isdigit() else sorted(items)


def _probe_item(rng: random.Random, task: str) -> dict:
    items = _probe_list(rng, task)
    if task == "reverse":
        question, answer = "Reverse the list: " + ", ".join(items), ", ".join(items[::-1])
    else:
        question, answer = "Sort the list: " + ", ".join(items), ", ".join(_sorted_list(items))
    return {"question": question, "final_answer": answer, "difficulty": 1.0,
            "topic": f"micro/{task}", "r1_solution_1": f"\\boxed{{{answer}}}", "task": task}


def make_split(task: str, split: str, n: int, seed: int = 0) -> list[dict]:
    """`n` distinct items of `task` ("math", "reverse", "sort") in `split` ("train", "test").

    Deterministic in (task, split, n, seed); a larger `n` extends a smaller one's list.
    """
    if task not in TASKS:
        raise ValueError(f"unknown micro task {task!r}; choose one of {TASKS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for micro task {task!r}; choose one of {SPLITS}")
    if int(n) != n or n < 0:
        raise ValueError(f"n={n!r} for micro task {task!r}: expected a non-negative integer")
    # Seed from the task name too, so two tasks with one seed are independent streams.
    rng = random.Random(f"{task}:{seed}")
    make = _math_item if task == "math" else (lambda r: _probe_item(r, task))
    out, seen = [], set()
    draws = 0
    while len(out) < n:
        draws += 1
        if draws > MAX_DRAWS_PER_ITEM * (n + 1):
            raise RuntimeError(f"micro task {task!r} ran out of distinct {split} items at "
                               f"{len(out)} of n={n}")
        rec = make(rng)
        q = rec["question"]
        if q in seen or _split_of(q) != split:
            continue
        seen.add(q)
        out.append(rec)
    return out


def is_correct_micro(task: str, gold: str, completion: str) -> bool:
    """Math: the project's answer checker (math-verify, as the training reward); probes:
    exact match of the last \\boxed{} with the gold list, surrounding spaces ignored."""
    boxed = last_boxed(completion)
    if task == "math":
        # an exact match needs no parsing (math-verify would agree on these integers)
        return boxed is not None and (boxed == str(gold).strip() or is_correct(gold, completion))
    return (boxed or "") == str(gold).strip()
