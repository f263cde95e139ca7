"""Every figure writes a PNG and a PDF from a tiny synthetic sweep, or skips with a note."""
import json

import pandas as pd
import pytest
import torch

from analysis import figures
from geora.geometry.summary import summarise_updates
from analysis.tables import collect_runs
from geora.linalg import mask_stats

NAMES = [f"model.layers.{i}.{leaf}" for i in range(2) for leaf in ("self_attn.q_proj", "mlp.up_proj")]


def _analysis(seed):
    g = torch.Generator().manual_seed(seed)
    ups = [(n, torch.randn(16, 12, generator=g), 0.01 * torch.randn(16, 12, generator=g)) for n in NAMES]
    return summarise_updates(ups, k=2, progress=False, modules=False)


def _write(root, method, seed, lr, rank=16, rho=0.2, fullft=False):
    d = root / f"{method}_lr{lr}_r{rank}_rho{rho}" / f"seed{seed}"
    d.mkdir(parents=True)
    rec = {"status": "finished", "method": method, "model": "micro", "data": "micro_math", "seed": seed,
           "train": {"reward_per_step": [0.1 * seed + 0.01 * i for i in range(12)], "reward_end": 0.4 + 0.1 * seed,
                     "trainable_params": 1000 if fullft else 100, "step_time_s": 1.0 + 0.1 * seed,
                     "peak_memory_gib": 2.0 if fullft else 1.5},
           "eval": {"micro_math": 50.0 + seed + 1000 * lr + rank / 8}, "eval_before": {"micro_math": 50.0},
           "analysis": _analysis(seed)}
    (d / "results.json").write_text(json.dumps(rec))
    (d / "config.yaml").write_text(f"train:\n  learning_rate: {lr}\nmethod:\n  rank: {rank}\n  rho: {rho}\n")
    if method == "geora":
        g = torch.Generator().manual_seed(seed)
        stats = {n: mask_stats(torch.rand(16, 12, generator=g) < 0.2, torch.rand(16, 12, generator=g) < 0.2)
                 for n in NAMES}
        (d / "adapter").mkdir()
        (d / "adapter" / "mask_stats.json").write_text(json.dumps({"modules": stats}))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    for seed in (0, 1):
        for method in ("geora", "pissa"):
            for lr in (1e-4, 5e-4):
                _write(root, method, seed, lr)
        _write(root, "fullft", seed, 5e-5, fullft=True)
    _write(root, "geora", 0, 1e-4, rank=8, rho=0.1)
    return root, collect_runs(root)


def _written(paths):
    assert paths is not None and [p.suffix for p in paths] == [".png", ".pdf"]
    for p in paths:
        assert p.stat().st_size > 1000, p


def test_singular_spectra_and_the_return_contract(tmp_path):
    w0 = torch.randn(20, 10, generator=torch.Generator().manual_seed(0))
    _written(figures.singular_spectra(w0, w0 + 0.1, tmp_path / "spectra", name="q_proj", k=3))


def test_groups_split_by_varying_hyperparameters_and_source_names_runs(sweep):
    root, runs = sweep
    labels = [label for label, _ in figures.groups(runs)]
    assert "fullft" in labels and "pissa lr=0.0001" in labels
    assert "geora lr=0.0001 rank=8 rho=0.1" in labels
    text = figures.source_text(runs)
    assert str(root) in text and "geora n=5" in text and "fullft n=2" in text


def test_every_registered_figure_skips_missing_data_with_a_note(tmp_path, capsys):
    runs = pd.DataFrame([{"method": "lora", "seed": 0, "status": "finished", "lr": 1e-4,
                          "run_dir": str(tmp_path / "run")}])
    for name, make in figures.FIGURES.items():
        assert make(runs, tmp_path / "x", {}) is None, name
        assert f"skipped {name}:" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


def test_missing_data_is_skipped_with_a_note(tmp_path, capsys):
    runs = pd.DataFrame([{"method": "lora", "seed": 0, "status": "finished", "lr": 1e-4}])
    for make in (figures.s_head_per_layer, figures.nss_per_layer, figures.reward_curves_figure,
                 figures.lr_robustness, figures.rank_rho_heatmap, figures.efficiency,
                 figures.eval_scores_figure):
        assert make(runs, tmp_path / "x") is None
    assert figures.mask_overlap(None, tmp_path / "x") is None
    notes = capsys.readouterr().out
    for name in ("s_head_per_layer", "nss_per_layer", "reward_curves", "lr_robustness",
                 "rank_rho_heatmap", "efficiency", "eval_scores", "mask_overlap"):
        assert f"skipped {name}:" in notes
    assert not list(tmp_path.iterdir())                                # nothing half-written


def test_cli_writes_every_run_level_figure(sweep, tmp_path, capsys):
    """Each run-level figure function, called by the CLI on the sweep: PNG and PDF."""
    root, runs = sweep
    stats, src = figures.mask_stats_of(runs)
    assert stats is not None and src.endswith("mask_stats.json")
    figures.main([str(root), "--out", str(tmp_path), "--window", "3"])
    out = capsys.readouterr().out
    # this sweep has every run-level reading but no premise (no full-update run records one)
    premise = {"premise_layer", "premise_type", "geometry_over_training"}
    assert premise < set(figures.FIGURES) and len(figures.FIGURES) == 8 + len(premise)
    for name in figures.FIGURES:
        if name in premise and f"skipped {name}:" in out:
            continue
        for ext in (".png", ".pdf"):
            assert (tmp_path / f"{name}{ext}").stat().st_size > 1000
    assert "wrote" in out
