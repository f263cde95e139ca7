"""Layer 1: pure linear algebra on tensors (torch only; no transformers, no peft, no I/O).

Everything here takes plain tensors, computes in float32 and returns float32, so it can be
tested on bare matrices and reused by `analysis/`. Contents:

- input checks: `check_weight`, `check_rank`, `check_rho` (clear errors naming the value);
- exact magnitude quantiles at any size: `abs_threshold`, `low_magnitude_mask`;
- SVD: `svd_top` (exact or seeded randomized top-r), `svd_full`, `nonzero_count`;
- `rank_r_approx`, `captured_energy`, `mask_stats`.

Quantile definition (used by every mask): for n entries and a fraction rho,
k = ceil(rho * n) (at least 1) and tau = the k-th smallest |x| (torch.kthvalue, an exact
selection with no 16M-element limit, unlike torch.quantile). The mask is |x| <= tau, so it
holds exactly k entries when magnitudes are distinct and more when values tie at tau
(ties are kept, never broken arbitrarily).
"""
from __future__ import annotations

import math

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# Randomized SVD defaults: q = r + RSVD_OVERSAMPLE random probes, RSVD_NITER power
# iterations. Measured on this CPU for r = 16 on GeoRA's W_geo (rho 0.2) of Gaussian
# weights, the flattest (hardest) spectrum tried: captured top-r energy 0.9963 at
# (niter 16, oversample 16), 0.9991-0.9997 at (16, 32), but only 0.87-0.90 at (2, 8)
# and 0.94-0.97 at (4, 8-16); power-law spectra reach more at every setting.
RSVD_NITER = 16
RSVD_OVERSAMPLE = 32


# ----------------------------------------------------------------------------- checks
def check_weight(weight: torch.Tensor, where: str = "weight") -> None:
    """Raise unless `weight` is a finite 2-D floating tensor. `where` names it in errors."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor, got {type(weight).__name__}")
    if weight.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{where}: dtype {weight.dtype} is not a floating dtype (integer or quantised "
            f"weights are not supported; dequantise first, then re-quantise the residual)")
    if weight.dim() != 2:
        raise ValueError(f"{where}: expected a 2-D weight (out, in), got shape "
                         f"{tuple(weight.shape)}")
    if weight.numel() == 0:
        raise ValueError(f"{where}: empty weight of shape {tuple(weight.shape)}")
    finite = torch.isfinite(weight)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{where}: weight holds {bad} NaN/Inf entries")


def check_rank(rank: int, shape: tuple[int, ...], where: str = "weight") -> None:
    """Raise unless 1 <= rank <= min(shape)."""
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise TypeError(f"{where}: rank must be an int, got {rank!r}")
    if rank <= 0 or rank > min(shape):
        raise ValueError(f"{where}: rank={rank} must satisfy 1 <= rank <= min(out, in) = "
                         f"{min(shape)} for shape {tuple(shape)}")


def check_rho(rho: float, where: str = "rho") -> None:
    """Raise unless 0 < rho < 1."""
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0.0 < rho < 1.0:
        raise ValueError(f"{where}: rho={rho!r} must lie in the open interval (0, 1)")


# -------------------------------------------------------------------------- quantiles
def abs_threshold(x: torch.Tensor, rho: float) -> torch.Tensor:
    """tau = the k-th smallest |x| over all entries, k = max(1, ceil(rho * n)); 0-d fp32."""
    check_rho(rho)
    flat = x.detach().reshape(-1).abs().float()
    k = min(flat.numel(), max(1, math.ceil(rho * flat.numel())))
    return torch.kthvalue(flat, k).values


def low_magnitude_mask(x: torch.Tensor, rho: float) -> torch.Tensor:
    """Bool mask of the rho-fraction smallest |x| (|x| <= tau; ties at tau included)."""
    return x.detach().abs().float() <= abs_threshold(x, rho)


# -------------------------------------------------------------------------------- SVD
def svd_full(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin exact SVD in fp32: U (out, k), S (k,) descending, Vh (k, in), k = min(out, in)."""
    return torch.linalg.svd(weight.float(), full_matrices=False)


def svd_top(weight: torch.Tensor, rank: int, *, method: str = "randomized",
            niter: int | None = None, oversample: int | None = None, seed: int = 0,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-`rank` singular triplets in fp32: U (out, r), S (r,), Vh (r, in).

    method="exact": torch.linalg.svd. method="randomized": the Halko-Martinsson-Tropp range
    finder with `niter` power iterations (QR re-orthonormalised) and r + `oversample`
    probes. Written here rather than calling torch.svd_lowrank because that draws its probes
    from the global RNG; a private seeded generator keeps the init reproducible without
    touching the caller's random state.
    """
    check_rank(rank, tuple(weight.shape))
    w = weight.float()
    if method == "exact":
        u, s, vh = svd_full(w)
        return u[:, :rank], s[:rank], vh[:rank]
    if method != "randomized":
        raise ValueError(f"svd={method!r}: choose 'exact' or 'randomized'")
    niter = RSVD_NITER if niter is None else int(niter)
    oversample = RSVD_OVERSAMPLE if oversample is None else int(oversample)
    if niter < 0 or oversample < 0:
        raise ValueError(f"niter={niter} and oversample={oversample} must be >= 0")
    m, n = w.shape
    q = min(rank + oversample, m, n)
    gen = torch.Generator(device=w.device).manual_seed(int(seed))
    probes = torch.randn(n, q, generator=gen, device=w.device, dtype=torch.float32)
    basis = torch.linalg.qr(w @ probes).Q                     # (m, q): approximate range
    for _ in range(niter):                                    # power iterations sharpen it
        basis = torch.linalg.qr(w.T @ basis).Q                # (n, q)
        basis = torch.linalg.qr(w @ basis).Q                  # (m, q)
    ub, s, vh = torch.linalg.svd(basis.T @ w, full_matrices=False)   # (q, n) small SVD
    return (basis @ ub)[:, :rank], s[:rank], vh[:rank]


def nonzero_count(s: torch.Tensor, shape: tuple[int, ...]) -> int:
    """Number of singular values above the usual numerical-rank tolerance
    max(shape) * eps(fp32) * s_max (numpy.linalg.matrix_rank's rule)."""
    if s.numel() == 0:
        return 0
    tol = max(shape) * torch.finfo(torch.float32).eps * float(s.max())
    return int((s > tol).sum())


def rank_r_approx(weight: torch.Tensor, rank: int, **svd_kwargs) -> torch.Tensor:
    """Best rank-r approximation U_r diag(S_r) Vh_r in fp32, shape of `weight`."""
    u, s, vh = svd_top(weight, rank, **svd_kwargs)
    return (u * s) @ vh


def captured_energy(weight: torch.Tensor, u: torch.Tensor, rank: int) -> float:
    """||U^T W||_F^2 / (sum of the exact top-r squared singular values): the share of the
    best rank-r energy that the orthonormal columns `u` (out, r) capture; 1.0 is optimal."""
    w = weight.float()
    exact = torch.linalg.svdvals(w)[:rank].pow(2).sum()
    return float((u.T.float() @ w).pow(2).sum() / exact)


# ---------------------------------------------------------------------- mask statistics
def mask_stats(mask_a: torch.Tensor, mask_b: torch.Tensor) -> dict:
    """Counts and fractions of two bool masks of the same shape.

    Returns n (entries), count_a, count_b, count_intersection, count_union (ints) and
    frac_a, frac_b, intersection, union (fractions of n), jaccard (|a & b| / |a | b|,
    0.0 when both are empty). Counts let callers aggregate over matrices exactly.
    """
    if mask_a.shape != mask_b.shape:
        raise ValueError(f"mask shapes differ: {tuple(mask_a.shape)} vs {tuple(mask_b.shape)}")
    a, b = mask_a.bool(), mask_b.bool()
    counts = dict(n=a.numel(), count_a=int(a.sum()), count_b=int(b.sum()),
                  count_intersection=int((a & b).sum()), count_union=int((a | b).sum()))
    return stats_from_counts(counts)


def stats_from_counts(counts: dict) -> dict:
    """Fractions and Jaccard from the integer counts of `mask_stats` (also for sums of
    counts over many matrices, i.e. the aggregate over a model)."""
    n = counts["n"]
    out = {k: int(counts[k]) for k in ("n", "count_a", "count_b", "count_intersection",
                                       "count_union")}
    out.update(frac_a=out["count_a"] / n, frac_b=out["count_b"] / n,
               intersection=out["count_intersection"] / n, union=out["count_union"] / n,
               jaccard=(out["count_intersection"] / out["count_union"]
                        if out["count_union"] else 0.0))
    return out
