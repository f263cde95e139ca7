"""The GRPO settings that neither the paper nor its cited recipe fixes are written in the
train configs and reach TRL's GRPOConfig as written (docs/protocol.md lists each with its
reason): the clip range, reward scaling, truncated completions (masked under train=paper,
as DAPO does) and the vLLM importance-sampling correction.

    .venv/bin/python -m pytest -q -p no:xdist tests/test_grpo_settings.py
"""
from __future__ import annotations

from pathlib import Path

import pytest

from geora.training.settings import RunSettings
from geora.training.grpo import grpo_config
from tests.conftest import compose_run as make

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")


def args_of(*overrides):
    cfg = make("train.bf16=false", *overrides)
    return grpo_config(cfg.train, output_dir="unused", seed=0, device="cpu", report_to=[])


def test_paper_recipe_masks_truncated_completions_and_writes_the_rest_out():
    args = args_of("train=paper")
    assert args.mask_truncated_completions is True
    assert (args.loss_type, args.beta, args.scale_rewards, args.num_iterations) == (
        "dapo", 0.0, "group", 1)
    assert args.epsilon == 0.2 and args.epsilon_high is None      # TRL: None = epsilon
    assert args.vllm_importance_sampling_correction is True
    # one generation per optimizer step: TRL skips old log-probs, so the ratio is exactly 1
    assert args.steps_per_generation == args.gradient_accumulation_steps


def test_micro_keeps_trls_default_and_overrides_reach_trl():
    assert args_of().mask_truncated_completions is False
    args = args_of("train=paper", "train.mask_truncated_completions=false",
                   "train.epsilon_high=0.28", "train.vllm_importance_sampling_correction=false")
    assert (args.mask_truncated_completions, args.epsilon_high,
            args.vllm_importance_sampling_correction) == (False, 0.28, False)


@pytest.mark.parametrize("override,message", [
    ("train.epsilon_high=0", "train.epsilon_high=0.0: expected a number > 0 or null"),
    ("train.epsilon_high=-0.3", "train.epsilon_high=-0.3"),
])
def test_bad_clip_range_is_named(override, message):
    with pytest.raises(ValueError, match=message):
        RunSettings.from_config(make("train=paper", override))


def test_the_train_group_reaches_grpoconfig_under_trls_own_names():
    # a GRPOConfig field no config file sets goes through as it is ...
    args = args_of("++train.shuffle_dataset=false", "++train.top_entropy_quantile=0.8")
    assert args.shuffle_dataset is False and args.top_entropy_quantile == 0.8
    assert args_of().shuffle_dataset is True                      # TRL's default otherwise
    # ... a name GRPOConfig does not have is refused, naming it ...
    with pytest.raises(ValueError, match=r"^train\.lernig_rate: neither a trl\.GRPOConfig field"):
        args_of("++train.lernig_rate=1e-4")
    # ... and what the project derives is not taken from the config
    args = args_of("++train.per_device_train_batch_size=3")
    assert args.per_device_train_batch_size == 32                 # 4 prompts x 8 completions


def test_plus_adds_a_grpoconfig_field_but_not_a_typo():
    from geora.training.checks import check_added_keys

    check_added_keys(["+train.shuffle_dataset=false"], ROOT / "conf")
    with pytest.raises(ValueError, match=r"\+train\.lernig_rate=1e-4 adds a key"):
        check_added_keys(["+train.lernig_rate=1e-4"], ROOT / "conf")


def test_a_train_key_typo_is_named_before_anything_runs():
    with pytest.raises(ValueError, match=r"^train\.lernig_rate: neither"):
        RunSettings.from_config(make("++train.lernig_rate=1e-4"))


def test_bf16_on_the_cpu_is_refused_at_start_and_by_grpo_config():
    """One rule (grpo.check_device_settings), run before anything loads and again where a
    trainer is built directly."""
    from geora.training.checks import check_run_inputs

    settings = RunSettings.from_config(make("train.bf16=true"))   # train=micro: device cpu
    message = r"^train.bf16=true on device=cpu: TRL's bf16 path fails on the cpu"
    with pytest.raises(ValueError, match=message):
        check_run_inputs(settings)
    with pytest.raises(ValueError, match=message):
        grpo_config(settings.train, output_dir="unused", seed=0, device="cpu", report_to=[])
