"""GeoRA: geometry-aware low-rank adaptation for RLVR, and its baselines.

Public API (imported lazily, so `import geora` stays light and the registry ->
baselines -> geora.linalg imports cannot cycle):

    geora_init, GeoraFactors                      # one weight -> factors (geora.init)
    available_methods, prepare_model, get_method  # the registry (geora.methods)
    save_adapter, load_adapter, export_lora,      # persistence (geora.persistence)
    export_residual, merge_model, count_parameters
    weight_updates, kind_of                       # method kinds (geora.kinds)
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "geora_init": "geora.init", "GeoraFactors": "geora.init",
    "available_methods": "geora.methods", "prepare_model": "geora.methods",
    "get_method": "geora.methods",
    "save_adapter": "geora.persistence", "load_adapter": "geora.persistence",
    "export_lora": "geora.persistence", "merge_model": "geora.persistence",
    "export_residual": "geora.persistence",
    "count_parameters": "geora.persistence",
    "weight_updates": "geora.kinds", "kind_of": "geora.kinds",
    "mask_stats": "geora.linalg",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'geora' has no attribute {name!r}")
