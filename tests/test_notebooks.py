"""Every notebook executes top to bottom, on a tiny sweep built here: run folders of a
2-layer random Qwen3 whose adapters are moved by hand (no training), with the weight
analysis, evaluations and reward curves a real run writes. The kernel runs one thread."""
import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TINY_MODEL = ["model.random_init=true", "model.bundled=null", "model.arch.hidden_size=64",
              "model.arch.num_hidden_layers=2", "model.arch.intermediate_size=128",
              "model.arch.head_dim=16", "method.rank=4", "analysis.k=4", "analysis.progress=false"]
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")


def _config(method: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["experiment=micro_lr_study", f"method={method}",
                                            *TINY_MODEL])


def _tiny_run(root: Path, cfg, scale: str, seed: int) -> None:
    """One run folder as run.py writes it, its adapter moved by `seed`-drawn steps."""
    import geora
    from geora.models import load_model
    from geora.training.pipeline import method_kwargs
    from geora.training.rundir import RunFolder
    from geora.training.weight_analysis import AnalysisSettings, analyse_model, write_analysis

    cfg = cfg.copy()
    cfg.lr_scale, cfg.seed = scale, seed          # train.learning_rate follows lr_scale
    method = str(cfg.method.name)
    run = RunFolder(root / f"lr_scale={scale},method={method},seed={seed}")
    run.write_config(cfg)
    model, _ = load_model(cfg.model)
    model = geora.prepare_model(model, method, **method_kwargs(cfg.method))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    geora.save_adapter(model, run.adapter)
    analysis = write_analysis(run, analyse_model(model, AnalysisSettings.from_config(cfg.analysis)))
    rewards = [0.3 + 0.01 * i + 0.05 * seed for i in range(20)]
    run.write_results({
        "status": "finished", "method": method, "model": "micro", "data": "micro_math",
        "seed": seed, "run_dir": str(run.path),
        "train": {"steps": 20, "reward_per_step": rewards, "reward_end": rewards[-1]},
        "eval": {"micro_math_1k": 50.0 + seed + (method == "geora"), "micro_reverse_1k": 98.0 - seed,
                 "micro_sort_1k": 75.0 + seed},
        "analysis": analysis})


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # (module fixtures run before the one-thread fixture)
    try:
        for method in ("geora", "lora"):
            cfg = _config(method)
            for scale in ("x1", "x4"):
                for seed in (0, 1):
                    _tiny_run(root, cfg, scale, seed)
    finally:
        torch.set_num_threads(threads)
    (root / "base").mkdir()
    (root / "base" / "eval_results.json").write_text(json.dumps(
        {"scores": {"micro_math_1k": 48.9, "micro_reverse_1k": 99.8, "micro_sort_1k": 76.8}}))
    return root


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tiny_sweep, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    # the kernel inherits this environment: the tiny sweep, one thread, this checkout
    monkeypatch.setenv("GEORA_SWEEP", str(tiny_sweep))
    monkeypatch.setenv("GEORA_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
                     + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "8 run folders" in text and "Base (untrained): {'micro_math_1k': 48.9" in text
    assert "± " in text and "(n=2)" in text                     # intervals over the two seeds
    pngs = sorted(p.name for p in (tmp_path / "figures").rglob("*.png"))
    assert pngs == ["geometry_over_training.png", "lr_robustness.png", "nss_per_layer.png",
                    "premise_layer.png", "premise_type.png", "reward_curves.png",
                    "s_head_per_layer.png", "spectra.png"], pngs
    # the premise section: the tiny sweep has no full-update run (one line), the shipped study does
    assert "this sweep: the premise table needs runs of a full-update method" in text
    assert "the shipped premise study:" in text and "PiSSA (W0 top-r)" in text
