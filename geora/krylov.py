"""Randomized block Krylov SVD (layer 1: torch only): the default top-r SVD of
`geora.linalg.svd_top`, seeded, adaptive in depth, on any device.

    from geora.krylov import block_krylov_svd
    u, s, vh, ritz, steps = block_krylov_svd(W, 16, seed=0)   # W (m, n) fp32

Why not torch.svd_lowrank: it draws its probes from the global RNG (a private seeded
generator keeps the init reproducible without touching the caller's random state) and runs
a fixed number of plain power iterations, whose cost is set by the hardest spectrum; a
Krylov space needs ~sqrt of those passes and its depth adapts to each matrix here.
"""
from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch

# Randomized SVD defaults (see `block_krylov_svd`): Krylov blocks of r + RSVD_OVERSAMPLE
# columns; with niter=None the iteration stops once the estimated missing share of the
# top-r energy is <= RSVD_TOL (at most RSVD_MAX_STEPS steps). Measured on 4096x4096 and
# 1024x2048 weights (scripts/bench_init.py): the Gaussian (flat) spectrum needs 7-9 steps
# for >= 0.995 of the exact top-16 energy, a power law sigma_i ~ (1+i)^-0.5 needs 2-4.
# RSVD_TOL 4e-3 (not 2e-3): on a flat 4096x4096 spectrum 8 steps instead of 9 per
# decomposition, W_geo energy 0.9979 instead of 0.9991 (the estimate is conservative ~2x).
RSVD_OVERSAMPLE = 16
RSVD_TOL = 4e-3
RSVD_MAX_STEPS = 40
RSVD_SETTLE_STEPS = 16     # W_hat_r for M_spec: up to 16 more steps, until the move
RSVD_SETTLE_TOL = 1e-3     # W_hat_r has left to make is estimated below 0.1% (`_AdaptiveStop`)
ORTH_TOL = 1e-4            # a Krylov block counts as orthonormal to this max-abs error


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
    so the energy still missing is estimated as d_j * c / (1 - c), c the gain ratio
    (`_converged`), and the iteration stops once that is <= tol (or gains stall at
    rounding level, or Q fills the space, or RSVD_MAX_STEPS). Every decision is a
    deterministic function of w and seed. settle: see `_AdaptiveStop`. start (n, c): G's
    first c columns, scaled to unit norm, get these added, so the Krylov space starts
    near them yet keeps a random component in every direction.
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
    gram = torch.empty(cols, cols, dtype=torch.float64)      # Z^T Z, on the host
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
    (the decomposition whose W_hat_r = U S Vh defines M_spec) the energy is not enough:
    M_spec is decided by the entries of W_hat_r near the threshold, which flip with
    W_hat_r itself, and on real weights sigma_r and sigma_(r+1) are often within 0.1-1%
    of each other, so the energy converges steps before the top-r subspace does. Measured
    on SmolLM2-135M's MLP matrices: the energy rule stopped after 4-5 steps with M_spec
    Jaccard 0.40-0.71 against the exact SVD's; W_hat_r's relative move per step then
    shrinks geometrically (ratio ~0.25) and M_spec's Jaccard distance to the exact one is
    ~3x W_hat_r's relative error. So once the energy has converged, W_hat_r's relative move
    in each step is tracked (Frobenius norm, from the K x K eigenvectors: no pass over W),
    and the iteration goes on until the move still to come, extrapolated as
    move * c / (1 - c) with c the larger of the last two move ratios, is <= settle_tol
    (RSVD_SETTLE_TOL: an error <= 1e-3, i.e. Jaccard >~ 0.997), the move reaches rounding
    level, or `settle` extra steps are spent (flat spectra, e.g. Gaussian weights, whose
    top singular values differ by < 0.1%: there W_hat_r is ill-determined by nature)."""

    def __init__(self, rank: int, tol: float, settle: int,
                 settle_tol: float = RSVD_SETTLE_TOL):
        self.rank, self.tol, self.settle, self.settle_tol = rank, tol, settle, settle_tol
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
        if self.extra >= self.settle or self.moved[-1] <= 1e-6:   # budget spent; rounding
            return True
        ratios = [b / a if a > 0 else math.inf for a, b in zip(self.moved, self.moved[1:])]
        ratio = max(ratios[-2:])
        return ratio < 1 and self.moved[-1] * ratio / (1 - ratio) <= self.settle_tol

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
    """Energy stop test of `block_krylov_svd` on the top-r energies e_0, e_1, ... so far.

    Missing energy ~ d * c / (1 - c): d the last relative gain, c the larger of the last
    two gain ratios, so that convergence still settling in (a warm start's first jump,
    measured to fool a single ratio ninefold) or speeding up is not trusted early."""
    if len(energies) < 4 or energies[-1] <= 0:
        return False
    gains = [(energies[i] - energies[i - 1]) / energies[-1] for i in (-3, -2, -1)]
    if gains[-1] <= 1e-6:                                # rounding level: nothing left
        return True
    ratio = max(b / a if a > 0 else math.inf for a, b in zip(gains, gains[1:]))
    return ratio < 1 and gains[-1] * ratio / (1 - ratio) <= tol


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
