"""The PEFT-native kind (lora, dora, adalora): PEFT builds and initialises the adapter from
the method's config; the base weights are untouched.

Saved and exported as PEFT's own files (`save_pretrained`), which load on the original base.
Trainer callback: a tuner that re-allocates its rank budget during training (PEFT's AdaLoRA,
`update_and_allocate`) is called after every optimizer step, which no Trainer does for it.

Weight update, in fp32 from the adapter's parameters (W0 = the base weight):
- LoRA: dW = s B A (B = 0 at init);
- DoRA: W_eff = (m / n) (W0 + s B A) row-wise, n = ||W0 + s B A|| per output row as PEFT's
  forward computes it (its own `get_weight_norm`, in the base weight's dtype: at init n
  equals the stored magnitude m bitwise), the rest in fp32; dW = W_eff - W0;
- AdaLoRA: dW = B (A * E) s / (ranknum + 1e-5), PEFT's SVD form (E = 0 at init).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from transformers import TrainerCallback

from geora import surgery
from geora.kinds.base import MethodKind, WeightUpdate, fp32_copy


class PeftBudgetAllocation(TrainerCallback):
    """AdaLoRA re-allocates its rank budget from the gradients of each step: PEFT requires
    `update_and_allocate(step)` after optimizer.step() and before zero_grad()."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)


class PeftKind(MethodKind):
    name = "peft"

    def prepare(self, model, method, state, options, *, svd_device=None, progress=False):
        from peft import get_peft_model

        opts = dict(options)
        autocast = opts.pop("autocast_adapter_dtype", True)
        config = method.config(state.targets, state.rank, state.alpha, **opts)
        return get_peft_model(model, config, autocast_adapter_dtype=autocast)

    def save(self, model, state, folder: Path) -> None:
        model.save_pretrained(folder, selected_adapters=[surgery.ADAPTER])

    def load(self, base_model, folder: Path, state, *, is_trainable=False, keep_initial=False):
        from peft import PeftModel

        return PeftModel.from_pretrained(base_model, str(folder), is_trainable=is_trainable)

    def export(self, model, state, folder: Path) -> None:
        model.save_pretrained(folder, selected_adapters=[surgery.ADAPTER])

    def trainer_callbacks(self, model) -> list:
        tuner = getattr(model, "base_model", None)
        return [PeftBudgetAllocation()] if callable(getattr(tuner, "update_and_allocate",
                                                            None)) else []

    @torch.no_grad()
    def weight_updates(self, model, state) -> Iterator[WeightUpdate]:
        for name in state.targets:
            layer = surgery.lora_layer(model, name)
            w0 = fp32_copy(layer.get_base_layer().weight)
            yield WeightUpdate(name, w0, peft_delta(layer, w0))


def peft_delta(layer, w0: torch.Tensor) -> torch.Tensor:
    """dW of one PEFT LoRA / DoRA / AdaLoRA layer (adapter "default"), fp32, (out, in)."""
    from peft.tuners.adalora.layer import AdaLoraLayer

    ad = surgery.ADAPTER
    s = layer.scaling[ad]
    a, b = layer.lora_A[ad], layer.lora_B[ad]
    if isinstance(layer, AdaLoraLayer):            # A, B, E are Parameters
        return b.float() @ (a.float() * layer.lora_E[ad].float()) * s / (
            layer.ranknum[ad].float() + 1e-5)
    a, b = a.weight, b.weight
    delta = s * (b.float() @ a.float())
    if not layer.use_dora.get(ad, False):
        return delta
    base = layer.get_base_layer().weight
    norm = layer.lora_magnitude_vector[ad].get_weight_norm(base, (b @ a).to(base.dtype),
                                                           s).float()
    scale = layer.lora_magnitude_vector[ad].weight.float() / norm   # (out,)
    return scale[:, None] * (w0 + delta) - w0
