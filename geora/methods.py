"""THE registry: method name -> Method, and `prepare_model`, the one entry point.

    import geora
    model = geora.prepare_model(model, "geora", rank=16, rho=0.2)   # -> peft.PeftModel
    geora.available_methods()   # ['geora', 'geora_random_r', ..., 'fullft']

Kinds: "residual" (geora*, pissa, milora: standard PEFT LoRA layers whose frozen base holds
W_res = W - s B0 A0), "peft" (lora, dora, adalora: PEFT's own init), "sparse" (sparseft:
the transformers model with masked trainable deltas), "full" (fullft). Every prepared
model computes exactly the original function at init, and carries a GeoraState
(`geora.surgery.get_state(model)`) that save/export use.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import nn

from baselines.adalora import ADALORA_OPTIONS, adalora_config
from baselines.dora import dora_config
from baselines.fullft import enable_full_training
from baselines.lora import LORA_OPTIONS, lora_config
from baselines.milora import milora_factors
from baselines.pissa import pissa_factors
from baselines.sparseft import SPARSEFT_MASKS, sparseft_mask
from geora import linalg, surgery
from geora.init import geora_init, resolve_alpha

# options shared by every method that factorises weights
SVD_OPTIONS = ("svd", "niter", "seed", "svd_device", "progress")
RESIDUAL_OPTIONS = SVD_OPTIONS + ("alpha_norm",) + LORA_OPTIONS


@dataclass(frozen=True)
class Method:
    """One method. `factorize(weight, *, rank, rho, alpha, where, **opts) -> GeoraFactors`
    for residual methods; `config(targets, rank, alpha, **opts) -> PeftConfig` for PEFT
    methods; `options` lists the keyword options it accepts."""
    name: str
    kind: str
    summary: str
    options: tuple[str, ...] = ()
    factorize: Callable | None = None
    config: Callable | None = None


def _geora(weight, *, rank, rho, alpha, where, factors="top", masks="union", svd="randomized",
           niter=None, seed=0, alpha_norm="none"):
    return geora_init(weight, rank=rank, rho=rho, alpha=alpha, svd=svd, niter=niter,
                      factors=factors, masks=masks, seed=seed, alpha_norm=alpha_norm,
                      where=where)


def _pissa(weight, *, rank, rho, alpha, where, svd="randomized", niter=None, seed=0,
           alpha_norm="none"):
    return pissa_factors(weight, rank, alpha, svd=svd, niter=niter, seed=seed,
                         alpha_norm=alpha_norm, where=where)


def _milora(weight, *, rank, rho, alpha, where, svd=None, niter=None, seed=0,
            alpha_norm="none"):
    return milora_factors(weight, rank, alpha, alpha_norm=alpha_norm, where=where)


def _registry() -> dict[str, Method]:
    res = partial(Method, kind="residual", options=RESIDUAL_OPTIONS)
    methods = [
        res(name="geora", summary="top-r SVD of W*(M_spec|M_euc); residual frozen",
            factorize=_geora),
        res(name="geora_random_r", summary="ablation: r random non-zero triplets of W_geo",
            factorize=partial(_geora, factors="random")),
        res(name="geora_tail_r", summary="ablation: r smallest non-zero triplets of W_geo",
            factorize=partial(_geora, factors="tail")),
        res(name="geora_wo_spec", summary="ablation: mask = M_euc only",
            factorize=partial(_geora, masks="euc")),
        res(name="geora_wo_euc", summary="ablation: mask = M_spec only",
            factorize=partial(_geora, masks="spec")),
        Method("lora", "peft", "PEFT LoRA (B = 0), base unchanged", ("lora_dropout",
               "autocast_adapter_dtype"), config=lora_config),
        res(name="pissa", summary="top-r triplets of W (PiSSA)", factorize=_pissa),
        res(name="milora", summary="r smallest triplets of W (MiLoRA)", factorize=_milora),
        Method("dora", "peft", "PEFT DoRA", ("lora_dropout", "autocast_adapter_dtype"),
               config=dora_config),
        Method("adalora", "peft", "PEFT AdaLoRA (needs total_step)",
               ADALORA_OPTIONS + ("autocast_adapter_dtype",), config=adalora_config),
        Method("sparseft", "sparse", "full fine-tuning on a fixed mask (delta over W0)",
               SVD_OPTIONS + ("sparseft_mask",)),
        Method("fullft", "full", "every parameter trains"),
    ]
    return {m.name: m for m in methods}


METHODS: dict[str, Method] = _registry()


def available_methods() -> list[str]:
    return list(METHODS)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid names: {available_methods()}")
    return METHODS[name]


def prepare_model(model: nn.Module, method: str, *, rank: int = 16, rho: float = 0.2,
                  alpha: float | None = None, target_modules="all-linear", **options):
    """Make `model` ready to train with `method`; outputs are unchanged at init.

    Residual/PEFT methods return a peft.PeftModel (adapter "default", only adapters
    trainable); sparseft returns `model` with masked deltas; fullft returns `model` with
    every parameter trainable. options (per method, see METHODS[name].options): svd
    ("randomized" | "exact"), niter, seed, alpha_norm ("none" | "peft"), svd_device
    (e.g. "cuda"), progress (tqdm bar), lora_dropout, autocast_adapter_dtype,
    sparseft_mask, and AdaLoRA's total_step / init_r / target_r / schedule. All checks
    run before the model is modified.
    """
    spec = get_method(method)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"method {method!r} does not take option(s) {unknown}; it "
                         f"accepts {sorted(spec.options)}")
    if spec.kind == "full":
        enable_full_training(model)
        surgery.set_state(model, surgery.GeoraState(method, "full", rank, 0.0, rho, []))
        return model
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"rank={rank!r} must be a positive int")
    linalg.check_rho(rho)
    alpha = resolve_alpha(alpha, rank)
    names = surgery.resolve_targets(model, target_modules)
    surgery.validate_targets(model, names, rank)
    opts = dict(options)
    progress = bool(opts.pop("progress", False))
    svd_device = opts.pop("svd_device", None)
    state = surgery.GeoraState(method, spec.kind, rank, alpha, rho, names,
                               options={k: v for k, v in options.items() if k != "progress"})

    if spec.kind == "sparse":
        mask = opts.pop("sparseft_mask", "geora_union")
        if mask not in SPARSEFT_MASKS:
            raise ValueError(f"sparseft_mask={mask!r}: choose one of {SPARSEFT_MASKS}")
        _check_factor_options(method, opts)
        mask_fn = partial(sparseft_mask, mask=mask, rank=rank, rho=rho, **opts)
        state.mask_stats = surgery.install_masked_deltas(
            model, names, mask_fn, svd_device=svd_device, progress=progress)
        surgery.set_state(model, state)
        return model

    from peft import get_peft_model

    autocast = opts.pop("autocast_adapter_dtype", True)
    if spec.kind == "peft":
        config = spec.config(names, rank, alpha, **opts)
        peft_model = get_peft_model(model, config, autocast_adapter_dtype=autocast)
    else:
        config = lora_config(names, rank, alpha, lora_dropout=opts.pop("lora_dropout", 0.0))
        _check_factor_options(method, opts)
        peft_model = get_peft_model(model, config, autocast_adapter_dtype=autocast)
        factorize = partial(spec.factorize, rank=rank, rho=rho, alpha=alpha, **opts)
        state.init_factors, state.mask_stats = surgery.write_residual_factors(
            peft_model, names, factorize, svd_device=svd_device, progress=progress,
            desc=f"{method} init")
    surgery.set_state(peft_model, state)
    return peft_model


def _check_factor_options(method: str, opts: dict) -> None:
    """Option values that would only fail inside the per-module loop, checked up front."""
    if opts.get("svd", "randomized") not in ("randomized", "exact"):
        raise ValueError(f"method {method!r}: svd={opts['svd']!r}: choose 'randomized' or "
                         f"'exact'")
    if opts.get("alpha_norm", "none") not in ("none", "peft"):
        raise ValueError(f"method {method!r}: alpha_norm={opts['alpha_norm']!r}: choose "
                         f"'none' or 'peft'")
    niter = opts.get("niter")
    if niter is not None and (not isinstance(niter, int) or niter < 0):
        raise ValueError(f"method {method!r}: niter={niter!r} must be an int >= 0")
