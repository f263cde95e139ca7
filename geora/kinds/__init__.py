"""Method kinds: one class per way a method changes a model (layer 2).

    residual  geora*, pissa, milora   PEFT LoRA layers on a frozen W_res = W - s B0 A0
    peft      lora, dora, adalora     PEFT's own adapters on the untouched base
    sparse    sparseft                masked fp32 deltas on the transformers model
    full      fullft                  every parameter trains

Each kind (geora/kinds/<kind>.py, contract in base.py) prepares, saves, loads and exports,
names the trainer callbacks it needs and reads its exact weight update; `prepare_model`,
`save_adapter` / `load_adapter` / `export_lora`, the GRPO trainer and the analysis dispatch
through it, and nothing outside this package tests a kind's or a method's name.

>>> import geora
>>> from geora.models import tiny_model
>>> model = geora.prepare_model(tiny_model(), "pissa", rank=4)
>>> kind_of(model)
<method kind 'residual'>
>>> first = next(weight_updates(model))      # (module, W0, dW), fp32
>>> first.module, tuple(first.w0.shape), float(first.delta.abs().max())
('model.layers.0.self_attn.q_proj', (64, 64), 0.0)
"""
from __future__ import annotations

from typing import Iterator

from torch import nn

from geora import surgery
from geora.kinds.base import MethodKind, NoLoraForm, WeightUpdate
from geora.kinds.full import FullKind
from geora.kinds.peft_native import PeftKind
from geora.kinds.residual import ResidualKind
from geora.kinds.sparse import SparseKind

RESIDUAL, PEFT, SPARSE, FULL = ResidualKind(), PeftKind(), SparseKind(), FullKind()
KINDS: dict[str, MethodKind] = {k.name: k for k in (RESIDUAL, PEFT, SPARSE, FULL)}

__all__ = ["KINDS", "MethodKind", "NoLoraForm", "WeightUpdate", "get_kind", "kind_of",
           "prepared_state", "weight_updates", "RESIDUAL", "PEFT", "SPARSE", "FULL"]


def get_kind(name: str) -> MethodKind:
    if name not in KINDS:
        raise ValueError(f"unknown method kind {name!r}; known kinds: {list(KINDS)}")
    return KINDS[name]


def prepared_state(model: nn.Module) -> surgery.GeoraState:
    """The GeoraState of a model from prepare_model / load_adapter (ValueError otherwise)."""
    state = surgery.get_state(model)
    if state is None:
        raise ValueError("this model was not prepared by geora.prepare_model / "
                         "geora.load_adapter: it carries no geora_state")
    return state


def kind_of(model: nn.Module) -> MethodKind:
    """The kind of a prepared (or reloaded) model."""
    return get_kind(prepared_state(model).kind)


def weight_updates(model: nn.Module) -> Iterator[WeightUpdate]:
    """(module, W0, dW) for every target matrix of a prepared or reloaded model: fp32, on
    the module's device, one module at a time, read from what the method trains (factors,
    deltas), never through a 16-bit merge. dW is exactly 0 before any training step."""
    state = prepared_state(model)
    return get_kind(state.kind).weight_updates(model, state)
