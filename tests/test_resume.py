"""Resume after SIGKILL and refusal to overwrite a finished run (subprocesses of run.py).

    .venv/bin/python -m pytest -q tests/test_resume.py
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import torch

import geora
from tests.conftest import build_tiny_qwen3
from geora.training.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ["model.random_init=true", "model.bundled=null", "model.arch.hidden_size=64",
              "model.arch.num_hidden_layers=2", "model.arch.intermediate_size=128",
              "model.arch.head_dim=16", "model.arch.num_attention_heads=4"]
TINY_TRAIN = ["train.num_generations=2", "train.prompts_per_step=2", "train.max_completion_length=6",
              "train.logging_steps=1", "data.train_size=64", "data.test_size=2", "eval=none"]



def command(run_dir, *extra):
    return [sys.executable, str(ROOT / "run.py"), "method=geora", "method.rank=4",
            f"hydra.run.dir={run_dir}", *TINY_MODEL, *TINY_TRAIN, *extra]


def env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_residual_preparation_is_deterministic():
    """Resuming rebuilds W_res by preparing again: it must be the same bits."""
    bases = []
    for _ in range(2):
        m = geora.prepare_model(build_tiny_qwen3(seed=0), "geora", rank=4)
        bases.append({n: p.detach().clone() for n, p in m.named_parameters() if not p.requires_grad})
    assert bases[0].keys() == bases[1].keys()
    assert all(torch.equal(bases[0][n], bases[1][n]) for n in bases[0])
    other = geora.prepare_model(build_tiny_qwen3(seed=1), "geora", rank=4)
    assert any(not torch.equal(p, bases[0][n]) for n, p in other.named_parameters() if n in bases[0])


STEPS = 60


def test_sigkill_then_resume_then_refuse(tmp_path):
    run_dir = tmp_path / "run"
    # Enough steps after the first checkpoint that the kill always lands mid-run, however
    # fast the machine (tiny steps take a few ms each).
    cmd = command(run_dir, f"train.max_steps={STEPS}", "train.save_steps=3")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    ckpt = run_dir / "checkpoints" / "checkpoint-3" / "trainer_state.json"
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    assert ckpt.exists(), "no checkpoint within the deadline"
    time.sleep(0.3)  # let the checkpoint folder finish (trainer_state.json is written last)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "results.json").exists()
    steps_before = max(r["step"] for r in map(json.loads, (run_dir / "train_log.jsonl").read_text().splitlines()))
    assert steps_before < STEPS

    # The same command continues from the last checkpoint and ends at the same step count.
    done = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "finished" and res["train"]["steps"] == STEPS
    assert res["train"]["resumed_from"] and "checkpoint-" in res["train"]["resumed_from"]
    assert res["train"]["frozen_unchanged"] is True  # loading the checkpoint kept W_res intact
    logged = sorted({json.loads(l)["step"] for l in (run_dir / "train_log.jsonl").read_text().splitlines()})
    assert logged[-1] == STEPS

    # A finished run is never overwritten silently.
    stamp = (run_dir / "results.json").stat().st_mtime_ns
    again = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode != 0
    assert "finished run" in again.stderr and str(run_dir) in again.stderr
    assert "train.overwrite=true" in again.stderr
    assert (run_dir / "results.json").stat().st_mtime_ns == stamp


def test_unfinished_run_with_another_config_is_refused(tmp_path):
    from hydra import compose, initialize_config_dir

    from geora.training.claim import prepare_run_dir
    from geora.fileio import atomic_write_json
    from geora.training.rundir import RunExistsError, run_state

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["train.max_steps=5"])
        other = compose("config", overrides=["train.max_steps=5", "method.learning_rate=1e-3"])
        same_but_free = compose("config", overrides=["train.max_steps=5", "device=auto"])
        fresh = compose("config", overrides=["train.max_steps=5", "method.learning_rate=1e-3",
                                             "train.overwrite=true"])
    cfg, other, same_but_free, fresh = map(RunSettings.from_config,
                                           (cfg, other, same_but_free, fresh))
    assert prepare_run_dir(cfg, tmp_path) is None and run_state(tmp_path) == "partial"
    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"   # something to resume
    checkpoint.mkdir(parents=True)
    atomic_write_json(checkpoint / "trainer_state.json", {"global_step": 2})
    with pytest.raises(RunExistsError, match=r"another config \(method.learning_rate: 0.0005 -> 0.001"):
        prepare_run_dir(other, tmp_path)
    assert prepare_run_dir(same_but_free, tmp_path) == str(checkpoint)  # device may change
    atomic_write_json(tmp_path / "results.json", {"status": "finished"})
    with pytest.raises(RunExistsError, match="finished run"):
        prepare_run_dir(cfg, tmp_path)
    assert prepare_run_dir(fresh, tmp_path) is None and not (tmp_path / "results.json").exists()


def test_a_run_started_before_a_schema_gained_a_key_still_resumes(tmp_path):
    """config.yaml written before model.stop_tokens / data.task existed: those keys read as
    their schema defaults, so the same command resumes instead of being refused."""
    from omegaconf import OmegaConf

    from geora.fileio import atomic_write_json
    from geora.training.claim import prepare_run_dir
    from geora.training.rundir import RunExistsError, RunFolder
    from tests.conftest import compose_run

    settings = RunSettings.from_config(compose_run("train.max_steps=5"))
    assert prepare_run_dir(settings, tmp_path) is None
    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    atomic_write_json(checkpoint / "trainer_state.json", {"global_step": 2})
    old = OmegaConf.load(tmp_path / RunFolder.CONFIG)
    del old.model["stop_tokens"], old.data["task"]
    OmegaConf.save(old, tmp_path / RunFolder.CONFIG)
    assert prepare_run_dir(settings, tmp_path) == str(checkpoint)
    old.model["stop_tokens"] = ["<|im_end|>"]          # a real difference is still refused
    OmegaConf.save(old, tmp_path / RunFolder.CONFIG)
    with pytest.raises(RunExistsError, match=r"model.stop_tokens: \['<\|im_end\|>'\] -> \[\]"):
        prepare_run_dir(settings, tmp_path)
