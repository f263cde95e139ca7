"""GeoRA's initialisation of one weight matrix: a pure function of tensors (layer 1).

    from geora.init import geora_init
    f = geora_init(W, rank=16, rho=0.2)          # W: (out, in), any float dtype
    # f.residual + f.scaling * f.B @ f.A == W   (up to the model dtype's rounding)

Steps (paper, per matrix; shapes for W of (out, in)):
1. W_hat_r = best rank-r approximation of W                          (out, in)
2. M_spec = |W_hat_r| <= tau_spec, tau_spec = rho-quantile of |W_hat_r|   bool (out, in)
3. M_euc  = |W| <= tau_euc, tau_euc = rho-quantile of |W|               bool (out, in)
4. W_geo = W * (M_spec | M_euc)        (`masks` chooses union / spec only / euc only)
5. W_geo = U S V^T; B = U_r S_r^1/2 (out, r), A = S_r^1/2 V_r^T (r, in)
   (`factors` chooses the top r triplets, r random non-zero ones, or the r smallest non-zero)
6. W_res = W - s B A with s = alpha / r (frozen base weight).
Everything is computed in float32; only the residual is cast back to W's dtype.
Quantiles follow geora.linalg's definition (k-th smallest, ties at tau kept).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from geora import krylov, linalg

FACTORS = ("top", "random", "tail")
MASKS = ("union", "spec", "euc")
ALPHA_NORMS = ("none", "peft")


@dataclass
class GeoraFactors:
    """Result of `geora_init` (and of the residual baselines, which leave masks None).

    A: (r, in) fp32, B: (out, r) fp32, residual: (out, in) in the weight's dtype,
    mask_spec / mask_euc: bool (out, in), scaling: alpha / r, krylov_steps: the steps
    the two randomized SVDs took (W's, then W_geo's; None on the exact path).
    """
    A: torch.Tensor
    B: torch.Tensor
    residual: torch.Tensor
    mask_spec: torch.Tensor | None
    mask_euc: torch.Tensor | None
    scaling: float
    krylov_steps: tuple[int, int] | None = None

    def mask_stats(self) -> dict | None:
        """linalg.mask_stats(M_spec, M_euc) (a = spec, b = euc), or None without masks."""
        if self.mask_spec is None or self.mask_euc is None:
            return None
        return linalg.mask_stats(self.mask_spec, self.mask_euc)


def resolve_alpha(alpha: float | None, rank: int) -> float:
    """alpha defaults to the rank (s = 1), where the paper's and PEFT's conventions agree."""
    if alpha is None:
        return float(rank)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha={alpha!r} must be a positive number (or None = rank)")
    return float(alpha)


def factors_from_triplets(weight: torch.Tensor, u: torch.Tensor, s: torch.Tensor,
                          vh: torch.Tensor, *, scaling: float, alpha_norm: str = "none",
                          mask_spec=None, mask_euc=None, out=None) -> GeoraFactors:
    """B = U sqrt(S'), A = sqrt(S') Vh, residual = W - scaling * B A, with S' = S
    (alpha_norm="none", the paper's formula) or S / scaling ("peft", PEFT's PiSSA rule,
    which makes scaling * B A = U S Vh for any alpha). u (out, r), s (r,), vh (r, in);
    `out`: an fp32 (out, in) buffer, not W, to compute the residual in."""
    if alpha_norm not in ALPHA_NORMS:
        raise ValueError(f"alpha_norm={alpha_norm!r}: choose one of {ALPHA_NORMS}")
    s = s.float() / scaling if alpha_norm == "peft" else s.float()
    root = s.clamp_min(0).sqrt()
    b = u.float() * root                      # (out, r)
    a = root[:, None] * vh.float()            # (r, in)
    residual = torch.addmm(weight.float(), b, a, alpha=-scaling, out=out).to(weight.dtype)
    return GeoraFactors(A=a.contiguous(), B=b.contiguous(), residual=residual,
                        mask_spec=mask_spec, mask_euc=mask_euc, scaling=scaling)


def geora_masks(weight: torch.Tensor, rank: int, rho: float, *, svd: str = "auto",
                niter: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(M_spec, M_euc), bool (out, in): the rho-fraction smallest entries of |W_hat_r| and
    of |W|. W_hat_r comes from `svd` ("auto", "randomized" or "exact") top-r triplets of W."""
    svd = linalg.resolve_svd(svd, tuple(weight.shape))
    work = _masks(weight.detach().float(), rank, rho, svd=svd, niter=niter, seed=seed)
    return work.m_spec, work.m_euc


def spectral_triplets(w: torch.Tensor, rank: int, *, svd: str = "auto",
                      niter: int | None = None, seed: int = 0):
    """(U, S, Vh, ritz): the top-r triplets of W whose W_hat_r = U S Vh defines M_spec.
    Randomized: the Krylov SVD with `settle` (W_hat_r itself converged to ~0.1%, see
    geora.krylov._AdaptiveStop), ritz = (W's top right Ritz vectors, steps taken);
    exact: torch.linalg.svd, ritz = None; auto: one of them by size (linalg.resolve_svd)."""
    if linalg.resolve_svd(svd, tuple(w.shape)) != "randomized":
        return (*linalg.svd_top(w, rank, method=svd, niter=niter, seed=seed), None)
    u, s, vh, vectors, steps = krylov.block_krylov_svd(
        w.float(), rank, niter=niter, seed=seed, settle=krylov.RSVD_SETTLE_STEPS)
    return u, s, vh, _Ritz(vectors, steps)


class _Ritz(NamedTuple):
    vectors: torch.Tensor          # (in, b) top right Ritz vectors of W
    steps: int                     # Krylov steps W's SVD took


class _MaskWork(NamedTuple):
    m_spec: torch.Tensor           # bool (out, in)
    m_euc: torch.Tensor            # bool (out, in)
    buf: torch.Tensor              # fp32 (out, in) scratch, holds |W| on return
    spare: torch.Tensor            # bool (out, in) scratch
    ritz: _Ritz | None             # randomized path only


def _masks(w: torch.Tensor, rank: int, rho: float, *, svd: str, niter, seed) -> _MaskWork:
    """`geora_masks` of fp32 w, handing back its scratch buffers (geora_init writes W_geo
    and then the residual into `buf`: on a CPU a fresh 64 MiB tensor costs ~2x a pass
    over one already mapped) and W's right Ritz vectors (W_geo's SVD starts from them)."""
    k = linalg.rank_of(rho, w.numel())
    u, s, vh, ritz = spectral_triplets(w, rank, svd=svd, niter=niter, seed=seed)
    buf = torch.matmul(u * s, vh).abs_()                          # |W_hat_r| (out, in)
    m_spec, m_euc, spare = (torch.empty_like(buf, dtype=torch.bool) for _ in range(3))
    torch.le(buf, linalg.kth_smallest(buf, k, scratch=(m_spec, m_euc)), out=m_spec)
    torch.abs(w, out=buf)                                         # |W|
    torch.le(buf, linalg.kth_smallest(buf, k, scratch=(m_euc, spare)), out=m_euc)
    return _MaskWork(m_spec, m_euc, buf, spare, ritz)


def pick_triplets(w: torch.Tensor, rank: int, factors: str, svd: str, niter: int | None,
                  seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The r singular triplets of `w` that `factors` names (see module docstring).

    "random" and "tail" need the whole spectrum, so they always use the exact SVD; both
    draw only from the non-zero singular values (a zero one would give A = B = 0 rows and
    columns that never receive a gradient)."""
    if factors == "top":
        return linalg.svd_top(w, rank, method=svd, niter=niter, seed=seed)
    u, s, vh = linalg.svd_full(w)
    nz = linalg.nonzero_count(s, tuple(w.shape))
    if nz < rank:
        raise ValueError(f"factors={factors!r} needs {rank} non-zero singular values, the "
                         f"masked weight has only {nz}")
    if factors == "tail":
        idx = torch.arange(nz - rank, nz, device=s.device)   # the r smallest non-zero
    else:
        gen = torch.Generator().manual_seed(int(seed))
        idx = torch.randperm(nz, generator=gen)[:rank].sort().values.to(s.device)
    return u[:, idx], s[idx], vh[idx]


def geora_init(weight: torch.Tensor, rank: int = 16, rho: float = 0.2,
               alpha: float | None = None, svd: str = "auto",
               niter: int | None = None, factors: str = "top", masks: str = "union",
               seed: int = 0, *, alpha_norm: str = "none",
               where: str = "weight") -> GeoraFactors:
    """GeoRA factors of one weight matrix (see the module docstring for the steps).

    weight (out, in) float; rank r; rho in (0, 1); alpha (None = r); svd "auto" (exact
    up to linalg.EXACT_MAX_DIM on the short side, randomized above), "randomized" (seeded
    block Krylov; adaptive depth, or `niter` steps) or "exact"; factors
    "top" | "random" | "tail"; masks "union" | "spec" | "euc"; alpha_norm "none" | "peft";
    `where` names the weight in error messages. Runs on weight's device.
    """
    linalg.check_weight(weight, where)
    linalg.check_rank(rank, tuple(weight.shape), where)
    linalg.check_rho(rho, f"{where}: rho")
    svd = linalg.resolve_svd(svd, tuple(weight.shape), f"{where}: svd")
    if factors not in FACTORS:
        raise ValueError(f"{where}: factors={factors!r}: choose one of {FACTORS}")
    if masks not in MASKS:
        raise ValueError(f"{where}: masks={masks!r}: choose one of {MASKS}")
    scaling = resolve_alpha(alpha, rank) / rank

    w = weight.detach().float()                                   # (out, in) fp32
    m_spec, m_euc, w_geo, spare, ritz = _masks(w, rank, rho, svd=svd, niter=niter, seed=seed)
    keep = (torch.logical_or(m_spec, m_euc, out=spare) if masks == "union" else
            m_spec if masks == "spec" else m_euc)
    torch.where(keep, w, torch.zeros((), device=w.device), out=w_geo)   # W_geo (out, in)
    steps = None
    if factors == "top" and svd == "randomized":
        # W_geo's top right singular vectors lean towards W's (W_geo keeps much of W),
        # so its Krylov SVD starts from W's Ritz vectors (plus a random component):
        # measured at 4096 x 4096, 3 steps instead of 4 on a power law, 9 as before on a
        # Gaussian weight
        u, s, vh, _, second = krylov.block_krylov_svd(w_geo, rank, niter=niter, seed=seed,
                                                      start=ritz.vectors)
        steps = (ritz.steps, second)
    else:
        u, s, vh = pick_triplets(w_geo, rank, factors, svd, niter, seed)
    f = factors_from_triplets(weight.detach(), u, s, vh, scaling=scaling,
                              alpha_norm=alpha_norm, mask_spec=m_spec, mask_euc=m_euc,
                              out=w_geo)
    f.krylov_steps = steps
    return f
