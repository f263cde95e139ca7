"""What Hydra needs before it composes a config: the OmegaConf resolvers the configs use
and the typed schemas (Hydra's ConfigStore) they are validated against. Every entry point
calls `register()` first (run.py, scripts/evaluate.py, the tests' conftest), so a config
composes, resolves and is type-checked the same wherever it is read.

>>> register()
>>> from hydra import compose, initialize_config_dir
>>> from geora.fileio import REPO_ROOT
>>> with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
...     compose("config", overrides=["eval=micro", "eval.batch_size=many"])
Traceback (most recent call last):
...
hydra.errors.ConfigCompositionException: Error merging override eval.batch_size=many
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, OmegaConf


@dataclass
class EvalConfig:
    """The `eval` group's schema and defaults, in one place: every conf/eval/*.yaml starts
    from it (`defaults: - /eval_defaults/common@_here_`) and sets its name, tasks and what
    differs. A key it does not have, or a value of the wrong type, fails at composition,
    naming the key. geora.evaluation.EvalSettings validates the values' meaning (tasks in
    the catalogue, a known backend, ...) and holds the same defaults (tests/test_config.py)."""
    name: str = MISSING
    tasks: List[str] = field(default_factory=list)     # catalogue names (evaluation/catalog.py)
    in_domain: List[str] = field(default_factory=list)  # which of them are in-domain
    backend: str = "hf"           # hf: transformers in-process; vllm: lm-eval's vllm backend
    batch_size: int = 16          # generations per forward pass
    limit: Optional[int] = None   # items per task; null: every item
    data_dir: Optional[str] = None   # local files in the real data sets' schemas; null: hub
    # chat (the model's chat template) or plain: follows model.prompt_format, as training does
    apply_chat_template: Any = "${oc.select:model.prompt_format,chat}"
    gen_kwargs: Dict[str, Any] = field(default_factory=dict)   # {}: each task's own
    # null: each task's own k; an integer for every sampled task; or {task: k}
    repeats: Any = None
    max_gen_toks: Optional[int] = None   # null: each task's own length limit
    allow_code_execution: bool = False   # HumanEval/MBPP run model-written code only if true
    trust_remote_code: bool = False
    log_samples: bool = True      # one JSON line per item next to the summary
    seed: int = 0
    # the model's chat mode, one setting for training and evaluation; think_end_token null:
    # with thinking on, only the text after the last </think> is scored
    enable_thinking: Any = "${oc.select:model.enable_thinking,null}"
    think_end_token: Optional[str] = None
    num_threads: Optional[int] = None   # torch CPU threads while evaluating; null: as set
    # scripts/evaluate.py only: replace a run's evaluation made with other settings
    overwrite: bool = False


@dataclass
class MethodConfig:
    """The `method` group's schema and defaults: every conf/method/*.yaml starts from it
    (`defaults: - /method_defaults/common@_here_`) and sets its name and what differs; a
    method sets to null what it does not use (geora.prepare_model refuses an argument a
    method ignores). rank and rho are the paper's r = 16 and rho = 0.2, the same values as
    geora.methods.DEFAULT_RANK / DEFAULT_RHO (tests/test_one_source.py)."""
    name: str = MISSING
    trains: bool = True           # false only for `base`: the untrained model, evaluated
    rank: Optional[int] = 16
    rho: Optional[float] = 0.2
    alpha: Optional[float] = None   # null: alpha = rank (s = 1), where the paper's and PEFT's agree
    target_modules: Any = "all-linear"
    # the micro model's (CPU demo; from a reference run, not tuned per method) and a real
    # model's (train=paper; a documented choice: the paper reports no learning rates)
    learning_rate: float = 5.0e-4
    learning_rate_large: float = 5.0e-5
    options: Dict[str, Any] = field(default_factory=dict)   # geora.prepare_model's options


@dataclass
class TrainConfig:
    """The `train` group's schema (conf/train/micro.yaml and paper.yaml start from it,
    `defaults: - /train_schema@_here_`): the type of every setting, each recipe giving every
    value (MISSING here: a recipe that forgets one fails at composition, as does a value of
    the wrong type, naming the key). All but the project's own keys
    (geora.training.grpo.PROJECT_KEYS) go to trl.GRPOConfig under these names;
    `+train.<GRPOConfig field>=...` sets one that no recipe names."""
    name: str = MISSING
    device: str = MISSING
    max_steps: int = MISSING
    learning_rate: float = MISSING
    lr_scheduler_type: str = MISSING
    warmup_steps: int = MISSING
    weight_decay: float = MISSING
    max_grad_norm: float = MISSING
    num_generations: int = MISSING
    prompts_per_step: int = MISSING
    gradient_accumulation_steps: int = MISSING
    max_completion_length: Any = MISSING      # one integer, or {thinking: N, no_thinking: M}
    temperature: float = MISSING
    top_p: float = MISSING
    beta: float = MISSING
    loss_type: str = MISSING
    epsilon: float = MISSING
    epsilon_high: Optional[float] = MISSING
    scale_rewards: Any = MISSING              # group | batch | none (TRL also takes booleans)
    num_iterations: int = MISSING
    mask_truncated_completions: bool = MISSING
    vllm_importance_sampling_correction: bool = MISSING
    rewards: Any = MISSING                    # names in geora.rewards.REWARDS
    reward_weights: Optional[List[float]] = MISSING
    allow_code_execution: bool = MISSING
    track_every: Optional[int] = MISSING
    save_steps: int = MISSING
    save_total_limit: Optional[int] = MISSING
    logging_steps: int = MISSING
    fused_lora: bool = MISSING
    merged_rollouts: bool = MISSING
    use_vllm: bool = MISSING
    vllm_mode: str = MISSING
    bf16: bool = MISSING
    gradient_checkpointing: bool = MISSING
    check_frozen: bool = MISSING
    resume: str = MISSING
    overwrite: bool = MISSING


def folder_name(path: str | None) -> str:
    """A run-folder-safe name for a model folder (`model=hf model.path=DIR`): its last part.

    >>> folder_name("/models/SmolLM2-135M-Instruct/"), folder_name("geora/assets/micro")
    ('SmolLM2-135M-Instruct', 'micro')
    >>> folder_name(None)
    'hf'
    """
    if not path:   # (the run's checks then name the missing model.path)
        return "hf"
    name = Path(str(path)).expanduser().resolve().name
    return re.sub(r"[^\w.+-]", "_", name) or "model"


def register() -> None:
    from hydra.core.config_store import ConfigStore

    OmegaConf.register_new_resolver("folder_name", folder_name, replace=True)
    store = ConfigStore.instance()
    store.store(group="eval_defaults", name="common", node=EvalConfig)
    store.store(group="method_defaults", name="common", node=MethodConfig)
    store.store(name="train_schema", node=TrainConfig)
