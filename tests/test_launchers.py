"""Multi-process runs and launchers: `accelerate launch` with 2 CPU processes running run.py
(one results.json, the same trained parameters on both processes, every file written once),
a 2-job sweep through hydra's submitit_local launcher, and the accelerate configs load.

Two CPU processes need accelerate's torchrun launcher (`--multi_gpu`, which on a machine
without GPUs starts the processes and leaves the device to the program: run.py's device=cpu
makes the Trainer join them with gloo). `accelerate launch --cpu --num_processes 2` starts
ONE process in accelerate 1.15 (its simple launcher; several CPU processes only through MPI,
`--mpirun_hostfile`).

    .venv/bin/python -m pytest -q tests/test_launchers.py            (-m slow: the sweep)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import geora
from geora.distributed import trainable_checksum
from geora.models import ASSETS_DIR

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")
TINY = ["train.max_steps=2", "train.num_generations=4", "train.prompts_per_step=2",
        "train.max_completion_length=8", "train.save_steps=100", "data.train_size=16",
        "data.test_size=2", "eval=none", "eval_before=false", "method.rank=4"]


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------------ accelerate configs
@pytest.mark.parametrize("path", sorted((ROOT / "conf" / "accelerate").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_accelerate_config_loads(path):
    """accelerate's own loader (what `accelerate launch --config_file` reads); the DeepSpeed
    ones parse without deepspeed installed."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes >= 1 and config.mixed_precision == "bf16"
    assert config.distributed_type.value in ("MULTI_GPU", "DEEPSPEED")
    if config.distributed_type.value == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] in (2, 3)
    else:
        assert not config.deepspeed_config


# --------------------------------------------------------------------- one process's share
def compose_tiny(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=TINY + list(overrides))


def test_only_the_main_process_opens_the_run_folder(tmp_path, monkeypatch):
    """Rank 1 of 2 writes nothing at start (no config.yaml / overrides.yaml race, no clearing
    of a finished run twice); rank 0 writes both."""
    from geora.training import pipeline

    monkeypatch.setattr(pipeline, "wait_for_everyone", lambda **_: None)
    cfg = compose_tiny()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    settings = pipeline.check(cfg)
    run = pipeline.start(settings, tmp_path / "run", ["x=1"])
    assert run.resume_from is None and list((tmp_path / "run").iterdir()) == []
    monkeypatch.setenv("RANK", "0")
    pipeline.start(settings, tmp_path / "run", ["x=1"])
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml",
                                                                    "overrides.yaml"]


def test_checksum_sees_one_changed_parameter():
    model = geora.prepare_model(geora.models.tiny_model(), "lora", rank=4)
    before = trainable_checksum(model)
    with torch.no_grad():
        next(p for p in model.parameters() if p.requires_grad).view(-1)[0] += 1e-6
    assert trainable_checksum(model) != before


# ---------------------------------------------------------------------- two processes
# Rewards that vary within groups on the micro model, so that the adapters really move.
MOVING = ["train.rewards=[accuracy,format]", "train.max_completion_length=24",
          "train.prompts_per_step=4"]


def test_accelerate_two_processes(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", str(ROOT / "run.py"), f"hydra.run.dir={run_dir}",
           "device=cpu", *TINY, *MOVING]
    res = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("results.json")] == [
        "run/results.json"]
    results = json.loads((run_dir / "results.json").read_text())
    train = results["train"]
    assert results["status"] == "finished" and train["steps"] == 2
    assert train["processes"] == 2 and train["processes_agree"] is True
    assert len(set(train["process_checksums"])) == 1
    # the saved adapter holds exactly what both processes trained
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(ASSETS_DIR / "micro", dtype=torch.float32)
    reloaded = geora.load_adapter(base, run_dir / "adapter", is_trainable=True)
    assert trainable_checksum(reloaded) == train["process_checksums"][0]
    assert max(float(u.delta.abs().max()) for u in geora.weight_updates(reloaded)) > 0  # moved
    # every record logged once: one line per step, then the Trainer's closing summary
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    assert len(log) == 3 and "train_runtime" in log[-1]
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == sorted(["adapter", "analysis", "checkpoints", "config.yaml", "export", "overrides.yaml",
                            "results.json", "run.log", "train_log.jsonl"]), names
    assert not list(run_dir.rglob(".*tmp*"))                         # no temporary leftovers


# ------------------------------------------------------------------ submitit_local sweep
@pytest.mark.slow
def test_submitit_local_sweep_runs_two_jobs(tmp_path):
    """`-m hydra/launcher=submitit_local`: each job runs in its own submitit subprocess."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=submitit_local",
           f"hydra.sweep.dir={sweep}", "hydra.launcher.timeout_min=10", "method=geora,lora",
           "model.random_init=true", "model.bundled=null", "model.arch.hidden_size=64",
           "model.arch.num_hidden_layers=2", "model.arch.intermediate_size=128",
           "model.arch.head_dim=16", *TINY]
    res = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    results = [json.loads(p.read_text()) for p in sorted(sweep.rglob("results.json"))]
    assert sorted(r["method"] for r in results) == ["geora", "lora"]
    assert all(r["status"] == "finished" and r["train"]["steps"] == 2 for r in results)
    # submitit's own folder: one log pair per job (the jobs ran through it, not in-process)
    logs = sorted(p.name for p in (sweep / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2, logs


def test_submitit_local_launcher_config_instantiates():
    """The fast share of the sweep test: conf/hydra/launcher/submitit_local.yaml composes and
    builds hydra-submitit-launcher's LocalLauncher."""
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=submitit_local"],
                      return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "LocalLauncher"
    assert launcher.params["timeout_min"] == cfg.hydra.launcher.timeout_min
