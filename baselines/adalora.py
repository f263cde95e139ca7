"""AdaLoRA (Zhang et al. 2023) through PEFT: SVD-form adapters whose rank budget is
re-allocated during training.

Choices (the GeoRA paper does not run AdaLoRA): the final average rank `target_r` is the
method's `rank`, and the initial rank `init_r` is 1.5x that (AdaLoRA's own budget
schedule starts at 1.5x the final budget); both can be overridden. `total_step` (the
number of optimizer steps) is required by PEFT. The training loop must call
`model.base_model.update_and_allocate(global_step)` after each optimizer step; without it
AdaLoRA trains as a fixed-rank SVD adapter (the peft method kind adds that callback to
the trainer). Used via `geora.prepare_model(model, "adalora", total_step=N)`.

>>> config = adalora_config(["model.layers.0.mlp.up_proj"], rank=8, alpha=8.0, total_step=100)
>>> config.init_r, config.target_r, config.total_step
(12, 8, 100)
"""
from __future__ import annotations

import math

from peft import AdaLoraConfig

ADALORA_OPTIONS = ("total_step", "init_r", "target_r", "tinit", "tfinal", "deltaT",
                   "beta1", "beta2", "orth_reg_weight", "lora_dropout")


def adalora_config(targets: list[str], rank: int, alpha: float, *, total_step=None,
                   init_r: int | None = None, target_r: int | None = None,
                   lora_dropout: float = 0.0, **schedule) -> AdaLoraConfig:
    if total_step is None:
        raise ValueError("method 'adalora' needs total_step=<number of optimizer steps> "
                         "(PEFT's AdaLoRA schedules its rank budget over them)")
    target_r = rank if target_r is None else int(target_r)
    init_r = math.ceil(1.5 * target_r) if init_r is None else int(init_r)
    return AdaLoraConfig(task_type="CAUSAL_LM", init_r=init_r, target_r=target_r,
                         lora_alpha=alpha, target_modules=list(targets),
                         lora_dropout=lora_dropout, total_step=int(total_step), **schedule)
