"""The analysis summary of one trained run: every weight reading, per matrix and aggregated.

Pure (layer 1: torch and tqdm, no model, no I/O). Give it the exact updates of a run, one
(module_name, W0, dW) or (module_name, W0, dW, masks) at a time, e.g. from the method kind's
`weight_updates(model)`; it returns a JSON-able dict for results.json["analysis"]:

    summary = summarise_updates(weight_updates(model), k=16)     # tqdm bar on stderr

Schema (version 1). Fractions are floats in [0, 1]; null marks a value that is undefined
(no update at all) or was not computed (NSS full above `nss_full_max_numel`):

    {"schema": 1, "k": 16, "default_reading": "either", "readings": [...all S_Head readings],
     "settings": {"svd", "exact_max_dim", "nss_full_max_numel", "sparsity_dtype", "rel_tol", "seed"},
     "n_matrices": 28, "time_s": 0.9,
     "overall":  AGG,
     "by_type":  {"q": AGG, "k": AGG, ..., "down": AGG},   # leaf name without "_proj"
     "by_layer": {"0": AGG, "1": AGG, ...},                # from "layers.<i>." (string keys,
                                                            #  as JSON stores them)
     "modules":  {name: MATRIX}}                            # only with modules=True
    AGG = {"n_matrices", "n_params", "update_energy" (sum of ||dW||_F^2),
           "s_head": {reading: value}, "s_head_chance": {reading: value},
           "nss": {"full", "topk", "delta"}, "head_cos_mean",
           "unchanged_frac", "zero_frac",
           "masks": {"spec"|"euc"|"union": {"mask_frac", "updated_in_mask",
                     "updated_in_mask_chance", "energy_in_mask", "energy_in_mask_chance"}}}
    MATRIX = AGG's fields for one matrix, plus "type", "layer", "shape", "k" (min(k, shape)),
             "k_update" (rank of dW's subspace used by the overlap readings), "w0_norm",
             and the integer counts the aggregates are summed from.

How matrices are aggregated:
- S_Head (every reading) is energy-weighted: sum_i ||dW_i||^2 s_i / sum_i ||dW_i||^2, which
  for the energy readings is exactly the head's share of the whole update. Its chance
  level is weighted the same way, so value and chance stay comparable; a zero update
  weighs nothing, and a set of zero updates gives null.
- unchanged_frac, zero_frac and the mask overlaps are summed counts, i.e. fractions of all
  entries (the "x% of parameters unchanged" of the RLVR literature).
- NSS and head_cos_mean (mean cosine of the principal angles between the top-k singular
  subspaces of W0 and W1) are plain means over matrices.

Mask overlaps (GeoRA family; masks = {"spec": M_spec, "euc": M_euc}, union added here):
updated_in_mask = share of the updated (not unchanged) entries that lie in the mask, and
energy_in_mask = share of ||dW||_F^2 inside it; the chance of both is the mask's share of
entries (what updates scattered at random would give), weighted like the value.

Cost: per matrix three SVDs (W0, W1 = W0 + dW, dW). At most `exact_max_dim` on the short
side they are exact (full spectra, so NSS full comes free); above it the top-k come from
geora.linalg.svd_top (randomized, seeded, the same probes for W0 and W1 so that their
errors largely cancel in NSS topk) and NSS full needs two extra exact `svdvals` (about 1 s
each on an H200 and 12 s on a 2-core CPU at 4096 x 4096): `nss_full_max_numel` skips them
(NSS full null) for larger matrices; None computes them for every matrix.
"""
from __future__ import annotations

import math
import re
import time
from typing import Iterable, Mapping

import torch
from tqdm.auto import tqdm

from geora.geometry import metrics

SCHEMA_VERSION = 1
MASK_NAMES = ("spec", "euc", "union")
TYPE_ORDER = ("q", "k", "v", "o", "gate", "up", "down")     # a decoder layer's order
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def module_type(name: str) -> str:
    """'model.layers.3.self_attn.q_proj' -> 'q'; a leaf without '_proj' is kept as it is."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf[:-len("_proj")] if leaf.endswith("_proj") else leaf


def type_sort_key(kind: str) -> tuple[int, str]:
    """Sort key that puts module types in TYPE_ORDER, unknown ones after, by name."""
    return (TYPE_ORDER.index(kind), "") if kind in TYPE_ORDER else (len(TYPE_ORDER), kind)


def layer_index(name: str) -> int | None:
    """'model.layers.3.mlp.up_proj' -> 3; None when the name has no 'layers.<i>.'."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def _check_pair(name: str, w0: torch.Tensor, dw: torch.Tensor) -> None:
    for what, t in (("W0", w0), ("dW", dw)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or not t.is_floating_point():
            raise ValueError(f"{name}: {what} must be a 2-D floating tensor, got "
                             f"{type(t).__name__} {tuple(getattr(t, 'shape', ()))}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: {what} holds NaN or Inf entries")
    if w0.shape != dw.shape:
        raise ValueError(f"{name}: W0 {tuple(w0.shape)} and dW {tuple(dw.shape)} differ in shape")


def _spectra(w0, w1, dw, k, exact, full_spectrum, seed):
    """Top-k vectors of W0, W1 and dW, and the spectra NSS needs (None where skipped)."""
    if exact:
        u0, s0, v0h = torch.linalg.svd(w0, full_matrices=False)
        u1, s1, _ = torch.linalg.svd(w1, full_matrices=False)
        ud, sd, vdh = torch.linalg.svd(dw, full_matrices=False)
        full = (s0, s1)
    else:
        from geora.linalg import svd_top

        u0, s0, v0h = svd_top(w0, k, method="randomized", seed=seed)
        u1, s1, _ = svd_top(w1, k, method="randomized", seed=seed)      # same probes as W0
        if float(dw.abs().max()) > 0:
            ud, sd, vdh = svd_top(dw, k, method="randomized", seed=seed)
        else:
            ud, sd, vdh = u0[:, :0], s0[:0], v0h[:0]
        full = (torch.linalg.svdvals(w0), torch.linalg.svdvals(w1)) if full_spectrum else None
    k_update = min(k, metrics.numerical_rank(sd, tuple(dw.shape)))
    return dict(u0=u0[:, :k], v0=v0h[:k].T, u1=u1[:, :k], ud=ud[:, :k_update],
                vd=vdh[:k_update].T, topk=(s0[:k], s1[:k]), full=full)


def analyse_matrix(name: str, w0: torch.Tensor, dw: torch.Tensor,
                   masks: Mapping[str, torch.Tensor] | None = None, *, k: int = 16,
                   svd: str = "auto", exact_max_dim: int = 1024,
                   nss_full_max_numel: int | None = None, rel_tol: float = 1e-3,
                   sparsity_dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> dict:
    """Every reading of one update dW of W0 (both (out, in)); see the module docstring."""
    _check_pair(name, w0, dw)
    if svd not in ("auto", "exact", "randomized"):
        raise ValueError(f"svd={svd!r}: choose 'auto', 'exact' or 'randomized'")
    w0, dw = w0.detach().float(), dw.detach().float()
    w1 = w0 + dw                                                   # fp32, never a 16-bit merge
    kk = min(k, *w0.shape)
    exact = svd == "exact" or (svd == "auto" and min(w0.shape) <= exact_max_dim)
    full_ok = nss_full_max_numel is None or w0.numel() <= nss_full_max_numel
    sp = _spectra(w0, w1, dw, kk, exact, full_ok, seed)

    energy = float(dw.square().sum())
    rec = {"type": module_type(name), "layer": layer_index(name), "shape": list(w0.shape),
           "k": kk, "k_update": int(sp["ud"].shape[1]), "n_params": w0.numel(),
           "update_energy": energy, "w0_norm": float(w0.norm())}
    moved = energy > 0
    basis = (sp["ud"], sp["vd"])
    rec["s_head"] = {r: (metrics.s_head(dw, sp["u0"], sp["v0"], r, update_basis=basis) if moved else None)
                     for r in metrics.S_HEAD_READINGS}
    rec["s_head_chance"] = {r: (metrics.s_head_chance(r, tuple(w0.shape), kk) if moved else None)
                            for r in metrics.S_HEAD_READINGS}
    if rec["w0_norm"] > 0:
        rec["nss"] = {"full": metrics.nss_from_spectra(*sp["full"]) if sp["full"] is not None else None,
                      "topk": metrics.nss_from_spectra(*sp["topk"]),
                      "delta": math.sqrt(energy) / rec["w0_norm"]}
    else:                                                          # relative to nothing: undefined
        rec["nss"] = dict.fromkeys(metrics.NSS_SCOPES)
    rec["head_cos_mean"] = float(metrics.principal_angle_cosines(sp["u0"], sp["u1"]).mean())

    unchanged = metrics.unchanged_mask(w0, w1, rel_tol, sparsity_dtype)
    rec["count_unchanged"] = int(unchanged.sum())
    rec["count_zero"] = int((dw == 0).sum())
    rec["unchanged_frac"] = rec["count_unchanged"] / rec["n_params"]
    rec["zero_frac"] = rec["count_zero"] / rec["n_params"]
    if masks:
        rec["masks"] = _mask_record(name, masks, ~unchanged, dw.square(), energy, rec["n_params"])
    return rec


def _mask_record(name, masks, updated, energy_map, energy, n) -> dict:
    unknown = set(masks) - {"spec", "euc"}
    if unknown or not {"spec", "euc"} <= set(masks):
        raise ValueError(f"{name}: masks must be {{'spec': M_spec, 'euc': M_euc}}, got keys {sorted(masks)}")
    full = {"spec": masks["spec"].bool(), "euc": masks["euc"].bool()}
    full["union"] = full["spec"] | full["euc"]
    n_updated = int(updated.sum())
    out = {}
    for key in MASK_NAMES:
        m = full[key].to(updated.device)
        if m.shape != updated.shape:
            raise ValueError(f"{name}: mask {key!r} has shape {tuple(m.shape)}, the weight {tuple(updated.shape)}")
        count, in_upd = int(m.sum()), int((updated & m).sum())
        e_in = float(energy_map[m].sum())
        out[key] = {"count": count, "count_updated": n_updated, "count_updated_in_mask": in_upd,
                    "energy_in": e_in, "mask_frac": count / n,
                    "updated_in_mask": in_upd / n_updated if n_updated else None,
                    "updated_in_mask_chance": count / n if n_updated else None,
                    "energy_in_mask": e_in / energy if energy > 0 else None,
                    "energy_in_mask_chance": count / n if energy > 0 else None}
    return out


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def mean_present(values) -> float | None:
    """The mean of the values that are not None (None when there are none)."""
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def group_records(records: list[dict]) -> tuple[dict[str, list], dict[int, list]]:
    """Per-matrix records grouped by module type and by layer index (a record without a
    layer, e.g. lm_head, only in the former), each group in the records' order."""
    by_type: dict[str, list] = {}
    by_layer: dict[int, list] = {}
    for rec in records:
        by_type.setdefault(rec["type"], []).append(rec)
        if rec["layer"] is not None:
            by_layer.setdefault(rec["layer"], []).append(rec)
    return by_type, by_layer


def aggregate(records: list[dict]) -> dict:
    """One AGG (module docstring) from per-matrix records of `analyse_matrix`."""
    energy = sum(r["update_energy"] for r in records)
    n = sum(r["n_params"] for r in records)

    def weighted(field: str, reading: str) -> float | None:
        num = sum(r["update_energy"] * r[field][reading] for r in records if r["update_energy"] > 0)
        return _ratio(num, energy)

    agg = {"n_matrices": len(records), "n_params": n, "update_energy": energy,
           "s_head": {x: weighted("s_head", x) for x in metrics.S_HEAD_READINGS},
           "s_head_chance": {x: weighted("s_head_chance", x) for x in metrics.S_HEAD_READINGS},
           "nss": {s: mean_present(r["nss"][s] for r in records) for s in metrics.NSS_SCOPES},
           "head_cos_mean": mean_present(r["head_cos_mean"] for r in records),
           "unchanged_frac": sum(r["count_unchanged"] for r in records) / n,
           "zero_frac": sum(r["count_zero"] for r in records) / n}
    masked = [r for r in records if "masks" in r]
    if masked:
        agg["masks"] = {}
        n_m = sum(r["n_params"] for r in masked)
        e_m = sum(r["update_energy"] for r in masked)
        for key in MASK_NAMES:
            ms = [(r["masks"][key], r["n_params"], r["update_energy"]) for r in masked]
            upd = sum(m["count_updated"] for m, _, _ in ms)
            agg["masks"][key] = {
                "mask_frac": sum(m["count"] for m, _, _ in ms) / n_m,
                "updated_in_mask": _ratio(sum(m["count_updated_in_mask"] for m, _, _ in ms), upd),
                "updated_in_mask_chance": _ratio(sum(m["count_updated"] * m["count"] / nn for m, nn, _ in ms), upd),
                "energy_in_mask": _ratio(sum(m["energy_in"] for m, _, _ in ms), e_m),
                "energy_in_mask_chance": _ratio(sum(e * m["count"] / nn for m, nn, e in ms), e_m)}
    return agg


def summarise_updates(updates: Iterable[tuple], *, k: int = 16, svd: str = "auto",
                      exact_max_dim: int = 1024, nss_full_max_numel: int | None = None,
                      rel_tol: float = 1e-3, sparsity_dtype: torch.dtype = torch.bfloat16,
                      seed: int = 0, modules: bool = True, progress: bool = True,
                      total: int | None = None) -> dict:
    """The analysis summary (module docstring) of (name, W0, dW[, masks]) items, consumed
    one at a time so that a large model's updates never sit in memory together.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> w0 = torch.randn(64, 32, generator=g)
    >>> s = summarise_updates([("model.layers.0.mlp.up_proj", w0, torch.zeros(64, 32))],
    ...                       k=4, progress=False)
    >>> s["overall"]["s_head"]["either"] is None, s["overall"]["unchanged_frac"]
    (True, 1.0)
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be a positive int (the head subspace's size)")
    start = time.perf_counter()
    records: dict[str, dict] = {}
    if total is None and hasattr(updates, "__len__"):
        total = len(updates)
    for item in tqdm(updates, total=total, desc="weight analysis", unit="matrix", disable=not progress):
        if not isinstance(item, (tuple, list)) or len(item) not in (3, 4):
            raise ValueError(f"each update must be (name, W0, dW) or (name, W0, dW, masks), got {item!r:.80}")
        name, w0, dw = item[:3]
        if name in records:
            raise ValueError(f"module {name!r} appears twice among the updates")
        records[name] = analyse_matrix(name, w0, dw, item[3] if len(item) == 4 else None, k=k,
                                       svd=svd, exact_max_dim=exact_max_dim,
                                       nss_full_max_numel=nss_full_max_numel, rel_tol=rel_tol,
                                       sparsity_dtype=sparsity_dtype, seed=seed)
    if not records:
        raise ValueError("no weight updates to analyse (the iterable was empty)")
    recs = list(records.values())
    by_type, by_layer = group_records(recs)
    out = {"schema": SCHEMA_VERSION, "k": k, "default_reading": metrics.DEFAULT_READING,
           "readings": list(metrics.S_HEAD_READINGS),
           "settings": {"svd": svd, "exact_max_dim": exact_max_dim,
                        "nss_full_max_numel": nss_full_max_numel,
                        "sparsity_dtype": str(sparsity_dtype).removeprefix("torch."),
                        "rel_tol": rel_tol, "seed": seed},
           "n_matrices": len(recs),
           "overall": aggregate(recs),
           "by_type": {t: aggregate(by_type[t]) for t in sorted(by_type, key=type_sort_key)},
           "by_layer": {str(i): aggregate(by_layer[i]) for i in sorted(by_layer)}}
    if modules:
        out["modules"] = records
    out["time_s"] = time.perf_counter() - start
    return out
