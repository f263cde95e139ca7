"""The sparse kind (sparseft): the transformers model itself, each target weight turned into
W0 + scatter(delta) over a fixed mask (geora.surgery.MaskedDelta; the mask comes from the
method's `mask` function). Entries outside the mask stay bitwise identical forever.

Folder written by `save`: sparse_delta.safetensors (flat indices + fp32 deltas per module).
No LoRA form. Weight update: dW = the fp32 delta scattered; W0 = the frozen original.
In a 16-bit model the weight the forward uses is W0 + delta rounded to the model's dtype.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file

from geora import surgery
from geora.kinds.base import MethodKind, WeightUpdate, fp32_copy

SPARSE_FILE = "sparse_delta.safetensors"


class SparseKind(MethodKind):
    name = "sparse"
    has_lora_form = False

    def prepare(self, model, method, state, options, *, svd_device=None, progress=False):
        mask_fn = partial(method.mask, rank=state.rank, rho=state.rho, **options)
        state.mask_stats = surgery.install_masked_deltas(
            model, state.targets, mask_fn, svd_device=svd_device, progress=progress)
        return model

    def save(self, model, state, folder: Path) -> None:
        tensors = {}
        for name in state.targets:
            delta = surgery.masked_delta(model.get_submodule(name))
            tensors[f"{name}.indices"] = delta.indices.detach().cpu()
            tensors[f"{name}.values"] = delta.delta.detach().cpu()
        save_file(tensors, str(folder / SPARSE_FILE))

    def load(self, base_model, folder: Path, state, *, is_trainable=False, keep_initial=False):
        tensors = load_file(str(folder / SPARSE_FILE))
        base_model.requires_grad_(False)
        for name in state.targets:
            module = base_model.get_submodule(name)
            idx = tensors[f"{name}.indices"].to(module.weight.device).long()
            mask = torch.zeros(module.weight.numel(), dtype=torch.bool, device=idx.device)
            mask[idx] = True
            delta = surgery.install_mask(module, mask.view_as(module.weight))
            with torch.no_grad():
                delta.delta.copy_(tensors[f"{name}.values"])
            delta.delta.requires_grad_(is_trainable)
        return base_model

    @torch.no_grad()
    def weight_updates(self, model, state) -> Iterator[WeightUpdate]:
        for name in state.targets:
            module = model.get_submodule(name)
            w0 = module.parametrizations.weight.original
            yield WeightUpdate(name, fp32_copy(w0),
                               surgery.masked_delta(module).delta_weight(w0.shape))
