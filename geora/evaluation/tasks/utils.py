"""Scoring and data functions that the task YAMLs in this folder name with `!function utils.X`.

Every generative task here keeps all `repeats` samples of an item (filter `take_first_k`
with k = repeats) and scores each one, so one item's score is its avg@k and the task score
is the mean over items: with AIME's 30 problems and k = 8 it moves in steps of 1/240.
Math answers are checked by geora.answers.is_correct (math-verify, the checker the
training reward uses); code answers by running the data set's own tests in a subprocess.
"""
from __future__ import annotations

import re
from typing import Any

from geora.answers import is_correct
from geora.prompts import MATH_SUFFIX, user_text
from geora.rewards import answer_part

# The suffix after each task family's question (geora.prompts), the same as its training
# data's `prompt_suffix` (conf/data/*.yaml; tests/test_one_source.py renders both): the
# math instruction (deepmath_103k's null), nothing for the micro tasks (micro_math's "").
MATH_PROMPT_SUFFIX = MATH_SUFFIX
MICRO_PROMPT_SUFFIX = ""


def _samples(results: list) -> list[str]:
    """The k answers of one item (a list after take_first_k, a str after take_first), each
    read as the training rewards read a completion (geora.rewards.answer_part:
    lm-eval has already cut at the last </think>; a completion still inside <think> has
    given no answer)."""
    first = results[0]
    return [answer_part(c) for c in ([first] if isinstance(first, str) else list(first))]


def _scores(correct: list[bool]) -> dict[str, float]:
    # avg_at_k: mean correctness of the k samples (pass@1 estimated from k samples);
    # pass_at_k: 1 if any of the k samples is correct.
    return {"avg_at_k": sum(correct) / len(correct), "pass_at_k": float(any(correct))}


def _gold(doc: dict) -> str:
    """The reference answer: the `answer` column whatever its case (AIME24 says `Answer`)."""
    for key in doc:
        if key.lower() == "answer":
            return str(doc[key])
    raise KeyError(f"no answer column among {sorted(doc)}")


# ---------------------------------------------------------------- math (AIME, MATH500, OlymMATH)
def math_prompt(doc: dict) -> str:
    """The problem, then the \\boxed{} instruction (the prompt Qwen's math evaluations use)."""
    problem = next(doc[k] for k in doc if k.lower() == "problem")
    return user_text(problem, MATH_PROMPT_SUFFIX)


def process_math(doc: dict, results: list) -> dict[str, float]:
    gold = _gold(doc)
    return _scores([is_correct(gold, c) for c in _samples(results)])


# ---------------------------------------------------------------- MedQA, generative
def medqa_prompt(doc: dict) -> str:
    """The user text MedQA training gives the same record (geora.data.schemas, `medqa`):
    the question, the lettered options, the boxed-letter instruction."""
    from geora.data.schemas import to_rlvr_row

    return to_rlvr_row("medqa", doc, where=f"MedQA item {doc.get('id', '?')!r}")["prompt_text"]


def medqa_gold(doc: dict) -> str:
    from geora.data.schemas import to_rlvr_row

    return to_rlvr_row("medqa", doc, where=f"MedQA item {doc.get('id', '?')!r}")["final_answer"]


def process_medqa(doc: dict, results: list) -> dict[str, float]:
    """1 per sample whose final letter (the `choice` reward's reading: the last \\boxed{}, or
    a closing "The answer is X") is the gold letter; a wrong or missing letter scores 0."""
    from geora.rewards import final_choice

    gold, samples = medqa_gold(doc), _samples(results)
    return {"avg_at_k": sum(final_choice(c) == gold for c in samples) / len(samples)}


# ---------------------------------------------------------------- micro tasks
def micro_dataset(micro_task: str, split: str = "test", n: int = 200, seed: int = 0,
                  **_metadata: Any):
    """The micro test items, generated (no file, no hub): {split: datasets.Dataset}."""
    import datasets

    from geora.data.micro import make_split

    return datasets.DatasetDict(
        {split: datasets.Dataset.from_list(make_split(micro_task, split, int(n), int(seed)))})


def micro_prompt(doc: dict) -> str:
    """The micro question as the micro training data renders it (the bare question)."""
    return user_text(doc["question"], MICRO_PROMPT_SUFFIX)


def process_micro(doc: dict, results: list) -> dict[str, float]:
    """Math: math-verify against `final_answer`; probes: exact match of the last \\boxed{}
    (geora.data.micro.is_correct_micro, also the pretraining script's scorer)."""
    from geora.data.micro import is_correct_micro

    gold = str(doc["final_answer"])
    return _scores([is_correct_micro(doc["task"], gold, c) for c in _samples(results)])


# ---------------------------------------------------------------- code (HumanEval, MBPP)
def humaneval_programs(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """Filter: the function's prompt + the completion up to the closing fence (as lm-eval's
    humaneval_instruct, whose generation starts inside a ```python block)."""
    return [[doc["prompt"] + (r if "```" not in r else r[: r.find("```")])
             for r in map(answer_part, resp)] for resp, doc in zip(resps, docs)]


def _first_code_block(text: str) -> str:
    # The generation starts inside "```python\n" (gen_prefix): cut at the closing fence.
    # A completion that opens a new fenced block contributes that block instead.
    if "```" not in text:
        return text
    head = text[: text.find("```")]
    if head.strip():
        return head
    match = re.search(r"```(?:\w+)?\n(.*?)(?:```|$)", text, re.DOTALL)
    return match.group(1) if match else ""


def mbpp_programs(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    return [[_first_code_block(answer_part(r)) for r in resp] for resp in resps]


# The tests run in a process of their own and call the program's functions in another
# (geora.execution's "asserts" jobs): the program cannot touch the verdict.
def process_humaneval(doc: dict, results: list) -> dict[str, float]:
    from geora.evaluation.execution import passes_tests

    tests = [f"{doc['test']}\ncheck({doc['entry_point']})\n"]
    return _scores([passes_tests(program, tests) for program in _samples(results)])


def process_mbpp(doc: dict, results: list) -> dict[str, float]:
    from geora.evaluation.execution import passes_tests

    setup = doc.get("test_setup_code") or ""
    return _scores([passes_tests(code, doc["test_list"], setup) for code in _samples(results)])


def keep_all(resps, docs):
    """Filter that keeps every sample of every item (lm-eval's default keeps only the first)."""
    return [list(r) for r in resps]
