"""Figures of the weight analysis: S_Head and NSS per layer (results.json["analysis"]), the
overlap of GeoRA's masks (adapter/mask_stats.json) and one matrix's spectrum before and
after training. Registered for the CLI in analysis/figures.py, which re-exports them.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.figkit import _band, _num, _save, _skip, analysis_of, groups, source_text  # noqa: E402
from analysis.runs import finished  # noqa: E402
from geora.persistence import STATS_FILE  # noqa: E402
from geora.training.rundir import RunFolder  # noqa: E402


def _per_layer(runs, pick):
    """{label: (layers, per-seed rows)} of pick(layer_agg) from results.json["analysis"]."""
    out = {}
    for label, sel in groups(runs):
        rows = [a["by_layer"] for a in (analysis_of(r) for _, r in sel.iterrows())
                if a and a.get("by_layer")]
        if not rows:
            continue
        layers = sorted({int(i) for r in rows for i in r}, key=int)
        out[label] = (layers, [[_num(pick(r.get(str(i), {}))) for i in layers] for r in rows])
    return out


def s_head_per_layer(runs: pd.DataFrame, out: Path, reading: str | None = None) -> list[Path] | None:
    """S_Head per layer, one line per method (seed bands); dotted: each one's chance level."""
    rows = [a for a in (analysis_of(r) for _, r in finished(runs).iterrows()) if a]
    if not rows:
        return _skip("s_head_per_layer", "no run has results.json['analysis']")
    reading = reading or rows[0].get("default_reading", "either")
    data = _per_layer(runs, lambda agg: (agg.get("s_head") or {}).get(reading))
    chance = _per_layer(runs, lambda agg: (agg.get("s_head_chance") or {}).get(reading))
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (layers, vals) in data.items():
        line = _band(ax, layers, vals, label, marker="o")
        if label in chance:
            c_layers, c_vals = chance[label]
            ax.plot(c_layers, np.nanmean(c_vals, axis=0), ":", color=line.get_color())
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"S_Head ({reading}, k={rows[0].get('k', '?')})")
    ax.set_ylim(0, 1.02)
    ax.set_title("Share of the update in W0's top-k subspace (dotted: chance level)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, out, source_text(runs))


def nss_per_layer(runs: pd.DataFrame, out: Path) -> list[Path] | None:
    """NSS per layer in its three scopes (full, top-k, delta), one line per method."""
    panels = {s: _per_layer(runs, lambda agg, s=s: (agg.get("nss") or {}).get(s))
              for s in ("full", "topk", "delta")}
    if not any(panels.values()):
        return _skip("nss_per_layer", "no run has results.json['analysis']")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, (scope, data) in zip(axes, panels.items()):
        for label, (layers, vals) in data.items():
            _band(ax, layers, vals, label, marker="o")
        ax.set_title(f"NSS {scope}", fontsize=9)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("normalised spectral shift")
    axes[-1].legend(fontsize=7)
    return _save(fig, out, source_text(runs))


def mask_overlap(mask_stats: dict | None, out: Path, source: str = "") -> list[Path] | None:
    """Jaccard and intersection of M_spec and M_euc per layer x module type, with the
    aggregates over each row and column (summed counts), from a mask_stats.json dict."""
    from geora.geometry.summary import layer_index, module_type, type_sort_key
    from geora.linalg import stats_from_counts

    modules = (mask_stats or {}).get("modules") or {}
    modules = {n: s for n, s in modules.items() if "count_union" in s}
    if not modules:
        return _skip("mask_overlap", "no mask_stats.json with M_spec / M_euc counts")
    layers = sorted({layer_index(n) for n in modules} - {None})
    types = sorted({module_type(n) for n in modules}, key=type_sort_key)
    count_keys = ("n", "count_a", "count_b", "count_intersection", "count_union")

    def cell(sel):
        if not sel:
            return None
        return stats_from_counts({k: sum(s[k] for s in sel) for k in count_keys})

    grid = [[cell([s for n, s in modules.items() if layer_index(n) == li and module_type(n) == t])
             for t in types] for li in layers]
    for r, li in enumerate(layers):
        grid[r].append(cell([s for n, s in modules.items() if layer_index(n) == li]))
    grid.append([cell([s for n, s in modules.items() if module_type(n) == t]) for t in types]
                + [cell(list(modules.values()))])
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(grid) + 2))
    for ax, key, paper in zip(axes, ("jaccard", "intersection"), (0.128, 0.0455)):
        vals = np.array([[np.nan if c is None else c[key] for c in row] for row in grid])
        im = ax.imshow(vals, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(vals):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(len(types) + 1), [*types, "all"])
        ax.set_yticks(range(len(grid)), [*map(str, layers), "all"])
        ax.set_xlabel("module type")
        ax.set_ylabel("layer")
        ax.set_title(f"{key} of M_spec and M_euc (paper, Qwen3-8B: {paper})", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.04)
    return _save(fig, out, source or "source: mask statistics given in memory")


def singular_spectra(w0, w1, out: Path, name: str = "", source: str = "", k: int = 16) -> list[Path]:
    """Singular values of one matrix before (W0) and after (W1) training, and their change."""
    import torch

    s0 = torch.linalg.svdvals(torch.as_tensor(w0).float()).cpu().numpy()
    s1 = torch.linalg.svdvals(torch.as_tensor(w1).float()).cpu().numpy()
    i = np.arange(1, len(s0) + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.semilogy(i, s0, label="before (W0)")
    a.semilogy(i, s1, "--", label="after (W1)")
    b.plot(i, s1 - s0)
    for ax in (a, b):
        ax.axvline(k, color="0.6", lw=0.8, ls=":")
        ax.set_xlabel("index i (dotted: k)")
    a.set_ylabel("singular value")
    b.set_ylabel("sigma_i(W1) - sigma_i(W0)")
    a.set_title(f"spectrum {name}".strip(), fontsize=9)
    a.legend(fontsize=7)
    return _save(fig, out, source or f"source: tensors given in memory ({name or 'one matrix'})")


def mask_stats_of(runs: pd.DataFrame) -> tuple[dict | None, str]:
    """The first finished run's adapter/mask_stats.json (masks depend on the model only)."""
    for _, row in finished(runs).iterrows():
        path = RunFolder(str(row.get("run_dir", ""))).adapter / STATS_FILE
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8")), f"source: {path}"
    return None, ""

