"""The run folder: one object knows the layout; a run holds exactly one results.json; later
evaluations land where the tables find them; clearing removes everything a run wrote; folders
in the earlier layout still read.

    .venv/bin/python -m pytest -q tests/test_rundir.py
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from analysis.tables import collect_runs, summary_table
from geora.evaluation.harness import SUMMARY_FILE
from geora import rewards
from geora.training.rundir import AFTER, BEFORE, RunFolder
from geora.training.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")
TINY = ["method=geora", "method.rank=4", "model.random_init=true", "model.bundled=null",
        "model.arch.hidden_size=64", "model.arch.num_hidden_layers=2",
        "model.arch.intermediate_size=128", "model.arch.head_dim=16", "train.max_steps=2",
        "train.num_generations=2", "train.prompts_per_step=2",
        "train.max_completion_length=4", "train.save_steps=100", "data.train_size=8",
        "data.test_size=2", "train.rewards=[test_length]"]
SMALL_EVAL = ["eval.tasks=[micro_sort]", "eval.limit=1", "eval.max_gen_toks=2"]


@pytest.fixture(autouse=True)
def test_reward(monkeypatch):
    monkeypatch.setitem(rewards.REWARDS, "test_length",
                        lambda completions, **_: [len(rewards.completion_text(c)) / 10.0
                                                  for c in completions])


def _compose(name, overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(name, overrides=overrides)


def _evaluate_script():
    spec = importlib.util.spec_from_file_location("evaluate_script",
                                                  ROOT / "scripts" / "evaluate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_a_run_its_later_evaluation_the_table_and_clearing(tmp_path):
    from geora.training.pipeline import train

    run = RunFolder(tmp_path / "run")
    train(_compose("config", TINY + SMALL_EVAL), run.path, overrides=["method=geora"])
    assert [p.relative_to(run.path).as_posix() for p in run.path.rglob("results.json")] == \
        ["results.json"]                                  # exactly one, at the top
    for role in ("config", "overrides", "log", "checkpoints", "adapter", "export", "results"):
        assert run.layout()[role].exists(), role
    for name in (BEFORE, AFTER):
        assert (run.evaluation(name) / SUMMARY_FILE).is_file(), name
    results = run.read_results()
    assert run.evaluation_scores(AFTER) == results["eval"] and set(results["eval"]) == {"micro_sort"}
    assert run.evaluation_scores(BEFORE) == results["eval_before"]

    # scripts/evaluate.py run_dir=... records its evaluation in the run folder ...
    later = ["eval=micro", "eval.tasks=[micro_reverse]", "eval.limit=1", "eval.max_gen_toks=2",
             f"run_dir={run.path}"]
    scores = _evaluate_script().evaluate(_compose("evaluate", later), tmp_path / "unused")
    assert not (tmp_path / "unused").exists()
    assert run.later_evaluations() == {"micro-limit1": scores}   # limited: its own folder
    # ... where the tables find it: its own columns, and eval.<task> for a new task
    row = collect_runs(tmp_path).iloc[0]
    assert row["evals.micro-limit1.micro_reverse"] == scores["micro_reverse"]
    assert row["eval.micro_reverse"] == scores["micro_reverse"]
    assert row["eval.micro_sort"] == results["eval"]["micro_sort"]       # training's stays
    assert "evals.micro-limit1.micro_reverse" in summary_table(collect_runs(tmp_path)).columns
    with pytest.raises(ValueError, match="reserved"):
        _evaluate_script().evaluate(_compose("evaluate", later + ["eval.name=after"]), tmp_path)

    (run.path / "run.log").write_text("hydra's own log\n")
    run.clear()
    assert sorted(p.name for p in run.path.iterdir()) == ["run.log"]
    assert run.state() == "new"


def _legacy_run(root: Path) -> Path:
    """A run folder as written before the layout had evals/ (by hand, in that format)."""
    run = root / "micro" / "geora" / "seed0"
    for sub in ("eval", "eval_before", "evaluate/paper_ood", "checkpoints", "adapter"):
        (run / sub).mkdir(parents=True)
    (run / "results.json").write_text(json.dumps(
        {"status": "finished", "method": "geora", "model": "micro", "data": "micro_math",
         "seed": 0, "train": {"reward_end": 0.5}, "eval_before": {"micro_math": 30.0},
         "eval": {"micro_math": 40.0}, "env": {}}))
    (run / "config.yaml").write_text("train:\n  learning_rate: 0.0005\nmethod:\n  rank: 16\n")
    (run / "eval_before.json").write_text(json.dumps({"micro_math": 30.0}))
    for sub, scores in (("eval", {"micro_math": 40.0}), ("eval_before", {"micro_math": 30.0}),
                        ("evaluate/paper_ood", {"humaneval": 12.5})):
        (run / sub / "results.json").write_text(json.dumps({"scores": scores, "model": {}}))
    return run


def test_folders_in_the_earlier_layout_still_read_and_clear(tmp_path):
    path = _legacy_run(tmp_path)
    standalone = tmp_path / "evaluate" / "micro" / "micro"   # scripts/evaluate.py's own folder
    standalone.mkdir(parents=True)
    (standalone / "results.json").write_text(json.dumps({"scores": {"micro_math": 20.0}}))

    assert [r.path for r in RunFolder.find(tmp_path)] == [path]   # one run, no evaluation
    run = RunFolder(path)
    assert run.evaluation_scores(BEFORE) == {"micro_math": 30.0}
    assert run.later_evaluations() == {"paper_ood": {"humaneval": 12.5}}
    runs = collect_runs(tmp_path)
    assert len(runs) == 1 and runs.iloc[0]["eval.humaneval"] == 12.5
    assert runs.iloc[0]["eval.micro_math"] == 40.0 and runs.iloc[0]["lr"] == 0.0005
    run.clear()
    assert list(path.iterdir()) == []


def test_prepare_run_dir_clears_a_finished_run_entirely_on_overwrite(tmp_path):
    from geora.training.claim import prepare_run_dir

    path = _legacy_run(tmp_path)
    cfg = _compose("config", ["train.overwrite=true"])
    assert prepare_run_dir(RunSettings.from_config(cfg), path) is None
    assert sorted(p.name for p in path.iterdir()) == ["config.yaml"]   # the new run's config
    assert OmegaConf.load(path / "config.yaml").train.overwrite is True


def test_evaluation_names_are_plain_folder_names(tmp_path):
    run = RunFolder(tmp_path)
    for bad in ("", "../x", ".hidden"):
        with pytest.raises(ValueError, match="plain folder name"):
            run.evaluation(bad)
    with run.new_evaluation("x") as tmp:
        (tmp / SUMMARY_FILE).write_text(json.dumps({"scores": {"t": 1.0}}))
        assert not run.evaluation("x").exists()           # appears only when complete
    assert run.evaluation_scores("x") == {"t": 1.0}
    with pytest.raises(RuntimeError):
        with run.new_evaluation("x") as tmp:
            (tmp / SUMMARY_FILE).write_text(json.dumps({"scores": {"t": 2.0}}))
            raise RuntimeError("evaluation crashed")
    assert run.evaluation_scores("x") == {"t": 1.0}       # the complete one is kept


def test_weight_analysis_writes_into_the_run_folder(tmp_path, capsys):
    """analysis.weights reads the run through RunFolder and the exact updates through
    geora.weight_updates, and writes analysis/weights.csv (atomically, one row a matrix)."""
    import pandas as pd
    import torch

    import geora
    from analysis.weights import main
    from geora.models import load_model

    cfg = _compose("config", TINY)
    run = RunFolder(tmp_path / "run")
    run.write_config(cfg)
    model = geora.prepare_model(load_model(cfg.model)[0], "geora", rank=4)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    geora.save_adapter(model, run.adapter)
    main(["--run", str(run.path), "--k", "4"])
    table = pd.read_csv(run.analysis / "weights.csv")
    assert len(table) == 14 and (table["delta_norm"] > 0).all()
    assert [p.name for p in run.analysis.iterdir()] == ["weights.csv"]   # no temporary left


def test_resume_skips_a_checkpoint_the_kill_cut_short(tmp_path):
    """SIGKILL while the Trainer saves leaves checkpoint-N without trainer_state.json (it is
    written last): the run resumes from the newest complete one instead of failing."""
    run = RunFolder(tmp_path)
    assert run.last_checkpoint() is None
    for step, complete in ((3, True), (12, True), (6, False), (15, False)):
        folder = run.checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_text("x")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (run.checkpoints / "checkpoint-99.tmp").mkdir()
    assert run.last_checkpoint() == str(run.checkpoints / "checkpoint-12")
