"""Layer 1: pure linear algebra on tensors (torch only; no transformers, no peft, no I/O).

Everything here takes plain tensors, computes in float32 and returns float32, so it can be
tested on bare matrices and reused by `analysis/`. Device-agnostic: CPU or GPU, wherever
the input lives. Contents:

- input checks: `check_weight`, `check_rank`, `check_rho` (clear errors naming the value);
- exact selection at any size: `kth_smallest`, `abs_threshold`, `low_magnitude_mask`;
- SVD: `svd_top` (exact, or the seeded randomized block Krylov SVD of geora.krylov,
  adaptive in depth, or "auto": `resolve_svd` picks one by size), `svd_full`,
  `nonzero_count`;
- `rank_r_approx`, `captured_energy`, `mask_stats`.

Quantile definition (used by every mask): for n entries and a fraction rho,
k = ceil(rho * n) (at least 1) and tau = the k-th smallest |x|: exactly the value
torch.kthvalue returns (no 16M-element limit, unlike torch.quantile), found by selecting
inside a sampled candidate band (`kth_smallest`). The mask is |x| <= tau, so it holds
exactly k entries when magnitudes are distinct and more when values tie at tau (ties are
kept, never broken arbitrarily).
"""
from __future__ import annotations

import math

import torch

from geora.krylov import block_krylov_svd

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# Exact selection (`kth_smallest`): up to KTH_DIRECT_MAX entries torch.kthvalue over all
# is cheapest; above, a seeded sample bounds a candidate band KTH_SAMPLE_SIGMAS binomial
# standard deviations wide on each side (a miss only costs a fall back to the full pass).
KTH_DIRECT_MAX = 1 << 20
KTH_SAMPLE_SIGMAS = 6.0
KTH_SAMPLE_SEED = 0

# svd="auto" (the default initialisation of GeoRA, PiSSA and SparseFT): the exact SVD up
# to EXACT_MAX_DIM on the short side, the block Krylov SVD above. Below it LAPACK's full
# SVD costs about what the Krylov iteration does at the depth M_spec needs (on real
# weights 5-10 steps, whose basis then spans a good part of a 576-wide space), and it is
# exact. Measured with one thread on the 2-core CPU at load ~11 (GeoRA init, exact time /
# Krylov time): SmolLM2 192x576 0.85, 576x576 2.0, 1536x576 1.05; synthetic 1024x1024
# 3.1-6.8, 1024x4096 7-16, 2048x2048 7.5-22 (flat - power-law spectrum).
EXACT_MAX_DIM = 768
SVD_CHOICES = ("auto", "randomized", "exact")


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
    # a finite sum implies finite entries (any NaN or Inf would propagate): one pass, no
    # temporary; only a sum that overflows or a real NaN/Inf takes the full count
    if not bool(torch.isfinite(weight.sum(dtype=torch.float32))):
        bad = int((~torch.isfinite(weight)).sum())
        if bad:
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


# ------------------------------------------------------------------ exact selection
def kth_smallest(values: torch.Tensor, k: int, *, direct_max: int | None = None,
                 scratch: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The k-th smallest entry (1-based) of `values` (any shape), as a 0-d tensor: the same
    value as torch.kthvalue(values.reshape(-1), k) (NaN counts as the largest value).

    Above `direct_max` entries (default KTH_DIRECT_MAX) it selects inside a candidate band
    instead of over all N:
    1. draw s ~ N^(2/3) entries (seeded, with replacement) and sort them;
    2. lo, hi = the sample's order statistics KTH_SAMPLE_SIGMAS binomial standard
       deviations either side of the rank k*s/N where the k-th smallest should fall;
    3. below = #(x < lo), band = the entries in [lo, hi] (~ 2 * 6 * sqrt(p(1-p)/s) of N,
       e.g. 1.5% of a 4096x4096 weight at p = 0.2);
    4. if below < k <= below + |band|, the k-th smallest of all is the (k - below)-th
       smallest of the band (the entries under it are exactly the `below` ones and those
       of the band under it), so torch.kthvalue on the band returns the same element;
       otherwise (a sample far off, e.g. on NaNs) fall back to torch.kthvalue on all.
    Three passes over N (two comparisons, one gather) replace a full selection, which
    costs ~3x more on a CPU and has no fixed cost model on GPUs. `scratch`: two bool
    tensors of N entries to hold the comparisons (fresh ones cost page faults on a CPU).
    """
    flat = values.reshape(-1)
    n = flat.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must lie in [1, {n}] for a tensor of {n} entries")
    if n <= (KTH_DIRECT_MAX if direct_max is None else direct_max):
        return torch.kthvalue(flat, k).values
    s = min(n, max(1024, round(n ** (2 / 3))))
    gen = torch.Generator(device=flat.device).manual_seed(KTH_SAMPLE_SEED)
    sample = flat[torch.randint(n, (s,), generator=gen, device=flat.device)].sort().values
    centre, half = k * s / n, KTH_SAMPLE_SIGMAS * math.sqrt(s * (k / n) * (1 - k / n)) + 2
    lo_rank, hi_rank = math.floor(centre - half), math.ceil(centre + half)
    in_band, lower = ((t.view(-1) for t in scratch) if scratch is not None else
                      (torch.empty_like(flat, dtype=torch.bool) for _ in range(2)))
    if hi_rank < s:
        torch.le(flat, sample[hi_rank], out=in_band)
    else:
        in_band.fill_(True)
    below = 0
    if lo_rank >= 0:
        torch.lt(flat, sample[lo_rank], out=lower)
        below = int(torch.count_nonzero(lower))
        in_band &= lower.logical_not_()                  # lo <= x <= hi, in place
    band = flat[in_band]
    if below < k <= below + band.numel():
        return torch.kthvalue(band, k - below).values
    return torch.kthvalue(flat, k).values


def rank_of(rho: float, n: int) -> int:
    """k = max(1, ceil(rho * n)) capped at n: the rank of the rho-quantile of n entries."""
    return min(n, max(1, math.ceil(rho * n)))


def abs_threshold(x: torch.Tensor, rho: float) -> torch.Tensor:
    """tau = the k-th smallest |x| over all entries, k = max(1, ceil(rho * n)); 0-d fp32."""
    check_rho(rho)
    a = x.detach().abs().float()
    return kth_smallest(a, rank_of(rho, a.numel()))


def low_magnitude_mask(x: torch.Tensor, rho: float) -> torch.Tensor:
    """Bool mask of the rho-fraction smallest |x| (|x| <= tau; ties at tau included)."""
    check_rho(rho)
    a = x.detach().abs().float()
    return a <= kth_smallest(a, rank_of(rho, a.numel()))


# -------------------------------------------------------------------------------- SVD
def svd_full(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin exact SVD in fp32: U (out, k), S (k,) descending, Vh (k, in), k = min(out, in)."""
    return torch.linalg.svd(weight.float(), full_matrices=False)


def resolve_svd(method: str, shape: tuple[int, ...], where: str = "svd") -> str:
    """"exact" or "randomized": `method` itself, or for "auto" exact iff
    min(shape) <= EXACT_MAX_DIM. ValueError naming `where` for anything else."""
    if method not in SVD_CHOICES:
        raise ValueError(f"{where}={method!r}: choose one of {SVD_CHOICES}")
    if method == "auto":
        return "exact" if min(shape) <= EXACT_MAX_DIM else "randomized"
    return method


def svd_top(weight: torch.Tensor, rank: int, *, method: str = "randomized",
            niter: int | None = None, oversample: int | None = None, seed: int = 0,
            tol: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-`rank` singular triplets in fp32: U (out, r), S (r,), Vh (r, in).

    method="exact": torch.linalg.svd; "auto": one of the two by size (`resolve_svd`).
    method="randomized" (default): seeded block Krylov iteration
    (geora.krylov.block_krylov_svd) with blocks of r + `oversample` columns (default
    r + 16); `niter` None stops adaptively once the estimated missing share of the top-r
    energy is below `tol` (default geora.krylov.RSVD_TOL, 4e-3), an int runs exactly that
    many Krylov steps (0 = the plain randomized range finder). The probes come from a
    private generator seeded by `seed`, so the result is reproducible (bitwise, on the same
    device) and the caller's random state is untouched.
    """
    check_rank(rank, tuple(weight.shape))
    w = weight.float()
    if resolve_svd(method, tuple(w.shape)) == "exact":
        u, s, vh = svd_full(w)
        return u[:, :rank], s[:rank], vh[:rank]
    return tuple(block_krylov_svd(w, rank, niter=niter, oversample=oversample, tol=tol,
                                  seed=seed)[:3])


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
