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
so s' = s and s'(B'A') = s(BA - B0A0): the original W plus the trained change.

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


class ResidualKind(MethodKind):
    name = "residual"

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
            a0 = state.init_factors[name]["A0"].to(a.device, a.dtype)
            b0 = state.init_factors[name]["B0"].to(b.device, b.dtype)
            key = f"base_model.model.{name}"
            tensors[f"{key}.lora_A.weight"] = torch.cat([a, a0], 0).cpu().contiguous()
            tensors[f"{key}.lora_B.weight"] = torch.cat([b, -b0], 1).cpu().contiguous()
        config = lora_config(state.targets, 2 * state.rank, 2 * state.alpha)
        config.base_model_name_or_path = getattr(getattr(model, "config", None),
                                                 "_name_or_path", None)
        config.save_pretrained(str(folder))
        save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})

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
