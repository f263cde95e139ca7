"""LoRA (PEFT default init: A Kaiming-uniform, B = 0; the base weight is untouched).

Also the one place that builds a `peft.LoraConfig`, so every adapter method (the residual
ones included) gets the same settings. Used through `geora.prepare_model(model, "lora")`.

>>> config = lora_config(["model.layers.0.self_attn.q_proj"], rank=8, alpha=16.0)
>>> config.r, config.lora_alpha, config.init_lora_weights, sorted(config.target_modules)
(8, 16.0, True, ['model.layers.0.self_attn.q_proj'])
"""
from __future__ import annotations

from peft import LoraConfig

# Options a LoRA-family method accepts besides rank / alpha / target_modules.
LORA_OPTIONS = ("lora_dropout", "autocast_adapter_dtype")


def lora_config(targets: list[str], rank: int, alpha: float, *, lora_dropout: float = 0.0,
                **extra) -> LoraConfig:
    """A causal-LM LoraConfig on the exact module names `targets` (full dotted names).

    init_lora_weights=True always: residual methods overwrite A, B and the base weight
    afterwards, and a config that said "pissa" would make PEFT re-run an SVD on reload.
    """
    return LoraConfig(task_type="CAUSAL_LM", r=rank, lora_alpha=alpha,
                      target_modules=list(targets), lora_dropout=lora_dropout,
                      init_lora_weights=True, **extra)
