"""geora.fused_lora: the fused low-rank linear equals PEFT's LoRA layer, outputs and
gradients, in fp32 (tight) and bf16 (bf16 tolerance); a wrong gradient is caught; every
case the fused path does not cover runs PEFT's own forward; save/load is unchanged.

    .venv/bin/python -m pytest -q tests/test_fused_lora.py
"""
import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from geora.fused_lora import (LowRankLinear, _fused_adapter, disable_fused_lora,
                              enable_fused_lora, is_fused)
from tests.conftest import build_tiny_qwen3


def peft_lora(dtype=torch.float32, autocast_adapter_dtype=True, **cfg):
    """A tiny Qwen3 with LoRA on all 14 linears and non-zero A and B (trained-looking)."""
    model = build_tiny_qwen3().to(dtype)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", **cfg)
    peft = get_peft_model(model, config, autocast_adapter_dtype=autocast_adapter_dtype)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return peft


def loss_and_grads(model, ids, autocast=False):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.logits.float().detach(), grads


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def test_fp32_outputs_and_gradients_equal_peft(tiny_input_ids):
    ref = peft_lora().train()
    fused = copy.deepcopy(ref)
    assert enable_fused_lora(fused) == 14
    logits_ref, grads_ref = loss_and_grads(ref, tiny_input_ids)
    logits, grads = loss_and_grads(fused, tiny_input_ids)
    assert torch.allclose(logits, logits_ref, atol=1e-5, rtol=1e-5)
    assert grads.keys() == grads_ref.keys() and len(grads) == 28
    for name in grads:  # earlier layers' grads pass through every later grad_x
        assert torch.allclose(grads[name], grads_ref[name], atol=1e-6, rtol=1e-4), name
    # the comparison notices a wrong gradient: a 1% error in one layer's grad_B
    name = next(n for n in grads if "lora_B" in n)
    assert not torch.allclose(grads[name] * 1.01, grads_ref[name], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("merge", [False, True], ids=["separate", "merged-weight"])
def test_low_rank_linear_passes_gradcheck_and_a_wrong_backward_fails_it(merge):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w, bias = torch.randn(4, 5, dtype=torch.float64, generator=g), torch.randn(4, dtype=torch.float64)
    a = torch.randn(2, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(4, 2, dtype=torch.float64, generator=g, requires_grad=True)
    args = (x, w, bias, a, b, 0.7, torch.float64, merge)
    assert torch.autograd.gradcheck(LowRankLinear.apply, args)

    class WrongGradA(LowRankLinear):
        @staticmethod
        def backward(ctx, grad_out):
            grads = list(LowRankLinear.backward(ctx, grad_out))
            grads[3] = grads[3] * 1.01
            return tuple(grads)

    from torch.autograd.gradcheck import GradcheckError
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(WrongGradA.apply, args)


@pytest.mark.parametrize("autocast", [False, True], ids=["bf16-weights", "bf16-autocast"])
def test_bf16_within_bf16_tolerance(tiny_input_ids, autocast):
    # bf16 base, fp32 adapters (PEFT's default): PEFT runs the adapter path in fp32 without
    # autocast; the fused path runs it in bf16 and keeps fp32 gradients for the adapters.
    ref = peft_lora(torch.bfloat16).train()
    fused = copy.deepcopy(ref)
    enable_fused_lora(fused)
    logits_ref, grads_ref = loss_and_grads(ref, tiny_input_ids, autocast)
    logits, grads = loss_and_grads(fused, tiny_input_ids, autocast)
    assert rel_err(logits, logits_ref) < 2e-2
    for name, p in fused.named_parameters():
        if p.requires_grad:
            assert p.grad.dtype == torch.float32
            assert rel_err(grads[name], grads_ref[name]) < 5e-2, name


def test_uncovered_cases_run_pefts_forward(tiny_input_ids):
    model = peft_lora(lora_dropout=0.1)
    enable_fused_lora(model)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 3, 64)
    assert is_fused(layer)
    model.train()
    assert _fused_adapter(layer, x, (), {}) is None          # dropout active
    model.eval()
    assert _fused_adapter(layer, x, (), {}) == "default"     # dropout is a no-op in eval
    assert _fused_adapter(layer, x, (), {"adapter_names": ["default"] * 2}) is None
    with model.disable_adapter():
        assert _fused_adapter(layer, x, (), {}) is None
    layer.merge()
    assert _fused_adapter(layer, x, (), {}) is None
    layer.unmerge()
    dora = peft_lora(use_dora=True)
    enable_fused_lora(dora)
    dora_layer = dora.base_model.model.model.layers[0].self_attn.q_proj
    assert _fused_adapter(dora_layer, x, (), {}) is None
    # and the result of a fallback is PEFT's, bit for bit
    ref = copy.deepcopy(dora)
    disable_fused_lora(ref)
    assert torch.equal(dora(tiny_input_ids).logits, ref(tiny_input_ids).logits)


def test_state_dict_and_disable_are_unchanged(tmp_path, tiny_input_ids):
    model = peft_lora().eval()
    before = model(tiny_input_ids).logits
    keys = list(model.state_dict())
    enable_fused_lora(model)
    assert enable_fused_lora(model) == 14        # idempotent
    assert list(model.state_dict()) == keys
    model.save_pretrained(tmp_path / "a")
    from peft import PeftModel
    loaded = PeftModel.from_pretrained(build_tiny_qwen3(), tmp_path / "a").eval()
    assert torch.allclose(loaded(tiny_input_ids).logits, before, atol=1e-5)
    assert disable_fused_lora(model) == 14
    layer = model.base_model.model.model.layers[0].mlp.down_proj
    assert not is_fused(layer) and "forward" not in layer.__dict__
