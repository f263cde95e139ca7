"""Bring a LoRA trained on a residual model elsewhere back onto the ORIGINAL model.

    python -m geora.preprocess --model /models/Qwen3-8B --method geora --out res --export residual
    ... train res/adapter on res/model with verl / OpenRLHF / any PEFT trainer -> TRAINED ...
    python -m geora.convert --trained TRAINED --init res --out trained_on_original

The trained adapter (A, B; scaling s) was learnt on W_res = W - s0 B0 A0. The output is a
plain PEFT LoRA of rank r + r0 on W itself, with A' = [A; A0], B' = [B | -(s0/s) B0] and
lora_alpha = s (r + r0), so that W + s B'A' = W_res + s B A: the trained model, loadable by
`PeftModel.from_pretrained(original, OUT)`, vLLM's LoRA support or lm-eval's `peft=`. With
the same r and lora_alpha on both sides (the usual case) this is exactly geora.export_lora's
rank-2r form, bit for bit. Written atomically; bad input stops with one line naming it.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from geora.fileio import atomic_dir
from geora.kinds.residual import (INIT_ADAPTER_SUBDIR, PEFT_WEIGHTS, on_original_base,
                                  peft_lora_tensors)
from geora.persistence import RESIDUAL_META_FILE

CONFIG_FILE = "adapter_config.json"
# base_model.model.<module>.lora_A.weight (PEFT's saved names; an adapter name may remain)
LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<factor>[AB])"
                      r"(?:\.[^.]+)?\.weight$")


class ConversionError(ValueError):
    """An adapter folder that cannot be converted (the message names it and why)."""


def read_lora(folder: Path, role: str) -> tuple[dict, dict[str, dict[str, torch.Tensor]], float]:
    """(adapter_config, {module: {"A": (r, in), "B": (out, r)}}, scaling) of a PEFT LoRA
    folder; `role` names the folder in errors ("--trained", "--init")."""
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ConversionError(f"{role} {str(folder)!r}: not a PEFT adapter folder (no "
                              f"{CONFIG_FILE})")
    config = json.loads(config_path.read_text())
    unsupported = {"peft_type": config.get("peft_type") not in ("LORA", None),
                   "use_dora": bool(config.get("use_dora")),
                   "modules_to_save": bool(config.get("modules_to_save")),
                   "rank_pattern": bool(config.get("rank_pattern")),
                   "alpha_pattern": bool(config.get("alpha_pattern"))}
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ConversionError(f"{role} {str(folder)!r}: {bad[0]}={config.get(bad[0])!r} is "
                              f"not a plain LoRA (convert supports LoRA with one r and "
                              f"lora_alpha)")
    weights = folder / PEFT_WEIGHTS
    if weights.is_file():
        tensors = load_file(str(weights))
    elif (folder / "adapter_model.bin").is_file():
        tensors = torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ConversionError(f"{role} {str(folder)!r}: no {PEFT_WEIGHTS} (or "
                              f"adapter_model.bin)")
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = LORA_KEY.match(key)
        if match is None:
            raise ConversionError(f"{role} {str(folder)!r}: tensor {key!r} is not a LoRA "
                                  f"factor (lora_A / lora_B); not a plain LoRA adapter")
        modules.setdefault(match["module"], {})[match["factor"]] = tensor
    half = [m for m, f in modules.items() if set(f) != {"A", "B"}]
    if half or not modules:
        raise ConversionError(f"{role} {str(folder)!r}: " + (
            f"module {half[0]!r} lacks lora_A or lora_B" if half else "holds no LoRA factors"))
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    return config, modules, scaling


def init_folder(init: Path) -> Path:
    """The PEFT folder of A0, B0: `init` itself, or its adapter/ (an export_residual folder)."""
    if (init / CONFIG_FILE).is_file():
        return init
    if (init / INIT_ADAPTER_SUBDIR / CONFIG_FILE).is_file():
        return init / INIT_ADAPTER_SUBDIR
    raise ConversionError(f"--init {str(init)!r}: neither a residual export (python -m "
                          f"geora.preprocess ... --export residual) nor its adapter/ folder")


def convert_trained_adapter(trained_dir, init_dir, out_dir, *, overwrite: bool = False) -> Path:
    """Write the plain LoRA on the original model equal to `trained_dir` (a PEFT LoRA
    trained on the residual model of `init_dir`) into `out_dir`. See the module docstring.

    >>> import tempfile, geora
    >>> from geora.models import tiny_model
    >>> tmp = tempfile.mkdtemp()
    >>> res = geora.export_residual(geora.prepare_model(tiny_model(), "geora", rank=4),
    ...                             f"{tmp}/res")
    >>> out = convert_trained_adapter(f"{tmp}/res/adapter", res, f"{tmp}/lora")  # 0 steps
    >>> json.loads((out / "adapter_config.json").read_text())["r"]
    8
    """
    trained, init = Path(trained_dir), init_folder(Path(init_dir))
    t_config, t_modules, t_scale = read_lora(trained, "--trained")
    _, i_modules, i_scale = read_lora(init, "--init")
    missing = sorted(set(i_modules) - set(t_modules))
    extra = sorted(set(t_modules) - set(i_modules))
    if missing or extra:
        name, which = (missing[0], "lacks") if missing else (extra[0], "adds")
        raise ConversionError(
            f"--trained {str(trained)!r} {which} module {name!r} compared with --init "
            f"({len(missing)} missing, {len(extra)} extra): train with the init adapter's "
            f"target modules (load it, e.g. verl's lora_adapter_path)")
    tensors, rank = {}, None
    for module in sorted(i_modules):
        a, b = t_modules[module]["A"], t_modules[module]["B"]
        a0, b0 = i_modules[module]["A"], i_modules[module]["B"]
        if a.shape[1] != a0.shape[1] or b.shape[0] != b0.shape[0]:
            raise ConversionError(f"module {module!r}: trained shapes A {tuple(a.shape)}, "
                                  f"B {tuple(b.shape)} do not fit the init's A0 "
                                  f"{tuple(a0.shape)}, B0 {tuple(b0.shape)}: another model?")
        if i_scale != t_scale:           # fold s0 / s into B0 so one scaling serves both
            b0 = b0.double().mul(i_scale / t_scale).to(b0.dtype)
        a2, b2 = on_original_base(a, b, a0, b0)
        rank = a2.shape[0]
        tensors.update(peft_lora_tensors(module, a2, b2))
    meta = _original_model(Path(init_dir))
    config = dict(t_config, r=rank, lora_alpha=t_scale * rank, use_rslora=False,
                  init_lora_weights=True, base_model_name_or_path=meta,
                  target_modules=sorted(i_modules))
    with atomic_dir(out_dir, overwrite) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file(tensors, str(tmp / PEFT_WEIGHTS), metadata={"format": "pt"})
    return Path(out_dir)


def _original_model(init: Path) -> str | None:
    """The original model's folder recorded by export_residual, if any."""
    for folder in (init, init.parent):
        meta = folder / RESIDUAL_META_FILE
        if meta.is_file():
            return json.loads(meta.read_text()).get("original_model")
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m geora.convert",
        description="Convert a LoRA trained elsewhere on a residual export (python -m "
                    "geora.preprocess ... --export residual) into a plain LoRA of rank "
                    "r + r0 on the ORIGINAL model, for vLLM, lm-eval or PeftModel.")
    p.add_argument("--trained", required=True, help="the trained PEFT LoRA folder")
    p.add_argument("--init", required=True,
                   help="the residual export folder (or its adapter/ folder)")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    return p


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite and (not out.is_dir() or any(out.iterdir())):
        raise SystemExit(f"error: --out {str(out)!r} exists and is not empty (use --overwrite)")
    try:
        out = convert_trained_adapter(args.trained, args.init, args.out,
                                      overwrite=args.overwrite)
    except (ConversionError, FileExistsError) as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps({"out": str(out), "rank": json.loads(
        (out / CONFIG_FILE).read_text())["r"]}))
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
