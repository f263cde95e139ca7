"""Layer 1: pure linear algebra on tensors (torch only; no transformers, no peft, no I/O).

Everything here takes plain tensors, computes in float32 and returns float32, so it can be
tested on bare matrices and reused by `analysis/`. Device-agnostic: CPU or GPU, wherever
the input lives. Contents:

- input checks: `check_weight`, `check_rank`, `check_rho` (clear errors naming the value);
- exact selection at any size: `kth_smallest`, `abs_threshold`, `low_magnitude_mask`;
- SVD: `svd_top` (exact, or seeded randomized block Krylov with an adaptive depth),
  `svd_full`, `nonzero_count`;
- `rank_r_approx`, `captured_energy`, `mask_stats`.

Quantile definition (used by every mask): for n entries and a fraction rho,
k = ceil(rho * n) (at least 1) and tau = the k-th smallest |x|: exactly the value
torch.kthvalue returns (no 16M-element limit, unlike torch.quantile), found by selecting
inside a sampled candidate band (`kth_smallest`). The mask is |x| <= tau, so it holds
exactly k entries when magnitudes are distinct and more when values tie at tau (ties are
kept, never broken arbitrarily).
"""
from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# Randomized SVD defaults (see `block_krylov_svd`): Krylov blocks of r + RSVD_OVERSAMPLE
# columns; with niter=None the iteration stops once the estimated missing share of the
# top-r energy is <= RSVD_TOL (at most RSVD_MAX_STEPS steps). Measured on 4096x4096 and
# 1024x2048 weights (scripts/bench_init.py): the Gaussian (flat) spectrum needs 7-9 steps
# for >= 0.995 of the exact top-16 energy, a power law sigma_i ~ (1+i)^-0.5 needs 2-4.
RSVD_OVERSAMPLE = 16
RSVD_TOL = 2e-3
RSVD_MAX_STEPS = 40
RSVD_SETTLE_STEPS = 3      # W_hat_r for M_spec: up to 3 more steps while it still moves
RSVD_SETTLE_TOL = 1e-2     # by more than 1% per step (see `_AdaptiveStop`)
ORTH_TOL = 1e-4            # a Krylov block counts as orthonormal to this max-abs error

# Exact selection (`kth_smallest`): up to KTH_DIRECT_MAX entries torch.kthvalue over all
# is cheapest; above, a seeded sample bounds a candidate band KTH_SAMPLE_SIGMAS binomial
# standard deviations wide on each side (a miss only costs a fall back to the full pass).
KTH_DIRECT_MAX = 1 << 20
KTH_SAMPLE_SIGMAS = 6.0
KTH_SAMPLE_SEED = 0


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


def svd_top(weight: torch.Tensor, rank: int, *, method: str = "randomized",
            niter: int | None = None, oversample: int | None = None, seed: int = 0,
            tol: float | None = None, start: torch.Tensor | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-`rank` singular triplets in fp32: U (out, r), S (r,), Vh (r, in).

    method="exact": torch.linalg.svd. method="randomized": seeded block Krylov iteration
    (`block_krylov_svd`) with blocks of r + `oversample` columns; `niter` None stops
    adaptively once the estimated missing share of the top-r energy is below `tol`
    (default RSVD_TOL), an int runs exactly that many Krylov steps (0 = the plain
    randomized range finder). The probes come from a private generator seeded by `seed`,
    so the result is reproducible and the caller's random state is untouched; `start`
    (in, c) orthonormal columns, c <= r + oversample, are added to the first c probes
    (a warm start from a related matrix, see `block_krylov_svd`).
    """
    check_rank(rank, tuple(weight.shape))
    w = weight.float()
    if method == "exact":
        u, s, vh = svd_full(w)
        return u[:, :rank], s[:rank], vh[:rank]
    if method != "randomized":
        raise ValueError(f"svd={method!r}: choose 'exact' or 'randomized'")
    return tuple(block_krylov_svd(w, rank, niter=niter, oversample=oversample, tol=tol,
                                  seed=seed, start=start)[:3])


class KrylovSVD(NamedTuple):
    """Top-r triplets U (m, r), S (r,), Vh (r, n); `ritz` (n, b): the top-b right Ritz
    vectors (orthonormal; the first r are Vh^T), a warm start for a related matrix;
    `steps`: Krylov steps taken (passes over W: 2 * steps + 2)."""
    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor
    ritz: torch.Tensor
    steps: int


def block_krylov_svd(w: torch.Tensor, rank: int, *, niter: int | None = None,
                     oversample: int | None = None, tol: float | None = None, seed: int = 0,
                     start: torch.Tensor | None = None, settle: int = 0) -> KrylovSVD:
    """Top-r SVD of w (m, n) fp32 by randomized block Krylov iteration (Musco & Musco 2015).

    Basis Q (m, K) of the Krylov space span[W G, (W W^T) W G, ..., (W W^T)^q W G], G a
    seeded Gaussian (n, b), b = min(r + oversample, m, n): each step maps the newest
    block through W^T then W (two passes over W, the whole cost for large W),
    orthonormalises it against Q and stores Z = W^T Q (n, K) as it goes, so that
    Q^T W = Z^T needs no extra pass. Rayleigh-Ritz: the top eigenpairs (lambda, E) of the
    small Gram Z^T Z (K, K) give U = Q E, S Vh = U^T W = (Z E)^T. For the same passes a
    Krylov space captures the top-r energy with ~sqrt of the steps plain power iteration
    needs, which matters on flat spectra (Gaussian weights, whose top singular values
    differ by a few percent). Directions beyond w's numerical rank come back with S = 0
    and zero vectors (B A gains nothing from them either way).

    niter=None: after each step the captured top-r energy e_j = sum of the top-r lambda
    is known; its relative gains d_j = (e_j - e_(j-1)) / e_j shrink about geometrically,
    so the energy still missing is estimated as d_j * c / (1 - c), c = d_j / d_(j-1), and
    the iteration stops once that is <= tol (or gains stall at rounding level, or Q fills
    the space, or RSVD_MAX_STEPS). Every decision is a deterministic function of w and
    seed. settle: see `_AdaptiveStop`. start (n, c): G's first c columns, scaled to unit norm, get these added, so
    the Krylov space starts near them yet keeps a random component in every direction.
    Small problems run in fp64: the b x b orthonormalisation on the device, the K x K
    eigenproblem on the host (one small device-to-host copy, i.e. one sync, per step).
    """
    oversample = RSVD_OVERSAMPLE if oversample is None else int(oversample)
    steps = None if niter is None else int(niter)
    tol = RSVD_TOL if tol is None else float(tol)
    if (steps is not None and steps < 0) or oversample < 0:
        raise ValueError(f"niter={niter} and oversample={oversample} must be >= 0")
    if not 0 < tol < 1:
        raise ValueError(f"tol={tol!r} must lie in the open interval (0, 1)")
    m, n = w.shape
    dev = w.device
    width = min(rank + oversample, m, n)
    max_steps = RSVD_MAX_STEPS if steps is None else steps
    cols = min(m, n, width * (max_steps + 1))
    basis = torch.empty(m, cols, device=dev)                 # Q
    image = torch.empty(n, cols, device=dev)                 # Z = W^T Q
    gram = torch.zeros(cols, cols, dtype=torch.float64)      # Z^T Z, on the host
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    probes = torch.randn(n, width, generator=gen, device=dev)             # (n, b)
    if start is not None:
        c = min(start.shape[1], width)
        probes = probes / probes.norm(dim=0)
        probes[:, :c] += start[:, :c].to(dev, torch.float32)
    y = w @ probes                                                        # (m, b)
    stop = _AdaptiveStop(rank, tol, settle) if steps is None else None
    filled = 0
    for step in range(max_steps + 1):
        with _small_work():
            y, prev = y[:, :cols - filled], basis[:, :filled]
            q, err = _cholesky_qr(_project_out(y, prev), prev)
        for attempt in range(2):
            b = q.shape[1]
            image[:, filled:filled + b] = w.T @ q                        # (n, b): a pass
            with _small_work():
                row = image[:, filled:filled + b].T @ image[:, :filled + b]   # (b, K + b)
                host = torch.cat([row.reshape(-1), err.reshape(1)]).double().cpu()
            if attempt or host[-1] <= ORTH_TOL:          # NaN fails the test too
                break
            with _small_work():
                q, err = _deflated_block(y, prev), torch.zeros((), device=dev)
        with _small_work():
            basis[:, filled:filled + b] = q
            row = host[:-1].view(b, filled + b)
            gram[filled:filled + b, :filled + b] = row
            gram[:filled + b, filled:filled + b] = row.T
            filled += b
            if filled >= cols or step == max_steps or not row.abs().max() > 0:
                break
            if stop is not None and stop.done(gram[:filled, :filled]):
                break
        y = w @ image[:, filled - b:filled]                              # (m, b): a pass
    with _small_work():
        lam, vec = torch.linalg.eigh(gram[:filled, :filled])
        top = vec[:, -width:].flip(1).to(dev, torch.float32)              # (K, b)
    u = basis[:, :filled] @ top[:, :rank]                                 # (m, r)
    sv = image[:, :filled] @ top                                          # (n, b) = V S
    s = sv.norm(dim=0)
    v = sv / s.clamp_min(torch.finfo(torch.float32).tiny)
    return KrylovSVD(u, s[:rank], v[:, :rank].T, v, step)


@contextlib.contextmanager
def _small_work():
    """Run the b- and K-sized work of a Krylov step on one CPU thread. On a shared CPU,
    waking a second OpenMP worker for a millisecond of work was measured to cost more
    than the work (a 32x32 Cholesky + triangular solve: 44 ms median with two threads on
    a busy 2-core machine, 6 ms with one). The passes over W keep every thread. Host
    threads only: GPU kernels are unaffected."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


class _AdaptiveStop:
    """The niter=None stop rule of `block_krylov_svd`, fed the Gram Z^T Z after each step.

    Energy: stop once `_converged` says the top-r energy is within tol. With settle > 0
    (the decomposition whose W_hat_r = U S Vh defines M_spec: entries near the threshold
    flip with W_hat_r itself, not with its energy) also track how far W_hat_r moved in
    the last step (relative Frobenius norm, from the K x K eigenvectors), and once the
    energy has converged go on while it still moves by more than RSVD_SETTLE_TOL and its
    geometric trend predicts reaching that within the `settle` extra steps allowed.
    Measured at 4096 x 4096: on a power law W_hat_r moves 15%, 2%, 0.1% in the steps
    after the energy stop (two extra steps lift M_spec's agreement with the exact one
    from 0.988 to 0.9999); on a Gaussian weight it moves 17%, 17%, 11%, 6%, ... (its top
    singular values differ by < 0.1%), so it stops with the energy rule."""

    def __init__(self, rank: int, tol: float, settle: int):
        self.rank, self.tol, self.settle = rank, tol, settle
        self.energies, self.sizes, self.projs, self.moved = [], [], [], []
        self.extra = None                       # steps taken after the energy test passed

    def done(self, gram: torch.Tensor) -> bool:
        self.sizes.append(len(gram))
        if self.extra is None:
            lam = torch.linalg.eigvalsh(gram)
            self.energies.append(float(lam[-self.rank:].sum()))
            if not _converged(self.energies, self.tol):
                return False
            if not self.settle:
                return True
            self.extra = 0               # W_hat_r of the last three steps (sizes K_j):
            for k in self.sizes[-3:]:    # eigenvectors only from here on
                self._track(gram[:k, :k])
        else:
            self.extra += 1
            self._track(gram)
        moved = self.moved[-1]
        if moved <= RSVD_SETTLE_TOL or self.extra >= self.settle:
            return True
        ratio = moved / self.moved[-2] if self.moved[-2] > 0 else math.inf
        return not (ratio < 1 and math.log(RSVD_SETTLE_TOL / moved) / math.log(ratio)
                    <= self.settle - self.extra)

    def _track(self, gram: torch.Tensor) -> None:
        """Append P = E E^T (top-r eigenvectors of gram) and, if a previous P exists, the
        relative move of W_hat_r: ||(P - P') B||_F / ||P B||_F = sqrt(tr(D G D) / e)."""
        lam, vec = torch.linalg.eigh(gram)
        top = vec[:, -self.rank:]
        proj = top @ top.T                                              # (K, K)
        if self.projs:
            k = len(self.projs[-1])
            diff = proj.clone()
            diff[:k, :k] -= self.projs[-1]
            energy = max(float(lam[-self.rank:].sum()), 1e-300)
            self.moved.append(math.sqrt(max(float(((diff @ gram) * diff).sum()), 0.0)
                                        / energy))
        self.projs.append(proj)


def _converged(energies: list[float], tol: float) -> bool:
    """Stop test of `block_krylov_svd` on the top-r energies e_0, e_1, ... so far."""
    if len(energies) < 3 or energies[-1] <= 0:
        return False
    gain = (energies[-1] - energies[-2]) / energies[-1]
    before = (energies[-2] - energies[-3]) / energies[-1]
    if gain <= 1e-6:                                     # rounding level: nothing left
        return True
    ratio = gain / before if before > 0 else math.inf
    return ratio < 1 and gain * ratio / (1 - ratio) <= tol


def _project_out(y: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """y - Q Q^T y, done twice (classical Gram-Schmidt twice: "twice is enough")."""
    for _ in range(2 if basis.shape[1] else 0):
        y = y - basis @ (basis.T @ y)
    return y


def _cholesky_qr(y: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, err): y (m, b) orthonormalised by Cholesky QR twice in fp64 (b x b Gram,
    Cholesky, triangular solve: a few small kernels, no Householder sweep), and err, a 0-d
    tensor = max(|q^T q - I|, |basis^T q|), NaN if a Cholesky failed. Checked by the
    caller together with the step's other small results, so no extra sync."""
    q = y.double()
    failed = torch.zeros((), dtype=torch.bool, device=y.device)
    for _ in range(2):
        chol, info = torch.linalg.cholesky_ex(q.T @ q)
        failed |= info != 0
        q = torch.linalg.solve_triangular(chol.T, q, upper=True, left=False)   # q L^-T
    q = q.float()
    err = (q.T @ q - torch.eye(q.shape[1], device=q.device)).abs().max()
    if basis.shape[1]:
        err = torch.maximum(err, (basis.T @ q).abs().max())
    return q, torch.where(failed, torch.nan, err)


def _deflated_block(y: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Fallback of `_cholesky_qr` when y (m, b) lies nearly inside span(basis) or is
    rank-deficient (e.g. a low-rank W): the directions of the projected y above 1e-5 of
    y's norm are orthonormalised (eigen-decomposition of its Gram, twice, with a
    projection between), the others become zero columns. Zero columns add nothing to the
    Rayleigh-Ritz problem, so the Krylov space simply stops growing there."""
    floor = 1e-5 * float(y.norm())
    y = _project_out(y, basis)
    for _ in range(2):
        lam, vec = torch.linalg.eigh((y.double().T @ y.double()).cpu())
        keep = lam > floor ** 2
        vec = vec * torch.where(keep, lam.clamp_min(1e-300).rsqrt(), 0)
        y = _project_out((y.double() @ vec.to(y.device)).float(), basis)
        floor = 1e-5
    return y


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
