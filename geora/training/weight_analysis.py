"""The weight analysis of a trained model: the step `analyse` of every run (layer 4).

    settings = run_settings.analysis     # (geora.config.sections.AnalysisSettings, checked)
    summary = analyse_model(model, settings)                # geora.geometry.summary's schema
    record = write_analysis(run_folder, summary, train_runtime_s=812.0)  # -> results.json

It feeds the method kind's exact fp32 updates (`geora.weight_updates`: W0, dW one module
at a time) to `geora.geometry.summary.summarise_updates`, with, for the GeoRA family, the masks
M_spec and M_euc of every matrix. The kinds do not keep the masks (a bool per weight entry
would double a large model's memory), so they are recomputed here, one module at a time,
from W0 with the method's own settings as the prepared model records them (rank, rho and
the options svd, niter, seed): `geora.init.geora_masks`, the function training called.
For a residual method W0 is W_res + s B0 A0 in fp32, the original weight up to the one
rounding of W_res to the model's dtype, so entries within that rounding of a threshold may
fall on the other side: measured on the micro model, 8 of 1.6M entries (fp32) and 0.05-0.07%
of the entries (bf16) differ from the masks training built. The record gives the largest
relative difference of the mask counts against those recorded at preparation
(`masks.count_rel_diff_max`; null where none were recorded: SparseFT, other methods).

Cost: three SVDs per matrix (exact up to `exact_max_dim` on the short side, randomized
top-k above it), two exact `svdvals` for NSS full (capped by `nss_full_max_numel`), and for
the masks one rank-r randomized SVD. FullFT needs W0, kept as a CPU copy of the hidden
linear weights when the method is prepared (`keep_initial`; the pipeline asks for it when
the analysis is on): a model-sized copy in the weights' dtype, in host memory.
"""
from __future__ import annotations

import logging
from typing import Iterator

import torch

from geora.config.sections import MASK_CHOICES, SVD_CHOICES, AnalysisSettings  # noqa: F401

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"          # in the run folder's analysis/: the per-matrix detail


class NonFiniteUpdate(ValueError):
    """A trained weight holds NaN or Inf (the run diverged): there is no update to read."""


def mask_settings(state, which: str) -> dict | None:
    """geora_masks' arguments for a prepared model's state (GeoraState), or None when this
    run gets no masks under `which` (MASK_CHOICES)."""
    from geora.methods import DEFAULT_RANK, DEFAULT_RHO, SVD_DEFAULT, get_method

    if which == "none" or (which == "auto" and not get_method(state.method).analysis_masks):
        return None
    opts = state.options or {}
    return {"rank": state.rank or DEFAULT_RANK, "rho": state.rho or DEFAULT_RHO,
            "svd": opts.get("svd", SVD_DEFAULT), "niter": opts.get("niter"),
            "seed": opts.get("seed", 0)}


def update_items(model, masks: dict | None, checks: dict | None = None) -> Iterator[tuple]:
    """(name, W0, dW[, {"spec": M_spec, "euc": M_euc}]) per target matrix, one at a time.
    `checks` (a dict) collects, per module, the largest relative difference between the
    recomputed masks' counts (M_spec, M_euc, their intersection) and those recorded at
    preparation (modules without a record are left out)."""
    import geora
    from geora.init import geora_masks
    from geora.kinds import prepared_state
    from geora.linalg import mask_stats

    recorded = prepared_state(model).mask_stats or {}
    for u in geora.weight_updates(model):
        if not bool(torch.isfinite(u.delta).all()):
            raise NonFiniteUpdate(f"{u.module}: the trained weight holds NaN or Inf entries "
                                  f"(the run diverged)")
        if masks is None:
            yield u.module, u.w0, u.delta
            continue
        spec, euc = geora_masks(u.w0, masks["rank"], masks["rho"], svd=masks["svd"],
                                niter=masks["niter"], seed=masks["seed"])
        old = recorded.get(u.module) or {}
        if checks is not None and "count_intersection" in old:
            new = mask_stats(spec, euc)
            checks[u.module] = max(abs(new[c] - old[c]) / max(old[c], 1) for c in
                                   ("count_a", "count_b", "count_intersection"))
        yield u.module, u.w0, u.delta, {"spec": spec, "euc": euc}
        del spec, euc


def needs_initial_weights(method: str) -> bool:
    """Whether `method` keeps W0 only when asked (prepare_model's keep_initial: FullFT)."""
    from geora.methods import KEEP_INITIAL, get_method

    return KEEP_INITIAL in get_method(method).options


def premise_applies(state) -> bool:
    """Whether a prepared model's update is unconstrained enough to test the premise on
    (geora.geometry.premise): the full-update kinds, FullFT and SparseFT."""
    from geora.kinds import FULL, SPARSE

    return state.kind in (FULL.name, SPARSE.name)


def analyse_model(model, settings: AnalysisSettings) -> dict:
    """geora.geometry.summary.summarise_updates of a prepared (trained) model, with masks as
    `settings.masks` says; adds "masks" (the settings used and the count check) and, for a
    full-update method with `settings.premise`, "premise" (geora.geometry.premise.premise_summary at
    r = k, rho = the method's or the paper's)."""
    from geora.geometry.summary import summarise_updates
    from geora.kinds import prepared_state

    state = prepared_state(model)
    masks = mask_settings(state, settings.masks)
    checks: dict[str, float] = {}
    with torch.no_grad():
        summary = summarise_updates(
            update_items(model, masks, checks), k=settings.k, svd=settings.svd,
            exact_max_dim=settings.exact_max_dim,
            nss_full_max_numel=settings.nss_full_max_numel, modules=True,
            progress=settings.progress, total=len(state.targets))
    summary["masks"] = None if masks is None else {
        **masks, "source": "recomputed from W0 (geora.init.geora_masks)",
        "count_rel_diff_max": max(checks.values()) if checks else None}
    if settings.premise and premise_applies(state):
        from geora.methods import DEFAULT_RHO
        from geora.geometry.premise import premise_summary

        with torch.no_grad():
            summary["premise"] = premise_summary(update_items(model, None), r=settings.k,
                                                 rho=state.rho or DEFAULT_RHO)
    return summary


def results_record(summary: dict, train_runtime_s: float | None = None) -> dict:
    """What results.json["analysis"] keeps: everything but the per-matrix detail, plus the
    analysis' time as a share of the training time."""
    record = {k: v for k, v in summary.items() if k != "modules"}
    if "premise" in record:     # its per-matrix detail stays in summary.json too
        record["premise"] = {k: v for k, v in record["premise"].items() if k != "modules"}
    record["file"] = f"analysis/{SUMMARY_FILE}"
    if train_runtime_s:
        record["time_share_of_training"] = summary["time_s"] / train_runtime_s
    return record


def write_analysis(folder, summary: dict, *, modules: bool = True,
                   train_runtime_s: float | None = None) -> dict:
    """Write the summary to <run>/analysis/summary.json (atomic; the per-matrix detail only
    with `modules`) and return the results.json record (`results_record`)."""
    from geora.fileio import atomic_write_json

    record = results_record(summary, train_runtime_s)
    full = summary if modules else {k: v for k, v in results_record(summary).items()
                                    if k in summary}
    atomic_write_json(folder.analysis / SUMMARY_FILE, full)
    return record
