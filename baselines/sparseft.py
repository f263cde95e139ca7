"""SparseFT: full fine-tuning restricted to a fixed mask of entries chosen once from the
pretrained weights; every entry outside the mask stays bitwise identical forever.

Masks (`sparseft_mask`, each from one weight W (out, in), rank r, fraction rho):
- "geora_union" (default): GeoRA's M_spec | M_euc at rho (the paper's SparseFT mask is
  not specified; this one trains the entries GeoRA's W_geo keeps).
- "low_magnitude": M_low of "The Path Not Taken" (arXiv 2511.08567): the rho-fraction
  smallest |W|.
- "principal_complement": every entry outside the principal mask, where the principal
  mask is the rho-fraction LARGEST |W_hat_r| (W_hat_r = best rank-r approximation of W).
- "ptn_union": low_magnitude | principal_complement.

This module supplies only the masks (pure tensors, layer 1). The mechanism that trains
them, W = W0 + scatter(delta) with a fp32 delta over the mask, is the masked-delta
parametrization of the model surgery (geora.surgery.MaskedDelta), applied by the "sparse"
method kind (geora/kinds/sparse.py).

>>> w = torch.arange(1.0, 13.0).reshape(3, 4)
>>> sparseft_mask(w, "low_magnitude", rank=1, rho=0.25).int()
tensor([[1, 1, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0]], dtype=torch.int32)
"""
from __future__ import annotations

import math

import torch

from geora import linalg
from geora.init import geora_masks

SPARSEFT_MASKS = ("geora_union", "low_magnitude", "principal_complement", "ptn_union")


def sparseft_mask(weight: torch.Tensor, mask: str = "geora_union", *, rank: int = 16,
                  rho: float = 0.2, svd: str = "auto", niter: int | None = None,
                  seed: int = 0, where: str = "weight") -> torch.Tensor:
    """Bool (out, in): the entries of `weight` that train under the named mask."""
    if mask not in SPARSEFT_MASKS:
        raise ValueError(f"{where}: sparseft_mask={mask!r}: choose one of {SPARSEFT_MASKS}")
    linalg.check_weight(weight, where)
    linalg.check_rank(rank, tuple(weight.shape), where)
    linalg.check_rho(rho, f"{where}: rho")
    w = weight.detach().float()
    if mask == "geora_union":
        m_spec, m_euc = geora_masks(w, rank, rho, svd=svd, niter=niter, seed=seed)
        return m_spec | m_euc
    low = linalg.low_magnitude_mask(w, rho)
    if mask == "low_magnitude":
        return low
    w_hat = linalg.rank_r_approx(w, rank, method=svd, niter=niter, seed=seed).abs()
    # principal = the k = ceil(rho*n) largest |W_hat_r| (ties at its threshold count as
    # principal, i.e. frozen); the trainable complement is everything strictly below it.
    n = w_hat.numel()
    k = min(n, max(1, math.ceil(rho * n)))
    tau_top = torch.kthvalue(w_hat.reshape(-1), n - k + 1).values
    complement = w_hat < tau_top
    return complement if mask == "principal_complement" else complement | low
