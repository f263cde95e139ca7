"""Full-weight methods train in 16-bit models: a model configured in bf16 is loaded with
fp32 master weights when its method's kind steps the model's own weights (fullft), so one
optimizer step at lr 1e-6 changes it, where the same step on bf16 weights rounds away;
SparseFT keeps its fp32 delta on the bf16 model and its frozen entries bitwise unchanged.

    .venv/bin/python -m pytest -q tests/test_master_weights.py
"""
from __future__ import annotations

from pathlib import Path

import pytest

import torch
from hydra import compose, initialize_config_dir

import geora
from geora.kinds import KINDS
from geora import rewards
from geora.training.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")
TINY = ["model.random_init=true", "model.bundled=null", "model.dtype=bfloat16",
        "model.arch.hidden_size=64", "model.arch.num_hidden_layers=2",
        "model.arch.intermediate_size=128", "model.arch.head_dim=16", "train.learning_rate=1e-6",
        "eval=none"]


def config(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=TINY + list(overrides))


def one_adamw_step(model, lr=1e-6):
    """One AdamW step (the Trainer's default optimizer) on a language-modelling loss: its
    first step moves every parameter with a gradient by about lr."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()


def hidden_weights(model) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and "lm_head" not in n}


def test_only_the_full_kind_needs_fp32_master_weights():
    assert {k.name for k in KINDS.values() if k.needs_fp32_master_weights} == {"full"}


@pytest.mark.parametrize("method,dtype", [("fullft", "float32"), ("sparseft", "bfloat16"),
                                          ("geora", "bfloat16"), ("lora", "bfloat16")])
def test_load_dtype_follows_the_kind(method, dtype):
    from geora.training.pipeline import load_dtype

    def dtype_of(*overrides):
        return load_dtype(RunSettings.from_config(config(*overrides)))

    assert dtype_of(f"method={method}") == dtype
    assert dtype_of(f"method={method}", "model.dtype=float32") == "float32"
    assert dtype_of("method=base") == "bfloat16"   # the Base row: as configured


def test_one_step_at_lr_1e6_changes_a_bf16_configured_fullft_model():
    from geora.models import load_model
    from geora.training.pipeline import load_dtype

    cfg = config("method=fullft")
    assert cfg.model.dtype == "bfloat16" and cfg.train.learning_rate == 1e-6
    # what the pipeline loads
    master, _ = load_model(cfg.model, dtype=load_dtype(RunSettings.from_config(cfg)))
    plain, _ = load_model(cfg.model)                                    # bf16, as configured
    for model in (master, plain):
        geora.prepare_model(model, "fullft")
    before_master, before_plain = hidden_weights(master), hidden_weights(plain)
    one_adamw_step(master)
    one_adamw_step(plain)
    changed = [(w != before_master[n]).float().mean().item() for n, w in hidden_weights(master).items()]
    assert min(changed) > 0.9, changed                   # fp32 master: nearly every entry moved
    assert all(w.dtype == torch.float32 for w in hidden_weights(master).values())
    # ... the control: in bf16, no entry with |w| >= 1e-3 moves (w + 1e-6 rounds back to w)
    for n, w in hidden_weights(plain).items():
        big = before_plain[n].abs() >= 1e-3
        assert torch.equal(w[big], before_plain[n][big]), n


def test_sparseft_on_bf16_keeps_frozen_entries_and_an_fp32_delta():
    from torch.nn.utils import parametrize

    from geora.models import load_model

    cfg = config("method=sparseft")
    model, _ = load_model(cfg.model)
    assert next(model.parameters()).dtype == torch.bfloat16
    before = hidden_weights(model)
    model = geora.prepare_model(model, "sparseft", rank=4)
    one_adamw_step(model)
    checked = 0
    for name, module in model.named_modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        delta = module.parametrizations.weight[0]
        mask = torch.zeros(module.weight.numel(), dtype=torch.bool)
        mask[delta.indices.long()] = True
        mask = mask.view_as(module.weight)
        w = module.weight.detach()
        assert torch.equal(w[~mask], before[name][~mask]), name     # frozen: bitwise
        assert delta.delta.dtype == torch.float32
        assert (delta.delta.detach().abs() > 0).float().mean() > 0.9, name   # the step was kept
        checked += 1
    assert checked == 14   # 2 layers x 7 projections


def test_fullft_in_a_bf16_configured_run_trains_fp32_and_finishes(tmp_path, monkeypatch, caplog):
    """The whole pipeline: GRPO on a bf16-configured fullft model loads fp32 weights, takes
    its step at lr 1e-6 and finishes; the saved weights differ from the initial ones."""
    from safetensors.torch import load_file

    from geora.models import load_model
    from geora.training.pipeline import train

    monkeypatch.setitem(rewards.REWARDS, "test_length",
                        lambda completions, **_: [len(rewards.completion_text(c)) / 40.0
                                                  for c in completions])
    cfg = config("method=fullft", "train.max_steps=1", "train.num_generations=4",
                 "train.prompts_per_step=2", "train.max_completion_length=8",
                 "train.rewards=[test_length]", "data.train_size=8", "data.test_size=2")
    with caplog.at_level("INFO", logger="geora.training.pipeline"):
        res = train(cfg, tmp_path)
    assert res["status"] == "finished" and res["train"]["steps"] == 1
    assert "loading micro in float32 (master weights) instead of bfloat16" in caplog.text
    saved = load_file(str(tmp_path / "adapter" / "model.safetensors"))
    initial, _ = load_model(cfg.model)   # the same seeded random init, in bf16
    moved = 0
    for name, w0 in hidden_weights(initial).items():
        w1 = saved[f"{name}.weight"]
        assert w1.dtype == torch.float32
        moved += int((w1 != w0.float()).sum())
    assert moved > 0
