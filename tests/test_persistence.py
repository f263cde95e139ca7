"""save_adapter -> load_adapter (onto the ORIGINAL base, no SVD), export_lora -> plain
PEFT load, merge_model: each reproduces a model whose trainable parameters were perturbed.

Run: .venv/bin/python -m pytest -q tests/test_persistence.py
"""
from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel

import geora
from geora.kinds import residual
from tests.conftest import build_tiny_qwen3
from tests.test_methods import ALL, prepare



def trained(method):
    """A prepared model whose trainable parameters moved (as training would)."""
    model = prepare(method)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("method", ALL)
def test_save_load_export_merge_reproduce(method, tiny_input_ids, tmp_path, monkeypatch):
    model = trained(method)
    out = logits(model, tiny_input_ids)
    assert (out - logits(build_tiny_qwen3(), tiny_input_ids)).abs().max() > 1e-3  # can fail

    geora.save_adapter(model, tmp_path / "adapter")
    with monkeypatch.context() as m:       # reload must not factorise anything
        def no_svd(*a, **k):
            raise AssertionError("SVD called during load_adapter")
        m.setattr(torch.linalg, "svd", no_svd)
        m.setattr(torch, "svd_lowrank", no_svd)
        loaded = geora.load_adapter(build_tiny_qwen3(), tmp_path / "adapter").eval()
    assert (logits(loaded, tiny_input_ids) - out).abs().max() <= 1e-4

    if method in ("sparseft", "fullft"):
        with pytest.raises(ValueError, match="save_adapter"):
            geora.export_lora(model, tmp_path / "lora")
        assert not (tmp_path / "lora").exists()
    else:
        geora.export_lora(model, tmp_path / "lora")
        cfg = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
        if method not in ("lora", "dora", "adalora"):
            assert cfg["r"] == 32 and cfg["lora_alpha"] == 32
        plain = PeftModel.from_pretrained(build_tiny_qwen3(), str(tmp_path / "lora")).eval()
        assert (logits(plain, tiny_input_ids) - out).abs().max() <= 1e-4

    merged = geora.merge_model(model)
    assert not isinstance(merged, PeftModel)
    assert not any("lora_" in n or "parametrizations" in n for n, _ in merged.named_parameters())
    assert (logits(merged, tiny_input_ids) - out).abs().max() <= 1e-4


def test_residual_save_is_not_a_plain_peft_folder(tmp_path):
    """PEFT's files for A, B are valid only on W_res: a plain PEFT load must fail loudly."""
    geora.save_adapter(trained("geora"), tmp_path / "a")
    with pytest.raises(ValueError):
        PeftModel.from_pretrained(build_tiny_qwen3(), str(tmp_path / "a"))


def test_bf16_round_trip(tiny_input_ids, tmp_path):
    base = lambda: build_tiny_qwen3().to(torch.bfloat16)   # noqa: E731
    model = geora.prepare_model(base(), "geora")
    layer = model.base_model.model.model.layers[0].mlp.up_proj
    assert layer.base_layer.weight.dtype == torch.bfloat16
    assert layer.lora_A["default"].weight.dtype == torch.float32    # PEFT's autocast
    geora.save_adapter(model, tmp_path / "a")
    loaded = geora.load_adapter(base(), tmp_path / "a")
    for (n, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters()):
        assert torch.equal(p, q), n                                  # residual rebuilt bitwise


def test_reloaded_adapter_saves_again(tiny_input_ids, tmp_path):
    model = trained("geora")
    out = logits(model, tiny_input_ids)
    geora.save_adapter(model, tmp_path / "a")
    loaded = geora.load_adapter(build_tiny_qwen3(), tmp_path / "a", is_trainable=True)
    assert geora.count_parameters(loaded)[0] == geora.count_parameters(model)[0]
    geora.export_lora(loaded, tmp_path / "b")
    plain = PeftModel.from_pretrained(build_tiny_qwen3(), str(tmp_path / "b")).eval()
    assert (logits(plain, tiny_input_ids) - out).abs().max() <= 1e-4


def test_mask_stats_written(tmp_path):
    geora.save_adapter(prepare("geora"), tmp_path / "a")
    stats = json.loads((tmp_path / "a" / "mask_stats.json").read_text())
    assert len(stats["modules"]) == 14
    agg = stats["aggregate"]
    assert agg["frac_a"] == pytest.approx(0.2, abs=1e-3)
    assert agg["frac_b"] == pytest.approx(0.2, abs=1e-3)
    assert agg["union"] == pytest.approx(agg["frac_a"] + agg["frac_b"] - agg["intersection"])


def test_atomic_write_leaves_nothing_on_error(tmp_path, monkeypatch):
    model = prepare("geora")

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(residual, "save_file", boom)   # the residual kind's tensor writer
    with pytest.raises(OSError, match="disk full"):
        geora.save_adapter(model, tmp_path / "a")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"):
        geora.save_adapter(prepare("lora"), tmp_path / "a")
    assert (tmp_path / "a" / "keep.txt").read_text() == "x"
    geora.save_adapter(prepare("lora"), tmp_path / "a", overwrite=True)
    assert not (tmp_path / "a" / "keep.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_unprepared_model_and_foreign_folder(tmp_path):
    with pytest.raises(ValueError, match="not prepared"):
        geora.save_adapter(build_tiny_qwen3(), tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="geora_adapter.json"):
        geora.load_adapter(build_tiny_qwen3(), tmp_path)
