"""geora.rollout_weights and geora.training.rollouts: generation with merged adapters equals
unmerged generation, and afterwards every parameter is the same tensor, bit for bit (also
after 100 bf16 cycles, where PEFT's merge/unmerge drifts); gradients after a restore are an
unmerged model's; TRL's vLLM weight sync gets the merged weights and restores exactly; the
GRPOTrainer subclass generates with merged weights.

    .venv/bin/python -m pytest -q tests/test_rollouts.py
"""
import contextlib
import copy
import types

import pytest
import torch

import geora
from geora.rollout_weights import exact_merge_adapter, merged_adapters, rollout_weights
from tests.conftest import build_tiny_qwen3

KINDS = {"lora": {}, "geora": {}, "dora": {}, "adalora": {"total_step": 10}, "sparseft": {},
         "fullft": {}}


def prepared(method, dtype=torch.float32, seed=0):
    """A tiny prepared model whose trainable tensors have moved (as after training)."""
    options = KINDS.get(method, {}) if method == "fullft" else {"rank": 4, **KINDS.get(method, {})}
    model = geora.prepare_model(build_tiny_qwen3(seed=seed).to(dtype), method, **options)
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p), alpha=0.05)
    return model.eval()


def snapshot(model):
    return {n: (p, p.data, p.detach().clone()) for n, p in model.named_parameters()}


def bitwise_same(model, snap):
    """Every parameter is the same Parameter, holding the same tensor, with the same bits."""
    params = dict(model.named_parameters())
    return params.keys() == snap.keys() and all(
        params[n] is p and params[n].data.untyped_storage().data_ptr() == d.untyped_storage().data_ptr()
        and torch.equal(params[n].detach(), bits) for n, (p, d, bits) in snap.items())


def greedy(model, ids, n=6):
    return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                          max_new_tokens=n, min_new_tokens=n)


def peft_layers(model):
    from peft.tuners.tuners_utils import BaseTunerLayer
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


@pytest.mark.parametrize("method", KINDS)
def test_merged_generation_equals_unmerged_and_restores_exactly(method, tiny_input_ids):
    model = prepared(method)
    snap = snapshot(model)
    with torch.no_grad():
        ref = greedy(model, tiny_input_ids)
        ref_logits = model(tiny_input_ids).logits
        with rollout_weights(model):
            out = greedy(model, tiny_input_ids)
            logits = model(tiny_input_ids).logits
            layers = peft_layers(model)
            assert all(layer.merged for layer in layers)
            if layers:  # the merge really changed the weights the layers run on
                base = layers[0].get_base_layer().weight
                assert not torch.equal(base, snap[next(n for n in snap if n.endswith(
                    "layers.0.self_attn.q_proj.base_layer.weight"))][2])
    assert torch.equal(out, ref)
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert bitwise_same(model, snap)
    assert not any(layer.merged for layer in peft_layers(model))
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_merging_a_fused_model_keeps_the_fused_forward(tiny_input_ids):
    from geora.fused_lora import enable_fused_lora, is_fused

    model = prepared("geora")
    enable_fused_lora(model)
    layer = peft_layers(model)[0]
    fused_forward = layer.forward
    with torch.no_grad():
        ref = greedy(model, tiny_input_ids)
        with rollout_weights(model):
            assert layer.forward == layer.get_base_layer().forward
            out = greedy(model, tiny_input_ids)
    assert torch.equal(out, ref)
    assert is_fused(layer) and layer.forward == fused_forward


def test_the_bitwise_check_can_fail():
    model = prepared("lora")
    snap = snapshot(model)
    with torch.no_grad():
        model.merge_adapter()
        model.unmerge_adapter()             # fp32 W + dW - dW is not W in every bit
    assert not bitwise_same(model, snap)


def test_100_bf16_merge_cycles_are_bitwise_exact_where_pefts_unmerge_drifts():
    ours, theirs = prepared("geora", torch.bfloat16), prepared("geora", torch.bfloat16)
    snap_ours, snap_theirs = snapshot(ours), snapshot(theirs)
    with torch.no_grad():
        for _ in range(100):
            with merged_adapters(ours):
                pass
            theirs.merge_adapter()
            theirs.unmerge_adapter()
    assert bitwise_same(ours, snap_ours)
    base = [n for n in snap_theirs if n.endswith("base_layer.weight")]
    drifted = [n for n in base if not torch.equal(dict(theirs.named_parameters())[n], snap_theirs[n][2])]
    assert len(drifted) == len(base)          # every bf16 base weight moved under PEFT's cycle


def test_gradients_after_restore_are_an_unmerged_models(tiny_input_ids):
    a = prepared("geora").train()
    b = copy.deepcopy(a)
    with torch.no_grad(), rollout_weights(a):
        greedy(a, tiny_input_ids)
    for model in (a, b):
        model(input_ids=tiny_input_ids, labels=tiny_input_ids).loss.backward()
    grads_b = dict(b.named_parameters())
    for name, p in a.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.grad, grads_b[name].grad), name


def test_a_failed_merge_restores_what_was_merged(monkeypatch):
    model = prepared("lora")
    snap = snapshot(model)
    layers = peft_layers(model)

    def broken(*args, **kwargs):
        raise RuntimeError("merge failed")

    monkeypatch.setattr(layers[5], "merge", broken)
    with pytest.raises(RuntimeError, match="merge failed"):
        with merged_adapters(model):
            pass
    # layers 0-4 were merged before the failure: all are restored
    assert not any(layer.merged for layer in layers)
    assert bitwise_same(model, snap)


# ---------------------------------------------------------------------- TRL's vLLM sync
def vllm_sync(model):
    """TRL 1.16's own vLLM weight iterator (what sync_weights streams), without vLLM."""
    from trl.generation.vllm_generation import VLLMGeneration

    sync = VLLMGeneration.__new__(VLLMGeneration)
    sync.model = model
    sync._dist = types.SimpleNamespace(is_fsdp=False, gather_params=lambda p: contextlib.nullcontext())
    return dict((name, t.clone()) for name, t in sync._iter_named_params())


@pytest.mark.parametrize("method", ["geora", "sparseft"])
def test_vllm_sync_streams_merged_weights_and_restores_exactly(method):
    from geora.training.rollouts import _vllm_sync_context

    model = prepared(method, torch.bfloat16)
    snap = snapshot(model)
    plain_names = set(build_tiny_qwen3().state_dict()) - {"lm_head.weight"}
    with torch.no_grad(), merged_adapters(model):         # the weights vLLM should receive
        expected = {n.replace("base_model.model.", "").replace(".base_layer", ""): p.detach().clone()
                    for n, p in model.named_parameters() if "lora_" not in n}
    if method == "sparseft":
        expected = {n: t for n, t in model.state_dict().items() if "parametrizations" not in n}
        for name, module in model.named_modules():
            if hasattr(module, "parametrizations"):
                expected[f"{name}.weight"] = module.weight.detach().clone()
    for _ in range(3):
        with _vllm_sync_context(model):
            streamed = vllm_sync(model)
        assert set(streamed) == plain_names
        assert all(torch.equal(streamed[n], expected[n]) for n in plain_names)
        assert bitwise_same(model, snap)


def test_trls_own_vllm_sync_drifts_in_bf16_and_exact_merge_does_not():
    model = prepared("geora", torch.bfloat16)
    snap = snapshot(model)
    with torch.no_grad():
        vllm_sync(model)                               # TRL as it is: W += dW; W -= dW
    assert not bitwise_same(model, snap)
    model = prepared("geora", torch.bfloat16)
    snap = snapshot(model)
    with torch.no_grad(), exact_merge_adapter(model):
        vllm_sync(model)
    assert bitwise_same(model, snap)
    assert "merge_adapter" not in model.__dict__


# ------------------------------------------------------------------- GRPOTrainer hook
def test_fast_rollout_trainer_generates_with_merged_weights(tmp_path):
    from tests.test_training import config, dataset, length_reward, tokenizer
    from geora import rewards
    from geora.training.grpo import grpo_config
    from geora.training.rollouts import FastRolloutGRPOTrainer

    cfg = config("method=geora", "train.max_steps=1")
    model = prepared("geora").train()
    snap = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    seen = []
    generate = model.generate

    def spy(*args, **kwargs):
        seen.append(all(layer.merged for layer in peft_layers(model)))
        return generate(*args, **kwargs)

    model.generate = spy
    args = grpo_config(cfg.train, output_dir=str(tmp_path), seed=0, device="cpu", report_to=[])
    trainer = FastRolloutGRPOTrainer(model=model, reward_funcs=[length_reward], args=args,
                                     train_dataset=dataset(cfg), processing_class=tokenizer())
    trainer.train()
    assert seen and all(seen)
    assert not any(layer.merged for layer in peft_layers(model))
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], t) for n, t in snap.items())
    assert rewards  # the test reward of tests/test_training.py is registered by name there
