"""Bad input raises a clear error naming the module and the value, and changes nothing.

Run: .venv/bin/python -m pytest -q tests/test_bad_input.py
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import geora
from geora.init import geora_init
from tests.conftest import build_tiny_qwen3



def w(shape=(16, 24)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kwargs,exc,msg", [
    (dict(rank=0), ValueError, "rank=0"),
    (dict(rank=-2), ValueError, "rank=-2"),
    (dict(rank=17), ValueError, r"rank=17 .*min\(out, in\) = 16"),
    (dict(rank=2.0), TypeError, "rank must be an int"),
    (dict(rho=0.0), ValueError, "rho=0.0"),
    (dict(rho=1.0), ValueError, "rho=1.0"),
    (dict(rho=1.5), ValueError, "rho=1.5"),
    (dict(rho=-0.1), ValueError, "rho=-0.1"),
    (dict(svd="full"), ValueError, "svd='full'"),
    (dict(factors="bottom"), ValueError, "factors='bottom'"),
    (dict(masks="both"), ValueError, "masks='both'"),
    (dict(alpha=0.0), ValueError, "alpha=0.0"),
    (dict(alpha_norm="x"), ValueError, "alpha_norm='x'"),
])
def test_geora_init_rejects_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        geora_init(w(), **{"rank": 4, **kwargs})


@pytest.mark.parametrize("weight,exc,msg", [
    (torch.randn(24), ValueError, r"2-D weight.*\(24,\)"),
    (torch.randn(2, 3, 4), ValueError, r"2-D weight.*\(2, 3, 4\)"),
    (torch.ones(8, 8, dtype=torch.int8), TypeError, "torch.int8"),
    (torch.ones(8, 8, dtype=torch.int32), TypeError, "torch.int32"),
])
def test_geora_init_rejects_bad_weights(weight, exc, msg):
    with pytest.raises(exc, match=msg):
        geora_init(weight, rank=2, where="module 'x'")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_geora_init_rejects_non_finite(bad):
    x = w()
    x[3, 5] = bad
    with pytest.raises(ValueError, match="module 'x'.*1 NaN/Inf"):
        geora_init(x, rank=2, where="module 'x'")


def snapshot(model):
    return {n: (p.detach().clone(), p.dtype, p.requires_grad)
            for n, p in model.named_parameters()}


def assert_unchanged(model, snap):
    now = snapshot(model)
    assert now.keys() == snap.keys()
    for n, (t, dtype, grad) in snap.items():
        assert now[n][1] == dtype and now[n][2] == grad, n
        torch.testing.assert_close(now[n][0], t, rtol=0, atol=0, equal_nan=True)
    assert not any("lora" in n or "parametrizations" in n for n, _ in model.named_modules())
    assert not hasattr(model, "geora_state")


def poison(model, value):
    model.get_submodule("model.layers.1.mlp.up_proj").weight.data[0, 0] = value
    return model


def quantise(model):
    m = model.get_submodule("model.layers.0.self_attn.v_proj")
    m.weight = nn.Parameter(m.weight.detach().to(torch.int8), requires_grad=False)
    return model


@pytest.mark.parametrize("method,edit,kwargs,exc,msg", [
    ("geora", None, dict(rank=33), ValueError,
     r"module 'model.layers.0.self_attn.k_proj': rank=33 .*= 32"),
    ("lora", None, dict(rank=0), ValueError, "rank=0"),
    ("sparseft", None, dict(rank=100), ValueError, "rank=100"),
    ("geora", None, dict(rho=1.2), ValueError, "rho=1.2"),
    ("pissa", None, dict(alpha=-1.0), ValueError, "alpha=-1.0"),
    ("geora", lambda m: poison(m, float("nan")), {}, ValueError,
     "module 'model.layers.1.mlp.up_proj'.*NaN/Inf"),
    ("milora", lambda m: poison(m, float("inf")), {}, ValueError,
     "module 'model.layers.1.mlp.up_proj'.*NaN/Inf"),
    ("geora", quantise, {}, TypeError, "module 'model.layers.0.self_attn.v_proj'.*int8"),
    ("geora", None, dict(target_modules=["qkv"]), ValueError,
     r"target_modules=\['qkv'\] matches no linear module.*'q_proj'"),
    ("lora", None, dict(target_modules="attn"), ValueError, "matches no linear module"),
    ("lora", None, dict(target_modules=5), ValueError, "target_modules=5"),
    ("geora", None, dict(svd="full"), ValueError, "svd='full'"),
    ("geora", None, dict(niter=-1), ValueError, "niter=-1"),
    ("sparseft", None, dict(sparseft_mask="random"), ValueError, "sparseft_mask='random'"),
    ("adalora", None, {}, ValueError, "total_step"),
])
def test_prepare_model_rejects_and_changes_nothing(method, edit, kwargs, exc, msg):
    model = build_tiny_qwen3()
    if edit is not None:
        model = edit(model)
    snap = snapshot(model)
    with pytest.raises(exc, match=msg):
        geora.prepare_model(model, method, **kwargs)
    assert_unchanged(model, snap)


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=1,
                                      n_head=2)).eval()


@pytest.mark.parametrize("method", ["geora", "lora", "sparseft"])
def test_gpt2_conv1d_refused(method):
    model = tiny_gpt2()
    snap = snapshot(model)
    with pytest.raises(ValueError, match=r"'transformer.h.0.attn.c_attn' is a GPT-2-style Conv1D"):
        geora.prepare_model(model, method, rank=4)
    assert_unchanged(model, snap)


def test_already_wrapped_model_refused():
    model = geora.prepare_model(build_tiny_qwen3(), "lora")
    with pytest.raises(ValueError, match="already a peft.PeftModel"):
        geora.prepare_model(model, "geora")


def test_load_onto_the_wrong_base(tmp_path):
    geora.save_adapter(geora.prepare_model(build_tiny_qwen3(), "geora"), tmp_path / "a")
    with pytest.raises(ValueError, match="wrong base model"):
        geora.load_adapter(tiny_gpt2(), tmp_path / "a")


# ------------------------------------------------- narrow excepts: real bugs propagate
def test_answer_checker_catches_only_what_math_verify_means(monkeypatch):
    import math_verify

    from geora.answers import is_correct

    assert is_correct("1/2", r"\boxed{\frac{") is False          # malformed: a wrong answer

    def broken(*a, **k):
        raise TypeError("a bug, not a malformed answer")
    monkeypatch.setattr(math_verify, "parse", broken)
    with pytest.raises(TypeError, match="a bug"):
        is_correct("1/2", r"\boxed{0.5}")


@pytest.mark.parametrize("where", ["models", "specs"])
def test_hub_lookups_catch_only_a_missing_cache_entry(where, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from geora.evaluation.catalog import task_info
    from geora.evaluation.specs import DatasetUnavailableError, check_hub_dataset
    from geora.models import HubUnavailableError, resolve_hub_snapshot

    def call():
        if where == "models":
            return resolve_hub_snapshot("org/model", override_key="model.local_path")
        return check_hub_dataset(task_info("aime25"))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")            # the hub check answers "unreachable"
    def not_cached(*a, **k):
        raise LocalEntryNotFoundError("not in the cache")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_cached)
    with pytest.raises(HubUnavailableError if where == "models" else DatasetUnavailableError):
        call()

    def bug(*a, **k):
        raise RuntimeError("a bug in the lookup")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", bug)
    with pytest.raises(RuntimeError, match="a bug in the lookup"):
        call()


def test_a_real_export_bug_is_not_recorded_as_no_lora_form(tmp_path, monkeypatch):
    """pipeline.save asks the kind whether it has a LoRA form; any other export error
    propagates instead of becoming results.json's `export: "none: ..."`."""
    from geora.kinds.residual import ResidualKind
    from geora.training.pipeline import Run, save
    from geora.training.rundir import RunFolder

    def run_of(method):
        model = geora.prepare_model(build_tiny_qwen3(), method, rank=4) if method != "fullft" \
            else geora.prepare_model(build_tiny_qwen3(), method)
        return Run(None, RunFolder(tmp_path / method), model=model)   # save reads no settings

    run = run_of("fullft")
    save(run)
    assert run.export.startswith("none: method 'fullft' has no LoRA form")
    def broken(self, model, state, folder):
        raise ValueError("a bug in the export")
    monkeypatch.setattr(ResidualKind, "export", broken)
    with pytest.raises(ValueError, match="a bug in the export"):
        save(run_of("geora"))
    assert not (tmp_path / "geora" / "export").exists()
