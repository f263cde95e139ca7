"""The run config's schema (geora.config.sections: one typed dataclass per group, with each
default and each valid range) and what Hydra needs before it composes a config: the
OmegaConf resolvers the configs use and those schemas in its ConfigStore. Every entry point
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
from pathlib import Path

from omegaconf import OmegaConf

from geora.config.sections import (AnalysisSettings, DataConfig, EvalConfig, MethodConfig,
                                   ModelConfig, Section, TrainConfig)

# Hydra's ConfigStore group `schema`: each config group's file starts from its schema
# (`defaults: - /schema/<group>@_here_`), conf/config.yaml's analysis block from
# schema/analysis.
SCHEMAS = {"model": ModelConfig, "data": DataConfig, "method": MethodConfig,
           "train": TrainConfig, "eval": EvalConfig, "analysis": AnalysisSettings}


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
    for group, schema in SCHEMAS.items():
        store.store(group="schema", name=group, node=schema)
