"""What a run needs is checked at its start, and the Base row is one evaluation.

- Bad input (a task the run cannot evaluate, data without the columns its reward reads, code
  execution without opt-in) stops before anything is written: the run folder stays empty
  (a failure is recorded only once a run has claimed its folder: tests/test_reliability.py).
- `method=base` evaluates the untrained model once (no preparation, no training) and writes
  the record analysis.tables reads as the Base row.
- Domain data flows through the schema converters (data.schema, data.files); evaluation
  settings take per-task sample counts; extra readings (IFEval's four) are recorded.

    .venv/bin/python -m pytest -q tests/test_run_inputs.py
"""
from __future__ import annotations

from pathlib import Path

import pytest

from geora.execution import CodeExecutionRefused
from geora.training.pipeline import train
from tests.conftest import compose_run as config

ROOT = Path(__file__).resolve().parents[1]
TRAIN_FIXTURES = ROOT / "tests" / "fixtures" / "train"
EVAL_FIXTURES = ROOT / "tests" / "fixtures" / "eval"
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")
TINY = ["model.random_init=true", "model.bundled=null", "model.arch.hidden_size=64",
        "model.arch.num_hidden_layers=2", "model.arch.intermediate_size=128",
        "model.arch.head_dim=16", "train.max_steps=1", "train.num_generations=2",
        "train.prompts_per_step=2", "train.max_completion_length=4", "data.train_size=4",
        "data.test_size=2"]


def fails_at_start(cfg, run_dir: Path, exc, match: str) -> None:
    """The run raises `exc` naming the setting and writes nothing into its folder."""
    with pytest.raises(exc, match=match):
        train(cfg, run_dir)
    assert not run_dir.exists() or list(run_dir.iterdir()) == []


@pytest.mark.parametrize("overrides,exc,match", [
    # a task the run cannot evaluate: its code would run unasked, its data is not there,
    # it is scored by log-likelihood in thinking mode, or it is no task at all
    (["eval=code", f"eval.data_dir={EVAL_FIXTURES}"], CodeExecutionRefused,
     r"\['mbpp', 'humaneval'\].*eval.allow_code_execution=true"),
    (["eval=paper_math", f"eval.data_dir={TRAIN_FIXTURES}"], FileNotFoundError,
     r"task 'aime24': eval.data_dir=.* has no aime24.jsonl"),
    (["eval.tasks=[nope]"], ValueError, r"unknown evaluation task 'nope' \(in eval.tasks\)"),
    # data without the columns its reward reads
    (["data=deepmath_103k", f"data.local_path={TRAIN_FIXTURES / 'deepmath_103k.jsonl'}",
      "data.test_size=0", "train.rewards=[code]", "train.allow_code_execution=true", "eval=none"],
     ValueError, r"train.rewards has 'code', which reads column\(s\) \['tests', 'test_format'\] "
                 r"that data 'deepmath_103k' lacks"),
    # code execution without opt-in
    (["data=kodcode_light_rl_10k", f"data.local_path={TRAIN_FIXTURES / 'kodcode_light_rl_10k.jsonl'}",
      "data.test_size=0", "eval=none"], CodeExecutionRefused,
     r"train.rewards \['code'\].*train.allow_code_execution=true"),
    # a base job with nothing to evaluate
    (["method=base", "eval=none"], ValueError, r"method=base only evaluates.*eval=none has no tasks"),
])
def test_bad_input_stops_at_start_writing_nothing(overrides, exc, match, tmp_path):
    fails_at_start(config(*TINY, *overrides), tmp_path / "job", exc, match)


def test_a_paper_experiment_without_the_code_opt_in_stops_at_start(tmp_path):
    cfg = config("experiment=paper_main_qwen3_8b", "method=lora", *TINY,
                 f"eval.data_dir={EVAL_FIXTURES}", f"data.local_path={TRAIN_FIXTURES}")
    fails_at_start(cfg, tmp_path / "method=lora", CodeExecutionRefused,
                   r"\['humaneval'\] run model-written Python.*eval.allow_code_execution=true")


def test_base_job_evaluates_once_and_is_the_tables_base_row(tmp_path):
    from analysis.tables import collect_runs
    from geora.training.rundir import BASE_METHOD, BEFORE, RunFolder

    cfg = config("method=base", *TINY, "eval.limit=2", "eval.max_gen_toks=4", "eval.tasks=[micro_math]")
    res = train(cfg, tmp_path / "method=base")
    run = RunFolder(tmp_path / "method=base")
    assert (res["method"], res["train"], res["adapter"], res["export"]) == (BASE_METHOD, None, None, None)
    assert set(res["eval"]) == {"micro_math"} and res["eval"] == res["eval_before"]
    assert run.evaluation_scores(BEFORE) == res["eval"]
    # nothing was prepared, trained or saved
    assert not run.checkpoints.exists() and not run.adapter.exists() and not run.log.exists()
    rows = collect_runs(tmp_path)
    assert list(rows["method"]) == ["base"] and rows["eval.micro_math"][0] == res["eval"]["micro_math"]


def test_load_data_goes_through_the_schema_and_the_file_selection(tmp_path):
    from geora.data.loaders import load_data

    # a MedQA-like folder: train.json in JSON lines (as the hub data set ships it), and a
    # test file that must never be read for training
    folder = tmp_path / "medqa"
    folder.mkdir()
    (folder / "train.json").write_text((TRAIN_FIXTURES / "medqa.jsonl").read_text())
    (folder / "test.json").write_text('{"not": "a medqa record"}\n')
    cfg = config("data=medqa", f"data.local_path={folder}").data
    train_rows, _ = load_data(cfg)
    assert sorted(train_rows["final_answer"]) == ["A", "B", "C", "D"]   # (shuffled, seeded)
    user = next(r for r in train_rows if r["id"] == "fixture-train-1")["prompt"][-1]["content"]
    assert "\nA. Hashimoto thyroiditis\nB. Graves disease" in user and user.endswith("within \\boxed{}.")
    with pytest.raises(ValueError, match="lacks required field 'sent1'"):
        load_data(config("data=medqa", f"data.local_path={folder}", "data.files=[test.json]").data)
    with pytest.raises(FileNotFoundError, match=r"data.files pattern 'dev.json' matches no data file"):
        load_data(config("data=medqa", f"data.local_path={folder}", "data.files=[dev.json]").data)
    code = load_data(config("data=kodcode_light_rl_10k", "data.test_size=0",
                            f"data.local_path={TRAIN_FIXTURES / 'kodcode_light_rl_10k.jsonl'}").data)[0]
    assert set(code["test_format"]) == {"pytest"} and "prompt_text" not in code.column_names


def test_repeats_per_task_and_its_errors():
    from geora.evaluation import EvalSettings, build_specs

    settings = EvalSettings.from_config(config("eval=paper_ablation", f"eval.data_dir={EVAL_FIXTURES}").eval)
    specs, _sources, _offline = build_specs(settings)
    repeats = {s["group"]: s["task"][0].get("repeats") for s in specs}
    assert repeats == {"geora:aime24": 8, "geora:aime25": 8, "geora:math500": 2, "geora:olymmath": 4}
    plain = EvalSettings.from_config(config("eval=paper_math", f"eval.data_dir={EVAL_FIXTURES}").eval)
    assert all("repeats" not in s["task"][0] for s in build_specs(plain)[0])   # each task's own k
    with pytest.raises(ValueError, match=r"eval.repeats.mmlu=2 .*one sample per item"):
        EvalSettings.from_config({"tasks": ["mmlu"], "repeats": {"mmlu": 2}})
    with pytest.raises(ValueError, match=r"eval.repeats.math500=0 .*integer >= 1"):
        EvalSettings.from_config({"tasks": ["math500"], "repeats": {"math500": 0}})
    with pytest.raises(ValueError, match=r"unknown evaluation task 'math5000'"):
        EvalSettings.from_config({"tasks": ["math500"], "repeats": {"math5000": 2}})


def test_extra_readings_are_recorded_beside_the_headline(tmp_path):
    from geora.evaluation.harness import extra_scores_from_results, scores_from_results

    results = {"results": {"ifeval": {"prompt_level_strict_acc,none": 0.5,
                                      "prompt_level_loose_acc,none": 0.6,
                                      "inst_level_strict_acc,none": 0.7,
                                      "inst_level_loose_acc,none": 0.8}},
               "n-samples": {"ifeval": {"effective": 10}}}
    sources = {"ifeval": ["ifeval"]}
    assert scores_from_results(results, sources) == {"ifeval": 50.0}
    extra = extra_scores_from_results(results, sources)["ifeval"]
    assert extra == pytest.approx({"prompt_level_loose_acc,none": 60.0,
                                   "inst_level_strict_acc,none": 70.0,
                                   "inst_level_loose_acc,none": 80.0})


@pytest.mark.parametrize("override,match", [
    ("method.rank=200", r"^method.rank=200: module 'model.layers.0.self_attn.q_proj' of model "
                        r"'micro' has shape \(192, 192\), which holds at most rank 192"),
    ("method.target_modules=[q_prj]", r"^method.target_modules=\['q_prj'\] matches no linear "
                                      r"module.*'q_proj'"),
])
def test_a_method_that_does_not_fit_the_model_stops_before_the_load(tmp_path, monkeypatch,
                                                                    override, match):
    """Found from the model's config alone (meta device), not after loading its weights."""
    from geora.training import pipeline

    monkeypatch.setattr(pipeline, "load", lambda run: pytest.fail("loaded the model"))
    fails_at_start(config(override), tmp_path / "run", ValueError, match)
    from geora.training.preflight import check_method_fits_model
    from geora.training.settings import RunSettings

    # the largest rank every target holds (k_proj: 96 x 192) passes; one more does not
    check_method_fits_model(RunSettings.from_config(config("method.rank=96")))
    with pytest.raises(ValueError, match=r"method.rank=97: module '.*k_proj'"):
        check_method_fits_model(RunSettings.from_config(config("method.rank=97")))
