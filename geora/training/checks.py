"""The rules that span several sections of a run's config, checked before anything is
written or loaded, each failure one line naming the settings. A section's own values (types,
ranges, choices, rules between its own keys) are checked when it is built
(geora.config.sections, geora.training.settings.RunSettings); `check_added_keys` reads the
command line.
"""
from __future__ import annotations

from geora.config.sections import TrainConfig
from geora.training.settings import RunSettings


def check_run_inputs(settings: RunSettings) -> None:
    """What a run needs, checked before anything is written or loaded, each failure one line
    naming the setting: one chat mode (eval.enable_thinking = model.enable_thinking), the
    evaluation's tasks (code execution allowed, local files present, hub data cached or the
    hub reachable: geora.evaluation.build_specs), and for a training run the rewards (known,
    code execution allowed) and bf16 on a GPU only. The data's columns are checked once it
    is loaded (pipeline.start, `check_reward_columns`)."""
    from geora.evaluation import build_specs
    from geora.rewards import check_code_execution_allowed, get_rewards
    from geora.training.preflight import check_method_fits_model
    from geora.training.resources import check_resources

    s, evaluation = settings, settings.eval
    if not s.trains and not evaluation.tasks:
        raise ValueError(f"method={s.method.name} only evaluates the untrained model, but "
                         f"eval={evaluation.name} has no tasks; choose an eval config")
    if evaluation.tasks:
        thinking = s.model.enable_thinking
        if evaluation.enable_thinking != thinking:
            raise ValueError(
                f"eval.enable_thinking={evaluation.enable_thinking} but model.enable_thinking="
                f"{thinking}: the model would be trained in one chat mode and evaluated in "
                f"another; set model.enable_thinking (eval.enable_thinking follows it)")
        if evaluation.apply_chat_template != (s.model.prompt_format == "chat"):
            raise ValueError(
                f"eval.apply_chat_template={evaluation.apply_chat_template} but "
                f"model.prompt_format={s.model.prompt_format}: the model would be trained on "
                f"one prompt format and evaluated on another; leave eval.apply_chat_template "
                f"to follow model.prompt_format")
    check_resources(s)   # every missing model / data set named at once
    check_method_fits_model(s)   # targets and rank against the shapes, from the config alone
    if evaluation.tasks:
        build_specs(evaluation)
    if not s.trains:
        return
    from geora.training.grpo import check_device_settings
    from geora.training.weight_analysis import needs_initial_weights

    if s.analysis.track_every is not None and not s.analysis.keep_initial \
            and needs_initial_weights(s.method.name):
        raise ValueError(f"analysis.track_every={s.analysis.track_every} with method="
                         f"{s.method.name}: needs analysis.keep_initial=true (W0 is what dW "
                         f"is read against)")

    check_device_settings(s.train, s.device)   # vLLM missing or in server mode on a CPU; bf16
    names = list(s.train.rewards)
    get_rewards(names)   # unknown names fail here, naming the registry
    check_code_execution_allowed(names, s.train.allow_code_execution)


# Config nodes that take free-form keys, set with `+key=value` (geora.prepare_model options).
FREE_FORM_NODES = ("method.options",)


def check_added_keys(overrides, config_dir) -> None:
    """Refuse `+a.b=value` overrides of keys the config does not have (Hydra adds them, and
    nothing reads a misspelt `+train.lernig_rate=1e-4`), naming the key. Allowed: config
    groups (`+experiment=...`), Hydra's own keys, FREE_FORM_NODES, trl.GRPOConfig's fields
    under train (`+train.shuffle_dataset=false`) and `++` (an explicit add-or-replace; the
    train group's keys are then checked against GRPOConfig by TrainConfig).

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
                or (key.startswith("train.") and key[len("train."):] in TrainConfig.grpo_fields()):
            continue
        raise ValueError(f"{text} adds a key the config does not have ({key}): check its "
                         f"spelling; '+' is only for config groups and for free-form keys "
                         f"under {', '.join(FREE_FORM_NODES)}")
