"""GeoRA's one-time preprocessing: initialise a model's adapters and save them.

    python -m geora.preprocess --model /path/to/Qwen3-8B --method geora --rank 16 \
        --rho 0.2 --out adapters/qwen3_8b_geora [--device cuda]

Loads the model from a local Hugging Face folder (never from the hub), runs
`geora.prepare_model` one module at a time (SVDs on --device, weights stay where they
were loaded), and writes a `geora.save_adapter` folder that `geora.load_adapter(original
base, DIR)` turns back into the initialised model without any SVD, plus mask_stats.json
(per module and aggregated: each mask's fraction, intersection, union, Jaccard) for the
methods that have masks. Prints a one-line summary.

    python -m geora.preprocess --model /path/to/Qwen3-8B --method geora --out res --export residual

writes instead, for trainers that take a base model plus a PEFT adapter (verl, OpenRLHF):
res/model (a transformers folder whose target weights are W_res, in the checkpoint's dtype,
config and tokenizer files copied) and res/adapter (a PEFT LoRA holding A0, B0); loaded with
transformers and PEFT alone the pair computes the original model. After training elsewhere,
`python -m geora.convert --trained ADAPTER --init res --out DIR` gives the LoRA on the
original model (geora.persistence.export_residual, geora.convert).
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

from geora.methods import (DEFAULT_RANK, DEFAULT_RHO, SVD_METHODS, available_methods,
                           check_arguments, check_option_values, get_method)

METHOD_NAMES = tuple(available_methods())
EXPORTS = ("adapter", "residual")
RESIDUAL_METHODS = tuple(n for n in METHOD_NAMES if get_method(n).kind.has_residual_form)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m geora.preprocess",
        description="Initialise GeoRA (or a baseline) on a local model and save the adapter "
                    "folder (loadable with geora.load_adapter onto the original model) and "
                    "per-module mask statistics.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True,
                   help="local Hugging Face model folder (with config.json); no hub access")
    p.add_argument("--method", default="geora", choices=METHOD_NAMES)
    # Every method option defaults to None = not given: a method refuses what it does not
    # use (e.g. --rho for lora, --svd for milora), and prepare_model supplies the defaults.
    p.add_argument("--rank", type=int, default=None,
                   help=f"adapter rank r (default {DEFAULT_RANK} where the method has one)")
    p.add_argument("--rho", type=float, default=None,
                   help=f"mask fraction in (0, 1) (default {DEFAULT_RHO} where the method "
                        f"has masks)")
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: rank)")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--device", default=None,
                   help="device for the SVDs, e.g. cuda (default: where the weights are)")
    p.add_argument("--dtype", default="auto",
                   help="load dtype: auto (the checkpoint's), float32, bfloat16, float16")
    p.add_argument("--svd", default=None, choices=SVD_METHODS,
                   help="SVD of the methods that take one (default: auto = exact up to "
                        "768 on the short side, randomized block Krylov above)")
    p.add_argument("--niter", type=int, default=None,
                   help="Krylov steps of the randomized SVD (default: adaptive)")
    p.add_argument("--seed", type=int, default=None, help="seed of the SVD (default 0)")
    p.add_argument("--target-modules", default=None,
                   help="'all-linear' (default), a regex, or comma-separated module names")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra method option, e.g. --set total_step=500 (adalora), "
                        "--set sparseft_mask=low_magnitude, --set alpha_norm=peft")
    p.add_argument("--export", default="adapter", choices=EXPORTS,
                   help="adapter: a geora.save_adapter folder; residual: model/ (W_res, "
                        "transformers) + adapter/ (A0, B0, PEFT) for other RL trainers "
                        f"(methods {', '.join(RESIDUAL_METHODS)})")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    return p


def parse_options(items: list[str]) -> dict:
    """KEY=VALUE pairs; values parsed as Python literals when possible, else strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    model_dir = Path(args.model).expanduser()
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"--model {str(model_dir)!r}: not a local Hugging Face model folder "
                         f"(no config.json); download it elsewhere and pass its path")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise SystemExit(f"--out {str(out)!r} exists and is not empty (use --overwrite)")
    method = get_method(args.method)
    if args.export == "residual" and not method.kind.has_residual_form:
        raise SystemExit(f"--export residual --method {args.method}: method {args.method!r} "
                         f"(kind {method.kind.name!r}) trains no LoRA on a residual weight; "
                         f"use one of {', '.join(RESIDUAL_METHODS)} or --export adapter")
    targets = args.target_modules
    if targets is not None and targets != "all-linear" and "," in targets:
        targets = [t.strip() for t in targets.split(",") if t.strip()]

    given = dict(svd=args.svd, niter=args.niter, seed=args.seed, svd_device=args.device)
    options = {k: v for k, v in given.items() if v is not None}
    options.update(parse_options(args.set))
    shape = dict(rank=args.rank, rho=args.rho, alpha=args.alpha, target_modules=targets)
    check_arguments(method, shape, options)                   # before the model loads
    check_option_values(args.method, options)

    import torch
    from transformers import AutoModelForCausalLM

    import geora
    from geora.surgery import get_state

    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    t1 = time.perf_counter()
    prepared = geora.prepare_model(model, args.method, progress=True, **shape, **options)
    t2 = time.perf_counter()
    if args.export == "residual":
        geora.export_residual(prepared, out, source_dir=model_dir, overwrite=args.overwrite)
    else:
        geora.save_adapter(prepared, out, overwrite=args.overwrite)
    trainable, total = geora.count_parameters(prepared)
    state = get_state(prepared)
    summary = dict(method=args.method, modules=len(state.targets), trainable=trainable,
                   total=total, load_s=round(t1 - t0, 2), init_s=round(t2 - t1, 2),
                   out=str(out), export=args.export)
    stats_path = out / "mask_stats.json"
    if stats_path.is_file():
        summary["mask_stats"] = json.loads(stats_path.read_text())["aggregate"]
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
