"""Model surgery (layer 2): find target modules, wrap them with PEFT LoRA layers, write
factors and residuals back, install masked trainable deltas (`MaskedDelta`, SparseFT's
parametrization), and record on the model what save/export need (`GeoraState`, attribute
`geora_state`). The method kinds (geora/kinds/) do their work through these functions.

Every check runs before the model is touched, so bad input changes nothing. Large models
are processed one module at a time: each weight is factorised (optionally on
`svd_device`), written back in its own dtype and device, and released before the next.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from geora import linalg

STATE_ATTR = "geora_state"
ADAPTER = "default"


@dataclass
class GeoraState:
    """What `prepare_model` did: enough to save, reload and export without any SVD.

    init_factors: module name -> {"A0": (r, in), "B0": (out, r)} on CPU, exactly the
    values written into the adapter at init (residual methods only). mask_stats: module
    name -> linalg.mask_stats(M_spec, M_euc) (GeoRA family) or the trained fraction
    (SparseFT). options: the JSON-able method options that were used.
    """
    method: str
    kind: str                       # a name in geora.kinds.KINDS: residual | peft | sparse | full
    rank: int | None                # None where the method has no rank (fullft)
    alpha: float | None
    rho: float | None               # None where the method has no mask fraction
    targets: list[str]
    options: dict = field(default_factory=dict)
    init_factors: dict = field(default_factory=dict)
    mask_stats: dict = field(default_factory=dict)
    # full kind with keep_initial=True: module name -> its weight before training (CPU copy)
    initial_weights: dict = field(default_factory=dict)


def get_state(model: nn.Module) -> GeoraState | None:
    return getattr(model, STATE_ATTR, None)


def set_state(model: nn.Module, state: GeoraState) -> None:
    object.__setattr__(model, STATE_ATTR, state)   # a plain attribute, not a submodule


# ------------------------------------------------------------------------------ targets
def _conv1d_type():
    from transformers.pytorch_utils import Conv1D
    return Conv1D


def linear_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every nn.Linear and transformers Conv1D in `model`, by full dotted name."""
    kinds = (nn.Linear, _conv1d_type())
    return {n: m for n, m in model.named_modules() if isinstance(m, kinds)}


def _excluded_outputs(model: nn.Module) -> set[int]:
    """ids of the output layer and of any Linear tied to the input embedding: never targets
    of "all-linear" (as in PEFT), so a tied lm_head/embedding is left alone."""
    out = set()
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    if head is not None:
        out.add(id(head))
    get_in = getattr(model, "get_input_embeddings", None)
    emb = get_in() if callable(get_in) else None
    if emb is not None:
        for m in linear_modules(model).values():
            if m.weight is emb.weight:
                out.add(id(m))
    return out


def hidden_linear_names(model: nn.Module) -> list[str]:
    """Every nn.Linear but the output layer (and any Linear tied to the embedding): the
    matrices whose update the analysis reads for methods without targets (fullft)."""
    skip = _excluded_outputs(model)
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and id(m) not in skip]


def _summary(names: list[str]) -> str:
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
    return f"leaf names {leaves}, e.g. {names[:3]}" if names else "none"


def resolve_targets(model: nn.Module, target_modules="all-linear") -> list[str]:
    """Full names of the linear modules that `target_modules` selects.

    "all-linear": every Linear but the output layer; another str: a regex that must match
    the whole module name (PEFT's rule); a list/tuple of str: module names equal to an item
    or ending in "." + item. Raises ValueError when nothing matches (listing what exists)
    and refuses GPT-2-style Conv1D (fan_in_fan_out) modules.
    """
    refuse_peft_model(model)
    linear = linear_modules(model)
    if isinstance(target_modules, str) and target_modules == "all-linear":
        skip = _excluded_outputs(model)
        names = [n for n, m in linear.items() if id(m) not in skip]
    elif isinstance(target_modules, str):
        names = [n for n in linear if re.fullmatch(target_modules, n)]
    elif _is_name_list(target_modules):
        items = list(target_modules)
        names = [n for n in linear if any(n == t or n.endswith("." + t) for t in items)]
    else:
        raise ValueError(f"target_modules={target_modules!r}: give 'all-linear', a regex "
                         f"string or a non-empty list of module names")
    if not names:
        raise ValueError(f"target_modules={target_modules!r} matches no linear module; the "
                         f"linear modules are: {_summary(list(linear))}")
    conv = [n for n in names if isinstance(linear[n], _conv1d_type())]
    if conv:
        raise ValueError(f"module {conv[0]!r} is a GPT-2-style Conv1D (weight stored "
                         f"(in, out), fan_in_fan_out); not supported: target nn.Linear "
                         f"modules only ({len(conv)} Conv1D modules matched)")
    return names


def _is_name_list(value) -> bool:
    """A non-empty list/tuple (or OmegaConf ListConfig) of str."""
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        return False
    items = list(value)
    return bool(items) and all(isinstance(t, str) for t in items)


def refuse_peft_model(model: nn.Module) -> None:
    from peft import PeftModel

    if isinstance(model, PeftModel):
        raise ValueError("the model is already a peft.PeftModel; prepare_model takes the "
                         "plain transformers model")


def validate_targets(model: nn.Module, names: list[str], rank: int) -> None:
    """Every target weight is a finite 2-D float tensor with rank <= min(out, in)."""
    for name in names:
        w = model.get_submodule(name).weight
        linalg.check_weight(w.detach(), f"module {name!r}")
        linalg.check_rank(rank, tuple(w.shape), f"module {name!r}")


# ---------------------------------------------------------------------- residual write
def subtract_adapter(weight: torch.Tensor, a0: torch.Tensor, b0: torch.Tensor,
                     scaling: float) -> torch.Tensor:
    """W - scaling * B0 @ A0, computed in fp32 on weight's device, returned in its dtype.
    The one formula for the residual, used at init and again on reload."""
    dev = weight.device
    return (weight.float() - scaling * (b0.to(dev).float() @ a0.to(dev).float())
            ).to(weight.dtype)


def lora_layer(peft_model: nn.Module, name: str) -> nn.Module:
    """The PEFT LoRA layer that replaced module `name` of the wrapped transformers model."""
    return peft_model.base_model.model.get_submodule(name)


@torch.no_grad()
def write_residual_factors(peft_model: nn.Module, names: list[str],
                           factorize: Callable[..., object], *, svd_device=None,
                           progress: bool = False, desc: str = "init"):
    """For each target: f = factorize(W, where=name) (on svd_device if given); lora_A <- A,
    lora_B <- B (in the adapter's dtype), W <- W - s * B A. Returns (init_factors,
    mask_stats) for GeoraState."""
    init, stats = {}, {}
    for name in tqdm(names, desc=desc, disable=not progress, unit="module"):
        layer = lora_layer(peft_model, name)
        weight = layer.get_base_layer().weight
        w = weight.detach() if svd_device is None else weight.detach().to(svd_device)
        f = factorize(w, where=f"module {name!r}")
        lora_a, lora_b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
        scaling = layer.scaling[ADAPTER]
        if abs(scaling - f.scaling) > 1e-12:
            raise RuntimeError(f"module {name!r}: PEFT scaling {scaling} != {f.scaling}")
        lora_a.copy_(f.A)
        lora_b.copy_(f.B)
        # the residual is formed from the factors as stored (adapter dtype), so that
        # W_res + s B0 A0 == W holds for the live adapter and reload recomputes it exactly
        weight.copy_(subtract_adapter(weight.detach(), lora_a, lora_b, scaling))
        init[name] = {"A0": lora_a.detach().cpu().clone(), "B0": lora_b.detach().cpu().clone()}
        if getattr(f, "mask_spec", None) is not None:
            stats[name] = f.mask_stats()
        del f, w
    return init, stats


# ------------------------------------------------------------------ masked deltas
class MaskedDelta(nn.Module):
    """Parametrization W = W0 + scatter(delta) over a fixed bool mask (out, in).

    indices: flat positions of the mask (int32 buffer, int64 beyond 2^31 entries); delta:
    (n_mask,) fp32 Parameter, zero at init so W == W0 bitwise. Entries outside the mask are
    copied from W0. Any optimizer works unchanged, and AdamW's weight decay pulls delta
    (hence W) toward W0 instead of toward 0; a gradient hook alone would not do, because
    AdamW decays every entry it holds. Keeping delta in fp32 also accumulates small updates
    that a bf16 weight would round away.

    >>> w0 = torch.zeros(2, 3)
    >>> p = MaskedDelta(torch.tensor([[True, False, False], [False, False, True]]))
    >>> with torch.no_grad():
    ...     _ = p.delta.copy_(torch.tensor([1.0, 2.0]))
    >>> p(w0)
    tensor([[1., 0., 0.],
            [0., 0., 2.]], grad_fn=<ViewBackward0>)
    """

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        idx = mask.reshape(-1).nonzero().squeeze(1)
        # int32 positions halve the memory of int64 (a 50M-entry weight fits easily)
        self.register_buffer("indices", idx.to(torch.int32) if mask.numel() < 2 ** 31 else idx)
        self.delta = nn.Parameter(torch.zeros(self.indices.numel(), dtype=torch.float32,
                                              device=mask.device))

    def forward(self, w0: torch.Tensor) -> torch.Tensor:
        flat = w0.reshape(-1)
        vals = (flat[self.indices].float() + self.delta).to(w0.dtype)
        return flat.index_put((self.indices,), vals).view_as(w0)

    def delta_weight(self, shape: torch.Size) -> torch.Tensor:
        """The fp32 change scattered into a dense (out, in) tensor (zeros off the mask)."""
        dense = torch.zeros(shape.numel(), dtype=torch.float32, device=self.delta.device)
        dense[self.indices.long()] = self.delta.detach().float()
        return dense.view(shape)


def masked_delta(module: nn.Module) -> MaskedDelta:
    """The MaskedDelta installed on module.weight (ValueError if there is none)."""
    if not parametrize.is_parametrized(module, "weight"):
        raise ValueError(f"{type(module).__name__} has no masked delta on its weight")
    return module.parametrizations.weight[0]


def install_masked_deltas(model: nn.Module, names: list[str],
                          mask_fn: Callable[..., torch.Tensor], *, svd_device=None,
                          progress: bool = False) -> dict:
    """Freeze the model, then make each target's weight W0 + scatter(delta) over
    mask_fn(W, where=name) (the masks: baselines/sparseft.py). Returns per-module
    {"n", "count_trained", "frac_trained"}."""
    # Inputs were validated beforehand; masks are built and installed one module at a
    # time so that no more than one module's mask is held at once.
    model.requires_grad_(False)
    stats = {}
    for name in tqdm(names, desc="sparseft masks", disable=not progress, unit="module"):
        module = model.get_submodule(name)
        weight = module.weight.detach()
        w = weight if svd_device is None else weight.to(svd_device)
        mask = mask_fn(w, where=f"module {name!r}").to(weight.device)
        install_mask(module, mask)
        stats[name] = {"n": mask.numel(), "count_trained": int(mask.sum()),
                       "frac_trained": int(mask.sum()) / mask.numel()}
        del mask, w
    return stats


def install_mask(module: nn.Module, mask: torch.Tensor) -> MaskedDelta:
    """Register MaskedDelta(mask) on module.weight; the original weight stays frozen."""
    param = MaskedDelta(mask)
    parametrize.register_parametrization(module, "weight", param)
    module.parametrizations.weight.original.requires_grad_(False)
    return param
