"""PiSSA (Meng et al. 2024): adapters on the top-r singular triplets of W, residual frozen.

Same factors as PEFT's `init_lora_weights="pissa"` (tests/test_methods.py checks equality)
but computed here so that the randomized path is seeded, the SVD may run on another device
and the init factors are recorded for save/export. Pure tensors (layer 1).

>>> w = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
>>> f = pissa_factors(w, rank=2, svd="exact")
>>> f.A.shape, f.B.shape, torch.allclose(f.residual + f.scaling * f.B @ f.A, w, atol=1e-6)
(torch.Size([2, 4]), torch.Size([6, 2]), True)
"""
from __future__ import annotations

import torch

from geora import linalg
from geora.init import GeoraFactors, factors_from_triplets, resolve_alpha


def pissa_factors(weight: torch.Tensor, rank: int = 16, alpha: float | None = None, *,
                  svd: str = "auto", niter: int | None = None, seed: int = 0,
                  alpha_norm: str = "none", where: str = "weight") -> GeoraFactors:
    """B = U_r sqrt(S_r), A = sqrt(S_r) Vh_r of W (S_r / scaling with alpha_norm="peft"),
    residual = W - scaling * B A in W's dtype. weight (out, in)."""
    linalg.check_weight(weight, where)
    linalg.check_rank(rank, tuple(weight.shape), where)
    scaling = resolve_alpha(alpha, rank) / rank
    u, s, vh = linalg.svd_top(weight.detach(), rank, method=svd, niter=niter, seed=seed)
    return factors_from_triplets(weight.detach(), u, s, vh, scaling=scaling,
                                 alpha_norm=alpha_norm)
