"""Any local model by its path (model=hf), cpu_threads=auto, and an offline start that names
every missing resource in one message."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from geora.models import (ONE_THREAD_MAX_PARAMS, HubUnavailableError, cpu_threads_for,
                          dtype_name)
from geora.training.settings import RunSettings
from geora.training.resources import check_resources
from tests.conftest import compose_run as config

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "geora" / "assets" / "micro"


def test_hf_model_is_named_after_its_folder(tmp_path):
    folder = tmp_path / "My Model-135M"
    folder.mkdir()
    cfg = config("model=hf", f"model.path={folder}")
    assert cfg.model.name == "My_Model-135M"
    assert cfg.run_name == "My_Model-135M/micro_math/geora/seed0"
    assert cfg.model.local_path == str(folder)


def test_hf_model_reads_the_checkpoints_dtype(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3", "dtype": "bfloat16"}))
    cfg = config("model=hf", f"model.path={tmp_path}")
    RunSettings.from_config(cfg)                       # dtype auto passes the config check
    assert dtype_name(cfg.model) == "bfloat16"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3", "torch_dtype": "float16"}))
    assert dtype_name(cfg.model) == "float16"
    assert dtype_name(config("model=hf", f"model.path={MICRO}").model) == "float32"


def test_hf_model_without_a_path_is_named(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = config("model=hf")
    with pytest.raises(HubUnavailableError, match=r"model\.path="):
        check_resources(RunSettings.from_config(cfg))
    cfg = config("model=hf", "model.path=/no/such/folder")
    with pytest.raises(HubUnavailableError, match="/no/such/folder.*no config.json"):
        check_resources(RunSettings.from_config(cfg))


def test_cpu_threads_auto_follows_the_model_size():
    small = torch.nn.Linear(10, 10)
    large = torch.nn.Linear(ONE_THREAD_MAX_PARAMS, 1, bias=False, device="meta")
    assert cpu_threads_for(small, "auto") == 1
    assert cpu_threads_for(large, "auto") >= 1
    assert cpu_threads_for(large, "auto") == len(__import__("os").sched_getaffinity(0))
    assert cpu_threads_for(small, 3) == 3 and cpu_threads_for(small, None) is None


def test_offline_start_names_every_missing_resource_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = config("model=qwen3_4b")
    with pytest.raises(HubUnavailableError) as err:
        check_resources(RunSettings.from_config(cfg))
    message = str(err.value)
    for needed in ("Qwen/Qwen3-4B", "model.local_path=", "zwhe99/DeepMath-103K",
                   "data.local_path=", "eval.data_dir="):
        assert needed in message, needed
    for task in cfg.eval.tasks:
        assert f"evaluation task {task!r}" in message
    # the same run with every resource given locally has nothing to name
    cfg = config("model=qwen3_4b", f"model.local_path={MICRO}", f"data.local_path={MICRO}",
                 f"eval.data_dir={ROOT / 'tests' / 'fixtures' / 'eval'}")
    check_resources(RunSettings.from_config(cfg))


def test_model_path_on_another_model_is_refused_not_ignored():
    """model.path is model=hf's; on model=qwen3_4b it would otherwise load the hub model."""
    with pytest.raises(ValueError, match=r"^model.path='/models/x' \(model 'qwen3_4b_base'\) is "
                                         r"read by model=hf only; set model.local_path"):
        RunSettings.from_config(config("model=qwen3_4b", "model.path=/models/x"))
