"""GRPO rollouts at the plain model's speed, through TRL's GRPOTrainer (wrapped, not forked).

    from geora.training.rollouts import FastRolloutGRPOTrainer
    trainer = FastRolloutGRPOTrainer(model=model, reward_funcs=..., args=grpo_args, ...)

Same arguments and behaviour as trl.GRPOTrainer; only the weights used while generating
change. TRL 1.16 generates in `GRPOTrainer._generate_single_turn` (trl/trainer/
grpo_trainer.py), the one method this class overrides, by wrapping the call:

- transformers `generate` (use_vllm=False): the call runs inside
  `geora.rollout_weights.rollout_weights(self.model)`: PEFT adapters merged into the base
  weights and the original tensors put back afterwards (exact, no subtraction); SparseFT's
  parametrized weights materialised once; nothing for full fine-tuning. Under DeepSpeed
  ZeRO-3 or FSDP the weights are sharded outside TRL's own gather, so nothing is merged
  there (generation runs as in TRL).
- vLLM (use_vllm=True): TRL's weight sync (trl/generation/vllm_generation.py,
  `_iter_named_params`) calls `model.merge_adapter()`, streams the weights, then
  `model.unmerge_adapter()`, which in 16-bit subtracts the delta and leaves rounding drift in
  the frozen base at every sync. The call runs inside `exact_merge_adapter(self.model)`, so
  that unmerge puts the original tensors back. A SparseFT model would reach vLLM under
  parametrize's internal names (`...parametrizations.weight.original`, holding W0, not the
  trained weight); the call runs inside `plain_named_parameters(self.model)`, which shows
  the sync each trained weight under its plain name.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize
from trl import GRPOTrainer

from geora.rollout_weights import exact_merge_adapter, rollout_weights

if not hasattr(GRPOTrainer, "_generate_single_turn"):  # the one TRL method wrapped here
    raise ImportError("this TRL version's GRPOTrainer has no _generate_single_turn (written "
                      "for TRL 1.16): geora.training.rollouts cannot wrap its generation")


@contextmanager
def plain_named_parameters(model: nn.Module) -> Iterator[None]:
    """Inside, `model.named_parameters()` lists each parametrized tensor (SparseFT's weight)
    once under its plain name (`...q_proj.weight`) with its current value W0 + scatter(delta),
    and hides the parametrization's own tensors (W0, delta). For code that reads a model's
    weights by name, e.g. TRL's vLLM sync. Nothing changes for a model without them."""
    if not any(parametrize.is_parametrized(m) for m in model.modules()):
        yield
        return
    named_parameters = model.named_parameters

    def plain(prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        for name, param in named_parameters(prefix, recurse, remove_duplicate):
            owner, sep, rest = name.partition("parametrizations.")
            if not sep:
                yield name, param
            elif rest.endswith(".original"):       # one entry per parametrized tensor
                tensor_name = rest[: -len(".original")]
                module = model.get_submodule(owner[len(prefix):].rstrip(".").lstrip("."))
                with torch.no_grad():   # not around the yield: the caller's grad mode
                    value = getattr(module, tensor_name)
                yield owner + tensor_name, value

    model.named_parameters = plain
    try:
        yield
    finally:
        model.__dict__.pop("named_parameters", None)


def rollout_context(trainer) -> object:
    """The context one generation call of `trainer` (a GRPOTrainer) runs in."""
    model = trainer.model
    if getattr(trainer, "use_vllm", False):
        return _vllm_sync_context(model)
    dist = getattr(trainer, "_dist", None)
    if dist is not None and (dist.is_zero3 or dist.is_fsdp):
        return nullcontext()
    return rollout_weights(model)


@contextmanager
def _vllm_sync_context(model: nn.Module) -> Iterator[None]:
    with exact_merge_adapter(model) if hasattr(model, "merge_adapter") else nullcontext(), \
            plain_named_parameters(model):
        yield


class FastRolloutsMixin:
    """Runs GRPOTrainer's generation inside `rollout_context(self)` (see the module doc)."""

    def _generate_single_turn(self, *args, **kwargs):
        with rollout_context(self):
            return super()._generate_single_turn(*args, **kwargs)


class FastRolloutGRPOTrainer(FastRolloutsMixin, GRPOTrainer):
    """trl.GRPOTrainer whose rollouts use merged adapters (restored exactly afterwards)."""
