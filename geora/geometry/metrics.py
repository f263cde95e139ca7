"""How an update changes a weight matrix: pure functions of tensors (layer 1, torch only).

Notation: W0 is an (out, in) weight before training, dW the exact fp32 update (W1 = W0 + dW).
U_k (out, k), V_k (in, k) are the top-k singular vectors of W0 (the "head" subspace).
Every function computes in float32 on the tensors' device and returns Python floats or
tensors, no I/O.

The paper reports S_Head (PiSSA ~0.98, GeoRA <= 0.02) and NSS (PiSSA 0.395, GeoRA 0.092)
without formulas, so each metric offers its natural readings by name, each with its
chance level (`s_head_chance`: the expected value for a random update of the same shape),
and documents its default (`DEFAULT_READING`).

>>> w0 = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0]))
>>> u_k, v_k = head_subspace(w0, 1)
>>> s_head(torch.outer(u_k[:, 0], torch.ones(4)), u_k, v_k, "either")   # touches the head
1.0
>>> round(s_head_chance("either", (4, 4), 1), 4)                          # 1 - (3/4)^2
0.4375
"""
from __future__ import annotations

import torch

# Energy shares: which part of ||dW||_F^2 lies in the head (see s_head).
ENERGY_READINGS = ("either", "two_sided", "left", "right")
# Subspace overlaps: how much of dW's own top-k singular subspaces lies in W0's head.
OVERLAP_READINGS = ("overlap", "overlap_left", "overlap_right")
S_HEAD_READINGS = ENERGY_READINGS + OVERLAP_READINGS
# The default reading: the only one under which a PiSSA update is in the head by
# construction. PiSSA trains B = B0 + dB, A = A0 + dA on W0's top-r triplets, so
#   dW = s (B0 dA + dB A0 + dB dA),
# where B0 dA has its columns in span(U_r) and dB A0 its rows in span(V_r): both terms touch
# the head on at least one side, and only the second-order dB dA can leave it. Under
# "either" that update scores 1 - O(||dB dA||^2 / ||dW||^2): 0.995 for isotropic adapter
# steps on the micro model's weights and 1.000 for a trained micro PiSSA (60 GRPO steps).
# Under every other reading one of the two terms is free on the other side, so PiSSA scores
# 0.06-0.62 (synthetic) and 0.38-0.76 (trained): they cannot show "in the head by
# construction". A random (rotation-invariant) update scores 1 - (1 - k/out)(1 - k/in) in
# expectation, its chance level (s_head_chance), printed beside every value.
DEFAULT_READING = "either"
NSS_SCOPES = ("full", "topk", "delta")


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float32)


def head_subspace(w0: torch.Tensor, k: int, *, svd: str = "exact", seed: int = 0,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k left and right singular vectors of w0: U_k (out, k), V_k (in, k).

    svd="exact" (torch.linalg.svd) or "randomized" (geora.linalg.svd_top, for large
    matrices: the seeded block Krylov SVD of geora.krylov, adaptive in depth)."""
    if not 0 < k <= min(w0.shape):
        raise ValueError(f"k={k} must be in [1, {min(w0.shape)}] for a weight of shape {tuple(w0.shape)}")
    if svd == "randomized":
        from geora.linalg import svd_top  # layer 1 too; imported here to keep this file light

        u, _, vh = svd_top(_f32(w0), k, method="randomized", seed=seed)
        return u, vh.T
    if svd != "exact":
        raise ValueError(f"svd={svd!r}: choose 'exact' or 'randomized'")
    u, _, vh = torch.linalg.svd(_f32(w0), full_matrices=False)
    return u[:, :k], vh[:k].T


def numerical_rank(s: torch.Tensor, shape: tuple[int, ...]) -> int:
    """Singular values above max(shape) * eps(fp32) * s_max (numpy.linalg.matrix_rank's rule)."""
    if s.numel() == 0 or float(s.max()) == 0.0:
        return 0
    return int((s > max(shape) * torch.finfo(torch.float32).eps * s.max()).sum())


def update_subspace(delta: torch.Tensor, k: int, *, svd: str = "exact", seed: int = 0,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """dW's own top-k' singular vectors: U_d (out, k'), V_d (in, k'), k' = min(k, rank dW).

    Directions beyond dW's numerical rank are arbitrary (any basis of its null space), so
    they are dropped; a zero update gives k' = 0 (empty bases)."""
    d = _f32(delta)
    k = min(k, *d.shape)
    if svd == "randomized":
        from geora.linalg import svd_top

        u, s, vh = svd_top(d, k, method="randomized", seed=seed)
    elif svd == "exact":
        u, s, vh = torch.linalg.svd(d, full_matrices=False)
    else:
        raise ValueError(f"svd={svd!r}: choose 'exact' or 'randomized'")
    kk = min(k, numerical_rank(s, tuple(d.shape)))
    return u[:, :kk], vh[:kk].T


def span_overlap(u_k: torch.Tensor, basis: torch.Tensor) -> float:
    """||U_k^T Q||_F^2 / q for an orthonormal Q (n, q): the mean squared cosine of Q's
    directions with the head span(U_k); 1 = Q inside the head, k/n = a random q-dim
    subspace (Haar) in expectation, 0.0 when q = 0. Works for any orthonormal basis: dW's
    singular vectors, or an adapter's trained span (orthonormalise B or A^T first)."""
    if basis.shape[1] == 0:
        return 0.0
    return float((_f32(u_k).T @ _f32(basis)).square().sum() / basis.shape[1])


def s_head(delta: torch.Tensor, u_k: torch.Tensor, v_k: torch.Tensor, reading: str = DEFAULT_READING,
           *, update_basis: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """How much of the update dW lies in W0's head subspace, by `reading`.

    Energy shares of ||dW||_F^2 (P = U U^T, Q = V V^T):
      "either"    1 - ||(I - P) dW (I - Q)||^2 / ||dW||^2: the part that touches the head on
                  at least one side; the default (see DEFAULT_READING for why).
      "two_sided" ||U^T dW V||^2 / ||dW||^2: head on both sides.
      "left"      ||U^T dW||^2 / ||dW||^2: head of the output space.
      "right"     ||dW V||^2 / ||dW||^2: head of the input space.
    Overlaps of dW's own top-k singular subspaces (U_d, V_d from `update_subspace`; pass
    `update_basis=(U_d, V_d)` to reuse them, else they are computed exactly here):
      "overlap_left"  span_overlap(U_k, U_d);  "overlap_right" span_overlap(V_k, V_d);
      "overlap"       their mean.
    Returns 0.0 for a zero update (nothing of it lies in the head). Chance levels:
    `s_head_chance`.
    """
    if reading not in S_HEAD_READINGS:
        raise ValueError(f"unknown S_Head reading {reading!r}; choose one of {S_HEAD_READINGS}")
    d = _f32(delta)
    total = d.square().sum()
    if total == 0:
        return 0.0
    if reading in OVERLAP_READINGS:
        u_d, v_d = update_basis if update_basis is not None else update_subspace(d, u_k.shape[1])
        left, right = span_overlap(u_k, u_d), span_overlap(v_k, v_d)
        return {"overlap_left": left, "overlap_right": right, "overlap": (left + right) / 2}[reading]
    if reading == "two_sided":
        inside = (u_k.T @ d @ v_k).square().sum()
    elif reading == "left":
        inside = (u_k.T @ d).square().sum()
    elif reading == "right":
        inside = (d @ v_k).square().sum()
    else:  # either
        left_out = d - u_k @ (u_k.T @ d)                 # (I - U U^T) dW
        tail = left_out - (left_out @ v_k) @ v_k.T        # ... (I - V V^T)
        inside = total - tail.square().sum()
    return float((inside / total).clamp(0.0, 1.0))


def s_head_chance(reading: str, shape: tuple[int, int], k: int) -> float:
    """Expected S_Head of a random update of `shape` = (out, in) with a k-dim head.

    "Random" = rotation-invariant on both sides (e.g. i.i.d. Gaussian entries), for which
    the expectations are exact: a fixed k-dim subspace of R^n holds k/n of the energy of a
    random vector, and a random q-dim subspace (dW's singular vectors are Haar-distributed)
    has span_overlap k/n whatever q is. So: left k/out, right k/in, two_sided k^2/(out in),
    either 1 - (1 - k/out)(1 - k/in), overlap_left k/out, overlap_right k/in, overlap their
    mean. At k = 16: 0.08-0.24 on the micro model's 96..512-wide matrices, 0.0078 for
    "either" and 0.0039 for "overlap" at 4096 x 4096.
    """
    out, inp = int(shape[0]), int(shape[1])
    if not 0 < k <= min(out, inp):
        raise ValueError(f"k={k} must be in [1, {min(out, inp)}] for shape {(out, inp)}")
    a, b = k / out, k / inp
    table = {"either": 1 - (1 - a) * (1 - b), "two_sided": a * b, "left": a, "right": b,
             "overlap_left": a, "overlap_right": b, "overlap": (a + b) / 2}
    if reading not in table:
        raise ValueError(f"unknown S_Head reading {reading!r}; choose one of {S_HEAD_READINGS}")
    return table[reading]


def nss_from_spectra(s0: torch.Tensor, s1: torch.Tensor) -> float:
    """||s1 - s0||_2 / ||s0||_2 for two descending spectra of equal length."""
    return float(torch.linalg.vector_norm(_f32(s1) - _f32(s0)) / torch.linalg.vector_norm(_f32(s0)))


def nss(w0: torch.Tensor, w1: torch.Tensor, scope: str = "full", k: int = 16) -> float:
    """Normalised spectral shift ("The Path Not Taken"): ||s(W1) - s(W0)||_2 / ||s(W0)||_2.

    scope: "full" (whole spectrum, the cited definition; needs every singular value, an
    exact SVD: ~12 s per 4096 x 4096 matrix on a 2-core CPU), "topk" (the k largest singular
    values only), "delta" (||s(dW)||_2 / ||s(W0)||_2 = ||dW||_F / ||W0||_F).
    """
    a, b = _f32(w0), _f32(w1)
    if scope == "delta":
        return float(torch.linalg.matrix_norm(b - a) / torch.linalg.matrix_norm(a))
    if scope not in ("full", "topk"):
        raise ValueError(f"unknown NSS scope {scope!r}; choose one of {NSS_SCOPES}")
    s0, s1 = torch.linalg.svdvals(a), torch.linalg.svdvals(b)
    if scope == "topk":
        s0, s1 = s0[:k], s1[:k]
    return nss_from_spectra(s0, s1)


def principal_angle_cosines(u_a: torch.Tensor, u_b: torch.Tensor) -> torch.Tensor:
    """cos(theta_i) between the column spaces of two orthonormal bases (n, k): sigma_i(U_a^T U_b)."""
    return torch.linalg.svdvals(_f32(u_a).T @ _f32(u_b)).clamp(max=1.0)


def unchanged_mask(w0: torch.Tensor, w1: torch.Tensor, rel_tol: float = 1e-3,
                   dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Entries unchanged at `dtype` precision: |w1 - w0| <= rel_tol * max(|w0|, |w1|).

    Give w1 = W0 + dW formed in fp32 from the exact update: a 16-bit merge of a residual
    adapter changes entries that training never touched."""
    a, b = w0.detach().to(dtype).float(), w1.detach().to(dtype).float()
    return (b - a).abs() <= rel_tol * torch.maximum(a.abs(), b.abs())


def update_sparsity(w0: torch.Tensor, w1: torch.Tensor, rel_tol: float = 1e-3,
                    dtype: torch.dtype = torch.bfloat16) -> float:
    """Fraction of entries unchanged (see unchanged_mask); RLVR runs report 36-92%."""
    return float(unchanged_mask(w0, w1, rel_tol, dtype).float().mean())


def updated_in_mask(w0: torch.Tensor, w1: torch.Tensor, mask: torch.Tensor, **kw) -> float:
    """Fraction of the updated entries that fall inside `mask` (nan when nothing changed)."""
    updated = ~unchanged_mask(w0, w1, **kw)
    n = updated.sum()
    return float("nan") if n == 0 else float((updated & mask).sum() / n)
