"""OmegaConf resolvers the configs use. Every entry point registers them before composing
(run.py, scripts/evaluate.py, the tests' conftest): a config that names one resolves
the same wherever it is read."""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf


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
    OmegaConf.register_new_resolver("folder_name", folder_name, replace=True)
