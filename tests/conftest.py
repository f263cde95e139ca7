"""Shared fixtures: tiny models built in the test (seeded, fp32, CPU), never downloaded."""
from __future__ import annotations

import pytest
import torch


def build_tiny_qwen3(seed: int = 0, vocab_size: int = 512, **overrides):
    """A 2-layer Qwen3 with every real module name (q_proj ... down_proj), random weights."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    kwargs = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                  head_dim=16, max_position_embeddings=256, tie_word_embeddings=True)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config(**kwargs)).float().eval()
    return model


# The one-thread fixture of every test and doctest is in the root conftest.py.


@pytest.fixture
def tiny_qwen3():
    return build_tiny_qwen3()


@pytest.fixture
def tiny_input_ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 512, (2, 12), generator=g)


def compose_run(*overrides):
    """conf/config.yaml composed with `overrides`, as run.py composes it."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def eval_group(name: str):
    """conf/eval/<name>.yaml as a run sees it: composed with its defaults
    (geora.config.EvalConfig) under the main config."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("config", overrides=[f"eval={name}"]).eval
