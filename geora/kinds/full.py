"""The full kind (fullft): every parameter of the transformers model trains.

Folder written by `save`: model.safetensors (every parameter). No LoRA form.
Weight update: dW = W1 - W0 in fp32 for every hidden nn.Linear (the targets recorded at
prepare: all but the output layer). W0 must be kept to diff against, which costs a CPU
copy of those weights, so it is kept only when asked: `prepare_model(model, "fullft",
keep_initial=True)` or `load_adapter(base, dir, keep_initial=True)`; otherwise
`weight_updates` raises, saying so.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_model, save_model

from geora import surgery
from geora.kinds.base import MethodKind, WeightUpdate, fp32_copy

FULL_FILE = "model.safetensors"
log = logging.getLogger(__name__)


def _snapshot(model, names: list[str]) -> dict[str, torch.Tensor]:
    """CPU copies of the named modules' weights, in their own dtype (an exact copy)."""
    return {n: model.get_submodule(n).weight.detach().to("cpu", copy=True) for n in names}


class FullKind(MethodKind):
    name = "full"
    has_lora_form = False
    needs_fp32_master_weights = True

    def resolve_targets(self, model, target_modules, rank):
        return surgery.hidden_linear_names(model)

    def prepare(self, model, method, state, options, *, svd_device=None, progress=False):
        dtypes = {p.dtype for p in model.parameters()} & {torch.bfloat16, torch.float16}
        if dtypes:
            log.warning("%s on %s weights: AdamW steps of a small learning rate are mostly "
                        "rounded away in 16-bit; model.dtype=float32 keeps fp32 master weights "
                        "(train.bf16=true autocasts)", state.method, sorted(map(str, dtypes))[0])
        if options.get("keep_initial", False):
            state.initial_weights = _snapshot(model, state.targets)
        model.requires_grad_(True)
        return model

    def save(self, model, state, folder: Path) -> None:
        save_model(model, str(folder / FULL_FILE))

    def load(self, base_model, folder: Path, state, *, is_trainable=False, keep_initial=False):
        if not state.targets:  # written before the targets were recorded
            state.targets = surgery.hidden_linear_names(base_model)
        if keep_initial:
            state.initial_weights = _snapshot(base_model, state.targets)
        load_model(base_model, str(folder / FULL_FILE))
        base_model.requires_grad_(is_trainable)
        return base_model

    @torch.no_grad()
    def weight_updates(self, model, state) -> Iterator[WeightUpdate]:
        if not state.initial_weights:
            raise ValueError(f"method {state.method!r}: the weights before training were not "
                             f"kept; prepare with keep_initial=True (or load_adapter(..., "
                             f"keep_initial=True)) to read its weight updates")
        for name in state.targets:
            w1 = model.get_submodule(name).weight
            w0 = fp32_copy(state.initial_weights[name].to(w1.device))
            yield WeightUpdate(name, w0, w1.float() - w0)
