"""GRPO training of every method on a tiny Qwen3 (2 steps): adapters move, frozen tensors
stay bitwise, SparseFT's frozen entries never move, the KL reference is the ORIGINAL model,
and the whole pipeline fills a run folder.

    .venv/bin/python -m pytest -q tests/test_training.py
"""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import geora
from geora import rewards
from geora.training.grpo import build_trainer
from geora.training.outcome import frozen_snapshot, frozen_unchanged
from tests.conftest import build_tiny_qwen3

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")
TINY = ["train.max_steps=2", "train.num_generations=4", "train.prompts_per_step=2",
        "train.max_completion_length=8", "train.save_steps=100", "train.logging_steps=1",
        "train.rewards=[test_length]", "data.train_size=16", "data.test_size=2", "eval=none"]


def length_reward(completions, **_):
    """Varies within every group, so advantages are non-zero even for a random model."""
    return [len(rewards.completion_text(c)) / 40.0 for c in completions]


@pytest.fixture(autouse=True)
def test_reward(monkeypatch):
    monkeypatch.setitem(rewards.REWARDS, "test_length", length_reward)



def config(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=TINY + list(overrides))


def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(ROOT / "geora" / "assets" / "micro")


def dataset(cfg):
    from geora.data.loaders import load_data
    return load_data(cfg.data)[0]


def run_steps(method, tmp_path, *overrides):
    """(model before any step: frozen snapshot, trainable copies), trainer after 2 steps."""
    cfg = config(f"method={method}", *overrides)
    torch.manual_seed(0)
    kw = {k: cfg.method[k] for k in ("rank", "rho", "alpha", "target_modules") if cfg.method[k] is not None}
    kw.update(OmegaConf.to_container(cfg.method.options, resolve=True))
    model = geora.prepare_model(build_tiny_qwen3(seed=0), method, **kw)
    frozen = frozen_snapshot(model)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = build_trainer(model, tokenizer(), dataset(cfg), cfg.train, output_dir=str(tmp_path),
                            seed=0, device="cpu", report_to=[])
    trainer.train()
    return frozen, trainable, trainer


@pytest.mark.parametrize("method", geora.available_methods())
def test_every_method_trains_two_steps(method, tmp_path):
    frozen, trainable, trainer = run_steps(method, tmp_path)
    assert trainer.state.global_step == 2
    model = trainer.model
    assert trainable, f"{method}: nothing trainable"
    params = dict(model.named_parameters())
    moved = [n for n, t in trainable.items() if not torch.equal(params[n].detach(), t)]
    # every trainable tensor moves (AdaLoRA may prune some singular values: most must move)
    need = 0.5 if method == "adalora" else 1.0
    assert len(moved) >= need * len(trainable), \
        f"{method}: unchanged {sorted(set(trainable) - set(moved))[:5]}"
    assert frozen_unchanged(model, frozen), f"{method}: a frozen tensor moved"
    if frozen:  # the check can fail: perturb one frozen tensor
        name = next(iter(frozen))
        with torch.no_grad():
            params[name].add_(1e-3)
        assert not frozen_unchanged(model, frozen)


def test_sparseft_frozen_entries_never_move(tmp_path):
    from torch.nn.utils import parametrize

    base = build_tiny_qwen3(seed=0)
    original = {n: m.weight.detach().clone() for n, m in base.named_modules()
                if isinstance(m, torch.nn.Linear)}
    _, _, trainer = run_steps("sparseft", tmp_path)
    checked = 0
    for name, module in trainer.model.named_modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        w, w0 = module.weight.detach(), original[name]
        mask = torch.zeros(w.numel(), dtype=torch.bool)
        mask[module.parametrizations.weight[0].indices] = True
        mask = mask.view_as(w)
        assert torch.equal(w[~mask], w0[~mask]), f"{name}: an entry outside the mask moved"
        assert not torch.equal(w[mask], w0[mask]), f"{name}: no masked entry moved"
        assert 0 < mask.float().mean() < 1
        checked += 1
    assert checked >= 14  # 2 layers x 7 projections


@pytest.mark.parametrize("method", ["geora", "pissa"])
def test_kl_reference_is_the_original_model(method, tmp_path):
    """With beta > 0, TRL's reference log-probs come from `use_adapter(model, "ref")` (the
    frozen copy of the initial adapter it adds to a passed-in PeftModel): W_res + s B0 A0 = W."""
    from trl.trainer.utils import use_adapter

    _, _, trainer = run_steps(method, tmp_path, "train.beta=0.1")
    model = trainer.model
    assert "ref" in model.peft_config  # TRL takes its "ref adapter" path, not "adapters off"
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        with use_adapter(model, adapter_name="ref"):  # exactly TRL's reference context
            ref = model(input_ids=ids).logits
        with model.disable_adapter():                 # what peft_config= would have given
            residual = model(input_ids=ids).logits
        trained = model(input_ids=ids).logits
        original = build_tiny_qwen3(seed=0)(input_ids=ids).logits
    assert torch.allclose(ref, original, atol=1e-5), (ref - original).abs().max()
    assert (residual - original).abs().max() > 1e-2   # W_res alone is another model
    assert (trained - original).abs().max() > 1e-6    # the policy did move


def test_pipeline_fills_the_run_folder(tmp_path):
    import json

    from geora.training.pipeline import train

    cfg = config("method=geora", "model.random_init=true", "model.arch.hidden_size=64",
                 "model.arch.num_hidden_layers=2", "model.arch.intermediate_size=128",
                 "model.arch.head_dim=16", "model.bundled=null")
    res = train(cfg, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["status"] == "finished" and saved == json.loads(json.dumps(res, default=str))
    assert saved["train"]["steps"] == 2 and saved["train"]["frozen_unchanged"] is True
    assert saved["train"]["reward_start"] is not None and saved["env"]["packages"]["trl"]
    for name in ("config.yaml", "train_log.jsonl", "adapter", "export"):
        assert (tmp_path / name).exists(), name
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary leftovers


def test_vllm_needs_vllm_installed_and_batches_must_split():
    from geora.training.grpo import grpo_config, per_device_batch

    cfg = config("train.use_vllm=true")
    with pytest.raises(RuntimeError, match=r"train.use_vllm=true needs vLLM.*make install-vllm"):
        grpo_config(cfg.train, output_dir="unused", seed=0, device="cpu", report_to=[])
    cfg = config()
    assert per_device_batch(cfg.train, 1) == 8  # 2 prompts x 4 completions
    with pytest.raises(ValueError, match="do not split"):
        per_device_batch(cfg.train, 3)
    args = grpo_config(cfg.train, output_dir="unused", seed=0, device="cpu", report_to=[])
    assert (args.use_cpu, args.bf16, args.gradient_checkpointing) == (True, False, False)
    assert args.learning_rate == cfg.method.learning_rate and args.max_steps == 2
