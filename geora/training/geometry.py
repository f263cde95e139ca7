"""The update's geometry while training runs: a TrainerCallback (`analysis.track_every=N`).

Every N optimizer steps it reads the exact update dW of every target matrix
(geora.weight_updates: fp32, from what the method trains) and appends one record to the run's
train_log.jsonl (and to wandb when the run reports there):

    {"step": 20, "time": ..., "geometry": {
        "s_head": 0.41,  "s_head_chance": 0.13,    # default reading "either", k = analysis.k
        "nss_delta": 0.004,                         # mean over matrices of ||dW|| / ||W0||
        "rel_update_norm": 0.004,                   # ||dW|| / ||W0|| of all matrices together
        "by_type": {"q": {"s_head": ..., "nss_delta": ...}, ...},
        "capture": {"geora": {"left": ..., "right": ..., "reach": ...}, ...},   # full-update
        "chance": {"geora": {...}, ...},                                        # methods only
        "time_s": 0.05}}

S_Head "either" is the reach of W0's head pair (geora.geometry.premise.reach_of_head), the same number
as geora.geometry.metrics.s_head(..., "either") (tests/test_premise.py checks it); its head U_k, V_k
and, for FullFT / SparseFT, every method's initial subspace (geora.geometry.premise.initial_subspaces)
are computed once, when training begins (the setup's time is logged as "setup_s" in the
first record). Aggregates are pooled as the end-of-run analysis pools them: shares weighted
by each matrix's ||dW||^2, nss_delta a plain mean.

Cost: one pass over the target weights and a few rank-k products per matrix every N steps;
measured in docs/premise.md.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from geora.config.sections import AnalysisSettings
from geora.geometry.premise import energy_weighted

def _head(w0: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W0's top-k singular vectors U_k (out, k), V_k (in, k): exact up to 1024 on the short
    side (the weight analysis' default exact_max_dim), randomized above."""
    from geora.linalg import svd_top

    method = "exact" if min(w0.shape) <= 1024 else "randomized"
    u, _, vh = svd_top(w0, k, method=method)
    return u, vh.T


class GeometryCallback(TrainerCallback):
    """Logs the update's geometry every `every` optimizer steps (module docstring).

    model: the prepared model (geora.prepare_model); path: the run's train_log.jsonl;
    k: the head's size (analysis.k); capture: also the capture shares of each initial
    subspace (FullFT / SparseFT: weight_analysis.premise_applies); rho: the GeoRA family's."""

    def __init__(self, model, every: int, path: str | Path, *, k: int = 16,
                 capture: bool = False, rho: float = 0.2):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"analysis.track_every={every!r}: expected an integer >= 1 or null")
        self.model, self.every, self.path = model, every, Path(path)
        self.k, self.capture, self.rho = k, capture, rho
        self.cache: dict[str, dict] | None = None
        self.setup_s: float | None = None

    # ------------------------------------------------------------------ setup
    def prepare(self) -> None:
        """Per matrix: W0's head, ||W0||^2 and (capture) the initial subspaces, once."""
        import geora
        from geora.geometry.premise import capture_chance, initial_subspaces

        start = time.perf_counter()
        self.cache = {}
        with torch.no_grad():
            for u in geora.weight_updates(self.model):
                w0 = u.w0
                k = min(self.k, *w0.shape)
                entry = {"head": _head(w0, k), "w0_energy": float(w0.double().square().sum()),
                         # S_Head "either"'s chance = the reach chance of a k, k pair
                         "chance": capture_chance(tuple(w0.shape), k, k)["reach"]}
                if self.capture:
                    subs = initial_subspaces(w0, k, self.rho, where=u.module)
                    entry["subspaces"] = subs
                    entry["capture_chance"] = {
                        n: capture_chance(tuple(w0.shape), 0 if b is None else b.shape[1],
                                          0 if a is None else a.shape[1])
                        for n, (b, a) in subs.items()}
                self.cache[u.module] = entry
        self.setup_s = time.perf_counter() - start

    # ---------------------------------------------------------------- measure
    def measure(self) -> dict:
        """The geometry record of the model's current update (module docstring)."""
        import geora
        from geora.geometry.premise import SIDES, capture, module_type, reach_of_head

        if self.cache is None:
            self.prepare()
        start = time.perf_counter()
        rows = []
        with torch.no_grad():
            for u in geora.weight_updates(self.model):
                c = self.cache[u.module]
                energy = float(u.delta.double().square().sum())
                row = {"type": module_type(u.module), "energy": energy, "w0": c["w0_energy"],
                       "s_head": reach_of_head(u.delta, *c["head"]), "chance": c["chance"],
                       "nss_delta": (energy / c["w0_energy"]) ** 0.5 if c["w0_energy"] else None}
                if self.capture:
                    row["capture"] = {n: capture(u.delta, b, a) for n, (b, a) in c["subspaces"].items()}
                    row["capture_chance"] = c["capture_chance"]
                rows.append(row)
        rec = _pool(rows)
        rec["by_type"] = {t: {k: v for k, v in _pool([r for r in rows if r["type"] == t]).items()
                              if k in ("s_head", "nss_delta")}
                          for t in dict.fromkeys(r["type"] for r in rows)}
        if self.capture:
            names = list(rows[0]["capture"]) if rows else []
            for part, key in (("capture", "capture"), ("chance", "capture_chance")):
                rec[part] = {n: {s: _weighted(rows, lambda r: r[key][n][s]) for s in SIDES}
                             for n in names}
        rec["time_s"] = time.perf_counter() - start
        return rec

    # -------------------------------------------------------------- callbacks
    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or state.global_step % self.every:
            return
        first = self.cache is None
        rec = self.measure()
        if first:
            rec["setup_s"] = self.setup_s
        line = {"step": state.global_step, "time": time.time(), "geometry": rec}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
        if "wandb" in (args.report_to or []):
            _to_wandb(rec, state.global_step)


def _weighted(rows: list[dict], pick) -> float | None:
    return energy_weighted(rows, pick, energy="energy")


def _pool(rows: list[dict]) -> dict:
    nss = [r["nss_delta"] for r in rows if r["nss_delta"] is not None]
    w0 = sum(r["w0"] for r in rows)
    return {"s_head": _weighted(rows, lambda r: r["s_head"]),
            "s_head_chance": _weighted(rows, lambda r: r["chance"]),
            "nss_delta": sum(nss) / len(nss) if nss else None,
            "rel_update_norm": (sum(r["energy"] for r in rows) / w0) ** 0.5 if w0 else None}


def _flat(d: dict, prefix: str) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        elif v is not None:
            out[f"{prefix}{k}"] = v
    return out


def _to_wandb(rec: dict, step: int) -> None:
    """The record under geometry/..., on the Trainer's step axis (train/global_step, the
    step metric transformers' WandbCallback defines)."""
    import wandb

    if wandb.run is not None:
        wandb.log({**_flat(rec, "geometry/"), "train/global_step": step})


def geometry_callbacks(settings: AnalysisSettings, model, log_path) -> list:
    """[GeometryCallback] when analysis.track_every is set, else []. FullFT needs its W0
    kept (analysis.keep_initial, which the pipeline then asks for; checks.check_run_inputs
    refuses track_every without it)."""
    from geora.kinds import prepared_state
    from geora.methods import DEFAULT_RHO
    from geora.training.weight_analysis import premise_applies

    if settings.track_every is None:
        return []
    state = prepared_state(model)
    return [GeometryCallback(model, settings.track_every, log_path, k=settings.k,
                             capture=premise_applies(state), rho=state.rho or DEFAULT_RHO)]
