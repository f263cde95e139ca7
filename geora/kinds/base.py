"""The contract every method kind fulfils (the pattern of PEFT's `LoraVariant`).

A kind is what a family of methods does to a model, the same for every method in it: how
the model is prepared for training, what is saved and how it is loaded back, whether and
how it exports to a plain PEFT LoRA, which trainer callbacks it needs, and how its exact
weight update is read. A method (geora/methods.py) is a kind plus its own maths: a
`factorize` (residual), a PEFT `config` (peft) or a `mask` (sparse) function.

Methods of a kind receive `state` (geora.surgery.GeoraState: method name, rank, alpha, rho,
target module names, options), filled and checked by `geora.prepare_model` before the
kind touches the model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterator, NamedTuple

import torch
from torch import nn

from geora import surgery


class WeightUpdate(NamedTuple):
    """One target matrix: its weight before training and the exact trained change, both
    (out, in) float32 tensors of their own (never views of the model's parameters) on the
    module's device; the effective weight is w0 + delta."""
    module: str
    w0: torch.Tensor
    delta: torch.Tensor


def fp32_copy(t: torch.Tensor) -> torch.Tensor:
    """A detached float32 copy (`.float()` of a float32 tensor would be the tensor itself)."""
    return t.detach().to(torch.float32, copy=True)


class NoLoraForm(ValueError):
    """The method's update is not a low-rank product, so there is no PEFT LoRA to export."""


class NoResidualForm(ValueError):
    """The method does not train a LoRA on a residual base: nothing to hand to another
    trainer as "residual model + initial adapter"."""


class MethodKind:
    """Base class: one instance per kind, stateless (everything lives on the model)."""

    name: ClassVar[str]
    has_lora_form: ClassVar[bool] = True   # export_lora can write a plain PEFT LoRA
    # The optimizer steps the model's own weight tensors (not fp32 adapters or deltas). In a
    # 16-bit model such steps round away (bf16: w + 1e-6 == w for every |w| >= 1e-3), so the
    # training pipeline loads the model in fp32 (master weights) and lets train.bf16=true
    # compute in bf16 by autocast.
    needs_fp32_master_weights: ClassVar[bool] = False
    has_residual_form: ClassVar[bool] = False   # export_residual: W_res model + (A0, B0) LoRA

    # -------------------------------------------------------------------- prepare
    def resolve_targets(self, model: nn.Module, target_modules: Any,
                        rank: int | None) -> list[str]:
        """Names of the modules the method adapts; validated, before anything changes."""
        names = surgery.resolve_targets(model, target_modules)
        surgery.validate_targets(model, names, rank)
        return names

    def prepare(self, model: nn.Module, method: Any, state: surgery.GeoraState,
                options: dict, *, svd_device=None, progress: bool = False) -> nn.Module:
        """Make `model` trainable by `method` (output unchanged); may fill
        state.init_factors / mask_stats / initial_weights; returns the model to train."""
        raise NotImplementedError

    # ------------------------------------------------------------ save / load / export
    def save(self, model: nn.Module, state: surgery.GeoraState, folder: Path) -> None:
        """Write what the model trained into the (empty, temporary) `folder`."""
        raise NotImplementedError

    def load(self, base_model: nn.Module, folder: Path, state: surgery.GeoraState, *,
             is_trainable: bool = False, keep_initial: bool = False) -> nn.Module:
        """Rebuild the trained model from the ORIGINAL `base_model` and a `save` folder."""
        raise NotImplementedError

    def export(self, model: nn.Module, state: surgery.GeoraState, folder: Path) -> None:
        """Write a standard PEFT LoRA folder valid on the ORIGINAL base weights."""
        raise self.no_lora_form(state)

    def no_lora_form(self, state: surgery.GeoraState) -> NoLoraForm:
        return NoLoraForm(f"method {state.method!r} has no LoRA form: use geora.save_adapter "
                          f"(reload with load_adapter) or "
                          f"geora.merge_model(model).save_pretrained(dir)")

    def export_residual(self, model: nn.Module, state: surgery.GeoraState, folder: Path, *,
                        base_name: str | None = None) -> Path:
        """Write the residual model (transformers folder) and its initial PEFT LoRA into the
        (empty, temporary) `folder`: what another trainer needs to start this method.
        Returns the model folder (where the caller copies the tokenizer)."""
        raise self.no_residual_form(state)

    def no_residual_form(self, state: surgery.GeoraState) -> NoResidualForm:
        return NoResidualForm(f"method {state.method!r} (kind {state.kind!r}) has no residual "
                              f"form: export_residual needs a method of the residual kind (a "
                              f"LoRA on W_res = W - s B0 A0: geora, pissa, milora, ...)")

    # -------------------------------------------------------------------- training
    def trainer_callbacks(self, model: nn.Module) -> list:
        """transformers TrainerCallbacks the method needs during training (none by default)."""
        return []

    # -------------------------------------------------------------------- analysis
    def weight_updates(self, model: nn.Module, state: surgery.GeoraState
                       ) -> Iterator[WeightUpdate]:
        """(module, W0, dW) per target, fp32, computed from what the kind trains (never
        read through a 16-bit merge); one module at a time."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<method kind {self.name!r}>"
