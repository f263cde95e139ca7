"""A run's config, validated once into typed objects (`RunSettings.from_config`).

`pipeline.check` builds it before anything is written or loaded; the steps read its typed
sections (geora.config.sections: ModelConfig, DataConfig, MethodConfig, TrainConfig,
AnalysisSettings; geora.evaluation.EvalSettings) instead of the raw config. Each section
checks its own values as it is built (types and ranges from the schema, and the rules
between its own settings); geora.training.checks holds the rules that span sections.

>>> from geora.fileio import REPO_ROOT
>>> from hydra import compose, initialize_config_dir
>>> with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
...     cfg = compose("config", overrides=["train.max_steps=5"])
>>> s = RunSettings.from_config(cfg)
>>> s.train.max_steps, s.model.name, s.method.rank, s.eval.tasks[0], s.analysis.k
(5, 'micro', 16, 'micro_math', 16)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from geora.config import AnalysisSettings, DataConfig, MethodConfig, ModelConfig, TrainConfig
from geora.config.rules import INT_NON_NEGATIVE, BOOLEAN, Range, check_value
from geora.evaluation.settings import EvalSettings

CPU_THREADS = Range(integer=True, low=1, nullable=True)   # or "auto" (models.cpu_threads_for)


@dataclass(frozen=True)
class RunSettings:
    """One run (conf/config.yaml with its groups), typed and checked. `config` is the
    composed config itself, kept for what records it (config.yaml, the resume check)."""
    model: ModelConfig
    data: DataConfig
    method: MethodConfig
    train: TrainConfig
    eval: EvalSettings
    analysis: AnalysisSettings
    seed: int = 0
    device: str = "cpu"          # resolved (models.resolve_device): cpu, cuda, cuda:<i>, ...
    cpu_threads: int | str | None = "auto"
    eval_before: bool = True
    logger: dict = field(default_factory=dict)
    config: Any = None

    @property
    def trains(self) -> bool:
        """False for the `base` pseudo-method (method.trains=false): it evaluates the
        untrained model and trains nothing."""
        return self.method.trains

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "RunSettings":
        """Every section checked, in the order a user reads the errors best (method before
        train: train.learning_rate interpolates method.learning_rate); ValueError naming the
        first bad key. Loads nothing; `device` comes back resolved ("auto": cuda if torch
        sees one, else cpu)."""
        from geora.models import resolve_device

        top = {key: OmegaConf.select(cfg, key) for key in
               ("seed", "device", "cpu_threads", "eval_before")}
        check_value("seed", top["seed"], INT_NON_NEGATIVE)
        if top["cpu_threads"] != "auto":
            check_value("cpu_threads", top["cpu_threads"], CPU_THREADS)
        check_value("eval_before", top["eval_before"], BOOLEAN)
        method = MethodConfig.of(cfg.method)
        train = TrainConfig.of(cfg.train)
        data = DataConfig.of(cfg.data)
        model = ModelConfig.of(cfg.model)
        analysis = AnalysisSettings.of(cfg.get("analysis"))
        evaluation = EvalSettings.from_config(cfg.eval)   # after the model: it follows its
        #                                                   chat mode (eval.enable_thinking)
        logger = OmegaConf.to_container(cfg.logger, resolve=True) if cfg.get("logger") else {}
        return cls(model=model, data=data, method=method, train=train, eval=evaluation,
                   analysis=analysis, seed=int(top["seed"]),
                   device=resolve_device(str(top["device"])),
                   cpu_threads=top["cpu_threads"], eval_before=bool(top["eval_before"]),
                   logger=logger, config=cfg)
