"""The paper's premise, measured on an unconstrained update (layer 1: tensors in, floats out).

GeoRA's claim: RLVR's own update dW is concentrated in a few directions, and GeoRA's initial
subspace is aligned with them while PiSSA's (W0's head) is not. Given the exact update of a
full-update run (FullFT, SparseFT) and W0, per (out, in) matrix:

- concentration: the share of ||dW||_F^2 in dW's own top-r singular directions and the rank
  holding 90% of it, beside the same for a Gaussian matrix of the shape (the isotropic
  reference: its top-r share is what "not concentrated" looks like at this shape);
- capture by each method's initial subspace (col span of B0: P_B, row span of A0: P_A):
  how much of dW a rank-r adapter started there can express to first order,
      left  = ||P_B dW||^2 / ||dW||^2               (dB A0 term's column space: B0 dA)
      right = ||dW P_A||^2 / ||dW||^2               (dB A0)
      reach = 1 - ||(I - P_B) dW (I - P_A)||^2 / ||dW||^2
            = left + right - ||P_B dW P_A||^2 / ||dW||^2
  reach is the share of dW in {P_B X + Y P_A}, the span of B0 dA + dB A0 (the adapter's
  first-order update). Chance levels (a fixed dW against a uniformly random subspace of the
  same dimensions, exact expectations): r_B/out, r_A/in, r_B/out + r_A/in - r_B r_A/(out in).

S_Head under the default "either" reading (geora/geometry/metrics.py) is the reach of W0's top-k
pair, i.e. of PiSSA's subspace with an exact SVD; `reach_of_head` uses that identity.

>>> dw = torch.zeros(4, 3); dw[0, 0] = 2.0; dw[1, 2] = 1.0   # energy 4 on (e0, e0), 1 on (e1, e2)
>>> e = torch.eye(4)[:, :1]; f = torch.eye(3)[:, 2:]           # P_B = e0 e0^T, P_A = e2 e2^T
>>> capture(dw, e, f)
{'left': 0.8, 'right': 0.2, 'reach': 1.0}
>>> round(capture_chance((4, 3), 1, 1)["reach"], 12)           # 1/4 + 1/3 - 1/12
0.5
"""
from __future__ import annotations

import math
import time
from functools import lru_cache
from typing import Iterable

import torch

from geora.geometry.summary import group_records, layer_index, mean_present, module_type

# The initial subspaces compared: every method with initial factors, plus a random pair.
# LoRA starts at B0 = 0, so only the row span of its A0 is defined (its reach = right).
GEORA_FAMILY = ("geora", "geora_random_r", "geora_tail_r", "geora_wo_spec", "geora_wo_euc")
SUBSPACES = GEORA_FAMILY + ("pissa", "milora", "lora", "random")
SIDES = ("left", "right", "reach")
SHARE_OF = 0.9                       # the rank holding this share of ||dW||^2 ("rank90")
EXACT_MAX_DIM = 1024                 # above it (short side): randomized top-r, no rank90
_EPS = torch.finfo(torch.float32).eps


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float32)


def _energy(x: torch.Tensor) -> float:
    """||x||_F^2, accumulated in float64."""
    return float(x.square().sum(dtype=torch.float64))


def orthonormal_basis(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (d, q') of the column span of x (d, q), q' = its numerical rank."""
    u, s, _ = torch.linalg.svd(_f32(x), full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return u[:, :0]
    return u[:, s > max(x.shape) * _EPS * s[0]]


# ------------------------------------------------------------------------- capture
def capture(dw: torch.Tensor, left: torch.Tensor | None, right: torch.Tensor | None) -> dict:
    """left / right / reach shares of ||dW||^2 (module docstring) for orthonormal bases
    left (out, r_B) of P_B and right (in, r_A) of P_A; None for a side not given (its
    projector is 0). A zero update gives None everywhere (no energy to share)."""
    d = _f32(dw)
    total = _energy(d)
    if total == 0:
        return {s: None for s in SIDES}
    on_left = _f32(left).T @ d if left is not None else None            # (r_B, in)
    l_e = _energy(on_left) if on_left is not None else 0.0
    r_e = _energy(d @ _f32(right)) if right is not None else 0.0
    both = _energy(on_left @ _f32(right)) if left is not None and right is not None else 0.0
    reach = min(max(float((l_e + r_e - both) / total), 0.0), 1.0)
    return {"left": None if left is None else float(l_e / total),
            "right": None if right is None else float(r_e / total), "reach": reach}


def capture_chance(shape: tuple[int, int], r_left: int, r_right: int) -> dict:
    """Expected capture of a fixed dW by uniformly random subspaces of dims r_left (of the
    output space) and r_right (input); r_left = 0 for LoRA's absent B side (left None).

    >>> capture_chance((192, 512), 16, 16)["left"]
    0.08333333333333333
    """
    a, b = r_left / shape[0], r_right / shape[1]
    return {"left": a if r_left else None, "right": b if r_right else None,
            "reach": a + b - a * b}


def reach_of_head(dw: torch.Tensor, u_k: torch.Tensor, v_k: torch.Tensor) -> float | None:
    """S_Head under the "either" reading: the reach of W0's head (U_k, V_k orthonormal)."""
    return capture(dw, u_k, v_k)["reach"]


# ------------------------------------------------------------------- concentration
def _spectrum_shares(s: torch.Tensor, total: float, r: int, full: bool) -> dict:
    sq = s.double().square()
    top = float(sq[:r].sum() / total)
    rank90 = None
    if full:
        cum = torch.cumsum(sq, 0) / total
        rank90 = int(torch.searchsorted(cum, torch.tensor(SHARE_OF, dtype=cum.dtype))) + 1
        rank90 = min(rank90, s.numel())
    return {"top_r_share": min(top, 1.0), "rank90": rank90}


def concentration(dw: torch.Tensor, r: int = 16, *, exact_max_dim: int = EXACT_MAX_DIM,
                  seed: int = 0) -> dict:
    """Share of ||dW||^2 in dW's top-r singular directions, and the rank holding SHARE_OF
    of it (None above exact_max_dim, where only the top r are computed, randomized).

    >>> d = torch.diag(torch.tensor([3.0, 1.0, 0.0]))   # energies 9, 1, 0
    >>> concentration(d, 1)
    {'top_r_share': 0.9, 'rank90': 1}
    """
    d = _f32(dw)
    total = _energy(d)
    if total == 0:
        return {"top_r_share": None, "rank90": None}
    r = min(r, *d.shape)
    if min(d.shape) <= exact_max_dim:
        return _spectrum_shares(torch.linalg.svdvals(d), total, r, True)
    from geora.linalg import svd_top

    _, s, _ = svd_top(d, r, method="randomized", seed=seed)
    return _spectrum_shares(s, total, r, False)


@lru_cache(maxsize=64)
def gaussian_concentration(shape: tuple[int, int], r: int = 16, *,
                           exact_max_dim: int = EXACT_MAX_DIM, seed: int = 0,
                           device: str = "cpu") -> dict:
    """`concentration` of one seeded i.i.d. Gaussian matrix of `shape` (cached per shape):
    the isotropic reference. Its top-r share concentrates tightly at these sizes (~0.7%
    spread over seeds at 192 x 512, r = 16)."""
    g = torch.Generator(device=device).manual_seed(seed)
    return concentration(torch.randn(*shape, generator=g, device=device), r,
                         exact_max_dim=exact_max_dim, seed=seed)


# ---------------------------------------------------------------------- subspaces
def initial_subspaces(w0: torch.Tensor, r: int = 16, rho: float = 0.2, *, seed: int = 0,
                      names: Iterable[str] = SUBSPACES, where: str = "weight") -> dict:
    """{name: (basis of P_B (out, r) or None, basis of P_A (in, r))} of W0 (out, in), each
    method's own initialisation at rank r (and rho for the GeoRA family), as
    geora.prepare_model would build it with its default options.

    LoRA: PEFT initialises A0 with kaiming_uniform_(a=sqrt(5)) (peft/tuners/lora/layer.py,
    reset_lora_parameters) and B0 = 0; a seeded draw of the same distribution stands for it.
    random: Gaussian B (out, r) and A^T (in, r)."""
    from geora.methods import get_method

    out, inp = w0.shape
    gen = torch.Generator(device=w0.device).manual_seed(seed)
    result = {}
    for name in names:
        if name == "lora":
            a0 = torch.empty(r, inp, device=w0.device)
            torch.nn.init.kaiming_uniform_(a0, a=math.sqrt(5), generator=gen)
            result[name] = (None, orthonormal_basis(a0.T))
        elif name == "random":
            result[name] = (orthonormal_basis(torch.randn(out, r, generator=gen, device=w0.device)),
                            orthonormal_basis(torch.randn(inp, r, generator=gen, device=w0.device)))
        else:
            spec = get_method(name)
            kw = {"rho": rho} if name in GEORA_FAMILY else {"rho": None}
            f = spec.factorize(_f32(w0), rank=r, alpha=None, where=f"{where} ({name})", **kw)
            result[name] = (orthonormal_basis(f.B), orthonormal_basis(f.A.T))
            del f
    return result


# ------------------------------------------------------------------- per matrix
def premise_matrix(name: str, dw: torch.Tensor, subspaces: dict, r: int = 16, *,
                   exact_max_dim: int = EXACT_MAX_DIM, seed: int = 0) -> dict:
    """One matrix's record: its concentration (and the Gaussian reference's), and for each
    subspace in `subspaces` (initial_subspaces' output) the capture and its chance level."""
    shape = tuple(int(x) for x in dw.shape)
    rec = {"name": name, "type": module_type(name), "layer": layer_index(name),
           "shape": list(shape), "update_energy": _energy(_f32(dw)),
           "concentration": concentration(dw, r, exact_max_dim=exact_max_dim, seed=seed),
           "concentration_gaussian": gaussian_concentration(
               shape, min(r, *shape), exact_max_dim=exact_max_dim, seed=seed,
               device=str(dw.device)),
           "capture": {}, "chance": {}}
    for sub, (qb, qa) in subspaces.items():
        rec["capture"][sub] = capture(dw, qb, qa)
        rec["chance"][sub] = capture_chance(shape, 0 if qb is None else qb.shape[1],
                                            0 if qa is None else qa.shape[1])
    return rec


def energy_weighted(records: list[dict], pick, energy: str = "update_energy") -> float | None:
    """Mean of pick(record) weighted by record[energy] (None values and zero updates left
    out): the pooled share of the group's ||dW||^2, as the weight analysis aggregates S_Head."""
    pairs = [(r[energy], pick(r)) for r in records]
    pairs = [(e, v) for e, v in pairs if v is not None and e > 0]
    total = sum(e for e, _ in pairs)
    return sum(e * v for e, v in pairs) / total if total > 0 else None


def aggregate(records: list[dict]) -> dict:
    """Shares pooled over matrices by update energy; rank90 as a plain mean."""
    subs = list(records[0]["capture"]) if records else []
    agg = {"n_matrices": len(records), "update_energy": sum(r["update_energy"] for r in records),
           "concentration": {}, "capture": {}, "chance": {}}
    for key in ("concentration", "concentration_gaussian"):
        agg[key] = {"top_r_share": energy_weighted(records, lambda r: r[key]["top_r_share"]),
                    "rank90": mean_present(r[key]["rank90"] for r in records)}
    for sub in subs:
        for part in ("capture", "chance"):
            agg[part][sub] = {side: energy_weighted(records, lambda r: r[part][sub][side])
                              for side in SIDES}
    return agg


def premise_summary(updates: Iterable[tuple], *, r: int = 16, rho: float = 0.2, seed: int = 0,
                    exact_max_dim: int = EXACT_MAX_DIM, names: Iterable[str] = SUBSPACES,
                    modules: bool = True, subspaces: dict | None = None) -> dict:
    """The premise section of (name, W0, dW) items, one matrix at a time: overall, by
    module type, by layer (and every matrix's record under "modules" with `modules`).
    `subspaces` ({module: initial_subspaces(W0, ...)}) reuses bases already built (many
    updates of the same W0, e.g. a run's checkpoints); missing modules are built here."""
    start = time.perf_counter()
    names = tuple(names)
    unknown = sorted(set(names) - set(SUBSPACES))
    if unknown:
        raise ValueError(f"unknown premise subspace(s) {unknown}; known: {list(SUBSPACES)}")
    records = []
    for item in updates:
        name, w0, dw = item[:3]
        subs = (subspaces or {}).get(name)
        if subs is None:
            subs = initial_subspaces(w0, r, rho, seed=seed, names=names, where=name)
        records.append(premise_matrix(name, dw, subs, r, exact_max_dim=exact_max_dim, seed=seed))
    if not records:
        raise ValueError("no weight updates for the premise (the iterable was empty)")
    by_type, by_layer = group_records(records)
    out = {"r": r, "rho": rho, "seed": seed, "share_of": SHARE_OF, "subspaces": list(names),
           "n_matrices": len(records), "overall": aggregate(records),
           "by_type": {t: aggregate(v) for t, v in by_type.items()},
           "by_layer": {str(i): aggregate(by_layer[i]) for i in sorted(by_layer)}}
    if modules:
        out["modules"] = {rec["name"]: rec for rec in records}
    out["time_s"] = time.perf_counter() - start
    return out
