"""MiLoRA (Wang et al. 2024, arXiv 2406.09044): adapters on the r SMALLEST singular
triplets of W ("minor components"), residual = W minus them, frozen. Not in PEFT.

Needs the whole spectrum, so it always uses the exact SVD (on `svd_device` for large
models). Takes the last r triplets literally, as MiLoRA does. Pure tensors (layer 1).

>>> w = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
>>> f = milora_factors(w, rank=2)
>>> s = torch.linalg.svdvals(w)
>>> torch.allclose(torch.linalg.svdvals(f.B @ f.A)[:2], s[-2:], atol=1e-6)
True
"""
from __future__ import annotations

import torch

from geora import linalg
from geora.init import GeoraFactors, factors_from_triplets, resolve_alpha


def milora_factors(weight: torch.Tensor, rank: int = 16, alpha: float | None = None, *,
                   alpha_norm: str = "none", where: str = "weight") -> GeoraFactors:
    """B = U_min sqrt(S_min), A = sqrt(S_min) Vh_min (the r smallest triplets of W),
    residual = W - scaling * B A in W's dtype. weight (out, in)."""
    linalg.check_weight(weight, where)
    linalg.check_rank(rank, tuple(weight.shape), where)
    scaling = resolve_alpha(alpha, rank) / rank
    u, s, vh = linalg.svd_full(weight.detach())          # s descending, length min(out, in)
    return factors_from_triplets(weight.detach(), u[:, -rank:], s[-rank:], vh[-rank:],
                                 scaling=scaling, alpha_norm=alpha_norm)
