"""Plain-model speed for rollouts: generate with adapters merged, then put back the exact
pre-merge weights.

    from geora.rollout_weights import rollout_weights
    with torch.no_grad(), rollout_weights(model):       # any prepared model
        out = model.generate(**inputs)
    # here every parameter holds the same tensor, bit for bit, as before the `with`

An unmerged PEFT layer runs base + lora_A + lora_B + scale + add at every decoded token
(0.79-0.83x of the plain model's tokens/s on the micro model); merged, it runs the base
layer alone. Merging back and forth with PEFT's merge/unmerge is `W += dW; W -= dW`, which
in 16-bit does not return W: the rounding error of each cycle stays in the frozen base and
accumulates over the thousands of generations of a run. Here nothing is subtracted:

- PEFT layers (LoRA and the residual methods, DoRA, AdaLoRA: anything with PEFT's
  `merge()`): the parameter is pointed at a copy of its tensor and PEFT merges into the
  copy; the original tensor object is kept aside and the parameter is pointed back at it on
  exit (no copy back, no arithmetic, so restoring is exact by construction). PEFT's
  `safe_merge` (the same plus a NaN scan) took half the merge time and is not used.
  Cost: while merged, one extra copy of the targeted weights in their own
  dtype (the merged ones), freed on exit; the merge itself is one pass over them. While
  merged, each layer's forward is its base layer's: PEFT's merged forward adds only Python
  checks around the same call (+20% Python calls per generated token on the micro model,
  where that is ~1% of the time; more where decoding is bound by Python, as on a GPU).
- SparseFT (torch.nn.utils.parametrize on `weight`): each parametrized nn.Linear runs
  F.linear on W0 + scatter(delta) materialised once on entry, instead of recomputing it
  (and going through the parametrization's property) at every token; any other
  parametrized module gets `parametrize.cached()`.
- A plain model (full fine-tuning): nothing to do.

`exact_merge_adapter(peft_model)` gives TRL's vLLM weight sync (which calls
`model.merge_adapter()`, streams the weights, then `model.unmerge_adapter()`) the same
exact restore (geora.training.rollouts wires both into GRPOTrainer).
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

_NONE = object()


def _set_forward(module: nn.Module, forward) -> object:
    """Shadow module.forward with an instance attribute; returns what to give _reset_forward."""
    previous = module.__dict__.get("forward", _NONE)
    module.forward = forward
    return previous


def _reset_forward(module: nn.Module, previous) -> None:
    if previous is _NONE:
        module.__dict__.pop("forward", None)
    else:
        module.forward = previous


def _direct_call(base: nn.Module):
    """base.forward when base has no hooks of its own (one module call fewer), else base."""
    return base if (base._forward_hooks or base._forward_pre_hooks) else base.forward


def _tuner_layers(model: nn.Module) -> list[nn.Module]:
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # no peft: no adapter layers
        return []
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


class MergedAdapters:
    """Merge the active adapters of every PEFT layer of `model`; `restore()` undoes it exactly.

    Layers that are already merged or whose adapters are disabled are left alone. Use the
    context manager `merged_adapters(model)` rather than this class directly.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        # (layer, {tensor name: original tensor}, cache keys before the merge, old forward)
        self._saved: list[tuple[nn.Module, dict[str, torch.Tensor], set, object]] = []

    @torch.no_grad()
    def merge(self) -> "MergedAdapters":
        if self._saved:
            raise RuntimeError("adapters are already merged by this object; restore() first")
        try:
            for layer in _tuner_layers(self.model):
                if layer.merged or layer.disable_adapters or not hasattr(layer, "merge"):
                    continue
                base = layer.get_base_layer()
                originals = {n: t.data for n in ("weight", "bias")
                             if isinstance(t := getattr(base, n, None), torch.Tensor)}
                caches = set(getattr(layer, "_caches", {}))
                # record first, so that a merge that raises half-way is still undone
                self._saved.append((layer, originals, caches, layer.__dict__.get("forward", _NONE)))
                for name, tensor in originals.items():   # PEFT merges into these copies
                    getattr(base, name).data = tensor.clone()
                layer.merge()
                if layer.merged:
                    layer.forward = _direct_call(base)
        except BaseException:
            self.restore()
            raise
        return self

    @torch.no_grad()
    def restore(self) -> None:
        """Point every merged parameter back at its original tensor and reset PEFT's merge
        bookkeeping (merged_adapters, DoRA's cached weight norms), as unmerge() would."""
        while self._saved:
            layer, originals, caches, forward = self._saved.pop()
            _reset_forward(layer, forward)
            base = layer.get_base_layer()
            for name, tensor in originals.items():
                getattr(base, name).data = tensor
            layer.merged_adapters.clear()
            for key in set(getattr(layer, "_caches", {})) - caches:
                layer._caches.pop(key)


@contextmanager
def merged_adapters(model: nn.Module) -> Iterator[MergedAdapters]:
    """Inside: PEFT adapters merged into the base weights. After: the exact original tensors.

    >>> from peft import LoraConfig, get_peft_model
    >>> base = nn.Sequential(nn.Linear(4, 4))
    >>> model = get_peft_model(base, LoraConfig(target_modules=["0"], init_lora_weights=False))
    >>> weight = model.base_model.model[0].base_layer.weight
    >>> ptr, bits = weight.data_ptr(), weight.detach().clone()
    >>> with merged_adapters(model):
    ...     merged = model.base_model.model[0].merged, weight.data_ptr() == ptr
    >>> merged, weight.data_ptr() == ptr and torch.equal(weight, bits)
    ((True, False), True)
    """
    state = MergedAdapters(model).merge()
    try:
        yield state
    finally:
        state.restore()


@contextmanager
def materialized_parametrizations(model: nn.Module) -> Iterator[None]:
    """Parametrized tensors (SparseFT's W0 + scatter(delta)) computed once, for generation.

    Parametrized nn.Linear modules run F.linear on their weight and bias as materialised on
    entry; other parametrized modules, if any, run under parametrize.cached(). Nothing is
    written to the parameters. Use under torch.no_grad(): inside, no gradient reaches them.
    """
    modules = [m for m in model.modules() if parametrize.is_parametrized(m)]
    saved = []
    try:
        with torch.no_grad():
            for m in modules:
                if isinstance(m, nn.Linear):
                    fast = partial(F.linear, weight=m.weight, bias=m.bias)
                    saved.append((m, _set_forward(m, fast)))
        if len(saved) < len(modules):
            with parametrize.cached():
                yield
        else:
            yield
    finally:
        for m, previous in saved:
            _reset_forward(m, previous)


@contextmanager
def rollout_weights(model: nn.Module) -> Iterator[None]:
    """The fastest exact weights for generation, whatever the model carries: merged PEFT
    adapters (restored exactly on exit) and materialised parametrizations. Nothing for a
    plain model. Generation only: inside, the adapters receive no gradient."""
    with ExitStack() as stack:
        stack.enter_context(merged_adapters(model))
        stack.enter_context(materialized_parametrizations(model))
        yield


@contextmanager
def exact_merge_adapter(peft_model: nn.Module) -> Iterator[None]:
    """Inside, `peft_model.merge_adapter()` / `.unmerge_adapter()` merge into copies and
    restore the original tensors (see MergedAdapters) instead of subtracting.

    For code that calls those two methods itself, e.g. TRL's vLLM weight sync
    (trl/generation/vllm_generation.py, `_iter_named_params`), whose `W += dW; W -= dW` in
    bf16 leaves rounding drift in the frozen base at every sync. Instance attributes shadow
    the class methods for the duration, and are removed on exit.
    """
    state = MergedAdapters(peft_model)

    def merge_adapter(adapter_names=None, safe_merge=False):  # PeftModel.merge_adapter's signature
        if adapter_names is not None:
            raise ValueError(f"exact_merge_adapter merges the active adapters only; got "
                             f"adapter_names={adapter_names!r}")
        state.merge()

    peft_model.merge_adapter = merge_adapter
    peft_model.unmerge_adapter = state.restore
    try:
        yield
    finally:
        for name in ("merge_adapter", "unmerge_adapter"):
            peft_model.__dict__.pop(name, None)
        state.restore()
