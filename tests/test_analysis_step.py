"""The weight analysis at the end of every run: a 2-step tiny run of each method kind writes
results.json["analysis"] in geora.geometry.summary's schema and analysis/summary.json beside it.

    .venv/bin/python -m pytest -q tests/test_analysis_step.py
"""
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import geora
from geora.geometry import metrics
from geora import rewards
from geora.training.weight_analysis import AnalysisSettings, analyse_model, update_items
from tests.conftest import build_tiny_qwen3

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")
TINY = ["train.max_steps=2", "train.num_generations=4", "train.prompts_per_step=2",
        "train.max_completion_length=8", "train.save_steps=100", "train.logging_steps=1",
        "train.rewards=[test_length]", "data.train_size=16", "data.test_size=2", "eval=none",
        "eval_before=false", "model.random_init=true", "model.bundled=null",
        "model.arch.hidden_size=64", "model.arch.num_hidden_layers=2",
        "model.arch.intermediate_size=128", "model.arch.head_dim=16", "method.rank=4",
        "analysis.k=4", "analysis.progress=false"]
AGG_KEYS = {"n_matrices", "n_params", "update_energy", "s_head", "s_head_chance", "nss",
            "head_cos_mean", "unchanged_frac", "zero_frac"}


@pytest.fixture(autouse=True)
def test_reward(monkeypatch):
    def length_reward(completions, **_):   # varies within a group: non-zero advantages
        return [len(rewards.completion_text(c)) / 40.0 for c in completions]
    monkeypatch.setitem(rewards.REWARDS, "test_length", length_reward)


def config(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=TINY + list(overrides))


# one method of each kind: residual (with masks), peft, sparse (with masks), full
@pytest.mark.parametrize("method,masked", [("geora", True), ("lora", False),
                                           ("sparseft", True), ("fullft", False)])
def test_a_run_writes_its_weight_analysis(method, masked, tmp_path):
    from geora.training.pipeline import train

    overrides = [f"method={method}"]
    if method == "fullft":
        overrides.append("method.rank=null")
    res = train(config(*overrides), tmp_path)
    a = json.loads((tmp_path / "results.json").read_text())["analysis"]
    assert a == json.loads(json.dumps(res["analysis"]))
    assert a["schema"] == 1 and a["k"] == 4 and a["n_matrices"] == 14   # 2 layers x 7
    assert AGG_KEYS <= set(a["overall"]) and "modules" not in a
    assert sorted(a["by_type"]) == sorted(["q", "k", "v", "o", "gate", "up", "down"])
    assert sorted(a["by_layer"]) == ["0", "1"]
    overall = a["overall"]
    assert overall["update_energy"] > 0                 # two steps moved the weights
    reading = a["default_reading"]
    assert 0 <= overall["s_head"][reading] <= 1 and 0 < overall["s_head_chance"][reading] < 1
    assert overall["nss"]["full"] is not None and overall["unchanged_frac"] < 1
    assert ("masks" in overall) == masked
    if masked:
        assert a["masks"]["rank"] == 4 and a["masks"]["rho"] == 0.2
        diff = a["masks"]["count_rel_diff_max"]   # rounding of W_res may move a tie or two
        assert diff is None if method == "sparseft" else 0 <= diff < 1e-2
        assert 0 < overall["masks"]["union"]["mask_frac"] < 1
    if method == "sparseft":   # its update lies in GeoRA's union mask by construction
        assert overall["masks"]["union"]["energy_in_mask"] == pytest.approx(1.0)
        assert overall["masks"]["spec"]["energy_in_mask"] < 1
    detail = json.loads((tmp_path / "analysis" / "summary.json").read_text())
    assert len(detail["modules"]) == 14 and detail["overall"] == a["overall"]
    assert a["time_s"] > 0 and a["time_share_of_training"] > 0


def test_fullft_keeps_its_initial_weights_only_for_the_analysis(tmp_path):
    """keep_initial is asked for FullFT alone, and only while the analysis (or the geometry
    callback) may keep W0;
    without W0 the analysis records why it was skipped (no model needed to decide)."""
    from geora.training.pipeline import Run, analyse, keeps_initial
    from geora.training.rundir import RunFolder
    from geora.training.settings import RunSettings

    assert keeps_initial(RunSettings.from_config(config("method=fullft", "method.rank=null")))
    assert not keeps_initial(RunSettings.from_config(config("method=lora")))
    # the geometry callback (analysis.track_every) reads dW while training: it keeps W0 too
    assert keeps_initial(RunSettings.from_config(config(
        "method=fullft", "method.rank=null", "analysis.enabled=false", "analysis.track_every=5")))
    records = {}
    for off in ("analysis.keep_initial=false", "analysis.enabled=false"):
        cfg = config("method=fullft", "method.rank=null", off, "analysis.track_every=null")
        assert not keeps_initial(RunSettings.from_config(cfg))
        run = Run(RunSettings.from_config(cfg), RunFolder(tmp_path))
        analyse(run, {})          # run.model is None: neither case may touch it
        records[off] = run.analysis
    assert "keep_initial=false" in records["analysis.keep_initial=false"]["skipped"]
    assert records["analysis.enabled=false"] == {}      # off: no "analysis" in results.json
    assert not (tmp_path / "analysis").exists()


def test_recomputed_masks_are_the_training_masks():
    """The masks the analysis recomputes from W0 are, up to entries at a threshold that
    W_res's rounding moves (fp32: a few per matrix), the ones geora_init built from the
    original weight; a different rho would be noticed."""
    from geora.init import geora_init

    base = build_tiny_qwen3(seed=0)
    original = {n: m.weight.detach().clone() for n, m in base.named_modules()
                if isinstance(m, torch.nn.Linear) and n.endswith("_proj")}
    model = geora.prepare_model(base, "geora", rank=4, rho=0.2)
    for settings, same in (({"rank": 4, "rho": 0.2, "svd": "randomized", "niter": None,
                             "seed": 0}, True),
                           ({"rank": 4, "rho": 0.3, "svd": "randomized", "niter": None,
                             "seed": 0}, False)):
        for name, _w0, _dw, masks in update_items(model, settings):
            f = geora_init(original[name], rank=4, rho=0.2)
            flips = int((masks["spec"] != f.mask_spec).sum() + (masks["euc"] != f.mask_euc).sum())
            assert (flips <= 4) == same, (name, flips)


def test_summary_reads_a_known_update():
    """A PiSSA-style update (W0's own head triplets scaled) is wholly in the head: S_Head 1
    under the default reading, far above its chance level."""
    model = geora.prepare_model(build_tiny_qwen3(seed=0), "pissa", rank=4)
    state = geora.surgery.get_state(model)
    with torch.no_grad():   # train by hand: B <- 2 B0 doubles the head part of W
        for name in state.targets:
            layer = geora.surgery.lora_layer(model, name)
            layer.lora_B[geora.surgery.ADAPTER].weight.mul_(2.0)
    s = analyse_model(model, AnalysisSettings(k=4, progress=False))
    reading = metrics.DEFAULT_READING
    assert s["overall"]["s_head"][reading] == pytest.approx(1.0, abs=1e-5)
    assert s["overall"]["s_head_chance"][reading] < 0.5 and s["masks"] is None


def test_a_diverged_update_is_refused_by_name():
    """NaN weights after training: the pipeline records the analysis as skipped (the run's
    scores stand) instead of failing the run."""
    from geora.training.weight_analysis import NonFiniteUpdate

    model = geora.prepare_model(build_tiny_qwen3(seed=0), "lora", rank=4)
    with torch.no_grad():
        geora.surgery.lora_layer(model, "model.layers.1.mlp.up_proj") \
            .lora_B[geora.surgery.ADAPTER].weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteUpdate, match=r"model.layers.1.mlp.up_proj: .*NaN"):
        analyse_model(model, AnalysisSettings(k=4, progress=False))


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match=r"analysis.masks='some'"):
        AnalysisSettings.from_config({"masks": "some"})
    with pytest.raises(ValueError, match=r"unknown analysis setting kk; the analysis settings are: "):
        AnalysisSettings.from_config({"kk": 3})
    from geora.training.settings import RunSettings
    with pytest.raises(ValueError, match=r"analysis.nss_full_max_numel=0"):
        RunSettings.from_config(config("analysis.nss_full_max_numel=0"))


def test_the_config_block_and_the_settings_defaults_agree():
    """conf/config.yaml's analysis block is AnalysisSettings' defaults, key for key (so the
    analysis of a run and of a Python call agree), and k is the paper's r."""
    from geora.methods import DEFAULT_RANK

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config")
        paper = compose("config", overrides=["train=paper"])
    # track_every's default follows the train recipe (micro: on; paper: off, as in Python)
    assert AnalysisSettings.from_config(cfg.analysis) == AnalysisSettings(track_every=10)
    assert AnalysisSettings.from_config(paper.analysis).track_every is None
    assert AnalysisSettings().k == DEFAULT_RANK
