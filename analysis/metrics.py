"""How an update changes a weight matrix: pure functions of tensors (layer 1, torch only).

Notation: W0, W1 are (out, in) weights before and after training, dW = W1 - W0.
U_k (out, k), V_k (in, k) are the top-k singular vectors of W0 (the "head" subspace).
Every function computes in float32 and returns Python floats or tensors, no I/O.

The paper reports S_Head (PiSSA ~0.98, GeoRA <= 0.02) and NSS (PiSSA 0.395, GeoRA 0.092)
without formulas; each metric here offers the natural readings by name and documents its
default (README, fidelity notes).
"""
from __future__ import annotations

import torch

S_HEAD_READINGS = ("either", "two_sided", "left")
NSS_SCOPES = ("full", "topk", "delta")


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float32)


def head_subspace(w0: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k left and right singular vectors of w0: U_k (out, k), V_k (in, k)."""
    if not 0 < k <= min(w0.shape):
        raise ValueError(f"k={k} must be in [1, {min(w0.shape)}] for a weight of shape {tuple(w0.shape)}")
    u, _, vh = torch.linalg.svd(_f32(w0), full_matrices=False)
    return u[:, :k], vh[:k].T


def s_head(delta: torch.Tensor, u_k: torch.Tensor, v_k: torch.Tensor, reading: str = "either") -> float:
    """Share of ||dW||_F^2 that lies in the head subspace of W0.

    reading:
      "either"    1 - ||(I - U U^T) dW (I - V V^T)||^2 / ||dW||^2: the part of dW that
                  touches the head on at least one side. A PiSSA update B0 dA + dB A0 lies
                  wholly inside it, so this is the reading under which "PiSSA ~0.98" can
                  come out (the default).
      "two_sided" ||U^T dW V||^2 / ||dW||^2: head on both sides.
      "left"      ||U^T dW||^2 / ||dW||^2: head of the output space only.
    Returns 0.0 for a zero update.
    """
    d = _f32(delta)
    total = d.square().sum()
    if total == 0:
        return 0.0
    if reading == "two_sided":
        inside = (u_k.T @ d @ v_k).square().sum()
    elif reading == "left":
        inside = (u_k.T @ d).square().sum()
    elif reading == "either":
        left_out = d - u_k @ (u_k.T @ d)                 # (I - U U^T) dW
        tail = left_out - (left_out @ v_k) @ v_k.T        # ... (I - V V^T)
        inside = total - tail.square().sum()
    else:
        raise ValueError(f"unknown S_Head reading {reading!r}; choose one of {S_HEAD_READINGS}")
    return float((inside / total).clamp(0.0, 1.0))


def nss(w0: torch.Tensor, w1: torch.Tensor, scope: str = "full", k: int = 16) -> float:
    """Normalised spectral shift ("The Path Not Taken"): ||s(W1) - s(W0)||_2 / ||s(W0)||_2.

    scope: "full" (whole spectrum, the cited definition), "topk" (the k largest singular
    values only), "delta" (||s(dW)||_2 / ||s(W0)||_2 = ||dW||_F / ||W0||_F).
    """
    a, b = _f32(w0), _f32(w1)
    if scope == "delta":
        return float(torch.linalg.matrix_norm(b - a) / torch.linalg.matrix_norm(a))
    s0, s1 = torch.linalg.svdvals(a), torch.linalg.svdvals(b)
    if scope == "topk":
        s0, s1 = s0[:k], s1[:k]
    elif scope != "full":
        raise ValueError(f"unknown NSS scope {scope!r}; choose one of {NSS_SCOPES}")
    return float(torch.linalg.vector_norm(s1 - s0) / torch.linalg.vector_norm(s0))


def principal_angle_cosines(u_a: torch.Tensor, u_b: torch.Tensor) -> torch.Tensor:
    """cos(theta_i) between the column spaces of two orthonormal bases (n, k): sigma_i(U_a^T U_b)."""
    return torch.linalg.svdvals(_f32(u_a).T @ _f32(u_b)).clamp(max=1.0)


def unchanged_mask(w0: torch.Tensor, w1: torch.Tensor, rel_tol: float = 1e-3,
                   dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Entries unchanged at `dtype` precision: |w1 - w0| <= rel_tol * max(|w0|, |w1|)."""
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
