"""Raw records of each RLVR data set -> the one training-row schema, in one place.

A row keeps every raw column and adds what training needs:
- `prompt_text`: the user turn (question, options or signature, then the answer-format
  instruction); the loader wraps it into TRL's chat `prompt`;
- the gold its reward reads: `final_answer` (math: the answer; multiple choice: the letter)
  or, for code, `tests` (list of str), `test_format` ("asserts" | "pytest") and `test_setup`.

Schemas (`data.schema` in conf/data/*.yaml), with the reward that scores them:
    deepmath  zwhe99/DeepMath-103K: question, final_answer, ...       -> accuracy
    medqa     GBaker/MedQA-USMLE-4-options-hf (lm-eval's medqa_4options data):
              id, sent1, sent2, ending0..ending3, label (0-based)     -> choice
    kodcode   KodCode/KodCode-Light-RL-10K: question_id, question, solution, test (a pytest
              file importing `from solution import ...`), test_info   -> code
    mbpp      google-research-datasets/mbpp (full): task_id, text, code, test_list,
              test_setup_code, challenge_test_list                    -> code

`suffix` is appended to the prompt text verbatim: None = the schema's instruction below,
"" = nothing (data.prompt_suffix in the configs).

    >>> row = to_rlvr_row("medqa", {"id": "q1", "sent1": "Which organ makes insulin?",
    ...     "sent2": "", "ending0": "Liver", "ending1": "Pancreas", "ending2": "Spleen",
    ...     "ending3": "Kidney", "label": 1})
    >>> row["final_answer"], row["prompt_text"].splitlines()[:3]
    ('B', ['Which organ makes insulin?', '', 'A. Liver'])
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from geora.prompts import MATH_SUFFIX

LETTERS = "ABCDEFGHIJ"
CODE_SUFFIX = ("\n\nWrite your solution as Python code in a single ```python code block; "
               "it will be run against hidden tests.")
ADDED = ("prompt_text", "tests", "test_format", "test_setup")


def choice_suffix(n_options: int) -> str:
    letters = ", ".join(LETTERS[: n_options - 1]) + f" or {LETTERS[n_options - 1]}"
    return (f"\n\nPlease reason step by step, and put only the letter of the correct option "
            f"({letters}) within \\boxed{{}}.")


def _text(record: Mapping[str, Any], key: str, where: str) -> str:
    value = record[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: column {key!r} must be a non-empty string, got {value!r:.60}")
    return value


# ------------------------------------------------------------------ converters
def _deepmath(record, suffix, where):
    question = _text(record, "question", where)
    answer = record["final_answer"]
    if answer is None or not str(answer).strip():
        raise ValueError(f"{where}: empty final_answer")
    return {"prompt_text": question + _suffix(suffix, MATH_SUFFIX), "final_answer": str(answer)}


def _medqa(record, suffix, where):
    options = []
    for i in range(len(LETTERS)):
        if f"ending{i}" not in record:
            break
        options.append(_text(record, f"ending{i}", where))
    if len(options) < 2:
        raise ValueError(f"{where}: medqa needs columns ending0, ending1, ...; found {len(options)}")
    label = record["label"]
    if isinstance(label, bool) or str(label).strip() not in {str(i) for i in range(len(options))}:
        raise ValueError(f"{where}: label={label!r} is not an option index 0..{len(options) - 1}")
    question = _text(record, "sent1", where)
    if isinstance(record.get("sent2"), str) and record["sent2"].strip():
        question = f"{question} {record['sent2'].strip()}"
    listed = "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))
    return {"prompt_text": f"{question}\n\n{listed}" + _suffix(suffix, choice_suffix(len(options))),
            "final_answer": LETTERS[int(str(label).strip())]}


def _kodcode(record, suffix, where):
    question = _text(record, "question", where)
    test_file = _text(record, "test", where)
    try:
        tree = ast.parse(test_file)
    except SyntaxError as e:
        raise ValueError(f"{where}: the test file does not parse ({e.msg}, line {e.lineno})") from None
    if not any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name.lower().startswith("test")
               for n in tree.body):
        raise ValueError(f"{where}: the test file defines no test_* function or Test* class")
    declarations = [str(info.get("function_declaration") or "").strip()
                    for info in (record.get("test_info") or []) if isinstance(info, Mapping)]
    declarations = [d for d in declarations if d]
    signature = ""
    if declarations:
        signature = "\n\nYour code must define: " + ", ".join(f"`{d}`" for d in declarations)
    return {"prompt_text": question + signature + _suffix(suffix, CODE_SUFFIX),
            "tests": [test_file], "test_format": "pytest", "test_setup": ""}


def _mbpp(record, suffix, where):
    text = _text(record, "text", where)
    tests = list(record["test_list"] or [])
    if not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise ValueError(f"{where}: test_list must be a non-empty list of assert statements")
    # The mbpp_instruct prompt of lm-eval (the MBPP evaluation's), zero-shot.
    prompt = (f"You are an expert Python programmer, and here is your task:\n{text}\n"
              "Your code should pass these tests:\n" + "\n".join(tests))
    return {"prompt_text": prompt + _suffix(suffix, CODE_SUFFIX), "tests": tests,
            "test_format": "asserts", "test_setup": str(record.get("test_setup_code") or "")}


def _suffix(given: str | None, default: str) -> str:
    return default if given is None else str(given)


@dataclass(frozen=True)
class Schema:
    name: str
    required: tuple[str, ...]
    convert: Callable[[Mapping[str, Any], str | None, str], dict[str, Any]]
    reward: str          # the reward (geora.rewards.REWARDS) its gold is made for


SCHEMAS: dict[str, Schema] = {s.name: s for s in (
    Schema("deepmath", ("question", "final_answer"), _deepmath, "accuracy"),
    Schema("medqa", ("sent1", "ending0", "ending1", "label"), _medqa, "choice"),
    Schema("kodcode", ("question", "test"), _kodcode, "code"),
    Schema("mbpp", ("text", "test_list"), _mbpp, "code"),
)}


def get_schema(name: str) -> Schema:
    if name not in SCHEMAS:
        raise ValueError(f"unknown data schema {name!r} (data.schema); choose from {sorted(SCHEMAS)}")
    return SCHEMAS[name]


def to_rlvr_row(schema: str, record: Mapping[str, Any], *, suffix: str | None = None,
                where: str = "record") -> dict[str, Any]:
    """One raw record -> a training row (its raw columns + the added ones, see module doc)."""
    spec = get_schema(schema)
    missing = [k for k in spec.required if k not in record]
    if missing:
        raise ValueError(f"{where}: a {schema!r} record needs column {missing[0]!r} "
                         f"(has {sorted(map(str, record))})")
    clash = [k for k in ADDED if k in record]
    if clash:
        raise ValueError(f"{where}: raw column {clash[0]!r} would be overwritten by the "
                         f"{schema!r} conversion")
    return {**record, **spec.convert(record, suffix, where)}


def to_rlvr_rows(schema: str, records: Iterable[Mapping[str, Any]], *, suffix: str | None = None,
                 where: str = "data") -> list[dict[str, Any]]:
    """Every record converted; errors name `where` and the record's index."""
    return [to_rlvr_row(schema, r, suffix=suffix, where=f"{where} record {i}")
            for i, r in enumerate(records)]
