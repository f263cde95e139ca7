"""geora.prepare_model for every method on a tiny Qwen3: outputs unchanged at init, only
the right parameters train, each baseline computes what it says.

Run: .venv/bin/python -m pytest -q tests/test_methods.py
"""
from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

import geora
from geora.surgery import get_state, lora_layer
from tests.conftest import build_tiny_qwen3

from geora.kinds import RESIDUAL as RESIDUAL_KIND
from geora.methods import METHODS

# The method lists follow the registry (by kind); test_registry_names pins its contents.
ALL = geora.available_methods()
RESIDUAL = [m for m in ALL if METHODS[m].kind is RESIDUAL_KIND]
ADAPTER_KEYS = ("lora_A", "lora_B", "lora_E", "lora_magnitude_vector")



def prepare(method, **kw):
    if method == "adalora":
        kw.setdefault("total_step", 10)
    return geora.prepare_model(build_tiny_qwen3(), method, **kw)


def test_registry_names():
    assert ALL == ["geora", "geora_random_r", "geora_tail_r", "geora_wo_spec", "geora_wo_euc",
                   "lora", "pissa", "milora", "dora", "adalora", "sparseft", "fullft"]
    assert RESIDUAL == ["geora", "geora_random_r", "geora_tail_r", "geora_wo_spec",
                        "geora_wo_euc", "pissa", "milora"]
    with pytest.raises(ValueError, match="unknown method 'loraa'.*geora_tail_r"):
        geora.prepare_model(build_tiny_qwen3(), "loraa")
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['svdd'\]"):
        geora.prepare_model(build_tiny_qwen3(), "geora", svdd="exact")


@pytest.mark.parametrize("method", ALL)
def test_outputs_unchanged_at_init(method, tiny_input_ids):
    with torch.no_grad():
        ref = build_tiny_qwen3()(tiny_input_ids).logits
        model = prepare(method).eval()
        out = model(tiny_input_ids).logits
        assert (out - ref).abs().max() <= 1e-5
        # the comparison can fail: a trainable change moves the logits
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05)
        assert (model(tiny_input_ids).logits - ref).abs().max() > 1e-3


@pytest.mark.parametrize("method", ALL)
def test_only_the_method_parameters_train(method):
    model = prepare(method)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names
    if method == "fullft":
        assert all(p.requires_grad for p in model.parameters())
    elif method == "sparseft":
        assert all(n.endswith("parametrizations.weight.0.delta") for n in names)
    else:
        assert isinstance(model, __import__("peft").PeftModel)
        assert all(any(k in n for k in ADAPTER_KEYS) and ".default" in n for n in names)


@pytest.mark.parametrize("method", RESIDUAL)
def test_residual_methods_hold_w_res_in_the_base(method):
    original = dict(build_tiny_qwen3().named_parameters())
    model = prepare(method)
    state = get_state(model)
    assert state.kind == "residual" and len(state.targets) == 14      # 7 per layer
    for name in state.targets:
        layer = lora_layer(model, name)
        w0 = original[f"{name}.weight"]
        a0, b0 = state.init_factors[name]["A0"], state.init_factors[name]["B0"]
        assert torch.equal(layer.lora_A["default"].weight, a0)
        w_res = layer.get_base_layer().weight
        assert (w_res - w0).abs().max() > 1e-4                          # base was rewritten
        torch.testing.assert_close(w_res + layer.scaling["default"] * b0 @ a0, w0,
                                   atol=1e-6, rtol=0)


@pytest.mark.parametrize("alpha,alpha_norm", [(None, "none"), (64.0, "peft")])
def test_pissa_equals_peft_pissa(alpha, alpha_norm):
    ours = prepare("pissa", alpha=alpha, svd="exact", alpha_norm=alpha_norm)
    targets = get_state(ours).targets
    cfg = LoraConfig(r=16, lora_alpha=alpha or 16, target_modules=targets,
                     init_lora_weights="pissa")
    peft_model = get_peft_model(build_tiny_qwen3(), cfg)
    for name in targets:
        a, b = lora_layer(ours, name), lora_layer(peft_model, name)
        for attr in ("lora_A", "lora_B"):
            torch.testing.assert_close(getattr(a, attr)["default"].weight,
                                       getattr(b, attr)["default"].weight, atol=1e-6, rtol=0)
        torch.testing.assert_close(a.get_base_layer().weight, b.get_base_layer().weight,
                                   atol=1e-6, rtol=0)


def test_pissa_alpha_norm_matters():
    """The paper's formula (no S/scaling) differs from PEFT's once alpha != rank."""
    a = prepare("pissa", alpha=64.0, svd="exact", alpha_norm="none")
    b = prepare("pissa", alpha=64.0, svd="exact", alpha_norm="peft")
    name = get_state(a).targets[0]
    assert (lora_layer(a, name).lora_A["default"].weight
            - lora_layer(b, name).lora_A["default"].weight).abs().max() > 1e-3


def test_milora_takes_smallest_triplets():
    original = dict(build_tiny_qwen3().named_parameters())
    model = prepare("milora")
    for name in get_state(model).targets[:3]:
        s = torch.linalg.svdvals(original[f"{name}.weight"])
        a = lora_layer(model, name).lora_A["default"].weight
        torch.testing.assert_close(torch.linalg.svdvals(a).pow(2), s[-16:], atol=1e-6,
                                   rtol=1e-4)
        assert (torch.linalg.svdvals(a).pow(2) - s[:16]).abs().max() > 1e-2


@pytest.mark.parametrize("mask,lo,hi", [("geora_union", 0.3, 0.45), ("low_magnitude", 0.2, 0.21),
                                        ("principal_complement", 0.79, 0.8),
                                        ("ptn_union", 0.8, 0.95)])
def test_sparseft_frozen_entries_bitwise_after_adamw(mask, lo, hi, tiny_input_ids):
    model = prepare("sparseft", sparseft_mask=mask)
    state = get_state(model)
    w0 = {n: model.get_submodule(n).weight.detach().clone() for n in state.targets}
    assert lo <= sum(s["count_trained"] for s in state.mask_stats.values()) / sum(
        s["n"] for s in state.mask_stats.values()) <= hi
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(tiny_input_ids).logits.pow(2).mean().backward()
        opt.step()
    moved = 0
    for name in state.targets:
        module = model.get_submodule(name)
        mask_flat = torch.zeros(w0[name].numel(), dtype=torch.bool)
        mask_flat[module.parametrizations.weight[0].indices] = True
        mask_2d = mask_flat.view_as(w0[name])
        w = module.weight.detach()
        assert torch.equal(w[~mask_2d], w0[name][~mask_2d])               # bitwise frozen
        moved += int((w[mask_2d] != w0[name][mask_2d]).sum())
    assert moved > 0.5 * sum(s["count_trained"] for s in state.mask_stats.values())


def test_count_parameters_lora():
    model = prepare("lora")
    trainable, total = geora.count_parameters(model)
    # q(64->64) k,v(64->32) o(64->64) gate,up(64->128) down(128->64), 2 layers, r = 16
    per_layer = 16 * ((64 + 64) + 2 * (64 + 32) + (64 + 64) + 2 * (64 + 128) + (128 + 64))
    assert trainable == 2 * per_layer
    assert total == sum(p.numel() for p in build_tiny_qwen3().parameters()) + trainable


def test_fullft_trains_everything():
    model = prepare("fullft")
    trainable, total = geora.count_parameters(model)
    assert trainable == total == sum(p.numel() for p in build_tiny_qwen3().parameters())


def test_target_modules_list_and_regex():
    m1 = prepare("geora", target_modules=["q_proj", "v_proj"])
    assert [n.rsplit(".", 1)[1] for n in get_state(m1).targets] == ["q_proj", "v_proj"] * 2
    m2 = prepare("lora", target_modules=r".*\.0\.mlp\..*")
    assert get_state(m2).targets == [f"model.layers.0.mlp.{p}" for p in
                                     ("gate_proj", "up_proj", "down_proj")]


def test_kl_reference_copy_is_the_original_model(tiny_input_ids):
    """TRL's beta > 0 path copies the initial adapter into a frozen "ref" adapter: on W_res
    that reference must be the ORIGINAL model, even after "default" has trained."""
    with torch.no_grad():
        ref = build_tiny_qwen3()(tiny_input_ids).logits
        model = prepare("geora").eval()
        model.add_adapter("ref", model.peft_config["default"])
        for name, p in model.named_parameters():
            if ".ref." in name:
                p.copy_(dict(model.named_parameters())[name.replace(".ref.", ".default.")])
        for name, p in model.named_parameters():
            if ".default." in name:
                p.add_(0.05)                                              # "training"
        model.set_adapter("ref")
        assert (model(tiny_input_ids).logits - ref).abs().max() <= 1e-5
        model.set_adapter("default")
        assert (model(tiny_input_ids).logits - ref).abs().max() > 1e-3


def test_svd_device_option_same_init(tiny_input_ids):
    a = prepare("geora", svd_device="cpu")
    b = prepare("geora")
    name = get_state(a).targets[5]
    assert torch.equal(lora_layer(a, name).lora_B["default"].weight,
                       lora_layer(b, name).lora_B["default"].weight)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["geora", "milora", "sparseft"])
def test_factorise_on_cuda_write_back_on_cpu(method, tiny_input_ids):
    with torch.no_grad():
        ref = build_tiny_qwen3()(tiny_input_ids).logits
        model = prepare(method, svd_device="cuda").eval()
        assert all(p.device.type == "cpu" for p in model.parameters())
        assert (model(tiny_input_ids).logits - ref).abs().max() <= 1e-5


def test_each_method_declares_its_analysis_masks_and_checks_its_own_options():
    import dataclasses

    from geora.surgery import GeoraState
    from geora.training.weight_analysis import mask_settings

    def state(method, rho):
        return GeoraState(method, METHODS[method].kind.name, 16, 16.0, rho, [])

    assert mask_settings(state("geora_wo_euc", 0.2), "auto")["rho"] == 0.2
    assert mask_settings(state("sparseft", 0.1), "auto")["rho"] == 0.1
    assert mask_settings(state("pissa", None), "auto") is None
    assert mask_settings(state("pissa", None), "all")["rho"] == 0.2    # the paper's default
    # a method that takes rho but does not declare masks is not analysed with GeoRA's
    ranked = dataclasses.replace(METHODS["geora"], name="ranked_rho", analysis_masks=False)
    METHODS["ranked_rho"] = ranked
    try:
        assert mask_settings(state("ranked_rho", 0.2), "auto") is None
    finally:
        del METHODS["ranked_rho"]
    # option values are checked by the method that takes them; others are refused by name
    with pytest.raises(ValueError, match=r"method 'geora': seed=1\.5: must be an int"):
        METHODS["geora"].check_options({"seed": 1.5})
    with pytest.raises(ValueError, match=r"'fullft' does not take option\(s\) \['seed'\]"):
        METHODS["fullft"].check_options({"seed": 1})
    METHODS["sparseft"].check_options({"sparseft_mask": "geora_union", "seed": 3})
