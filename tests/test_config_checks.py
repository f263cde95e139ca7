"""Every setting with a valid range is checked before anything loads, with one line naming
it (its schema in geora.config.sections, applied by RunSettings.from_config, which
pipeline.train calls first).

    .venv/bin/python -m pytest -q tests/test_config_checks.py
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from geora.training.settings import RunSettings
from tests.conftest import compose_run as make

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")


@pytest.mark.parametrize("experiment", [None] + sorted(
    p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_shipped_configs_pass(experiment):
    RunSettings.from_config(make(*([f"experiment={experiment}"] if experiment else [])))
    RunSettings.from_config(make("train=paper", "method=fullft"))


@pytest.mark.parametrize("override,message", [
    ("train.max_steps=-3", "train.max_steps=-3: expected an integer >= 1"),
    ("train.max_steps=0", "train.max_steps=0"),
    ("train.learning_rate=0", "train.learning_rate=0.0: expected a number > 0"),
    ("train.learning_rate=-1e-4", "train.learning_rate=-0.0001"),
    ("train.num_generations=1", "train.num_generations=1: expected an integer >= 2"),
    ("train.prompts_per_step=0", "train.prompts_per_step=0"),
    ("train.gradient_accumulation_steps=0", "train.gradient_accumulation_steps=0"),
    ("train.max_completion_length=0", "train.max_completion_length=0"),
    ("train.temperature=0", "train.temperature=0"),
    ("train.top_p=1.5", r"train.top_p=1.5: expected a number in \(0, 1\]"),
    ("train.top_p=0", "train.top_p=0"),
    ("train.save_steps=0", "train.save_steps=0"),
    ("train.logging_steps=-1", "train.logging_steps=-1"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1"),
    ("train.warmup_steps=-1", "train.warmup_steps=-1"),
    ("train.beta=-0.1", "train.beta=-0.1"),
    ("train.epsilon=0", "train.epsilon=0"),
    ("train.num_iterations=0", "train.num_iterations=0"),
    ("train.save_total_limit=0", "train.save_total_limit=0"),
    ("method.rank=0", "method.rank=0"),
    ("method.rank=-4", "method.rank=-4"),
    ("method.rho=1.0", r"method.rho=1.0: expected a number in \(0, 1\)"),
    ("method.rho=0", "method.rho=0"),
    ("method.alpha=-2", "method.alpha=-2"),
    ("method.learning_rate=0", "method.learning_rate=0"),
    ("data.train_size=0", "data.train_size=0"),
    ("data.test_size=-1", "data.test_size=-1"),
    ("seed=-1", "seed=-1"),
    ("seed=0.5", "seed=0.5: expected an integer >= 0"),        # the seed reaches the init
    ("seed=abc", "seed='abc': expected an integer >= 0"),
    ("+method.options.seed=0.5", "method.options: method 'geora': seed=0.5: must be an int"),
    ("cpu_threads=0", "cpu_threads=0"),
    ("eval.limit=0", "eval.limit=0"),
    ("eval.batch_size=0", "eval.batch_size=0"),
    ("eval.max_gen_toks=-5", "eval.max_gen_toks=-5"),
    ("model.dtype=float8", "model.dtype.*'float8'"),
])
def test_bad_setting_is_named_before_anything_loads(override, message, tmp_path, monkeypatch):
    from geora.training import pipeline

    cfg = make(override)
    with pytest.raises(ValueError, match=message):
        RunSettings.from_config(cfg)
    # pipeline.train refuses it first: no model is loaded, the run folder stays empty
    monkeypatch.setattr(pipeline, "load", lambda run: pytest.fail("loaded a model"))
    with pytest.raises(ValueError, match=message):
        pipeline.train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_every_ruled_key_exists_in_the_configs():
    """Every schema field with a rule (geora.config.sections) is a key of the composed
    config, and a rule is really applied: each one refuses a value out of its range."""
    import dataclasses

    from omegaconf import OmegaConf

    from geora.config import SCHEMAS, Section

    cfg, checked = make(), 0
    for group, schema in SCHEMAS.items():
        if not issubclass(schema, Section):
            continue   # eval: geora.evaluation.EvalSettings checks it
        for f in dataclasses.fields(schema):
            if "valid" not in f.metadata:
                continue
            assert OmegaConf.select(cfg, f"{group}.{f.name}", default="<none>") != "<none>"
            bad = "not-a-value" if not hasattr(f.metadata["valid"], "integer") else -1.5
            raw = OmegaConf.to_container(cfg[group], resolve=True)
            with pytest.raises(ValueError, match=f"{group}.{f.name}="):
                schema.of({**raw, f.name: bad})
            checked += 1
    assert checked >= 40


def test_run_py_refuses_negative_max_steps_in_one_line(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "train.max_steps=-3",
                        f"hydra.run.dir={tmp_path}"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert p.returncode != 0
    assert "train.max_steps=-3: expected an integer >= 1" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "train_log.jsonl").exists()


@pytest.mark.parametrize("override", ["train.max_steps=2.5", "train.max_steps=true",
                                      "train.learning_rate=fast", "method.rank=eight"])
def test_a_value_of_the_wrong_type_is_named_at_composition(override):
    """The typed schemas (geora.config) refuse it before any check of ours runs."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as err:
        make(override)
    assert override.split("=")[0] in str(err.value) + str(err.value.__cause__)


def test_a_run_is_checked_once_into_typed_sections():
    """RunSettings holds typed, checked sections; a config built by hand (no Hydra schema)
    gets the same checks, a misspelt key named with the group's settings."""
    from omegaconf import OmegaConf

    from geora.config import (AnalysisSettings, DataConfig, MethodConfig, ModelConfig,
                              TrainConfig)
    from geora.evaluation import EvalSettings

    s = RunSettings.from_config(make("++train.shuffle_dataset=false"))
    assert [type(x) for x in (s.model, s.data, s.method, s.train, s.eval, s.analysis)] == [
        ModelConfig, DataConfig, MethodConfig, TrainConfig, EvalSettings, AnalysisSettings]
    assert s.train.trl_kwargs()["shuffle_dataset"] is False                   # TRL's, by name
    assert "prompts_per_step" not in s.train.trl_kwargs()                     # the project's
    raw = OmegaConf.to_container(make(), resolve=True)
    raw["data"]["tset_size"] = 10
    with pytest.raises(ValueError, match=r"^unknown data setting tset_size \(data 'micro_math'\)"):
        RunSettings.from_config(OmegaConf.create(raw))
