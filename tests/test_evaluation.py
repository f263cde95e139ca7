"""Evaluation through lm-eval: metrics are right (a scripted model that always answers
correctly scores 100%, one that always answers wrongly 0%, on every task's fixtures), avg@k
arithmetic, local data, guards, results files, and the micro eval on the bundled model.

    .venv/bin/python -m pytest -q tests/test_evaluation.py          # fast part
    .venv/bin/python -m pytest -q -m slow tests/test_evaluation.py  # + bundled micro model
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from lm_eval.api.model import LM

from geora.evaluation import (CATALOG, CodeExecutionRefused, DatasetUnavailableError,
                              EvalSettings, build_specs, run_lm)
from geora.evaluation.harness import SUMMARY_FILE
from geora.evaluation.tasks import utils as task_utils

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
IFEVAL_RESPONSES = json.loads((FIXTURES / "ifeval_responses.json").read_text())
PAPER_TASKS = ["aime24", "aime25", "math500", "olymmath", "humaneval", "mbpp", "mmlu",
               "ifeval", "medqa", "medqa_loglik"]
LETTERS = "ABCD"
MICRO_TASKS = ["micro_math", "micro_reverse", "micro_sort"]


def _gold_math(doc):
    return str(next(doc[k] for k in doc if k.lower() == "answer")).strip("$")


def _completion(task: str, doc: dict, right: bool) -> str:
    """What a perfect (right=True) or hopeless model writes for one item of `task`."""
    if task.startswith("geora_micro"):
        return doc["r1_solution_1"] if right else "I think \\boxed{nope}"
    if task in ("geora_aime24", "geora_aime25", "geora_math500", "geora_olymmath"):
        return (f"Reasoning... so the answer is \\boxed{{{_gold_math(doc)}}}." if right
                else "Reasoning... so the answer is \\boxed{0.123456}.")
    if task == "geora_humaneval":  # generation continues after "```python\n<prompt>\n"
        return doc["canonical_solution"] + "```\n" if right else "    return None\n```\n"
    if task == "geora_mbpp":  # generation continues after "\n```python\n"
        return doc["code"] + "\n```" if right else "def unrelated():\n    pass\n```"
    if task == "ifeval":
        return IFEVAL_RESPONSES[str(doc["key"])]["right" if right else "wrong"]
    if task == "geora_medqa":  # a reasoned, boxed letter, as MedQA training samples it
        return f"Reasoning... so \\boxed{{{LETTERS[(doc['label'] + (0 if right else 1)) % 4]}}}"
    raise KeyError(task)


def _gold_choice(task: str, doc: dict) -> int:
    return doc["label"] if task == "medqa_4options" else doc["answer"]


class ScriptedLM(LM):
    """An lm-eval LM (deliberately not @register_model'd) that answers from the fixtures.

    `right(task, doc_id, sample_index) -> bool` decides per sample whether it answers right.
    """

    def __init__(self, right):
        super().__init__()
        self.right = right
        self.calls = defaultdict(int)

    def generate_until(self, requests):
        out = []
        for r in requests:
            key = (r.task_name, r.doc_id)
            out.append(_completion(r.task_name, r.doc, self.right(r.task_name, r.doc_id,
                                                                  self.calls[key])))
            self.calls[key] += 1
        return out

    def loglikelihood(self, requests):
        out = []
        for r in requests:
            gold = _gold_choice(r.task_name, r.doc)
            pick = gold if self.right(r.task_name, r.doc_id, 0) else (gold + 1) % 4
            out.append((0.0 if r.idx == pick else -5.0, r.idx == pick))
        return out

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError


def _settings(tasks, **kw):
    base = dict(name="fixtures", tasks=tasks, data_dir=str(FIXTURES), batch_size=4,
                apply_chat_template=False, allow_code_execution=True, log_samples=True)
    return EvalSettings.from_config(base | kw)


@pytest.mark.parametrize("right,expected", [(True, 100.0), (False, 0.0)])
def test_every_paper_task_scores_all_or_nothing(tmp_path, right, expected):
    pytest.importorskip("langdetect", reason="IFEval needs lm-eval[ifeval]")
    settings = _settings(PAPER_TASKS + MICRO_TASKS, limit=4)
    scores = run_lm(ScriptedLM(lambda *_: right), None, settings, tmp_path)
    assert set(scores) == set(PAPER_TASKS + MICRO_TASKS)
    assert scores == {t: expected for t in scores}
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["scores"] == scores
    assert summary["code_runner"] in ("bwrap", "guard")   # model-written code ran: how, recorded
    # One JSON line per item, with the completion that was scored.
    rows = [json.loads(l) for l in (tmp_path / "samples_geora_aime24.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["avg_at_k"] == (1.0 if right else 0.0) for r in rows)
    assert len(rows[0]["filtered_resps"][0]) == 8  # avg@8: all eight samples kept


def test_avg_at_k_counts_every_sample(tmp_path):
    """AIME fixture, k = 8: problem 0 right in 8 samples, problem 1 in 3, problem 2 in 0."""
    n_right = {0: 8, 1: 3, 2: 0}
    lm = ScriptedLM(lambda task, doc_id, i: i < n_right[doc_id])
    scores = run_lm(lm, None, _settings(["aime24"]), None)
    assert scores["aime24"] == pytest.approx(100 * (8 + 3 + 0) / 24)  # steps of 1/(3*8)
    # eval.repeats overrides k: with 2 samples, problem 1 is right in both.
    lm = ScriptedLM(lambda task, doc_id, i: i < n_right[doc_id])
    assert run_lm(lm, None, _settings(["aime24"], repeats=2), None)["aime24"] == \
        pytest.approx(100 * (2 + 2 + 0) / 6)


def test_process_math_and_micro_arithmetic():
    doc = {"Problem": "p", "Answer": 24}
    res = task_utils.process_math(doc, [["\\boxed{24}", "\\boxed{23}", "\\boxed{24.0}", "24"]])
    assert res == {"avg_at_k": 0.5, "pass_at_k": 1.0}  # no \boxed{} is wrong
    probe = {"task": "reverse", "final_answer": "3, 2, 1"}
    assert task_utils.process_micro(probe, ["\\boxed{3, 2, 1}"])["avg_at_k"] == 1.0
    assert task_utils.process_micro(probe, ["\\boxed{1, 2, 3}"])["avg_at_k"] == 0.0
    # 30 problems x avg@8: every attainable score is a multiple of 1/240.
    per_problem = [task_utils.process_math(doc, [["\\boxed{24}"] * c + ["\\boxed{1}"] * (8 - c)])
                   ["avg_at_k"] for c in [i % 9 for i in range(30)]]
    total = sum(per_problem) / 30
    assert abs(total * 240 - round(total * 240)) < 1e-9 and total * 240 == sum(i % 9 for i in range(30))


def test_code_execution_needs_the_option(monkeypatch):
    # a run that allowed code earlier in this process sets HF_ALLOW_CODE_EVAL=1 for itself
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    with pytest.raises(CodeExecutionRefused, match="eval.allow_code_execution=true"):
        build_specs(_settings(["humaneval"], allow_code_execution=False))
    with pytest.raises(CodeExecutionRefused, match="eval.allow_code_execution"):
        task_utils.process_humaneval({"test": "", "entry_point": "f"}, [["def f(): pass"]])


def test_code_runs_in_a_subprocess_with_a_timeout(monkeypatch):
    from geora.evaluation.execution import passes

    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    assert passes("assert sorted([2, 1]) == [1, 2]")
    assert not passes("assert sorted([2, 1]) == [2, 1]")
    assert not passes("while True:\n    pass", timeout_s=1.0)
    assert not passes("import os\nos._exit(3)")


def test_missing_hub_data_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub check then answers "unreachable"
    with pytest.raises(DatasetUnavailableError, match=r"math-ai/aime25.*eval\.data_dir"):
        build_specs(EvalSettings.from_config({"tasks": ["aime25"]}))


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="'aime2024'.*choose from"):
        EvalSettings.from_config({"tasks": ["aime2024"]})
    with pytest.raises(ValueError, match="eval.backend='tgi'"):
        EvalSettings.from_config({"tasks": [], "backend": "tgi"})
    with pytest.raises(FileNotFoundError, match="has no olymmath.jsonl"):
        build_specs(EvalSettings.from_config({"tasks": ["olymmath"], "data_dir": str(FIXTURES / "..")}))
    with pytest.raises(ValueError, match="unknown eval config key"):
        EvalSettings.from_config({"tasks": [], "temprature": 0.7})


def test_every_eval_config_composes():
    from omegaconf import OmegaConf

    from tests.conftest import eval_group

    for path in sorted((Path(__file__).parents[1] / "conf" / "eval").glob("*.yaml")):
        settings = EvalSettings.from_config(eval_group(path.stem))
        assert all(t in CATALOG for t in settings.tasks), path.name


# ------------------------------------------------------------------ scripts/evaluate.py
def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(Path(__file__).parents[1] / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=overrides)


def _evaluate_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "evaluate_script", Path(__file__).parents[1] / "scripts" / "evaluate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def _completions(out_dir: Path) -> list:
    rows = (out_dir / "samples_geora_micro_sort.jsonl").read_text().splitlines()
    return [json.loads(r)["resps"] for r in rows]


def test_run_folder_export_matches_the_live_model(tmp_path):
    """A run folder's export/ (a PEFT LoRA on the original base) generates exactly what the
    live adapted model generates; a plain model folder goes through lm-eval's `hf` loader."""
    import torch
    from omegaconf import OmegaConf
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from conftest import build_tiny_qwen3
    from geora.evaluation import evaluate_in_memory

    script = _evaluate_script()

    tok = AutoTokenizer.from_pretrained(Path(__file__).parents[1] / "geora" / "assets" / "micro")
    base_dir, run_dir = tmp_path / "base", tmp_path / "run"
    build_tiny_qwen3(seed=3).save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    peft_model = get_peft_model(build_tiny_qwen3(seed=3), LoraConfig(r=4, target_modules="all-linear"))
    torch.manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # a non-trivial "trained" adapter
    peft_model.save_pretrained(run_dir / "export")
    OmegaConf.save(OmegaConf.create({"model": {"name": "tiny", "local_path": str(base_dir),
                                               "dtype": "float32"}}), run_dir / "config.yaml")
    small = ["eval.tasks=[micro_sort]", "eval.limit=3", "eval.max_gen_toks=6"]

    scores = script.evaluate(_compose(small + [f"run_dir={run_dir}"]), tmp_path / "unused")
    from_export = _completions(run_dir / "evals" / "micro-limit3")   # a limited one goes beside
    eval_cfg = _compose(small).eval
    assert evaluate_in_memory(peft_model, tok, eval_cfg, tmp_path / "live") == scores
    assert _completions(tmp_path / "live") == from_export
    # ... and the adapter matters: the bare base writes something else.
    script.evaluate(_compose(small + [f"model.local_path={base_dir}", "model.bundled=null"]),
                    tmp_path / "base_eval")
    assert _completions(tmp_path / "base_eval") != from_export


MICRO_DIR = Path(__file__).parents[1] / "geora" / "assets" / "micro"


@pytest.mark.skipif(not (MICRO_DIR / "config.json").is_file(), reason="micro weights not bundled")
def test_micro_eval_on_bundled_model_is_in_band(tmp_path):
    """`eval=micro` on the bundled model: the micro band (greedy math 20-60% on the 200 test
    items, each probe >= 80%), in seconds on the CPU, with identical scores on a rerun."""
    import time

    from omegaconf import OmegaConf

    from geora.evaluation import evaluate_in_memory
    from geora.models import load_model

    root = Path(__file__).parents[1] / "conf"
    micro = OmegaConf.load(root / "model" / "micro.yaml")
    micro.pop("defaults")   # (the schema's defaults fill the rest)
    model, tok = load_model(micro)
    from tests.conftest import eval_group

    eval_cfg = eval_group("micro")
    t0 = time.perf_counter()
    scores = evaluate_in_memory(model, tok, eval_cfg, tmp_path)
    wall = time.perf_counter() - t0
    assert 20.0 <= scores["micro_math"] <= 60.0, scores
    assert scores["micro_reverse"] >= 80.0 and scores["micro_sort"] >= 80.0, scores
    assert wall < 60, wall  # run.py evaluates twice inside a 5-minute budget
    n = json.loads((tmp_path / SUMMARY_FILE).read_text())["n_samples"]
    assert n["geora_micro_math"]["effective"] == 200 and n["geora_micro_sort"]["effective"] == 100
    rerun = OmegaConf.merge(eval_cfg, {"log_samples": False})
    assert evaluate_in_memory(model, tok, rerun, None) == scores


@pytest.mark.parametrize("thinking", [True, False])
def test_run_dir_scores_in_the_runs_chat_mode(tmp_path, monkeypatch, thinking):
    """With run_dir=, eval.enable_thinking follows the run's model config, not `model`'s
    (model=micro says null)."""
    from omegaconf import OmegaConf

    script = _evaluate_script()
    seen = {}
    monkeypatch.setattr(script, "_score", lambda settings, model_cfg, *a: seen.update(
        eval=settings.enable_thinking, model=model_cfg.enable_thinking) or {})
    run_dir = tmp_path / "run"
    (run_dir / "adapter").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"model": {"name": "tiny", "enable_thinking": thinking}}),
                   run_dir / "config.yaml")
    script.evaluate(_compose(["eval.tasks=[micro_sort]", f"run_dir={run_dir}"]), tmp_path / "unused")
    assert seen == {"eval": thinking, "model": thinking}


def test_base_record_scores_its_untrained_model(tmp_path):
    """A Base-row record (results.json method "base", no adapter/ nor export/) is scored as
    its model config: the same completions as the plain model, recorded in the run folder."""
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from conftest import build_tiny_qwen3
    from geora.training.rundir import BASE_METHOD, RunFolder

    script = _evaluate_script()
    base_dir = tmp_path / "base"
    build_tiny_qwen3(seed=5).save_pretrained(base_dir)
    AutoTokenizer.from_pretrained(MICRO_DIR).save_pretrained(base_dir)
    run = RunFolder(tmp_path / "run")
    run.write_config(OmegaConf.create({"model": {"name": "tiny", "local_path": str(base_dir),
                                                 "dtype": "float32"}}))
    small = ["eval.tasks=[micro_sort]", "eval.limit=3", "eval.max_gen_toks=6"]
    with pytest.raises(FileNotFoundError, match="neither export/ nor adapter/"):   # a trained run's
        script.evaluate(_compose(small + [f"run_dir={run.path}"]), tmp_path / "unused")
    run.write_results({"status": "finished", "method": BASE_METHOD, "model": "tiny", "train": None,
                       "eval": {}, "adapter": None, "export": None})
    scores = script.evaluate(_compose(small + [f"run_dir={run.path}"]), tmp_path / "unused")
    assert run.later_evaluations() == {"micro-limit3": scores}   # limited: beside, named
    script.evaluate(_compose(small + [f"model.local_path={base_dir}", "model.bundled=null"]),
                    tmp_path / "plain")
    assert _completions(run.evaluation("micro-limit3")) == _completions(tmp_path / "plain")
