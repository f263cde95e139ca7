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

Mechanism: torch.nn.utils.parametrize turns `weight` into W0 + scatter(delta), with W0 the
original (frozen, requires_grad False) and `delta` a 1-D fp32 trainable vector over the
mask's flat indices. Any optimizer works unchanged, and AdamW's weight decay pulls delta
(hence W) toward W0 instead of toward 0; a gradient hook alone would not do, because
AdamW decays every entry it holds. Keeping delta in fp32 also accumulates small updates
that a bf16 weight would round away.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from geora import linalg
from geora.init import geora_masks

SPARSEFT_MASKS = ("geora_union", "low_magnitude", "principal_complement", "ptn_union")


def sparseft_mask(weight: torch.Tensor, mask: str = "geora_union", *, rank: int = 16,
                  rho: float = 0.2, svd: str = "randomized", niter: int | None = None,
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


class MaskedDelta(nn.Module):
    """Parametrization W = W0 + scatter(delta) over a fixed bool mask (out, in).

    indices: flat positions of the mask (int32 buffer, int64 beyond 2^31 entries); delta: (n_mask,) fp32 Parameter,
    zero at init so W == W0 bitwise. Entries outside the mask are copied from W0.
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
