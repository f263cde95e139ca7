"""Save, reload and export what a prepared model trained (layer 3); merge and count.

>>> import tempfile, geora
>>> from geora.models import tiny_model
>>> out = tempfile.mkdtemp()
>>> model = geora.prepare_model(tiny_model(), "geora", rank=4)      # ... then train it
>>> _ = geora.save_adapter(model, f"{out}/adapter")                  # any method
>>> back = geora.load_adapter(tiny_model(), f"{out}/adapter")        # original base, no SVD
>>> _ = geora.export_lora(model, f"{out}/lora")    # plain PEFT LoRA for vLLM / lm-eval
>>> _ = geora.export_residual(model, f"{out}/res")  # W_res model + (A0, B0) LoRA: verl etc.
>>> merged = geora.merge_model(back)                # transformers model, no adapters
>>> sorted(p.name for p in Path(f"{out}/adapter").iterdir())
['adapter_on_residual', 'geora_adapter.json', 'init_factors.safetensors', 'mask_stats.json']

A folder written by `save_adapter` (atomically: a temp folder renamed into place) holds
geora_adapter.json (method, kind, rank, alpha, rho, targets, options), mask_stats.json
when the method has masks (per module and aggregated), and the kind's own files
(geora/kinds/<kind>.py says which): the residual kind's adapter_on_residual/ and
init_factors.safetensors, PEFT's own files, sparse_delta.safetensors, or the full
model.safetensors. Format version 1, unchanged since the first release: folders written
before the kinds became classes load as they are.

`export_residual` (residual kind) writes a folder for other trainers: model/ (transformers,
W_res), adapter/ (PEFT LoRA with A0, B0), geora_residual.json and mask_stats.json; after
training elsewhere, `python -m geora.convert` turns the trained adapter back into a LoRA on
the original model.
"""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn
from torch.nn.utils import parametrize

from geora import linalg, surgery
from geora.fileio import atomic_dir, atomic_write_json
from geora.kinds import get_kind, prepared_state

META_FILE = "geora_adapter.json"
STATS_FILE = "mask_stats.json"
RESIDUAL_META_FILE = "geora_residual.json"
FORMAT_VERSION = 1
# Everything of a model folder but its weights and the two configs save_pretrained writes:
# the tokenizer files, chat template, license... copied as they are by export_residual.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
WRITTEN_BY_SAVE = ("config.json", "generation_config.json")


def aggregate_stats(per_module: dict) -> dict:
    """Sum the integer counts over modules and recompute fractions (Jaccard of the sums)."""
    keys = [k for k in next(iter(per_module.values())) if k == "n" or k.startswith("count_")]
    total = {k: sum(s[k] for s in per_module.values()) for k in keys}
    if "count_union" in total:
        return linalg.stats_from_counts(total)
    return {**total, "frac_trained": total["count_trained"] / total["n"]}


# -------------------------------------------------------------------------------- save
def save_adapter(model: nn.Module, out_dir, *, overwrite: bool = False) -> Path:
    """Write what `model` (from prepare_model or load_adapter) trained to `out_dir`."""
    state = prepared_state(model)
    with atomic_dir(out_dir, overwrite) as tmp:
        get_kind(state.kind).save(model, state, tmp)
        meta = dict(format="geora-adapter", version=FORMAT_VERSION, method=state.method,
                    kind=state.kind, rank=state.rank, alpha=state.alpha, rho=state.rho,
                    targets=state.targets, options=_jsonable(state.options))
        atomic_write_json(tmp / META_FILE, meta, sort_keys=True)
        _write_mask_stats(tmp, state)
    return Path(out_dir)


def _write_mask_stats(folder: Path, state: surgery.GeoraState) -> None:
    if state.mask_stats:
        atomic_write_json(folder / STATS_FILE, {"aggregate": aggregate_stats(state.mask_stats),
                                                "modules": state.mask_stats}, sort_keys=True)


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


def load_adapter(base_model: nn.Module, adapter_dir, *, is_trainable: bool = False,
                 keep_initial: bool = False):
    """Rebuild the trained model from the ORIGINAL, unmodified `base_model` (modified in
    place: it becomes the frozen base) and a `save_adapter` folder. No SVD is run.

    keep_initial: keep a CPU copy of the base weights where the kind cannot otherwise know
    them (fullft), so that `geora.weight_updates` can read the update; other kinds always
    know W0 and ignore it."""
    adir = Path(adapter_dir)
    meta = read_meta(adir)
    targets = meta["targets"]
    state = surgery.GeoraState(meta["method"], meta["kind"], meta["rank"], meta["alpha"],
                               meta["rho"], targets, options=meta["options"])
    kind = get_kind(meta["kind"])
    missing = [n for n in targets if not _has_module(base_model, n)]
    if missing:
        raise ValueError(f"{str(adir)!r} targets modules the base model lacks, e.g. "
                         f"{missing[:3]}: wrong base model?")
    model = kind.load(base_model, adir, state, is_trainable=is_trainable,
                      keep_initial=keep_initial)
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

    Residual methods: rank 2r, [A; A0] and [B | -B0] (geora/kinds/residual.py); lora / dora
    / adalora: PEFT's own save. Kinds without a low-rank form (sparseft, fullft) raise
    geora.kinds.NoLoraForm (a ValueError) before anything is written.
    """
    state = prepared_state(model)
    kind = get_kind(state.kind)
    if not kind.has_lora_form:
        raise kind.no_lora_form(state)
    with atomic_dir(out_dir, overwrite) as tmp:
        kind.export(model, state, tmp)
    return Path(out_dir)


def export_residual(model: nn.Module, out_dir, *, source_dir=None, tokenizer=None,
                    overwrite: bool = False) -> Path:
    """The prepared (untrained) model for trainers that take a base model plus a PEFT
    adapter but no custom initialisation (verl, OpenRLHF, ...):

        out_dir/model/    transformers folder: W_res in the targets (the model's dtype),
                          every other weight as loaded; config; the tokenizer files of
                          `source_dir` copied (or `tokenizer.save_pretrained`)
        out_dir/adapter/  PEFT LoRA: A0, B0, the same r and lora_alpha (init_lora_weights=True)
        out_dir/geora_residual.json, mask_stats.json (methods with masks)

    `AutoModelForCausalLM.from_pretrained(out/model)` + `PeftModel.from_pretrained(model,
    out/adapter)` computes the original model (no import of geora needed). Only the residual
    kind has this form (geora.kinds.NoResidualForm, a ValueError, before anything is
    written); the folder is written atomically. A0, B0 are the initial factors even if the
    model has trained since: this is the starting point of training elsewhere.
    """
    state = prepared_state(model)
    kind = get_kind(state.kind)
    if not kind.has_residual_form:
        raise kind.no_residual_form(state)
    out = Path(out_dir)
    if source_dir is not None and not (Path(source_dir) / "config.json").is_file():
        raise FileNotFoundError(f"source_dir={str(source_dir)!r} is not a model folder (no "
                                f"config.json)")
    with atomic_dir(out, overwrite) as tmp:
        model_dir = kind.export_residual(model, state, tmp,
                                         base_name=str(out.resolve() / "model"))
        if source_dir is not None:
            _copy_model_files(Path(source_dir), model_dir)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(model_dir))
        meta = dict(format="geora-residual", version=FORMAT_VERSION, method=state.method,
                    rank=state.rank, alpha=state.alpha, rho=state.rho, targets=state.targets,
                    options=_jsonable(state.options), model="model", adapter="adapter",
                    original_model=None if source_dir is None else str(Path(source_dir).resolve()),
                    dtype=str(model.get_base_model().dtype).removeprefix("torch."))
        atomic_write_json(tmp / RESIDUAL_META_FILE, meta, sort_keys=True)
        _write_mask_stats(tmp, state)
    return out


def _copy_model_files(source: Path, dest: Path) -> None:
    """Copy the non-weight files of a model folder (tokenizer, chat template, ...)."""
    import shutil

    for path in sorted(source.iterdir()):
        if (path.is_file() and not path.name.startswith(".")
                and path.suffix not in WEIGHT_SUFFIXES and path.name not in WRITTEN_BY_SAVE
                and not path.name.endswith(".index.json")):
            shutil.copy2(path, dest / path.name)


# ------------------------------------------------------------------------ merge / count
def merge_model(model: nn.Module) -> nn.Module:
    """The plain transformers model holding the effective trained weights (adapters merged,
    parametrizations removed), in the model's dtype. Works in place: `model` is consumed.
    For the exact fp32 update use geora.weight_updates instead."""
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
