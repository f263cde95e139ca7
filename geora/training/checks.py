"""Every numeric setting of a composed run config checked before anything loads, each with a
one-line error naming it (e.g. `train.max_steps=-3`, which the Trainer would otherwise
read as "train by epochs" and run 1,500 steps).

>>> check_value("train.max_steps", 200, INT_POSITIVE)
>>> check_value("train.max_steps", -3, INT_POSITIVE)
Traceback (most recent call last):
...
ValueError: train.max_steps=-3: expected an integer >= 1
>>> check_value("method.rho", 1.0, FRACTION)
Traceback (most recent call last):
...
ValueError: method.rho=1.0: expected a number in (0, 1)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """Valid values: integer or real, lower / upper bounds (open or closed), null or not."""
    integer: bool
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            lo, hi = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"a number in {lo}{self.low:g}, {self.high:g}{hi}"
        elif self.low is not None:
            what = "an integer" if self.integer else "a number"
            text = f"{what} {'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = "an integer" if self.integer else "a number"
        return text + (" or null" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value) or (self.integer and value != int(value)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


INT_POSITIVE = Range(integer=True, low=1)
INT_NON_NEGATIVE = Range(integer=True, low=0)
POSITIVE = Range(integer=False, low=0, low_open=True)
NON_NEGATIVE = Range(integer=False, low=0)
FRACTION = Range(integer=False, low=0, high=1, low_open=True, high_open=True)

# key -> valid range. Keys absent from a config are skipped (a config group may omit them).
NUMERIC_SETTINGS: dict[str, Range] = {
    "seed": INT_NON_NEGATIVE,
    "cpu_threads": Range(integer=True, low=1, nullable=True),   # or "auto" (check_config)
    # method.* first: train.learning_rate interpolates method.learning_rate, and the
    # error should name the key the user set
    "method.rank": Range(integer=True, low=1, nullable=True),
    "method.rho": Range(integer=False, low=0, high=1, low_open=True, high_open=True,
                        nullable=True),
    "method.alpha": Range(integer=False, low=0, low_open=True, nullable=True),
    "method.learning_rate": POSITIVE,
    "method.learning_rate_large": POSITIVE,
    "train.max_steps": INT_POSITIVE,
    "train.learning_rate": POSITIVE,
    "train.warmup_steps": INT_NON_NEGATIVE,
    "train.weight_decay": NON_NEGATIVE,
    "train.max_grad_norm": NON_NEGATIVE,             # 0 turns clipping off
    "train.num_generations": Range(integer=True, low=2),   # GRPO compares >= 2 completions
    "train.prompts_per_step": INT_POSITIVE,
    "train.gradient_accumulation_steps": INT_POSITIVE,
    "train.max_completion_length": INT_POSITIVE,
    "train.temperature": POSITIVE,
    "train.top_p": Range(integer=False, low=0, high=1, low_open=True),
    "train.beta": NON_NEGATIVE,
    "train.epsilon": POSITIVE,
    "train.epsilon_high": Range(integer=False, low=0, low_open=True, nullable=True),
    "train.num_iterations": INT_POSITIVE,
    "train.save_steps": INT_POSITIVE,
    "train.save_total_limit": Range(integer=True, low=1, nullable=True),
    "train.logging_steps": INT_POSITIVE,
    "data.train_size": Range(integer=True, low=1, nullable=True),
    "data.test_size": Range(integer=True, low=0, nullable=True),
    "data.seed": INT_NON_NEGATIVE,
    "model.init_seed": INT_NON_NEGATIVE,
}


# The checkpoint families (conf/checkpoint/: base = pretrained, post = post-trained).
CHECKPOINTS = ("base", "post")

# Settings that may be given once or per chat mode ({thinking: ..., no_thinking: ...}).
PER_CHAT_MODE = ("train.max_completion_length",)


def check_value(key: str, value: Any, valid: Range) -> None:
    if key in PER_CHAT_MODE and hasattr(value, "items"):
        from geora.models import CHAT_MODES, for_chat_mode

        for_chat_mode(value, False, key)   # the two modes, and nothing else
        for mode in CHAT_MODES:
            check_value(f"{key}.{mode}", value[mode], valid)
        return
    if not valid.accepts(value):
        raise ValueError(f"{key}={value!r}: expected {valid.describe()}")


def check_config(cfg) -> None:
    """Check a composed run config (conf/config.yaml with its groups): every numeric setting
    in NUMERIC_SETTINGS, the evaluation settings (geora.evaluation.EvalSettings: batch size,
    limit, max_gen_toks, ...), the analysis settings (weight_analysis.AnalysisSettings) and
    the model dtype. Raises ValueError naming the first bad
    key; loads nothing."""
    from omegaconf import OmegaConf

    from geora.evaluation.settings import EvalSettings
    from geora.models import torch_dtype

    for key, valid in NUMERIC_SETTINGS.items():
        missing = object()
        value = OmegaConf.select(cfg, key, default=missing)
        if key == "cpu_threads" and value == "auto":   # sized to the model once it is loaded
            continue
        if value is not missing:
            check_value(key, value, valid)
    if cfg.get("train") is not None and cfg.get("method") is not None and trains(cfg):
        from geora.training.grpo import trl_settings

        trl_settings(cfg.train)   # a key neither TRL's nor ours is named before anything runs
    if cfg.get("method") is not None and cfg.method.get("trains", True) and cfg.method.get("options"):
        check_method_options(cfg.method)
    if cfg.get("analysis") is not None:
        from geora.training.weight_analysis import AnalysisSettings

        AnalysisSettings.from_config(cfg.analysis)
    if cfg.get("model") is not None:
        try:
            if str(cfg.model.get("dtype")) != "auto":   # auto: the checkpoint's own
                torch_dtype(str(cfg.model.get("dtype", "float32")))
        except ValueError as e:
            raise ValueError(f"model.dtype: {e}") from None
        check_checkpoint(cfg.model)
    if cfg.get("eval") is not None:   # after the model: eval interpolates its prompt format
        EvalSettings.from_config(cfg.eval)


def check_method_options(method) -> None:
    """method.options' values (a seed that is not an integer, an unknown svd, ...), checked
    before anything is written rather than inside prepare_model."""
    from omegaconf import OmegaConf

    from geora.methods import check_option_values

    try:
        check_option_values(str(method.name), OmegaConf.to_container(method.options, resolve=True))
    except ValueError as e:
        raise ValueError(f"method.options: {e}") from None


def check_checkpoint(model) -> None:
    """The model's prompt format is known, and a checkpoint that was never released
    (conf/model/qwen3_32b/base.yaml: `unavailable`) is refused unless random weights or a
    local copy stand in for it."""
    from geora.prompts import check_prompt_format

    check_prompt_format(model.get("prompt_format", "chat"))
    family = model.get("family")
    if family not in (None, *CHECKPOINTS):
        raise ValueError(f"model.family={family!r} (model {model.get('name')!r}): choose one of "
                         f"{', '.join(CHECKPOINTS)} with checkpoint=base|post")
    if model.get("unavailable") and not (model.get("random_init") or model.get("local_path")):
        raise ValueError(f"model {model.get('name')!r}: {model.unavailable}")


def trains(cfg) -> bool:
    """False for the `base` pseudo-method (conf/method/base.yaml: method.trains=false), whose
    job evaluates the untrained model and trains nothing."""
    return bool(cfg.method.get("trains", True))


def check_run_inputs(cfg, device: str) -> None:
    """What a run needs, checked before anything is written or loaded, each failure one line
    naming the setting: one chat mode (eval.enable_thinking = model.enable_thinking), the
    evaluation's tasks (code execution allowed, local files present, hub data cached or the
    hub reachable: geora.evaluation.build_specs), and for a training run the rewards (known,
    code execution allowed) and bf16 on a GPU only. The data's columns are checked once it
    is loaded (pipeline.start, `check_reward_columns`)."""
    from geora.evaluation import EvalSettings, build_specs
    from geora.training.resources import check_resources
    from geora.rewards import check_code_execution_allowed, get_rewards

    settings = EvalSettings.from_config(cfg.eval)
    if not trains(cfg) and not settings.tasks:
        raise ValueError(f"method={cfg.method.name} only evaluates the untrained model, but "
                         f"eval={cfg.eval.get('name')} has no tasks; choose an eval config")
    if settings.tasks:
        thinking = cfg.model.get("enable_thinking")
        if settings.enable_thinking != thinking:
            raise ValueError(
                f"eval.enable_thinking={settings.enable_thinking} but model.enable_thinking="
                f"{thinking}: the model would be trained in one chat mode and evaluated in "
                f"another; set model.enable_thinking (eval.enable_thinking follows it)")
        chat = str(cfg.model.get("prompt_format", "chat")) == "chat"
        if settings.apply_chat_template != chat:
            raise ValueError(
                f"eval.apply_chat_template={settings.apply_chat_template} but model.prompt_format="
                f"{cfg.model.get('prompt_format', 'chat')}: the model would be trained on one "
                f"prompt format and evaluated on another; leave eval.apply_chat_template to "
                f"follow model.prompt_format")
    check_resources(cfg, trains(cfg))   # every missing model / data set named at once
    if settings.tasks:
        build_specs(settings)
    if not trains(cfg):
        return
    from geora.vllm_backend import check_vllm_settings

    check_vllm_settings(cfg.train, device)   # vLLM missing, server mode on a CPU
    names = list(cfg.train.rewards)
    get_rewards(names)   # unknown names fail here, naming the registry
    check_code_execution_allowed(names, bool(cfg.train.get("allow_code_execution", False)))
    if device == "cpu" and cfg.train.get("bf16"):
        raise ValueError("train.bf16=true on device=cpu: TRL's bf16 path fails on the cpu; "
                         "set train.bf16=false (or run on a GPU)")



# Config nodes that take free-form keys, set with `+key=value` (geora.prepare_model options).
FREE_FORM_NODES = ("method.options",)


def _grpo_fields() -> set[str]:
    """trl.GRPOConfig's field names: `+train.<field>=...` sets one no config file names
    (geora.training.grpo hands the train group to GRPOConfig under TRL's names)."""
    import dataclasses

    from trl import GRPOConfig

    return {f.name for f in dataclasses.fields(GRPOConfig)}


def check_added_keys(overrides, config_dir) -> None:
    """Refuse `+a.b=value` overrides of keys the config does not have (Hydra adds them, and
    nothing reads a misspelt `+train.lernig_rate=1e-4`), naming the key. Allowed: config
    groups (`+experiment=...`), Hydra's own keys, FREE_FORM_NODES, trl.GRPOConfig's fields
    under train (`+train.shuffle_dataset=false`) and `++` (an explicit add-or-replace; the
    train group's keys are then checked against GRPOConfig by grpo_config).

    >>> from geora.fileio import REPO_ROOT
    >>> conf = REPO_ROOT / "conf"
    >>> check_added_keys(["+experiment=micro_lr_study", "+method.options.svd_device=cpu"], conf)
    >>> check_added_keys(["++train.learning_rate=1e-4"], conf)
    >>> check_added_keys(["+train.lernig_rate=1e-4"], conf)
    Traceback (most recent call last):
    ...
    ValueError: +train.lernig_rate=1e-4 adds a key the config does not have (train.lernig_rate): check its spelling; '+' is only for config groups and for free-form keys under method.options
    """
    from pathlib import Path

    from hydra.core.override_parser.overrides_parser import OverridesParser

    for text, override in zip(overrides, OverridesParser.create().parse_overrides(list(overrides))):
        if not override.is_add():   # (`++` is is_force_add)
            continue
        key = override.key_or_group
        if (Path(config_dir) / key).is_dir() or key.split(".")[0] == "hydra" \
                or any(key.startswith(node + ".") for node in FREE_FORM_NODES) \
                or (key.startswith("train.") and key[len("train."):] in _grpo_fields()):
            continue
        raise ValueError(f"{text} adds a key the config does not have ({key}): check its "
                         f"spelling; '+' is only for config groups and for free-form keys "
                         f"under {', '.join(FREE_FORM_NODES)}")
