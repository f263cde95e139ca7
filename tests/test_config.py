"""Every config group and experiment composes; bad names fail with Hydra's list of choices.

    .venv/bin/python -m pytest -q tests/test_config.py
"""
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GROUPS = ("model", "data", "method", "train", "eval", "logger")
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")


def names(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def make(overrides, hydra_cfg=False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra_cfg)


def test_default_is_the_micro_demo():
    cfg = make([])
    assert (cfg.model.name, cfg.data.name, cfg.method.name, cfg.device) == ("micro", "micro_math", "geora", "cpu")
    assert (cfg.train.name, cfg.eval.name) == ("micro", "micro")
    assert cfg.train.learning_rate == cfg.method.learning_rate  # one source for the LR


@pytest.mark.parametrize("group,name", [(g, n) for g in GROUPS for n in names(g)])
def test_every_group_option_composes_and_resolves(group, name):
    cfg = make([f"{group}={name}"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    # a real model's name follows its checkpoint (checkpoint=base, the default: <size>_base)
    has_checkpoints = group == "model" and (CONF / "model" / name).is_dir()
    assert cfg[group].name == (f"{name}_base" if has_checkpoints else name)


@pytest.mark.parametrize("name", [n for n in names("model") if (CONF / "model" / n).is_dir()])
def test_every_real_model_has_both_checkpoints(name):
    """checkpoint=base|post picks conf/model/<size>/<checkpoint>.yaml: the post-trained hub id
    under post, the pretrained one (or a refusal, for a size with no -Base release) under base."""
    base, post = (make([f"model={name}", f"checkpoint={c}"]) for c in ("base", "post"))
    assert (post.model.name, post.model.family) == (name, "post")
    assert (base.model.name, base.model.family) == (f"{name}_base", "base")
    assert base.model.arch == post.model.arch and base.model.hub_id != post.model.hub_id
    assert base.model.hub_id is None or base.model.hub_id.endswith(("-Base", "Qwen2.5-1.5B",
                                                                    "Llama-3.1-8B"))
    assert (base.model.hub_id is None) == bool(base.model.get("unavailable"))


def test_method_files_match_the_registry():
    geora = pytest.importorskip("geora")
    if not hasattr(geora, "available_methods"):
        pytest.skip("geora.available_methods not available")
    trained = {n for n in names("method")
               if OmegaConf.load(CONF / "method" / f"{n}.yaml").get("trains", True)}
    assert trained == set(geora.available_methods())
    assert set(names("method")) - trained == {"base"}   # the untrained model: evaluated only


@pytest.mark.parametrize("name", names("experiment"))
def test_every_experiment_composes(name):
    cfg = make([f"experiment={name}"], hydra_cfg=True)
    resolved = OmegaConf.to_container(cfg, resolve=False)
    assert resolved["hydra"]["sweeper"]["params"], f"experiment {name} sweeps nothing"
    for key in ("model", "data", "method", "train"):
        OmegaConf.to_container(cfg[key], resolve=True)
    # Each swept value names a config that exists (group choices) or a plain key.
    for key, values in resolved["hydra"]["sweeper"]["params"].items():
        if key in GROUPS:
            for v in str(values).split(","):
                assert v in names(key), f"experiment {name}: {key}={v} has no conf/{key}/{v}.yaml"


@pytest.mark.parametrize("launcher", names("hydra/launcher"))
def test_launchers_compose_and_import(launcher):
    cfg = make([f"hydra/launcher={launcher}"], hydra_cfg=True)
    assert get_class(cfg.hydra.launcher._target_)


def test_paper_experiment_uses_real_model_and_large_lr():
    cfg = make(["experiment=paper_main_qwen3_8b", "method=fullft"])
    assert (cfg.model.name, cfg.data.name) == ("qwen3_8b_base", "deepmath_103k")
    assert cfg.model.hub_id == "Qwen/Qwen3-8B-Base"     # the checkpoint the evidence chose
    assert cfg.train.learning_rate == cfg.method.learning_rate_large


@pytest.mark.parametrize("override,choice", [("method=nope", "geora"), ("model=nope", "qwen3_8b"),
                                             ("data=nope", "micro_math"),
                                             ("checkpoint=nope", "post")])
def test_unknown_name_exits_nonzero_with_choices(override, choice, tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), override, f"hydra.run.dir={tmp_path}"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode != 0
    assert "nope" in p.stderr and "Available options" in p.stderr and choice in p.stderr


def test_multirun_two_methods_and_a_failing_job(tmp_path):
    """Four jobs: geora and lora at rank 4 finish; at rank 999 (too big for the model, found
    from its config before anything loads) they stop at start, writing nothing into their
    folders, and do not stop the others; the sweep exits non-zero. (A failure after a job
    claimed its folder is recorded there: tests/test_reliability.py.)"""
    tiny = ["model.random_init=true", "model.bundled=null", "model.arch.hidden_size=64",
            "model.arch.num_hidden_layers=2", "model.arch.intermediate_size=128",
            "model.arch.head_dim=16", "train.max_steps=1", "train.num_generations=2",
            "train.prompts_per_step=2", "train.max_completion_length=4", "data.train_size=8",
            "data.test_size=2", "eval=none"]
    sweep = tmp_path / "sweep"
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", "method=geora,lora",
                        "method.rank=4,999", f"hydra.sweep.dir={sweep}", *tiny],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode != 0, "a failed job must make the sweep exit non-zero"
    import json
    results = {d.name: json.loads((d / "results.json").read_text()) for d in sweep.iterdir()
               if (d / "results.json").exists()}
    assert len(results) == 2, (sorted(results), p.stderr[-3000:])
    assert all("method.rank=4," in name + "," and res["status"] == "finished"
               for name, res in results.items())
    assert {r["method"] for r in results.values()} == {"geora", "lora"}
    bad = [d for d in sweep.iterdir() if "method.rank=999" in d.name]
    assert len(bad) == 2 and all(   # each named in its job's log, nothing of a run written
        "method.rank=999: module" in (d / "run.log").read_text()
        and not (d / "config.yaml").exists() and not (d / "results.json").exists() for d in bad)


@pytest.mark.parametrize("overrides,names", [
    (["model=qwen3_4b", "data=micro_math", "train=micro", "eval=none"],
     ["Qwen/Qwen3-4B-Base", "model.local_path"]),
    # the model's recipe evaluates the math benchmarks: their data is checked at start
    (["model=qwen3_4b"], ["Maxwell-Jia/AIME_2024", "eval.data_dir"]),
    (["data=deepmath_103k", "model.random_init=true", "model.bundled=null",
      "model.arch.hidden_size=64", "model.arch.num_hidden_layers=1", "model.arch.intermediate_size=64",
      "model.arch.head_dim=16"], ["zwhe99/DeepMath-103K", "data.local_path"])])
def test_unreachable_hub_fails_fast_with_one_message(overrides, names, tmp_path):
    import os
    import time

    t0 = time.time()
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), *overrides, f"hydra.run.dir={tmp_path}"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert p.returncode != 0
    assert all(n in p.stderr for n in names), p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert time.time() - t0 < 90  # seconds of imports, no retries
    assert not (tmp_path / "failure.json").exists()   # found at the start: nothing written


def test_eval_defaults_live_in_one_place():
    """geora.config.EvalConfig (every eval file's typed defaults, in Hydra's ConfigStore) and
    the EvalSettings dataclass (the library's) hold the same defaults, and every eval file
    starts from the former."""
    import dataclasses

    from geora.config import EvalConfig
    from geora.evaluation.settings import EvalSettings

    def defaults(cls):
        return {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING
                         else f.default) for f in dataclasses.fields(cls)}

    schema, library = defaults(EvalConfig), defaults(EvalSettings)
    own = {"name", "apply_chat_template", "enable_thinking",   # set per file / follow the model
           "overwrite"}                                       # scripts/evaluate.py's only
    assert set(schema) - own <= set(library)
    def plain(v):
        return tuple(v) if isinstance(v, (list, tuple)) else v

    assert {k: plain(v) for k, v in schema.items() if k not in own} == \
        {k: plain(library[k]) for k in schema if k not in own}
    for path in (ROOT / "conf" / "eval").glob("*.yaml"):
        assert "/schema/eval@_here_" in path.read_text(), path.name


@pytest.mark.parametrize("group,line", [
    ("eval", "temprature: 0.7"),        # a key the schema does not have
    ("eval", "batch_size: many"),       # a value of the wrong type
    ("method", "rnak: 8"),
    ("method", "rank: eight"),
    ("model", "dtpye: float32"),
    ("model", "random_init: maybe"),
    ("data", "tset_size: 10"),
    ("data", "seed: first"),
])
def test_the_schemas_refuse_a_bad_group_file_at_composition(group, line, tmp_path):
    import shutil

    from hydra.errors import ConfigCompositionException

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / group / "typo.yaml").write_text(
        f"defaults:\n  - /schema/{group}@_here_\n  - _self_\nname: typo\n{line}\n")
    with pytest.raises(ConfigCompositionException) as err:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            compose("config", overrides=[f"{group}=typo"])
    assert line.split(":")[0] in str(err.value) + str(err.value.__cause__)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):   # the rest composes
        assert compose("config", overrides=["eval=micro"]).eval.batch_size == 200
