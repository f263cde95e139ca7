"""The method kinds: exact weight updates for every method, adapters written before the kinds
became classes still load, trainer callbacks come from the kind, and a new method of an
existing kind needs nothing but its registry entry.

Run: .venv/bin/python -m pytest -q tests/test_kinds.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

import geora
from geora import methods
from geora.kinds import KINDS, NoLoraForm, kind_of, weight_updates
from geora.kinds.peft_native import PeftBudgetAllocation
from tests.conftest import build_tiny_qwen3
from tests.test_methods import ALL, prepare

LEGACY = Path(__file__).parent / "fixtures" / "adapters_v1"


def _prepare(method, dtype=torch.float32, **kw):
    if method == "fullft":
        kw.setdefault("keep_initial", True)
    if method == "adalora":
        kw.setdefault("total_step", 10)
    return geora.prepare_model(build_tiny_qwen3().to(dtype), method, **kw)


def _perturb(model, scale=0.05):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_((scale * torch.randn(p.shape, generator=g)).to(p.dtype))
    return model


# ----------------------------------------------------------------------- weight updates
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("method", ALL)
def test_no_training_means_no_update(method, dtype):
    model = _prepare(method, dtype)
    updates = list(weight_updates(model))
    assert len(updates) == 14                                   # 7 matrices x 2 layers
    original = dict(build_tiny_qwen3().to(dtype).named_modules())
    for u in updates:
        assert u.w0.dtype == u.delta.dtype == torch.float32
        assert torch.count_nonzero(u.delta) == 0, u.module      # exactly zero
        w = original[u.module].weight.float()
        # W0 is the original weight (residual: W_res + s B0 A0, one rounding of W_res off)
        tol = 1e-6 if dtype == torch.float32 else 2e-2 * float(w.detach().abs().max())
        assert (u.w0 - w).abs().max() <= tol, u.module
    # ... and the check can fail: a trained model has a non-zero update everywhere
    _perturb(model)
    assert all(torch.count_nonzero(u.delta) > 0 for u in weight_updates(model))


@pytest.mark.parametrize("method", ALL)
def test_update_is_what_the_model_computes(method):
    """W0 + dW equals the weight of the merged model (fp32), for every method."""
    model = _perturb(_prepare(method)).eval()
    updates = {u.module: u for u in weight_updates(model)}
    merged = dict(geora.merge_model(model).named_modules())
    for name, u in updates.items():
        w1 = merged[name].weight.detach()
        assert (u.w0 + u.delta - w1).abs().max() <= 1e-5 * max(1.0, float(w1.abs().max())), name
        assert float(u.delta.abs().max()) > 1e-4, name


def test_reloaded_adapter_gives_the_same_update(tmp_path):
    for method in ("geora", "dora", "sparseft", "fullft"):
        model = _perturb(_prepare(method))
        before = {u.module: u.delta.clone() for u in weight_updates(model)}
        geora.save_adapter(model, tmp_path / method)
        loaded = geora.load_adapter(build_tiny_qwen3(), tmp_path / method, keep_initial=True)
        for u in weight_updates(loaded):
            torch.testing.assert_close(u.delta, before[u.module], atol=1e-6, rtol=0)


def test_fullft_without_the_initial_weights_says_how_to_keep_them():
    model = geora.prepare_model(build_tiny_qwen3(), "fullft")
    with pytest.raises(ValueError, match="keep_initial=True"):
        next(weight_updates(model))


# ------------------------------------------------------------------- dispatch through kinds
def test_each_method_has_one_kind_and_the_kinds_are_the_four():
    assert set(KINDS) == {"residual", "peft", "sparse", "full"}
    kinds = {name: geora.get_method(name).kind.name for name in ALL}
    assert kinds["geora"] == kinds["pissa"] == kinds["milora"] == "residual"
    assert kinds["lora"] == kinds["dora"] == kinds["adalora"] == "peft"
    assert (kinds["sparseft"], kinds["fullft"]) == ("sparse", "full")
    for name in ("sparseft", "fullft"):
        with pytest.raises(NoLoraForm):
            geora.export_lora(_prepare(name), "/nonexistent/never-written")


def test_trainer_callbacks_come_from_the_kind():
    assert [type(c) for c in kind_of(_prepare("adalora")).trainer_callbacks(
        _prepare("adalora"))] == [PeftBudgetAllocation]
    for method in ("lora", "geora", "sparseft", "fullft"):
        model = _prepare(method)
        assert kind_of(model).trainer_callbacks(model) == []


@pytest.mark.parametrize("method,kwargs,name", [
    ("milora", dict(svd="exact"), "svd"), ("milora", dict(niter=2), "niter"),
    ("milora", dict(seed=1), "seed"), ("fullft", dict(rank=8), "rank=8"),
    ("fullft", dict(target_modules="all-linear"), "target_modules"),
    ("lora", dict(rho=0.3), "rho=0.3"), ("sparseft", dict(alpha=8.0), "alpha=8.0"),
    ("geora", dict(seed=True), "seed=True"), ("lora", dict(lora_dropout=1.5), "lora_dropout"),
])
def test_an_argument_the_method_does_not_use_is_refused(method, kwargs, name):
    with pytest.raises(ValueError, match=f"'{method}'.*{name}"):
        geora.prepare_model(build_tiny_qwen3(), method, **kwargs)


def test_a_new_residual_method_is_one_registry_entry(monkeypatch, tmp_path, tiny_input_ids):
    """A hypothetical method of the residual kind (the r MIDDLE singular triplets of W)
    defined only by its registry entry: prepare, save, load, export and weight updates all
    work through the kind, with no other code naming it."""
    from geora.init import factors_from_triplets
    from geora.linalg import svd_full

    def middle(weight, *, rank, rho, alpha, where, alpha_norm="none"):
        u, s, vh = svd_full(weight.detach())
        i = (len(s) - rank) // 2
        return factors_from_triplets(weight.detach(), u[:, i:i + rank], s[i:i + rank],
                                     vh[i:i + rank], scaling=alpha / rank, alpha_norm=alpha_norm)

    entry = methods.Method("middle_r", methods.RESIDUAL, "r middle triplets of W",
                           uses=methods.ADAPTER_ARGS, options=("alpha_norm",),
                           factorize=middle)
    monkeypatch.setitem(methods.METHODS, "middle_r", entry)
    with torch.no_grad():
        ref = build_tiny_qwen3()(tiny_input_ids).logits
        model = geora.prepare_model(build_tiny_qwen3(), "middle_r", rank=4).eval()
        assert (model(tiny_input_ids).logits - ref).abs().max() <= 1e-5
        _perturb(model)
        out = model(tiny_input_ids).logits
        geora.save_adapter(model, tmp_path / "a")
        back = geora.load_adapter(build_tiny_qwen3(), tmp_path / "a").eval()
        assert (back(tiny_input_ids).logits - out).abs().max() <= 1e-4
        geora.export_lora(model, tmp_path / "e")
        plain = PeftModel.from_pretrained(build_tiny_qwen3(), str(tmp_path / "e")).eval()
        assert (plain(tiny_input_ids).logits - out).abs().max() <= 1e-4
    assert all(torch.count_nonzero(u.delta) > 0 for u in weight_updates(model))


# --------------------------------------------------------- folders written by earlier code
def _legacy_base():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    expected = json.loads((LEGACY / "expected.json").read_text())
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**expected["arch"])).float().eval()
    return model, torch.tensor(expected["ids"]), expected["logits"]


@pytest.mark.parametrize("method", ["geora", "lora", "sparseft", "fullft"])
def test_adapters_of_format_1_still_load(method, tmp_path):
    base, ids, logits = _legacy_base()
    model = geora.load_adapter(base, LEGACY / method).eval()
    expected = torch.tensor(logits[method])
    with torch.no_grad():
        out = model(ids).logits
    assert (out - expected).abs().max() <= 1e-5
    assert (expected - _legacy_base()[0](ids).logits).abs().max() > 1e-3   # adapter matters
    if method in ("geora", "lora"):   # exports of then load with plain PEFT, and re-export alike
        plain = PeftModel.from_pretrained(_legacy_base()[0], str(LEGACY / f"{method}_export"))
        with torch.no_grad():
            assert (plain.eval()(ids).logits - expected).abs().max() <= 1e-5
        geora.export_lora(model, tmp_path / "again")
        old_cfg = json.loads((LEGACY / f"{method}_export" / "adapter_config.json").read_text())
        new_cfg = json.loads((tmp_path / "again" / "adapter_config.json").read_text())
        for key in ("r", "lora_alpha", "lora_dropout", "init_lora_weights", "task_type",
                    "peft_type", "use_dora"):
            assert new_cfg[key] == old_cfg[key], key
        assert sorted(new_cfg["target_modules"]) == sorted(old_cfg["target_modules"])
        old = load_file(str(LEGACY / f"{method}_export" / "adapter_model.safetensors"))
        new = load_file(str(tmp_path / "again" / "adapter_model.safetensors"))
        assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
