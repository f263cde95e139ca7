"""THE registry: method name -> Method (its kind plus its own maths), and `prepare_model`,
the one entry point.

>>> import geora
>>> from geora.models import tiny_model
>>> import peft
>>> model = geora.prepare_model(tiny_model(), "geora", rank=4, rho=0.2)
>>> isinstance(model, peft.PeftModel), geora.surgery.get_state(model).kind
(True, 'residual')
>>> geora.available_methods()[:3]
['geora', 'geora_random_r', 'geora_tail_r']

A method is a kind (geora/kinds/: residual, peft, sparse, full; what prepare / save / load /
export / trainer callbacks / weight updates do) plus the method's own part: a `factorize`
function (residual), a PEFT `config` function (peft) or a `mask` function (sparse), from
geora.init or baselines/. Every prepared model computes exactly the original function at
init and carries a GeoraState (`geora.surgery.get_state(model)`) that save/export use.

Adding a method of an existing kind is one entry in `_registry` (plus its maths, if new,
and conf/method/<name>.yaml); nothing else in the code names methods.

Every argument a method does not use is refused (ValueError naming it): `uses` lists which
of rank, rho, alpha, target_modules it takes, `options` its keyword options.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from torch import nn

from baselines.adalora import ADALORA_OPTIONS, adalora_config
from baselines.dora import dora_config
from baselines.lora import LORA_OPTIONS, lora_config
from baselines.milora import milora_factors
from baselines.pissa import pissa_factors
from baselines import sparseft
from baselines.sparseft import SPARSEFT_MASKS
from geora import linalg, surgery
from geora.init import ALPHA_NORMS, geora_init, resolve_alpha
from geora.kinds import FULL, PEFT, RESIDUAL, SPARSE, MethodKind

# The paper's r and rho, the defaults of every method that has them (and of the CLIs).
DEFAULT_RANK = 16
DEFAULT_RHO = 0.2

# prepare_model's shape arguments; a method's `uses` is a subset.
SHAPE_ARGS = ("rank", "rho", "alpha", "target_modules")
ADAPTER_ARGS = ("rank", "alpha", "target_modules")          # no mask fraction

# Option names, each defined once.
SVD_METHODS = ("auto", "randomized", "exact")   # auto: exact up to linalg.EXACT_MAX_DIM
SEEDED_SVD_OPTIONS = ("svd", "niter", "seed")    # svd: one of SVD_METHODS
SVD_DEVICE = "svd_device"                        # where the SVDs / masks run (e.g. "cuda")
ALPHA_NORM = "alpha_norm"                        # one of geora.init.ALPHA_NORMS
SPARSEFT_MASK = "sparseft_mask"                  # one of baselines.sparseft.SPARSEFT_MASKS
KEEP_INITIAL = "keep_initial"                    # fullft: keep W0 to read weight updates
FACTOR_OPTIONS = SEEDED_SVD_OPTIONS + (SVD_DEVICE, ALPHA_NORM) + LORA_OPTIONS
SVD_DEFAULT = SVD_METHODS[0]


def _int(v, low=None) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and (low is None or v >= low)


# Each option's valid values, beside its name: option -> (is valid, what is expected). A
# method checks the options it takes (Method.check_options) before any module is touched.
OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "svd": (lambda v: v in SVD_METHODS, f"choose one of {SVD_METHODS}"),
    "niter": (lambda v: v is None or _int(v, 0), "must be an int >= 0"),
    "seed": (lambda v: _int(v), "must be an int"),
    ALPHA_NORM: (lambda v: v in ALPHA_NORMS, f"choose one of {ALPHA_NORMS}"),
    SPARSEFT_MASK: (lambda v: v in SPARSEFT_MASKS, f"choose one of {SPARSEFT_MASKS}"),
    "lora_dropout": (lambda v: not isinstance(v, bool) and isinstance(v, (int, float))
                     and 0 <= v < 1, "must be a number in [0, 1)"),
    KEEP_INITIAL: (lambda v: isinstance(v, bool), "must be true or false"),
    "autocast_adapter_dtype": (lambda v: isinstance(v, bool), "must be true or false"),
}


@dataclass(frozen=True)
class Method:
    """One method: a kind plus its own maths.

    factorize(weight, *, rank, rho, alpha, where, **options) -> GeoraFactors (residual);
    config(targets, rank, alpha, **options) -> peft.PeftConfig (peft);
    mask(weight, *, rank, rho, where, **options) -> bool mask (sparse).
    `uses`: which of rank / rho / alpha / target_modules it takes; `options`: its keyword
    options. Anything else given to prepare_model raises ValueError. `analysis_masks`: the
    weight analysis recomputes M_spec / M_euc for this method's runs by default (masks=auto).
    """
    name: str
    kind: MethodKind
    summary: str
    uses: tuple[str, ...] = SHAPE_ARGS
    options: tuple[str, ...] = ()
    factorize: Callable | None = None
    config: Callable | None = None
    mask: Callable | None = None
    analysis_masks: bool = False

    def check_options(self, opts: dict) -> None:
        """Refuses an option this method does not take, and a value (OPTION_RULES) that
        would only fail inside the per-module loop: checked before any module is touched."""
        unknown = sorted(set(opts) - set(self.options))
        if unknown:
            raise ValueError(f"method {self.name!r} does not take option(s) {unknown}; it "
                             f"accepts {sorted(self.options)}")
        for key, value in opts.items():
            if key in OPTION_RULES:
                valid, expected = OPTION_RULES[key]
                if not valid(value):
                    raise ValueError(f"method {self.name!r}: {key}={value!r}: {expected}")


def _geora(weight, *, rank, rho, alpha, where, factors="top", masks="union", svd=SVD_DEFAULT,
           niter=None, seed=0, alpha_norm="none"):
    return geora_init(weight, rank=rank, rho=rho, alpha=alpha, svd=svd, niter=niter,
                      factors=factors, masks=masks, seed=seed, alpha_norm=alpha_norm,
                      where=where)


def _pissa(weight, *, rank, rho, alpha, where, svd=SVD_DEFAULT, niter=None, seed=0,
           alpha_norm="none"):
    return pissa_factors(weight, rank, alpha, svd=svd, niter=niter, seed=seed,
                         alpha_norm=alpha_norm, where=where)


def _milora(weight, *, rank, rho, alpha, where, alpha_norm="none"):
    # MiLoRA needs the whole spectrum: always the exact SVD, no seed, no iterations.
    return milora_factors(weight, rank, alpha, alpha_norm=alpha_norm, where=where)


def _sparseft(weight, *, rank, rho, where, sparseft_mask="geora_union", svd=SVD_DEFAULT,
              niter=None, seed=0):
    return sparseft.sparseft_mask(weight, sparseft_mask, rank=rank, rho=rho, svd=svd,
                                  niter=niter, seed=seed, where=where)


def _registry() -> dict[str, Method]:
    res = partial(Method, kind=RESIDUAL, options=FACTOR_OPTIONS)
    geo = partial(res, analysis_masks=True)      # the GeoRA family: masks are the method
    peft = partial(Method, kind=PEFT, uses=ADAPTER_ARGS, options=LORA_OPTIONS)
    methods = [
        geo(name="geora", summary="top-r SVD of W*(M_spec|M_euc); residual frozen",
            factorize=_geora),
        geo(name="geora_random_r", summary="ablation: r random non-zero triplets of W_geo",
            factorize=partial(_geora, factors="random")),
        geo(name="geora_tail_r", summary="ablation: r smallest non-zero triplets of W_geo",
            factorize=partial(_geora, factors="tail")),
        geo(name="geora_wo_spec", summary="ablation: mask = M_euc only",
            factorize=partial(_geora, masks="euc")),
        geo(name="geora_wo_euc", summary="ablation: mask = M_spec only",
            factorize=partial(_geora, masks="spec")),
        peft(name="lora", summary="PEFT LoRA (B = 0), base unchanged", config=lora_config),
        res(name="pissa", summary="top-r triplets of W (PiSSA)", uses=ADAPTER_ARGS,
            factorize=_pissa),
        res(name="milora", summary="r smallest triplets of W (MiLoRA), exact SVD",
            uses=ADAPTER_ARGS, options=(SVD_DEVICE, ALPHA_NORM) + LORA_OPTIONS,
            factorize=_milora),
        peft(name="dora", summary="PEFT DoRA", config=dora_config),
        peft(name="adalora", summary="PEFT AdaLoRA (needs total_step)",
             options=ADALORA_OPTIONS + ("autocast_adapter_dtype",), config=adalora_config),
        Method("sparseft", SPARSE, "full fine-tuning on a fixed mask (delta over W0)",
               uses=("rank", "rho", "target_modules"),
               options=SEEDED_SVD_OPTIONS + (SVD_DEVICE, SPARSEFT_MASK), mask=_sparseft,
               analysis_masks=True),
        Method("fullft", FULL, "every parameter trains", uses=(), options=(KEEP_INITIAL,)),
    ]
    return {m.name: m for m in methods}


METHODS: dict[str, Method] = _registry()


def available_methods() -> list[str]:
    return list(METHODS)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid names: {available_methods()}")
    return METHODS[name]


def check_arguments(spec: Method, shape: dict[str, Any], options: dict[str, Any]) -> None:
    """Refuse what `spec` does not use: a shape argument given (not None) or an option."""
    unused = [f"{k}={v!r}" for k, v in shape.items() if v is not None and k not in spec.uses]
    if unused:
        raise ValueError(f"method {spec.name!r} does not use {', '.join(unused)} (it takes "
                         f"{list(spec.uses) or 'none of rank, rho, alpha, target_modules'})")
    spec.check_options(options)


def check_option_values(method: str, opts: dict) -> None:
    """The option values `method` takes, checked up front (Method.check_options)."""
    get_method(method).check_options(opts)


def _check_rank(rank) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"rank={rank!r} must be a positive int")
    return rank


def prepare_model(model: nn.Module, method: str, *, rank: int | None = None,
                  rho: float | None = None, alpha: float | None = None,
                  target_modules=None, progress: bool = False, **options):
    """Make `model` ready to train with `method`; outputs are unchanged at init.

    Residual/PEFT methods return a peft.PeftModel (adapter "default", only adapters
    trainable); sparseft returns `model` with masked deltas; fullft returns `model` with
    every parameter trainable. rank (default DEFAULT_RANK), rho (default DEFAULT_RHO),
    alpha (default = rank) and target_modules (default "all-linear") apply to the methods
    whose `uses` lists them; passing one to another method raises. options (per method,
    see METHODS[name].options): svd ("auto" | "randomized" | "exact"), niter, seed, alpha_norm
    ("none" | "peft"), svd_device (e.g. "cuda"), lora_dropout, autocast_adapter_dtype,
    sparseft_mask, keep_initial (fullft), and AdaLoRA's total_step / init_r / target_r /
    schedule. progress: a tqdm bar over modules. All checks run before the model is
    modified.
    """
    spec = get_method(method)
    check_arguments(spec, dict(rank=rank, rho=rho, alpha=alpha,
                               target_modules=target_modules), options)
    surgery.refuse_peft_model(model)
    if "rank" in spec.uses:
        rank = _check_rank(DEFAULT_RANK if rank is None else rank)
    if "rho" in spec.uses:
        rho = DEFAULT_RHO if rho is None else rho
        linalg.check_rho(rho)
    if "alpha" in spec.uses:
        alpha = resolve_alpha(alpha, rank)
    targets = spec.kind.resolve_targets(
        model, "all-linear" if target_modules is None else target_modules, rank)
    state = surgery.GeoraState(method, spec.kind.name, rank, alpha, rho, targets,
                               options=dict(options))
    opts = dict(options)
    svd_device = opts.pop(SVD_DEVICE, None)
    prepared = spec.kind.prepare(model, spec, state, opts, svd_device=svd_device,
                                 progress=progress)
    surgery.set_state(prepared, state)
    return prepared

