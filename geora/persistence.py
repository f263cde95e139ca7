"""Save, reload and export what a prepared model trained (layer 3); merge and count.

    geora.save_adapter(model, "out/adapter")              # any method
    model = geora.load_adapter(original_base, "out/adapter")   # no SVD recomputed
    geora.export_lora(model, "out/lora")                  # plain PEFT LoRA for vLLM/lm-eval
    merged = geora.merge_model(model)                     # transformers model, no adapters

Folder written by `save_adapter` (atomically: a temp folder renamed into place):
- geora_adapter.json: method, kind, rank, alpha, rho, targets, options;
- residual methods (geora*, pissa, milora): adapter_on_residual/ (PEFT's files for the
  trained A, B; valid only on the residual base, hence kept out of the top folder so that
  a plain PEFT load of the folder fails loudly instead of silently using the wrong base)
  and init_factors.safetensors (A0, B0 per module; on reload the residual W - s B0 A0 is
  formed from the ORIGINAL weights, no SVD: PEFT's own PiSSA reload re-runs the SVD, which
  a randomized SVD would silently change);
- lora / dora / adalora: PEFT's own files;
- sparseft: sparse_delta.safetensors (flat indices + fp32 deltas per module);
- fullft: model.safetensors (every parameter: all of them train, and the original is not
  kept in memory to diff against);
- mask_stats.json when the method has masks (per module and aggregated).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn
from torch.nn.utils import parametrize

from geora import linalg, surgery

META_FILE = "geora_adapter.json"
INIT_FILE = "init_factors.safetensors"
SPARSE_FILE = "sparse_delta.safetensors"
FULL_FILE = "model.safetensors"
RESIDUAL_SUBDIR = "adapter_on_residual"
STATS_FILE = "mask_stats.json"
FORMAT_VERSION = 1


@contextmanager
def atomic_dir(out_dir, overwrite: bool = False):
    """Yield a temp folder beside `out_dir`; on success rename it to `out_dir`, on error
    delete it, so no half-written folder is ever left at `out_dir`."""
    out = Path(out_dir)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{str(out)!r} exists and is not empty (pass overwrite=True)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _state(model: nn.Module) -> surgery.GeoraState:
    state = surgery.get_state(model)
    if state is None:
        raise ValueError("this model was not prepared by geora.prepare_model / "
                         "geora.load_adapter: it carries no geora_state")
    return state


def aggregate_stats(per_module: dict) -> dict:
    """Sum the integer counts over modules and recompute fractions (Jaccard of the sums)."""
    keys = [k for k in next(iter(per_module.values())) if k == "n" or k.startswith("count_")]
    total = {k: sum(s[k] for s in per_module.values()) for k in keys}
    if "count_union" in total:
        return linalg.stats_from_counts(total)
    return {**total, "frac_trained": total["count_trained"] / total["n"]}


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


# -------------------------------------------------------------------------------- save
def save_adapter(model: nn.Module, out_dir, *, overwrite: bool = False) -> Path:
    """Write what `model` (from prepare_model or load_adapter) trained to `out_dir`."""
    state = _state(model)
    with atomic_dir(out_dir, overwrite) as tmp:
        if state.kind == "peft":
            model.save_pretrained(tmp, selected_adapters=[surgery.ADAPTER])
        elif state.kind == "residual":
            model.save_pretrained(tmp / RESIDUAL_SUBDIR, selected_adapters=[surgery.ADAPTER])
            save_file({f"{n}.{k}": t.contiguous() for n, f in state.init_factors.items()
                       for k, t in f.items()}, str(tmp / INIT_FILE))
        elif state.kind == "sparse":
            tensors = {}
            for name in state.targets:
                delta = model.get_submodule(name).parametrizations.weight[0]
                tensors[f"{name}.indices"] = delta.indices.detach().cpu()
                tensors[f"{name}.values"] = delta.delta.detach().cpu()
            save_file(tensors, str(tmp / SPARSE_FILE))
        else:
            save_model(model, str(tmp / FULL_FILE))
        meta = dict(format="geora-adapter", version=FORMAT_VERSION, method=state.method,
                    kind=state.kind, rank=state.rank, alpha=state.alpha, rho=state.rho,
                    targets=state.targets, options=_jsonable(state.options))
        _write_json(tmp / META_FILE, meta)
        if state.mask_stats:
            _write_json(tmp / STATS_FILE, {"aggregate": aggregate_stats(state.mask_stats),
                                           "modules": state.mask_stats})
    return Path(out_dir)


def _jsonable(options: dict) -> dict:
    return {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v))
            for k, v in options.items()}


# -------------------------------------------------------------------------------- load
def read_meta(adapter_dir) -> dict:
    path = Path(adapter_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(adapter_dir)!r} is not a geora adapter folder: no "
                                f"{META_FILE} (write one with geora.save_adapter)")
    meta = json.loads(path.read_text())
    if meta.get("format") != "geora-adapter" or meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{str(path)!r}: unsupported format/version "
                         f"{meta.get('format')!r}/{meta.get('version')!r}")
    return meta


def load_adapter(base_model: nn.Module, adapter_dir, *, is_trainable: bool = False):
    """Rebuild the trained model from the ORIGINAL, unmodified `base_model` (modified in
    place: it becomes the frozen base) and a `save_adapter` folder. No SVD is run."""
    from peft import PeftModel

    adir = Path(adapter_dir)
    meta = read_meta(adir)
    kind, targets = meta["kind"], meta["targets"]
    state = surgery.GeoraState(meta["method"], kind, meta["rank"], meta["alpha"],
                               meta["rho"], targets, options=meta["options"])
    if kind == "full":
        load_model(base_model, str(adir / FULL_FILE))
        base_model.requires_grad_(is_trainable)
        surgery.set_state(base_model, state)
        return base_model
    missing = [n for n in targets if not _has_module(base_model, n)]
    if missing:
        raise ValueError(f"{str(adir)!r} targets modules the base model lacks, e.g. "
                         f"{missing[:3]}: wrong base model?")
    if kind == "sparse":
        tensors = load_file(str(adir / SPARSE_FILE))
        base_model.requires_grad_(False)
        for name in targets:
            module = base_model.get_submodule(name)
            idx = tensors[f"{name}.indices"].to(module.weight.device).long()
            mask = torch.zeros(module.weight.numel(), dtype=torch.bool, device=idx.device)
            mask[idx] = True
            delta = surgery.install_mask(module, mask.view_as(module.weight))
            with torch.no_grad():
                delta.delta.copy_(tensors[f"{name}.values"])
            delta.delta.requires_grad_(is_trainable)
        surgery.set_state(base_model, state)
        return base_model
    peft_dir = adir / RESIDUAL_SUBDIR if kind == "residual" else adir
    model = PeftModel.from_pretrained(base_model, str(peft_dir), is_trainable=is_trainable)
    if kind == "residual":
        init = load_file(str(adir / INIT_FILE))
        with torch.no_grad():
            for name in targets:
                layer = surgery.lora_layer(model, name)
                weight = layer.get_base_layer().weight
                a0, b0 = init[f"{name}.A0"], init[f"{name}.B0"]
                weight.copy_(surgery.subtract_adapter(weight.detach(), a0, b0,
                                                      layer.scaling[surgery.ADAPTER]))
                state.init_factors[name] = {"A0": a0, "B0": b0}
    surgery.set_state(model, state)
    return model


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


# ------------------------------------------------------------------------------ export
def export_lora(model: nn.Module, out_dir, *, overwrite: bool = False) -> Path:
    """A standard PEFT LoRA folder valid on the ORIGINAL base weights.

    Residual methods: rank 2r with A' = [A; A0] (2r, in), B' = [B | -B0] (out, 2r) and
    lora_alpha doubled, so s' = s and s'(B'A') = s(BA - B0A0): the original W plus the
    trained change. lora / dora / adalora: PEFT's own save. sparseft / fullft: ValueError.
    """
    from peft import LoraConfig

    state = _state(model)
    if state.kind in ("sparse", "full"):
        raise ValueError(f"method {state.method!r} has no LoRA form: use "
                         f"geora.save_adapter (reload with load_adapter) or "
                         f"geora.merge_model(model).save_pretrained(dir)")
    with atomic_dir(out_dir, overwrite) as tmp:
        if state.kind == "peft":
            model.save_pretrained(tmp, selected_adapters=[surgery.ADAPTER])
            return Path(out_dir)
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
        base_name = getattr(getattr(model, "config", None), "_name_or_path", None)
        config = LoraConfig(task_type="CAUSAL_LM", r=2 * state.rank,
                            lora_alpha=2 * state.alpha, target_modules=state.targets,
                            init_lora_weights=True, base_model_name_or_path=base_name)
        config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / "adapter_model.safetensors"),
                  metadata={"format": "pt"})
    return Path(out_dir)


# ------------------------------------------------------------------------ merge / count
def merge_model(model: nn.Module) -> nn.Module:
    """The plain transformers model holding the effective trained weights (adapters merged,
    parametrizations removed). Works in place: `model` is consumed."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        merged = model.merge_and_unload(adapter_names=[surgery.ADAPTER])
    else:
        merged = model
        for name, module in list(model.named_modules()):
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    if surgery.get_state(merged) is not None:
        object.__delattr__(merged, surgery.STATE_ATTR)
    return merged


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared (tied) tensors count once, and total
    includes adapter / delta parameters (as PEFT's print_trainable_parameters)."""
    params = list(model.parameters())          # nn.Module.parameters() deduplicates
    return (sum(p.numel() for p in params if p.requires_grad),
            sum(p.numel() for p in params))
