"""The residual kind (geora*, pissa, milora): standard PEFT LoRA layers whose frozen base
holds W_res = W - s B0 A0, so that W_res + s B A equals W at init.

Folder written by `save`:
- adapter_on_residual/: PEFT's files for the trained A, B. They are valid only on the
  residual base, hence kept out of the top folder, so that a plain PEFT load of the folder
  fails loudly instead of silently using the wrong base;
- init_factors.safetensors: A0, B0 per module. On reload the residual W - s B0 A0 is formed
  from the ORIGINAL weights, no SVD (PEFT's own PiSSA reload re-runs the SVD, which a
  randomized SVD would silently change).

Export: rank 2r with A' = [A; A0] (2r, in), B' = [B | -B0] (out, 2r) and lora_alpha doubled,
so s' = s and s'(B'A') = s(BA - B0A0): the original W plus the trained change
(`on_original_base`, also what geora.convert applies to an adapter trained elsewhere).

Residual export (`export_residual`, for trainers that take a base model plus a PEFT adapter
but no custom initialisation, e.g. verl): model/ is a standard transformers folder whose
target weights are W_res (every other tensor as loaded), adapter/ a standard PEFT LoRA
holding A0, B0 with the same r and lora_alpha, so that PEFT's s B0 A0 is exactly what was
subtracted and the pair computes the original model.

Weight update: dW = s (B A - B0 A0) in fp32 from the factors; W0 = W_res + s B0 A0 in fp32
(the original weight, up to the one rounding of W_res to the model's dtype).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file

from baselines.lora import lora_config
from geora import surgery
from geora.kinds.base import MethodKind, WeightUpdate

INIT_FILE = "init_factors.safetensors"
RESIDUAL_SUBDIR = "adapter_on_residual"
MODEL_SUBDIR, INIT_ADAPTER_SUBDIR = "model", "adapter"     # the two folders of export_residual
PEFT_WEIGHTS = "adapter_model.safetensors"


def on_original_base(a: torch.Tensor, b: torch.Tensor, a0: torch.Tensor,
                     b0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The LoRA on the ORIGINAL weights equal to (A, B) trained on W_res = W - s B0 A0 with
    the same scaling s: A' = [A; A0] (r + r0, in), B' = [B | -B0] (out, r + r0), so that
    W + s B'A' = W_res + s B A. In the wider dtype of the two (no precision is dropped).

    >>> a, b, a0, b0 = torch.randn(2, 5), torch.randn(3, 2), torch.randn(2, 5), torch.randn(3, 2)
    >>> a2, b2 = on_original_base(a, b, a0, b0)
    >>> tuple(a2.shape), tuple(b2.shape), torch.allclose(b2 @ a2, b @ a - b0 @ a0, atol=1e-6)
    ((4, 5), (3, 4), True)
    """
    dtype = torch.promote_types(a.dtype, a0.dtype)
    return (torch.cat([a.to(dtype), a0.to(a.device, dtype)], 0).contiguous(),
            torch.cat([b.to(dtype), -b0.to(b.device, dtype)], 1).contiguous())


def residual_state_dict(model, targets: list[str]) -> dict[str, torch.Tensor]:
    """The transformers state dict of a prepared model's frozen base: W_res under each
    target's own name (PEFT's `.base_layer` removed), the adapter's tensors dropped, every
    other tensor as it is (the same tensors, no copies)."""
    prefixes = tuple(f"{name}." for name in targets)
    out = {}
    for key, tensor in model.get_base_model().state_dict().items():
        if key.startswith(prefixes):
            head, sep, tail = key.partition(".base_layer.")
            if not sep:
                continue                     # lora_A / lora_B (and any other adapter tensor)
            key = f"{head}.{tail}"
        out[key] = tensor
    return out


def peft_lora_tensors(module: str, a: torch.Tensor, b: torch.Tensor) -> dict:
    """PEFT's saved names of one module's LoRA factors (adapter name stripped, as
    `save_pretrained` writes them)."""
    key = f"base_model.model.{module}"
    return {f"{key}.lora_A.weight": a.contiguous(), f"{key}.lora_B.weight": b.contiguous()}


class ResidualKind(MethodKind):
    name = "residual"
    has_residual_form = True

    def prepare(self, model, method, state, options, *, svd_device=None, progress=False):
        from peft import get_peft_model

        opts = dict(options)
        autocast = opts.pop("autocast_adapter_dtype", True)
        config = lora_config(state.targets, state.rank, state.alpha,
                             lora_dropout=opts.pop("lora_dropout", 0.0))
        peft_model = get_peft_model(model, config, autocast_adapter_dtype=autocast)
        factorize = partial(method.factorize, rank=state.rank, rho=state.rho,
                            alpha=state.alpha, **opts)
        state.init_factors, state.mask_stats = surgery.write_residual_factors(
            peft_model, state.targets, factorize, svd_device=svd_device, progress=progress,
            desc=f"{state.method} init")
        return peft_model

    def save(self, model, state, folder: Path) -> None:
        model.save_pretrained(folder / RESIDUAL_SUBDIR, selected_adapters=[surgery.ADAPTER])
        save_file({f"{n}.{k}": t.contiguous() for n, f in state.init_factors.items()
                   for k, t in f.items()}, str(folder / INIT_FILE))

    def load(self, base_model, folder: Path, state, *, is_trainable=False, keep_initial=False):
        from peft import PeftModel

        model = PeftModel.from_pretrained(base_model, str(folder / RESIDUAL_SUBDIR),
                                          is_trainable=is_trainable)
        init = load_file(str(folder / INIT_FILE))
        with torch.no_grad():
            for name in state.targets:
                layer = surgery.lora_layer(model, name)
                weight = layer.get_base_layer().weight
                a0, b0 = init[f"{name}.A0"], init[f"{name}.B0"]
                weight.copy_(surgery.subtract_adapter(weight.detach(), a0, b0,
                                                      layer.scaling[surgery.ADAPTER]))
                state.init_factors[name] = {"A0": a0, "B0": b0}
        return model

    def export(self, model, state, folder: Path) -> None:
        tensors = {}
        for name in state.targets:
            layer = surgery.lora_layer(model, name)
            a = layer.lora_A[surgery.ADAPTER].weight.detach()
            b = layer.lora_B[surgery.ADAPTER].weight.detach()
            init = state.init_factors[name]
            a2, b2 = on_original_base(a, b, init["A0"], init["B0"])
            tensors.update(peft_lora_tensors(name, a2.cpu(), b2.cpu()))
        config = lora_config(state.targets, 2 * state.rank, 2 * state.alpha)
        config.base_model_name_or_path = getattr(getattr(model, "config", None),
                                                 "_name_or_path", None)
        config.save_pretrained(str(folder))
        save_file(tensors, str(folder / PEFT_WEIGHTS), metadata={"format": "pt"})

    def export_residual(self, model, state, folder: Path, *, base_name=None) -> Path:
        """folder/model: transformers folder with W_res (the model's dtype, sharded as
        save_pretrained shards); folder/adapter: PEFT LoRA with A0, B0 (r, lora_alpha of the
        preparation, init_lora_weights=True). Returns the model folder."""
        model_dir = folder / MODEL_SUBDIR
        model.get_base_model().save_pretrained(
            str(model_dir), state_dict=residual_state_dict(model, state.targets))
        tensors = {}
        for name in state.targets:
            init = state.init_factors[name]
            tensors.update(peft_lora_tensors(name, init["A0"], init["B0"]))
        config = lora_config(state.targets, state.rank, state.alpha,
                             lora_dropout=state.options.get("lora_dropout", 0.0))
        config.base_model_name_or_path = base_name
        config.save_pretrained(str(folder / INIT_ADAPTER_SUBDIR))
        save_file(tensors, str(folder / INIT_ADAPTER_SUBDIR / PEFT_WEIGHTS),
                  metadata={"format": "pt"})
        return model_dir

    @torch.no_grad()
    def weight_updates(self, model, state) -> Iterator[WeightUpdate]:
        for name in state.targets:
            layer = surgery.lora_layer(model, name)
            s = layer.scaling[surgery.ADAPTER]
            a = layer.lora_A[surgery.ADAPTER].weight.float()
            b = layer.lora_B[surgery.ADAPTER].weight.float()
            dev = a.device
            a0 = state.init_factors[name]["A0"].to(dev).float()
            b0 = state.init_factors[name]["B0"].to(dev).float()
            start = b0 @ a0
            # B A and B0 A0 are the same product on the same values at init: dW is exactly 0
            delta = s * (b @ a - start)
            w0 = layer.get_base_layer().weight.float() + s * start
            yield WeightUpdate(name, w0, delta)
