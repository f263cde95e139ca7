"""A fused forward/backward for PEFT's LoRA linear layers: y = x W^T + b + s (x A^T) B^T.

    from geora.fused_lora import enable_fused_lora
    n = enable_fused_lora(peft_model)      # patches every eligible peft lora.Linear in place

Why by hand: PEFT's `lora.Linear.forward` runs the base layer and the adapter as separate
modules (base, dropout, lora_A, lora_B, a scaling multiply, an add, a dtype cast) and
autograd then sums two input gradients. With a frozen base this costs several extra
full-size elementwise passes per layer and, with fp32 adapters on a 16-bit model, an fp32
copy of every layer input kept for backward. No maintained library fuses this for PEFT
layers, so `LowRankLinear` does it in one autograd.Function:

    forward   xa = x A^T (T, r);  out = x W^T (+ bias) + s * xa B^T   (one addmm_)
    backward  gB = g B (T, r);  grad_x = g W + s * gB A   (one addmm_, no second pass)
              grad_A = s * (x^T gB)^T (r, in);  grad_B = s * g^T xa (out, r);  no weight grad
    saved     x (the layer input, once; a view of the caller's tensor when no cast was
              needed) and xa (T, r): no more than PEFT keeps.
    fp32      W + s B A is formed once per call (out x in x r flops, a few % of one matmul
              at T >= r) and used for out and grad_x: one big matmul each, no skinny ones.

Matmuls run in the compute dtype (the autocast dtype under autocast, else the input's
dtype); the adapter parameters keep their own dtype (fp32 adapters on a bf16 model are the
optimizer's master copy, cast per call, r x in elements) and receive gradients in it.

The patch only replaces the layer's `forward` (an instance attribute), so the module tree,
state_dict, `save_pretrained`, merge/unmerge and every PEFT API are untouched. A call that
the fused path does not cover (dropout active in training, several active adapters, DoRA or
another variant, lora_bias, fan_in_fan_out, a trainable base, merged or disabled adapters,
extra forward arguments, a base that is not a plain nn.Linear) runs PEFT's own forward.
"""
from __future__ import annotations

import types

import torch
from torch import nn

_FUSED_ATTR = "_geora_fused_lora"


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    dev = x.device.type
    if torch.is_autocast_enabled(dev) and x.is_floating_point():
        return torch.get_autocast_dtype(dev)
    return x.dtype


class LowRankLinear(torch.autograd.Function):
    """y = x W^T + bias + scaling * (x A^T) B^T with a frozen W / bias.

    x (..., in); weight (out, in); bias (out,) or None; lora_a (r, in); lora_b (out, r);
    dtype: the compute dtype (x, W, A, B are cast to it); merge: use W + scaling B A as one
    matrix (see `merges_weight`). Returns (..., out) in `dtype`.

    >>> x = torch.randn(3, 5, requires_grad=True)
    >>> w, a, b = torch.randn(4, 5), torch.randn(2, 5, requires_grad=True), torch.randn(4, 2)
    >>> y = LowRankLinear.apply(x, w, None, a, b, 0.5, torch.float32)
    >>> torch.allclose(y, x @ w.T + 0.5 * (x @ a.T) @ b.T, atol=1e-6)
    True
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float, dtype: torch.dtype,
                merge: bool = False):
        x2 = x.reshape(-1, x.shape[-1]).to(dtype)              # (T, in)
        a, b = lora_a.to(dtype), lora_b.to(dtype)
        xa = x2 @ a.t()                                        # (T, r)
        w = _effective_weight(weight, a, b, scaling, dtype, merge)
        out = x2 @ w.t() if bias is None else torch.addmm(bias.to(dtype), x2, w.t())
        if not merge:
            out.addmm_(xa, b.t(), alpha=scaling)               # (T, out)
        ctx.save_for_backward(x2, weight, lora_a, lora_b, xa)
        ctx.scaling, ctx.merge, ctx.x_shape, ctx.x_dtype = scaling, merge, x.shape, x.dtype
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        x2, weight, lora_a, lora_b, xa = ctx.saved_tensors
        s, dtype = ctx.scaling, x2.dtype
        g = grad_out.reshape(-1, grad_out.shape[-1]).to(dtype)    # (T, out)
        a, b = lora_a.to(dtype), lora_b.to(dtype)
        gb = g @ b                                             # (T, r)
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = g @ _effective_weight(weight, a, b, s, dtype, ctx.merge)
            if not ctx.merge:
                grad_x.addmm_(gb, a, alpha=s)
            grad_x = grad_x.view(ctx.x_shape).to(ctx.x_dtype)
        # Both reduce over the T tokens; written so that the big operand (x2, g) is the
        # transposed left factor, which runs 1.3-1.5x faster on a CPU than gb^T x / xa^T g.
        if ctx.needs_input_grad[3]:
            grad_a = (x2.t() @ gb).t().mul_(s).to(lora_a.dtype)    # (r, in), a transposed view
        if ctx.needs_input_grad[4]:
            grad_b = (g.t() @ xa).mul_(s).to(lora_b.dtype)         # (out, r)
        return grad_x, None, None, grad_a, grad_b, None, None, None


def merges_weight(dtype: torch.dtype) -> bool:
    """In fp32/fp64, W + s B A is formed once (out x in x r flops) and each of the two big
    matmuls runs once on it: rounding it costs ~1e-7 relative, and it replaces two skinny
    (K = r) matmuls over all T tokens, which run far below peak speed. In 16-bit the
    rounding of W + s B A would swallow small adapter updates (they sit below half an ulp
    of W), so there the adapter path stays separate and is added by one addmm_."""
    return dtype in (torch.float32, torch.float64)


def _effective_weight(weight, a, b, scaling: float, dtype, merge: bool):
    w = weight.to(dtype)
    return torch.addmm(w, b, a, alpha=scaling) if merge else w


def _fused_adapter(layer, x, args, kwargs) -> str | None:
    """The one active adapter the fused path can run for this call, or None (-> PEFT)."""
    if args or any(v is not None for v in kwargs.values()):
        return None
    if layer.disable_adapters or layer.merged or not x.is_floating_point():
        return None
    active = layer.active_adapters
    if len(active) != 1:
        return None
    name = active[0]
    if name not in layer.lora_A or name in layer.lora_variant or layer.lora_bias.get(name):
        return None
    if layer.training and not isinstance(layer.lora_dropout[name], nn.Identity):
        return None
    base = layer.base_layer
    if type(base) is not nn.Linear or layer.fan_in_fan_out or base.weight.requires_grad:
        return None
    if base.bias is not None and base.bias.requires_grad:
        return None
    if not torch.is_autocast_enabled(x.device.type) and base.weight.dtype != x.dtype:
        return None    # PEFT's forward decides what happens (it raises on a dtype mismatch)
    return name


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    name = _fused_adapter(self, x, args, kwargs)
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.base_layer
    dtype = _compute_dtype(x)
    return LowRankLinear.apply(x, base.weight, base.bias, self.lora_A[name].weight,
                               self.lora_B[name].weight, float(self.scaling[name]), dtype,
                               merges_weight(dtype))


def _lora_linear_type():
    from peft.tuners.lora.layer import Linear
    return Linear


def enable_fused_lora(model: nn.Module) -> int:
    """Route every PEFT `lora.Linear` of `model` through `LowRankLinear`; returns how many
    layers were patched. Idempotent; `disable_fused_lora` undoes it."""
    linear = _lora_linear_type()
    count = 0
    for module in model.modules():
        if type(module) is linear:
            module.forward = types.MethodType(_fused_forward, module)
            object.__setattr__(module, _FUSED_ATTR, True)
            count += 1
    return count


def disable_fused_lora(model: nn.Module) -> int:
    """Restore PEFT's own forward on every layer `enable_fused_lora` patched."""
    count = 0
    for module in model.modules():
        if module.__dict__.pop(_FUSED_ATTR, False):
            module.__dict__.pop("forward", None)
            count += 1
    return count


def is_fused(module: nn.Module) -> bool:
    return bool(module.__dict__.get(_FUSED_ATTR, False))
