"""The typed schema of every config group, each default and each valid range in one place.

Hydra validates a composed config against these dataclasses (registered in its ConfigStore by
geora.config.register; every conf/<group>/*.yaml starts from its group's schema): a key a
schema lacks or a value of the wrong type fails at composition, naming the key. Building a
section (`ModelConfig.of(cfg.model)`, or geora.training.settings.RunSettings for a whole
run) then checks each value's range and meaning, once (`Section.__post_init__`): what the code
below receives is a valid, typed object, not the raw config.

>>> DataConfig.of({"name": "mine", "source": "local", "local_path": "d.jsonl", "seed": 3}).seed
3
>>> DataConfig.of({"name": "mine", "test_size": -1})
Traceback (most recent call last):
...
ValueError: data.test_size=-1: expected an integer >= 0 or null
>>> ModelConfig.of({"name": "m", "bundled": "micro", "dtpye": "float32"})
Traceback (most recent call last):
...
ValueError: unknown model setting dtpye (model 'm'); the model settings are: arch, bundled, dtype, enable_thinking, family, hub_id, init_seed, local_path, name, path, prompt_format, random_init, revision, stop_tokens, tokenizer_path, trust_remote_code, unavailable
"""
from __future__ import annotations

from dataclasses import MISSING as MISSING_FIELD, dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, ClassVar, Dict, List, Mapping, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from geora.config.rules import (BOOLEAN, FRACTION, INT_NON_NEGATIVE, INT_POSITIVE,
                                NON_NEGATIVE, POSITIVE, OneOf, Range, check_value, setting)

CHECKPOINTS = ("base", "post")   # conf/checkpoint/: pretrained, post-trained
RESUME_MODES = ("auto", "never")
VLLM_MODES = ("colocate", "server")   # TRL's: vLLM in the training process, or a server
SVD_CHOICES = ("auto", "exact", "randomized")
# Which runs get the mask overlaps: "auto" the methods with a mask fraction (rho: the GeoRA
# family, SparseFT); "all" every method, at its rank and rho or the paper's r = 16,
# rho = 0.2 where it has none; "none" no masks.
MASK_CHOICES = ("auto", "all", "none")


@dataclass
class Section:
    """One config group as a typed object: its fields' rules (rules.setting) and `check`
    (rules between its own fields) run when it is built."""
    GROUP: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value == MISSING:
                raise ValueError(f"{self.GROUP}.{f.name} is missing{self._where()}: set it in "
                                 f"the config file or on the command line")
            if "valid" in f.metadata:
                check_value(f"{self.GROUP}.{f.name}", value, f.metadata["valid"])
        self.check()

    def check(self) -> None:
        """Rules between this section's own settings (after every field passed its own)."""

    def _where(self) -> str:
        name = getattr(self, "name", None)
        return f" ({self.GROUP} {name!r})" if isinstance(name, str) and name != MISSING else ""

    @classmethod
    def of(cls, raw: "Section | Mapping[str, Any] | None"):
        """The checked section from a config node (a DictConfig, resolved here), a mapping
        or an instance (returned as it is); missing keys take the schema's defaults."""
        if isinstance(raw, cls):
            return raw
        if isinstance(raw, DictConfig):
            raw = OmegaConf.to_container(raw, resolve=True)
        names = {f.name for f in fields(cls)}
        raw = dict(raw or {})
        extra = cls._extra_keys({k: v for k, v in raw.items() if k not in names}, raw.get("name"))
        section = cls(**{k: v for k, v in raw.items() if k in names})
        return section._with_extra(extra) if extra else section

    @classmethod
    def _extra_keys(cls, unknown: dict, name: Any) -> dict:
        """Keys the schema lacks: refused, naming them (TrainConfig keeps GRPOConfig's)."""
        if unknown:
            where = f" ({cls.GROUP} {name!r})" if name else ""
            raise ValueError(f"unknown {cls.GROUP} setting {', '.join(sorted(unknown))}{where}; "
                             f"the {cls.GROUP} settings are: "
                             f"{', '.join(sorted(f.name for f in fields(cls)))}")
        return {}

    def _with_extra(self, extra: dict):
        return self

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def schema_defaults(schema) -> dict[str, Any]:
    """A schema's default values (the fields that have a literal one: no MISSING, no
    interpolation such as EvalConfig's `${oc.select:model.prompt_format,chat}`, which only
    resolves inside a whole config), e.g. to read a config written before a field was added
    as having it at its default."""
    out = {}
    for f in fields(schema):
        value = f.default_factory() if f.default_factory is not MISSING_FIELD else f.default
        literal = not (isinstance(value, str) and value.startswith("${"))
        if value is not MISSING_FIELD and value != MISSING and literal:
            out[f.name] = value
    return out


@dataclass
class ModelConfig(Section):
    """The `model` group (conf/model/*.yaml): which checkpoint, how it loads, its chat mode."""
    GROUP: ClassVar[str] = "model"
    name: str = MISSING
    path: Optional[str] = None          # model=hf only: the model folder
    family: Optional[str] = None        # base | post: which checkpoint (conf/checkpoint/)
    hub_id: Optional[str] = None
    revision: Optional[str] = None
    local_path: Optional[str] = None    # a local copy: nothing is downloaded
    bundled: Optional[str] = None       # a model shipped in geora/assets (micro)
    random_init: bool = False           # the architecture `arch` with random weights
    init_seed: int = setting(0, INT_NON_NEGATIVE)
    # random_init only: a tokenizer folder, or bundled:qwen3 (the real Qwen3 tokenizer shipped
    # in the package; needs arch.vocab_size >= 151669); null: the micro tokenizer
    tokenizer_path: Optional[str] = None
    prompt_format: str = "chat"         # chat: through its chat template; plain: bare text
    # extra ids that end an answer (e.g. <|im_end|> for a pretrained Qwen prompted in ChatML)
    stop_tokens: List[str] = setting(None, factory=list)
    # the chat mode of training and evaluation (Qwen3's template switch); null: nothing passed
    enable_thinking: Optional[bool] = None
    dtype: str = "float32"              # float32 | bfloat16 | float16, or auto (the checkpoint's)
    trust_remote_code: bool = False
    arch: Optional[Dict[str, Any]] = None   # random_init's architecture (a transformers config)
    unavailable: Optional[str] = None   # why this checkpoint cannot load (never released)

    def check(self) -> None:
        from geora.models import torch_dtype
        from geora.prompts import check_prompt_format

        if self.dtype != "auto":
            try:
                torch_dtype(self.dtype)
            except ValueError as e:
                raise ValueError(f"model.dtype: {e}") from None
        check_prompt_format(self.prompt_format)
        if self.path and self.local_path != self.path:   # hf.yaml: local_path = ${model.path}
            raise ValueError(f"model.path={self.path!r} (model {self.name!r}) is read by "
                             f"model=hf only; set model.local_path to load this model from a "
                             f"folder")
        if self.family not in (None, *CHECKPOINTS):
            raise ValueError(f"model.family={self.family!r} (model {self.name!r}): choose one "
                             f"of {', '.join(CHECKPOINTS)} with checkpoint=base|post")
        if self.unavailable and not (self.random_init or self.local_path):
            raise ValueError(f"model {self.name!r}: {self.unavailable}")


@dataclass
class DataConfig(Section):
    """The `data` group (conf/data/*.yaml): the training prompts and their gold answers."""
    GROUP: ClassVar[str] = "data"
    name: str = MISSING
    schema: str = "deepmath"            # raw columns -> training rows (geora.data.schemas)
    source: str = setting("hub", OneOf(("hub", "micro", "local")))
    task: str = "math"                  # source micro only: which synthetic task
    hub_id: Optional[str] = None
    revision: Optional[str] = None
    local_path: Optional[str] = None    # a file or folder in the data set's schema
    files: Optional[List[str]] = None   # glob patterns under the folder; null: every data file
    train_size: Optional[int] = setting(None, Range(integer=True, low=1, nullable=True))
    test_size: Optional[int] = setting(0, Range(integer=True, low=0, nullable=True))
    seed: int = setting(0, INT_NON_NEGATIVE)
    # appended to each question; null: the schema's instruction, "" nothing
    prompt_suffix: Optional[str] = None
    system_prompt: Optional[str] = None
    # the reward(s) its gold is made for (train.rewards follows them; geora.rewards)
    rewards: List[str] = setting(None, factory=lambda: ["accuracy"])

    def check(self) -> None:
        if self.source == "micro" and self.train_size is None and not self.local_path:
            raise ValueError(f"data {self.name!r}: micro data needs data.train_size")
        if self.source == "local" and not self.local_path:
            raise ValueError(f"data {self.name!r}: source 'local' needs data.local_path")


@dataclass
class MethodConfig(Section):
    """The `method` group: every conf/method/*.yaml starts from it (`defaults:
    - /schema/method@_here_`) and sets its name and what differs; a method sets to
    null what it does not use (geora.prepare_model refuses an argument a method ignores).
    rank and rho are the paper's r = 16 and rho = 0.2, geora.methods.DEFAULT_RANK /
    DEFAULT_RHO (tests/test_one_source.py)."""
    GROUP: ClassVar[str] = "method"
    name: str = MISSING
    trains: bool = True           # false only for `base`: the untrained model, evaluated
    rank: Optional[int] = setting(16, Range(integer=True, low=1, nullable=True))
    rho: Optional[float] = setting(0.2, replace(FRACTION, nullable=True))
    # null: alpha = rank (s = 1), where the paper's and PEFT's agree
    alpha: Optional[float] = setting(None, Range(integer=False, low=0, low_open=True,
                                                 nullable=True))
    target_modules: Any = "all-linear"
    # the micro model's (CPU demo; from a reference run, not tuned per method) and a real
    # model's (train=paper; a documented choice: the paper reports no learning rates)
    learning_rate: float = setting(5.0e-4, POSITIVE)
    learning_rate_large: float = setting(5.0e-5, POSITIVE)
    options: Dict[str, Any] = setting(None, factory=dict)   # geora.prepare_model's options

    def check(self) -> None:
        if self.trains and self.options:   # a seed that is not an integer, an unknown svd, ...
            from geora.methods import check_option_values

            try:
                check_option_values(self.name, dict(self.options))
            except ValueError as e:
                raise ValueError(f"method.options: {e}") from None


@dataclass
class TrainConfig(Section):
    """The `train` group (conf/train/micro.yaml and paper.yaml start from it, `defaults:
    - /schema/train@_here_`): the type and range of every setting, each recipe giving every
    value (MISSING here: a recipe that forgets one is named). All but PROJECT_KEYS go to
    trl.GRPOConfig under these names (`trl_kwargs`); `+train.<GRPOConfig field>=...` sets
    one that no recipe names (kept in `grpo_extra`)."""
    GROUP: ClassVar[str] = "train"
    # this project's own keys; every other one is a GRPOConfig field
    PROJECT_KEYS: ClassVar[tuple] = (
        "name", "device", "prompts_per_step", "rewards", "allow_code_execution", "track_every",
        "fused_lora", "merged_rollouts", "check_frozen", "resume", "overwrite")
    # GRPOConfig fields no recipe names (`of` sets them on the instance; a ClassVar, so
    # that the schema Hydra composes against has no such key)
    grpo_extra: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    name: str = MISSING
    device: str = MISSING
    max_steps: int = setting(MISSING, INT_POSITIVE)
    learning_rate: float = setting(MISSING, POSITIVE)
    lr_scheduler_type: str = MISSING
    warmup_steps: int = setting(MISSING, INT_NON_NEGATIVE)
    weight_decay: float = setting(MISSING, NON_NEGATIVE)
    max_grad_norm: float = setting(MISSING, NON_NEGATIVE)   # 0 turns clipping off
    num_generations: int = setting(MISSING, Range(integer=True, low=2))   # GRPO compares >= 2
    prompts_per_step: int = setting(MISSING, INT_POSITIVE)
    gradient_accumulation_steps: int = setting(MISSING, INT_POSITIVE)
    # one integer, or {thinking: N, no_thinking: M} (geora.models.for_chat_mode)
    max_completion_length: Any = setting(MISSING, INT_POSITIVE)
    temperature: float = setting(MISSING, POSITIVE)
    top_p: float = setting(MISSING, Range(integer=False, low=0, high=1, low_open=True))
    beta: float = setting(MISSING, NON_NEGATIVE)
    loss_type: str = MISSING
    epsilon: float = setting(MISSING, POSITIVE)
    epsilon_high: Optional[float] = setting(MISSING, Range(integer=False, low=0, low_open=True,
                                                           nullable=True))
    scale_rewards: Any = MISSING              # group | batch | none (TRL also takes booleans)
    num_iterations: int = setting(MISSING, INT_POSITIVE)
    mask_truncated_completions: bool = MISSING
    vllm_importance_sampling_correction: bool = MISSING
    rewards: Any = MISSING                    # names in geora.rewards.REWARDS
    reward_weights: Optional[List[float]] = MISSING
    allow_code_execution: bool = MISSING
    track_every: Optional[int] = setting(MISSING, Range(integer=True, low=1, nullable=True))
    save_steps: int = setting(MISSING, INT_POSITIVE)
    save_total_limit: Optional[int] = setting(MISSING, Range(integer=True, low=1, nullable=True))
    logging_steps: int = setting(MISSING, INT_POSITIVE)
    fused_lora: bool = MISSING
    merged_rollouts: bool = MISSING
    use_vllm: bool = MISSING
    vllm_mode: str = setting(MISSING, OneOf(VLLM_MODES))
    bf16: bool = MISSING
    gradient_checkpointing: bool = MISSING
    check_frozen: bool = MISSING
    resume: str = setting(MISSING, OneOf(RESUME_MODES))
    overwrite: bool = MISSING

    @staticmethod
    def grpo_fields() -> set[str]:
        """trl.GRPOConfig's field names (TRL imported here, not when the module loads)."""
        import dataclasses

        from trl import GRPOConfig

        return {f.name for f in dataclasses.fields(GRPOConfig)}

    @classmethod
    def _extra_keys(cls, unknown: dict, name: Any) -> dict:
        """Keys no recipe names must be trl.GRPOConfig fields (`+train.shuffle_dataset=false`),
        kept in grpo_extra; any other is refused, naming it."""
        if not unknown:   # (the common case: no TRL import needed)
            return {}
        bad = sorted(set(unknown) - cls.grpo_fields())
        if bad:
            raise ValueError(f"train.{bad[0]}: neither a trl.GRPOConfig field nor one of this "
                             f"project's train settings ({', '.join(cls.PROJECT_KEYS)})")
        return unknown

    def _with_extra(self, extra: dict) -> "TrainConfig":
        self.grpo_extra = MappingProxyType(dict(extra))
        return self

    def trl_kwargs(self) -> dict[str, Any]:
        """Every GRPOConfig field this section sets, under TRL's names, as plain values."""
        return {**{k: v for k, v in self.to_dict().items() if k not in self.PROJECT_KEYS},
                **self.grpo_extra}


@dataclass
class AnalysisSettings(Section):
    """The weight analysis at the end of every run (geora.training.weight_analysis):
    results.json["analysis"] (overall, by module type, by layer) and analysis/summary.json
    (the same with every matrix); readings and schema in geora/geometry/summary.py. The
    top-level `analysis` block of conf/config.yaml starts from it.

    >>> AnalysisSettings.from_config({"k": 8}).k
    8
    >>> AnalysisSettings.from_config({"track_every": 0})
    Traceback (most recent call last):
    ...
    ValueError: analysis.track_every=0: expected an integer >= 1 or null
    """
    GROUP: ClassVar[str] = "analysis"
    enabled: bool = setting(True, BOOLEAN)
    # size of W0's head subspace for S_Head and NSS top-k (the paper's r)
    k: int = setting(16, INT_POSITIVE)
    # SVDs: auto = exact up to exact_max_dim on the short side (full spectra), randomized
    # top-k above it; exact / randomized force one for every matrix
    svd: str = setting("auto", OneOf(SVD_CHOICES))
    exact_max_dim: int = setting(1024, INT_POSITIVE)
    # NSS full needs two exact svdvals per matrix: null computes it for every matrix (the
    # micro model: milliseconds; a GPU: ~1 s per 4096 x 4096); a cap (entries) skips larger
    # matrices, whose NSS full is then null and left out of the means
    nss_full_max_numel: Optional[int] = setting(None, Range(integer=True, low=1, nullable=True))
    # M_spec / M_euc overlaps, recomputed per matrix (MASK_CHOICES; none: a huge model on a
    # CPU, one more rank-r SVD per matrix)
    masks: str = setting("auto", OneOf(MASK_CHOICES))
    # FullFT: keep a CPU copy of the hidden linear weights before training (the model's size
    # in its dtype, in host memory) to form W1 - W0; false skips FullFT's analysis
    keep_initial: bool = setting(True, BOOLEAN)
    modules: bool = setting(True, BOOLEAN)    # analysis/summary.json holds every matrix's record
    progress: bool = setting(True, BOOLEAN)   # a tqdm bar on stderr
    # FullFT / SparseFT: results.json["analysis"]["premise"], where the unconstrained update
    # went and how much of it each method's initial subspace could express (geometry/premise.py)
    premise: bool = setting(True, BOOLEAN)
    # every N optimizer steps: S_Head, NSS delta, ||dW||/||W0|| (and the capture shares for
    # FullFT / SparseFT) to train_log.jsonl and wandb (geora/training/geometry.py); null: off.
    # conf/config.yaml takes it from the train recipe (micro: 10, paper: off)
    track_every: Optional[int] = setting(None, Range(integer=True, low=1, nullable=True))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "AnalysisSettings":
        """Checked settings from a config block (None or a missing block: the defaults)."""
        return cls.of(cfg)


@dataclass
class EvalConfig:
    """The `eval` group's schema and defaults, in one place: every conf/eval/*.yaml starts
    from it (`defaults: - /schema/eval@_here_`) and sets its name, tasks and what
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
