"""Per-matrix comparison of a trained model with its base: S_Head, NSS, sparsity, angles.

    python -m analysis.weights --run outputs/RUN_DIR [--k 16] [--out weights.csv]

loads the run's base model (from its resolved config), applies the saved adapter with
`geora.load_adapter`, reads each target matrix's exact update (geora.weight_updates: W0
and dW in fp32 from the method's own factors or deltas, never a 16-bit merge) and writes
one row per matrix into the run folder's analysis/ (geora.training.rundir.RunFolder). The
maths is in geora.geometry.metrics; this module only pairs weights up and tabulates.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
import torch

from geora.geometry import metrics

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def linear_weights(model: torch.nn.Module, suffixes: Iterable[str] = PROJECTIONS) -> dict[str, torch.Tensor]:
    """name -> (out, in) weight of every nn.Linear whose name ends with one of `suffixes`."""
    suffixes = tuple(suffixes)
    return {name: mod.weight.detach() for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and name.endswith(suffixes)}


def compare_weights(base: Mapping[str, torch.Tensor], trained: Mapping[str, torch.Tensor], *,
                    k: int = 16, reading: str = "either") -> pd.DataFrame:
    """One row per matrix present in both: S_Head (all readings, `reading` first), NSS
    (full, top-k, delta), update sparsity, mean principal-angle cosine of the top-k spaces."""
    missing = sorted(set(base) ^ set(trained))
    if missing:
        raise KeyError(f"weights present in only one model: {missing[:5]}")
    rows = []
    for name in sorted(base):
        w0, w1 = base[name].float(), trained[name].float()
        kk = min(k, *w0.shape)
        u0, v0 = metrics.head_subspace(w0, kk)
        u1, _ = metrics.head_subspace(w1, kk)
        delta = w1 - w0
        row = {"module": name, "shape": tuple(w0.shape),
               "delta_norm": float(delta.norm()), "w0_norm": float(w0.norm())}
        for r in (reading, *[x for x in metrics.S_HEAD_READINGS if x != reading]):
            row[f"s_head_{r}"] = metrics.s_head(delta, u0, v0, r)
        for scope in metrics.NSS_SCOPES:
            row[f"nss_{scope}"] = metrics.nss(w0, w1, scope, kk)
        row["unchanged_frac"] = metrics.update_sparsity(w0, w1)
        row["head_cos_mean"] = float(metrics.principal_angle_cosines(u0, u1).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.Series:
    """Energy-weighted S_Head (share of the whole update) and plain means of the rest."""
    w = df["delta_norm"] ** 2
    out = {c: float((df[c] * w).sum() / w.sum()) if w.sum() > 0 else 0.0
           for c in df.columns if c.startswith("s_head_")}
    out.update({c: float(df[c].mean()) for c in df.columns
                if c.startswith("nss_") or c in ("unchanged_frac", "head_cos_mean")})
    return pd.Series(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="a run folder written by run.py")
    p.add_argument("--k", type=int, default=16, help="size of the head subspace (default 16 = r)")
    p.add_argument("--reading", default="either", choices=metrics.S_HEAD_READINGS)
    p.add_argument("--out", type=Path, help="CSV to write (default RUN/analysis/weights.csv)")
    args = p.parse_args(argv)

    import geora
    from geora.fileio import atomic_write_text
    from geora.models import load_model
    from geora.training.rundir import RunFolder

    run = RunFolder(args.run)
    cfg = run.read_config()
    if cfg is None:
        raise SystemExit(f"{args.run} has no {RunFolder.CONFIG}: not a run folder written by run.py")
    base, _ = load_model(cfg.model)
    model = geora.load_adapter(base, run.adapter, keep_initial=True)
    base_w, trained = {}, {}
    for u in geora.weight_updates(model):
        if u.module.endswith(PROJECTIONS):
            base_w[u.module], trained[u.module] = u.w0.cpu(), (u.w0 + u.delta).cpu()
    df = compare_weights(base_w, trained, k=args.k, reading=args.reading)
    out = args.out or run.analysis / "weights.csv"
    atomic_write_text(out, df.to_csv(index=False))
    print(summarise(df).to_string())
    print(f"per-matrix table: {out}")


if __name__ == "__main__":
    main()
