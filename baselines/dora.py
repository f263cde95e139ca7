"""DoRA (Liu et al. 2024) through PEFT: LoRA with a learned per-output-row magnitude.

PEFT initialises the magnitude to the row norms of W and B = 0, so outputs are unchanged
at init. Used through `geora.prepare_model(model, "dora")`.

>>> config = dora_config(["model.layers.0.mlp.up_proj"], rank=4, alpha=4.0)
>>> config.use_dora, config.r
(True, 4)
"""
from __future__ import annotations

from peft import LoraConfig

from baselines.lora import lora_config


def dora_config(targets: list[str], rank: int, alpha: float, *, lora_dropout: float = 0.0
                ) -> LoraConfig:
    return lora_config(targets, rank, alpha, lora_dropout=lora_dropout, use_dora=True)
