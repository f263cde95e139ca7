"""geora.vllm_backend without vLLM (the main environment): train.use_vllm's refusals at start
(vLLM missing, server mode on a CPU, an unknown mode), vLLM's LoRA slot ranks, the CPU
engine's settings keeping the user's values, and the version shim lm-eval's vllm backend is
imported with. The tests that run vLLM are tests/test_vllm.py (marker vllm, .venv-vllm).

    .venv/bin/python -m pytest -q tests/test_vllm_settings.py
"""
from importlib import metadata

import pytest

from geora import vllm_backend
from geora.vllm_backend import (CPU_ENGINE_ENV, apply_cpu_engine_env, check_vllm_settings,
                                lora_slot_rank)


def test_use_vllm_refusals_are_one_line_each(monkeypatch):
    check_vllm_settings(False, "nonsense", "cpu")   # off: nothing
    with pytest.raises(ValueError, match=r"^train.vllm_mode='nonsense': choose colocate or server$"):
        check_vllm_settings(True, "nonsense", "cpu")
    with pytest.raises(ValueError, match=r"^train.vllm_mode=server on device=cpu: .*colocate"):
        check_vllm_settings(True, "server", "cpu")
    monkeypatch.setattr(vllm_backend, "vllm_installed", lambda: False)
    for device in ("cpu", "cuda"):
        with pytest.raises(RuntimeError, match=r"needs vLLM.*make install-vllm") as info:
            check_vllm_settings(True, "colocate", device)
        assert "\n" not in str(info.value)
    monkeypatch.setattr(vllm_backend, "vllm_installed", lambda: True)
    check_vllm_settings(True, "colocate", "cpu")
    check_vllm_settings(True, "server", "cuda")


def test_run_refuses_use_vllm_before_loading_anything(monkeypatch, tmp_path):
    """The check sits in check_run_inputs, which pipeline.start runs before the folder or the
    model is touched."""
    from hydra import compose, initialize_config_dir

    from geora.training.checks import check_run_inputs
    from geora.training.settings import RunSettings
    from tests.test_training import ROOT, TINY

    monkeypatch.setattr(vllm_backend, "vllm_installed", lambda: False)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=TINY + ["train.use_vllm=true"])
    with pytest.raises(RuntimeError, match="make install-vllm"):
        check_run_inputs(RunSettings.from_config(cfg))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=TINY + ["train.use_vllm=true", "train.vllm_mode=server"])
    with pytest.raises(ValueError, match="train.vllm_mode=server on device=cpu"):
        check_run_inputs(RunSettings.from_config(cfg))


def test_lora_slot_rank_rounds_up_to_vllms_ranks_and_refuses_above_them():
    assert [lora_slot_rank(r, "x") for r in (1, 2, 8, 9, 16, 32, 33, 300, 512)] == \
        [1, 8, 8, 16, 16, 32, 64, 320, 512]
    with pytest.raises(ValueError, match=r"^export/: LoRA rank 513 is above vLLM's largest .*hf$"):
        lora_slot_rank(513, "export/")


def test_cpu_engine_env_keeps_what_the_user_set(monkeypatch):
    for key in (*CPU_ENGINE_ENV, "OMP_NUM_THREADS"):
        monkeypatch.setenv(key, "recorded")   # so that monkeypatch restores the key after
        monkeypatch.delenv(key)               # the test, also where it was unset before
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "7")
    applied = apply_cpu_engine_env(3)
    assert applied == {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "3"}
    import os
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "7"
    assert apply_cpu_engine_env(5) == {} and os.environ["OMP_NUM_THREADS"] == "3"


def test_version_shim_answers_vllm_for_the_cpu_build_only(monkeypatch):
    real = vllm_backend._metadata_version
    installed = {"vllm-cpu": "0.31.0"}

    def fake(name):
        if name in installed:
            return installed[name]
        if name in ("vllm",):
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(vllm_backend, "_metadata_version", fake)
    assert vllm_backend.vllm_distribution() == ("vllm-cpu", "0.31.0")
    assert vllm_backend._version_with_cpu_build("vllm") == "0.31.0+cpu"
    assert vllm_backend._version_with_cpu_build("torch") == real("torch")
    installed = {"vllm": "0.31.0"}
    assert vllm_backend._version_with_cpu_build("vllm") == "0.31.0"
    installed = {}
    with pytest.raises(metadata.PackageNotFoundError):
        vllm_backend._version_with_cpu_build("vllm")


def test_gpu_eval_serves_the_export_in_a_lora_slot_and_refuses_a_rank_above_them(
        monkeypatch, tmp_path):
    """The GPU branch of lm_eval_vllm_args (no vLLM here: its two vLLM calls stubbed)."""
    import json

    monkeypatch.setattr(vllm_backend, "lm_eval_vllm_module", lambda: None)
    monkeypatch.setattr(vllm_backend, "on_cpu_backend", lambda: False)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 24}))
    args = vllm_backend.lm_eval_vllm_args("base/", tmp_path, "bfloat16", tmp_path / "unused")
    assert args == {"pretrained": "base/", "dtype": "bfloat16", "lora_local_path": str(tmp_path),
                    "max_lora_rank": 32}
    assert vllm_backend.lm_eval_vllm_args("base/", None, "auto", "x") == \
        {"pretrained": "base/", "dtype": "auto"}
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 600}))
    with pytest.raises(ValueError, match=r"LoRA rank 600 is above vLLM's largest LoRA rank 512"):
        vllm_backend.lm_eval_vllm_args("base/", tmp_path, "bfloat16", tmp_path / "unused")
    assert not (tmp_path / "unused").exists()


def test_engine_defaults_give_the_trained_models_dtype_and_a_folder_to_a_random_init_model(
        tmp_path):
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from geora.models import ASSETS_DIR
    from tests.conftest import build_tiny_qwen3

    tokenizer = AutoTokenizer.from_pretrained(ASSETS_DIR / "micro")
    bundled = AutoModelForCausalLM.from_pretrained(ASSETS_DIR / "micro", dtype=torch.float32)
    assert vllm_backend.engine_defaults(bundled, tokenizer, str(tmp_path)) == {"dtype": "float32"}
    assert vllm_backend.engine_defaults(bundled, tokenizer, str(tmp_path), "bfloat16") == \
        {"dtype": "bfloat16"}
    assert not list(tmp_path.iterdir())     # a model with a folder: nothing written
    random_init = build_tiny_qwen3().to(torch.bfloat16)      # from a config: no folder
    defaults = vllm_backend.engine_defaults(random_init, tokenizer, str(tmp_path))
    assert defaults == {"dtype": "bfloat16", "model": str(tmp_path), "load_format": "dummy"}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert (tmp_path / "tokenizer.json").is_file()
