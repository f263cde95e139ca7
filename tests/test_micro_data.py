"""The synthetic micro tasks: deterministic, answers right by an independent route, splits disjoint.

    .venv/bin/python -m pytest -q tests/test_micro_data.py
"""
from __future__ import annotations

import re

import pytest

from geora.answers import is_correct, last_boxed
from geora.data.micro import TASKS, make_split

# The test's own reading of the word problems (not the generator's code): phrase -> operation.
EVENTS = [(re.compile(r"^(\w+) (?:gets|finds) (\d+) more\.$"), lambda v, b: v + b),
          (re.compile(r"^(\w+) (?:gives away|loses) (\d+)\.$"), lambda v, b: v - b),
          (re.compile(r"^(\w+) gets (\d+) times as many\.$"), lambda v, b: v * b)]


def solve_word_problem(question: str) -> int:
    sentences = re.findall(r"[^.?]+[.?]", question)
    start = re.fullmatch(r"(\w+) has (\d+) (\w+)\.", sentences[0].strip())
    assert start, question
    name, value, item = start.group(1), int(start.group(2)), start.group(3)
    for s in sentences[1:-1]:
        for pat, op in EVENTS:
            m = pat.match(s.strip())
            if m:
                assert m.group(1) == name
                value = op(value, int(m.group(2)))
                break
        else:
            raise AssertionError(f"unparsed sentence {s!r} in {question!r}")
    assert sentences[-1].strip() == f"How many {item} does {name} have now?"
    return value


def test_fields_and_contract():
    for task in TASKS:
        for rec in make_split(task, "test", 20):
            assert isinstance(rec["question"], str) and rec["question"]
            assert isinstance(rec["final_answer"], str)
            assert rec["r1_solution_1"].endswith(f"\\boxed{{{rec['final_answer']}}}")
            assert last_boxed(rec["r1_solution_1"]) == rec["final_answer"]
            assert rec["task"] == task
    math = make_split("math", "train", 200)
    assert {r["topic"] for r in math} == {"micro/arithmetic"}
    assert {r["difficulty"] for r in math} == {1.0, 2.0, 3.0, 4.0}
    assert all(isinstance(r["difficulty"], float) for r in math)


def test_deterministic_and_seeded():
    for task in TASKS:
        a, b = make_split(task, "train", 50, seed=3), make_split(task, "train", 50, seed=3)
        assert a == b
        assert make_split(task, "train", 50, seed=4) != a  # the seed matters
        assert make_split(task, "train", 20, seed=3) == a[:20]  # a larger n extends a smaller


def test_math_answers_by_independent_route():
    recs = make_split("math", "train", 300) + make_split("math", "test", 300, seed=7)
    solved = [solve_word_problem(r["question"]) for r in recs]
    assert [str(v) for v in solved] == [r["final_answer"] for r in recs]
    for r in recs:
        # every line "a op b = c." of the worked solution is true arithmetic, and they chain
        lines = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)\.", r["r1_solution_1"])
        assert len(lines) == {1.0: 1, 2.0: 2, 3.0: 2, 4.0: 3}[r["difficulty"]]
        for a, op, b, c in lines:
            assert eval(f"{a} {op} {b}") == int(c)  # noqa: S307 (digits and one operator)
        assert [ln[0] for ln in lines[1:]] == [ln[3] for ln in lines[:-1]]
        assert lines[-1][3] == r["final_answer"] and int(r["final_answer"]) >= 0
    # the project's answer checker accepts every worked solution and rejects an off-by-one
    for r in recs[:20]:
        assert is_correct(r["final_answer"], r["r1_solution_1"])
        assert not is_correct(str(int(r["final_answer"]) + 1), r["r1_solution_1"])


def test_checker_catches_a_wrong_answer():
    rec = make_split("math", "train", 1)[0]
    bad = dict(rec, final_answer=str(int(rec["final_answer"]) + 1))
    assert str(solve_word_problem(bad["question"])) != bad["final_answer"]


def _items(question: str) -> list[str]:
    return question.split(": ", 1)[1].split(", ")


def test_probe_answers_by_independent_route():
    for rec in make_split("reverse", "train", 300):
        items = _items(rec["question"])
        assert rec["final_answer"].split(", ") == list(reversed(items))
        assert 3 <= len(items) <= 6
    kinds = set()
    for rec in make_split("sort", "train", 300):
        items = _items(rec["question"])
        digits = all(x.isdigit() for x in items)
        kinds.add(digits)
        expect = sorted(items, key=lambda x: (int(x) if digits else x))
        assert rec["final_answer"].split(", ") == expect
    assert kinds == {True, False}  # both digit and word lists occur


def test_splits_disjoint_and_distinct():
    for task in TASKS:
        train = {r["question"] for s in (0, 1) for r in make_split(task, "train", 1500, seed=s)}
        test = [r["question"] for s in (0, 5) for r in make_split(task, "test", 200, seed=s)]
        assert not train & set(test)
        one = [r["question"] for r in make_split(task, "test", 200)]
        assert len(set(one)) == len(one)


@pytest.mark.parametrize("kwargs, word", [
    (dict(task="maths", split="test", n=3), "maths"),
    (dict(task="math", split="valid", n=3), "valid"),
    (dict(task="sort", split="test", n=-1), "-1"),
    (dict(task="sort", split="test", n=2.5), "2.5"),
])
def test_bad_input_names_the_value(kwargs, word):
    with pytest.raises(ValueError, match=re.escape(word)):
        make_split(**kwargs)
