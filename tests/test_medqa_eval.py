"""MedQA is scored as it is trained: the training prompt, a generated answer, the `choice`
reward's parser (task `medqa`, the domains table's number); lm-eval's log-likelihood reading
stays beside it (`medqa_loglik`). A local MedQA file without its options is refused in one
line naming the file, before any model is loaded.

    .venv/bin/python -m pytest -q -p no:xdist tests/test_medqa_eval.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from geora.data.schemas import to_rlvr_rows
from geora.evaluation import EvalSettings, build_specs
from geora.evaluation.catalog import task_info
from geora.evaluation.tasks import utils as task_utils
from geora.rewards import choice_reward

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def records() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "medqa.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("completion,score", [
    ("The smear shows microcytosis, so \\boxed{B}", 1.0),       # right letter, boxed
    ("... \\boxed{(B) Iron}", 1.0),
    ("<think>maybe A</think> \\boxed{b}", 1.0),
    ("... \\boxed{A}", 0.0),                                     # wrong letter
    ("... \\boxed{Iron}", 0.0),                                  # no letter
    ("I would say iron deficiency.", 0.0),                       # nothing boxed or stated
    ("<think>\\boxed{B} is it? still thinking", 0.0),            # no answer yet
])
def test_a_boxed_right_letter_scores_1_and_a_wrong_or_missing_one_0(completion, score):
    doc = records()[0]                                           # gold: B (Iron)
    assert task_utils.process_medqa(doc, [completion]) == {"avg_at_k": score}
    # ... exactly what the training reward gives the same completion
    row = to_rlvr_rows("medqa", [doc])[0]
    assert choice_reward([completion], [row["final_answer"]]) == [score]


def test_the_evaluation_prompt_is_the_training_prompt():
    for doc, row in zip(records(), to_rlvr_rows("medqa", records())):
        assert task_utils.medqa_prompt(doc) == row["prompt_text"]
        assert task_utils.medqa_gold(doc) == row["final_answer"]
        assert "A. " in row["prompt_text"] and "\\boxed{}" in row["prompt_text"]


def test_medqa_is_generative_and_the_loglik_reading_is_extra():
    gen, loglik = task_info("medqa"), task_info("medqa_loglik")
    assert (gen.lm_task, gen.loglikelihood, gen.label) == ("geora_medqa", False, "MedQA")
    assert (loglik.lm_task, loglik.loglikelihood) == ("medqa_4options", True)
    assert gen.hub_id == loglik.hub_id == "GBaker/MedQA-USMLE-4-options-hf"
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(FIXTURES.parents[2] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["eval=medical"])
    assert list(cfg.eval.tasks) == ["medqa", "medqa_loglik"] and list(cfg.eval.in_domain) == ["medqa"]


def test_lm_eval_asks_the_training_prompt_and_scores_the_boxed_letter(tmp_path):
    """Through lm-eval (plain prompts here; the chat template is the same for both sides):
    the request is the training prompt and a boxed right letter scores 100. (All-or-nothing
    for both readings, 100 and 0: tests/test_evaluation.py.)"""
    from tests.test_evaluation import ScriptedLM, _settings

    from geora.evaluation import run_lm

    assert run_lm(ScriptedLM(lambda *_: True), None, _settings(["medqa"]), tmp_path) == {"medqa": 100.0}
    rows = (tmp_path / "samples_geora_medqa.jsonl").read_text().splitlines()
    prompts = {json.loads(r)["doc"]["id"]: json.loads(r)["prompt"] for r in rows}
    assert prompts == {doc["id"]: task_utils.medqa_prompt(doc) for doc in records()}


@pytest.mark.parametrize("task", ["medqa", "medqa_loglik"])
def test_a_medqa_file_without_its_options_is_named(task, tmp_path):
    rec = records()[0]
    for key in ("ending0", "ending1", "ending2", "ending3"):
        rec.pop(key)
    (tmp_path / "medqa.jsonl").write_text(json.dumps(rec) + "\n")
    settings = EvalSettings.from_config({"name": "m", "tasks": [task], "data_dir": str(tmp_path)})
    with pytest.raises(ValueError) as err:
        build_specs(settings)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'medqa.jsonl'}:1: a MedQA") and "\n" not in message
    assert "ending0, ending1, ending2, ending3" in message
