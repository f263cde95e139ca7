"""python -m geora.preprocess: --help, and a run on a tiny local model whose output folder
reloads onto the original model with unchanged outputs.

Run: .venv/bin/python -m pytest -q tests/test_preprocess.py
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import geora
from geora import preprocess
from tests.conftest import build_tiny_qwen3

ROOT = Path(__file__).resolve().parents[1]



def test_help_explains_itself():
    res = subprocess.run([sys.executable, "-m", "geora.preprocess", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for flag in ("--model", "--method", "--rank", "--rho", "--out", "--device", "geora_tail_r"):
        assert flag in res.stdout


def test_cli_choices_are_the_registry():
    assert list(preprocess.METHOD_NAMES) == geora.available_methods()


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "tiny"
    build_tiny_qwen3().save_pretrained(path)
    return path


@pytest.mark.parametrize("method", ["geora", "sparseft"])
def test_preprocess_writes_a_loadable_adapter(method, model_dir, tmp_path, tiny_input_ids,
                                              capsys):
    out = tmp_path / "out"
    summary = preprocess.main(["--model", str(model_dir), "--method", method, "--rank", "8",
                               "--rho", "0.2", "--out", str(out), "--svd", "exact"])
    assert summary["modules"] == 14 and json.loads(capsys.readouterr().out) == summary
    stats = json.loads((out / "mask_stats.json").read_text())
    assert len(stats["modules"]) == 14
    if method == "geora":
        agg = stats["aggregate"]
        assert agg["frac_a"] == pytest.approx(0.2, abs=1e-3)
        assert 0.2 < agg["union"] < 0.4 and 0 < agg["jaccard"] < 1
        assert summary["mask_stats"] == agg

    original = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        ref = original(tiny_input_ids).logits
        loaded = geora.load_adapter(AutoModelForCausalLM.from_pretrained(model_dir), out)
        assert (loaded.eval()(tiny_input_ids).logits - ref).abs().max() <= 1e-5
    # the same seed and settings in-process give the very same init factors
    if method == "geora":
        live = geora.prepare_model(AutoModelForCausalLM.from_pretrained(model_dir), "geora",
                                   rank=8, svd="exact")
        name = "model.layers.0.mlp.down_proj"
        a_live = live.base_model.model.get_submodule(name).lora_A["default"].weight
        a_disk = loaded.base_model.model.get_submodule(name).lora_A["default"].weight
        assert torch.equal(a_live, a_disk)


def test_preprocess_bad_paths(model_dir, tmp_path):
    with pytest.raises(SystemExit, match="no config.json"):
        preprocess.main(["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(SystemExit, match="not empty"):
        preprocess.main(["--model", str(model_dir), "--out", str(tmp_path / "full")])
    with pytest.raises(ValueError, match="rho=1.5"):
        preprocess.main(["--model", str(model_dir), "--rho", "1.5", "--out",
                         str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
