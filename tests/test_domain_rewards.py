"""Domain RLVR: the schema converters on fixtures in the real columns, the multiple-choice
reward, the code reward (on the fixtures' own solutions, and on programs that loop, hog
memory, fork or write outside: each 0 while the batch keeps going), and the start checks.

    .venv/bin/python -m pytest -q tests/test_domain_rewards.py
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from geora.data.schemas import SCHEMAS, to_rlvr_row, to_rlvr_rows
from geora.execution import ALLOW_ENV, CodeExecutionRefused, Limits
from geora.rewards import (REWARDS, CodeReward, check_code_execution_allowed,
                                    check_reward_columns, choice_reward, final_code_block,
                                    get_rewards)

TRAIN = Path(__file__).parent / "fixtures" / "train"


def records(name):
    return [json.loads(line) for line in (TRAIN / name).read_text().splitlines() if line.strip()]


def fenced(code, before="Here is my solution.\n"):
    return [{"role": "assistant", "content": f"{before}```python\n{code}```\nDone."}]


def columns(rows, *keys):
    return {k: [r[k] for r in rows] for k in keys}


# ------------------------------------------------------------------ schemas
def test_medqa_rows_letter_the_options_and_keep_the_raw_columns():
    raw = records("medqa.jsonl")
    rows = to_rlvr_rows("medqa", raw, where="medqa.jsonl")
    assert [r["final_answer"] for r in rows] == ["B", "A", "D", "C"]
    first = rows[0]
    assert {k: first[k] for k in raw[0]} == raw[0]
    assert first["prompt_text"].startswith(raw[0]["sent1"] + "\n\nA. Hashimoto thyroiditis\n"
                                           "B. Graves disease\nC. ")
    assert first["prompt_text"].endswith("(A, B, C or D) within \\boxed{}.")
    assert to_rlvr_row("medqa", raw[0], suffix="")["prompt_text"].endswith("D. Iodine deficiency")


def test_deepmath_and_code_rows():
    math = to_rlvr_rows("deepmath", records("deepmath_103k.jsonl"))
    assert math[3]["final_answer"] == "\\frac{3}{4}"
    assert math[0]["prompt_text"].endswith("\nPlease reason step by step, and put your final "
                                           "answer within \\boxed{}.")
    kod = to_rlvr_rows("kodcode", records("kodcode_light_rl_10k.jsonl"))
    assert kod[0]["test_format"] == "pytest" and kod[0]["tests"] == [kod[0]["test"]]
    assert "Your code must define: `def two_sum(nums, target):`" in kod[0]["prompt_text"]
    mbpp = to_rlvr_rows("mbpp", records("mbpp.jsonl"))
    assert mbpp[2]["test_setup"] == "import math" and mbpp[2]["tests"] == mbpp[2]["test_list"]
    assert mbpp[0]["prompt_text"].startswith("You are an expert Python programmer")


def test_the_evaluation_fixtures_convert_too():
    """The eval files (tests/fixtures/eval) are the same data sets' test splits, same columns."""
    evals = Path(__file__).parent / "fixtures" / "eval"
    read = lambda name: [json.loads(x) for x in (evals / name).read_text().splitlines() if x.strip()]  # noqa: E731
    assert [r["final_answer"] for r in to_rlvr_rows("medqa", read("medqa.jsonl"))] == ["B", "D"]
    mbpp = to_rlvr_rows("mbpp", read("mbpp.jsonl"))
    assert [len(r["tests"]) for r in mbpp] == [3, 3] and mbpp[0]["test_format"] == "asserts"


@pytest.mark.parametrize("schema,change,message", [
    ("medqa", {"label": 4}, r"label=4 is not an option index 0\.\.3"),
    ("medqa", {"ending2": ""}, "column 'ending2' must be a non-empty string"),
    ("medqa", {"sent1": None}, "column 'sent1'"),
    ("kodcode", {"test": "def helper():\n    pass\n"}, "the test file defines no test_\\* function"),
    ("kodcode", {"test": "def test_x(:\n"}, "the test file does not parse"),
    ("mbpp", {"test_list": []}, "test_list must be a non-empty list"),
])
def test_bad_records_name_the_column(schema, change, message):
    file = {"medqa": "medqa.jsonl", "kodcode": "kodcode_light_rl_10k.jsonl", "mbpp": "mbpp.jsonl"}
    rec = {**records(file[schema])[0], **change}
    with pytest.raises(ValueError, match=f"train.jsonl record 0: {message}"):
        to_rlvr_rows(schema, [rec], where="train.jsonl")


def test_missing_column_and_unknown_schema():
    rec = records("medqa.jsonl")[0]
    del rec["ending1"]
    with pytest.raises(ValueError, match="a 'medqa' record needs column 'ending1'"):
        to_rlvr_row("medqa", rec)
    with pytest.raises(ValueError, match="unknown data schema 'medmcqa'.*deepmath"):
        to_rlvr_row("medmcqa", rec)
    with pytest.raises(ValueError, match="raw column 'tests' would be overwritten"):
        to_rlvr_row("mbpp", {**records("mbpp.jsonl")[0], "tests": []})
    assert {s.reward for s in SCHEMAS.values()} <= set(REWARDS)


# ------------------------------------------------------------------ choice
def test_choice_reward_on_medqa_rows():
    rows = to_rlvr_rows("medqa", records("medqa.jsonl"))
    gold = [r["final_answer"] for r in rows]                           # B A D C
    completions = [[{"role": "assistant", "content": text}] for text in (
        "Proptosis points to Graves disease. \\boxed{B}",              # right
        "<think>\nrenal failure\n</think>\n\nThe answer is (A).",      # right, stated
        "\\boxed{D. Physostigmine}",                                   # right letter, wrong text
        "\\boxed{A} or maybe \\boxed{B}",                              # last box counts: wrong
    )]
    assert choice_reward(completions, final_answer=gold) == [1.0, 1.0, 1.0, 0.0]
    assert choice_reward(["\\boxed{b}", "B"], final_answer=["B", "B"]) == [1.0, 0.0]


# ------------------------------------------------------------------ code
@pytest.fixture
def allowed(monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "1")


def test_code_reward_scores_the_reference_solutions(allowed):
    rows = to_rlvr_rows("kodcode", records("kodcode_light_rl_10k.jsonl"))
    rows += to_rlvr_rows("mbpp", records("mbpp.jsonl"))
    cols = columns(rows, "tests", "test_format", "test_setup")
    right = [fenced(r.get("solution") or r["code"].replace("\r\n", "\n") + "\n") for r in rows]
    assert REWARDS["code"](right, **cols) == [1.0] * 6
    # The same programs with one behaviour broken: two_sum answers reversed, gcd off by one.
    wrong = list(right)
    wrong[0] = fenced(rows[0]["solution"].replace("[seen[target - x], j]", "[j, seen[target - x]]"))
    wrong[5] = fenced("def gcd2(a, b):\n  return math.gcd(a, b) + (a == 7)\n")
    assert REWARDS["code_share"](wrong, **cols) == pytest.approx([0.0, 1, 1, 1, 1, 2 / 3])
    broken = [0, 5]
    assert REWARDS["code"]([wrong[i] for i in broken],
                           **{k: [v[i] for i in broken] for k, v in cols.items()}) == [0.0, 0.0]


def test_code_reward_survives_hostile_programs(allowed, tmp_path):
    row = to_rlvr_rows("mbpp", records("mbpp.jsonl"))[1]                  # reverse_words
    escaped = tmp_path / "escaped.txt"
    good = "def reverse_words(s):\n    return ' '.join(s.split()[::-1])\n"
    programs = {
        "correct": good,
        "infinite loop": "def reverse_words(s):\n    while True:\n        pass\n",
        "memory hog": "hog = bytearray(3 * 2 ** 30)\n" + good,
        "fork loop": "import os\nwhile True:\n    os.fork()\n" + good,
        "write outside": f"open({str(escaped)!r}, 'w').write('x')\n" + good,
        "no code block": None,
    }
    completions = [fenced(src) if src else [{"role": "assistant", "content": good}]
                   for src in programs.values()]
    n = len(completions)
    # 6 s: two sandboxed processes per job start well within it even on a loaded 2-core CI
    reward = CodeReward("all", Limits(timeout_s=6.0, memory_mb=1024))
    scores = reward(completions, tests=[row["tests"]] * n, test_format=[row["test_format"]] * n,
                    test_setup=[row["test_setup"]] * n)
    assert dict(zip(programs, scores)) == {"correct": 1.0, "infinite loop": 0.0, "memory hog": 0.0,
                                           "fork loop": 0.0, "write outside": 0.0,
                                           "no code block": 0.0}
    assert not escaped.exists()
    assert reward.last_statuses["timeout"] == 1 and reward.last_statuses["no_code"] == 1


def test_code_reward_marks_runner_failures_none(allowed, caplog):
    row = to_rlvr_rows("mbpp", records("mbpp.jsonl"))[0]
    comps = [fenced("def second_smallest(xs):\n    return sorted(set(xs))[1]\n")] * 2
    out = REWARDS["code"](comps, tests=[row["tests"]] * 2, test_format=["asserts", "junit"],
                          test_setup=[""] * 2)
    assert out == [1.0, None]
    assert "code runner failed on sample 1" in caplog.text


def test_final_code_block_takes_the_last_python_block():
    text = "```python\nold = 1\n```\ntext\n```bash\nls\n```\n```py\nnew = 2\n```"
    assert final_code_block(text) == "new = 2\n"
    assert final_code_block("```python\ncut = True") == "cut = True"       # hit the length limit
    assert final_code_block("<think>```python\nx = 1\n```</think>no code") is None
    assert final_code_block("def f(): pass") is None


# ------------------------------------------------------------------ start checks
def test_code_rewards_refuse_without_opt_in(monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "0")  # restored after the test, whatever the check sets
    with pytest.raises(CodeExecutionRefused, match=r"\['code'\].*train.allow_code_execution=true"):
        check_code_execution_allowed(["accuracy", "code"], allowed=False)
    check_code_execution_allowed(["choice"], allowed=False)           # nothing to refuse
    assert os.environ[ALLOW_ENV] == "0"
    with pytest.raises(CodeExecutionRefused):  # the reward itself refuses too
        REWARDS["code"]([fenced("x = 1\n")], tests=[["assert x == 1"]], test_format=["asserts"])
    check_code_execution_allowed(["code_share"], allowed=True, test_formats=["asserts", "pytest"])
    assert os.environ[ALLOW_ENV] == "1"


def test_reward_columns_are_checked_at_start():
    check_reward_columns(["code"], ["prompt", "tests", "test_format"], "kodcode_light_rl_10k")
    with pytest.raises(ValueError, match=r"'choice', which reads column\(s\) \['final_answer'\] "
                                         "that data 'kodcode_light_rl_10k' lacks"):
        check_reward_columns(["choice"], ["prompt", "tests", "test_format"], "kodcode_light_rl_10k")


def test_registry_names_and_code_options():
    assert REWARDS["code"].__name__ == "code_reward"   # TRL logs rewards by __name__
    assert REWARDS["code_share"].__name__ == "code_share_reward"
    (custom,) = get_rewards(["code_share"], code_limits=Limits(timeout_s=3), code_workers=2)
    assert (custom.scoring, custom.limits.timeout_s, custom.workers) == ("share", 3, 2)
    assert get_rewards(["choice"]) == [choice_reward]
    with pytest.raises(ValueError, match="scoring='most'"):
        CodeReward("most")
