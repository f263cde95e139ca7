"""The premise measurements (geora/geometry/premise.py), the results.json section and the geometry
callback (geora/training/geometry.py), on constructed matrices and tiny models.

    .venv/bin/python -m pytest -q tests/test_premise.py
"""
import json
from types import SimpleNamespace

import pytest
import torch

import geora
from geora.geometry import metrics
from geora.geometry import premise
from geora.training.geometry import GeometryCallback
from geora.training.weight_analysis import AnalysisSettings, analyse_model, results_record
from tests.conftest import build_tiny_qwen3


def _orth(x):
    return torch.linalg.qr(x)[0]


def test_capture_of_constructed_updates():
    """An update inside P_B only, P_A only, both, and neither: the shares are known."""
    g = torch.Generator().manual_seed(0)
    qb, qa = _orth(torch.randn(12, 3, generator=g)), _orth(torch.randn(8, 2, generator=g))
    out_b = _orth(torch.randn(12, 12, generator=g))[:, :1]
    out_b = _orth(out_b - qb @ (qb.T @ out_b))                   # unit, orthogonal to P_B
    out_a = torch.randn(8, 1, generator=g)
    out_a = _orth(out_a - qa @ (qa.T @ out_a))
    in_b, in_a = qb[:, :1], qa[:, :1]
    cases = {"left only": (in_b @ out_a.T, (1.0, 0.0, 1.0)),
             "right only": (out_b @ in_a.T, (0.0, 1.0, 1.0)),
             "both": (in_b @ in_a.T, (1.0, 1.0, 1.0)),
             "neither": (out_b @ out_a.T, (0.0, 0.0, 0.0)),
             "half each": (in_b @ out_a.T + out_b @ in_a.T, (0.5, 0.5, 1.0))}
    for name, (dw, want) in cases.items():
        got = premise.capture(3.0 * dw, qb, qa)
        assert [got[s] for s in premise.SIDES] == pytest.approx(want, abs=1e-5), name
    # the absent B side (LoRA): reach = right
    got = premise.capture(out_b @ in_a.T, None, qa)
    assert got["left"] is None and got["reach"] == pytest.approx(got["right"]) == pytest.approx(1.0)
    assert premise.capture(torch.zeros(12, 8), qb, qa) == {"left": None, "right": None, "reach": None}


def test_reach_of_the_head_is_s_head_either():
    """The identity the callback relies on, against geora.geometry.metrics' own S_Head."""
    g = torch.Generator().manual_seed(1)
    w0, dw = torch.randn(20, 14, generator=g), torch.randn(20, 14, generator=g)
    u, v = metrics.head_subspace(w0, 4)
    assert premise.reach_of_head(dw, u, v) == pytest.approx(metrics.s_head(dw, u, v, "either"), abs=1e-6)
    assert premise.capture_chance((20, 14), 4, 4)["reach"] == pytest.approx(
        metrics.s_head_chance("either", (20, 14), 4))


def test_chance_levels_are_the_mean_over_random_subspaces():
    """Closed-form chance vs the mean capture of a fixed dW by 400 random subspace pairs;
    a wrong formula (e.g. r/m + r/n without the overlap term, 0.55 here) is far outside."""
    g = torch.Generator().manual_seed(2)
    dw = torch.randn(10, 6, generator=g) * torch.linspace(0.1, 3, 6)   # anisotropic, fixed
    draws = [premise.capture(dw, _orth(torch.randn(10, 3, generator=g)),
                             _orth(torch.randn(6, 2, generator=g))) for _ in range(400)]
    want = premise.capture_chance((10, 6), 3, 2)                  # 0.3, 1/3, 0.5333
    for side in premise.SIDES:
        assert sum(d[side] for d in draws) / 400 == pytest.approx(want[side], abs=0.025), side


def test_concentration_of_a_low_rank_update_and_a_gaussian():
    g = torch.Generator().manual_seed(3)
    low = torch.randn(40, 2, generator=g) @ torch.randn(2, 30, generator=g)
    c = premise.concentration(low, 4)
    assert c["top_r_share"] == pytest.approx(1.0, abs=1e-6) and c["rank90"] <= 2
    gauss = premise.gaussian_concentration((40, 30), 4)
    assert 0.1 < gauss["top_r_share"] < 0.5 and gauss["rank90"] > 15
    # the randomized path (above exact_max_dim) gives the top-r share, no rank90
    r = premise.concentration(low, 4, exact_max_dim=10)
    assert r["top_r_share"] == pytest.approx(1.0, abs=1e-4) and r["rank90"] is None
    assert premise.concentration(torch.zeros(5, 4), 2) == {"top_r_share": None, "rank90": None}


def test_initial_subspaces_are_each_methods_own():
    """PiSSA's pair is W0's top-r singular vectors, MiLoRA's its bottom-r; LoRA has no B side;
    the GeoRA family's bases have rank r."""
    g = torch.Generator().manual_seed(4)
    u, _ = torch.linalg.qr(torch.randn(24, 24, generator=g))
    v, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    s = torch.linspace(10, 1, 16)
    w0 = (u[:, :16] * s) @ v.T
    subs = premise.initial_subspaces(w0, 3, 0.2)
    assert set(subs) == set(premise.SUBSPACES)
    cos = metrics.principal_angle_cosines
    assert cos(subs["pissa"][0], u[:, :3]).min() > 0.999
    assert cos(subs["pissa"][1], v[:, :3]).min() > 0.999
    assert cos(subs["milora"][1], v[:, 13:]).min() > 0.999
    assert subs["lora"][0] is None and subs["lora"][1].shape == (16, 3)
    for name in premise.GEORA_FAMILY + ("random",):
        b, a = subs[name]
        assert b.shape == (24, 3) and a.shape == (16, 3), name
        assert torch.allclose(b.T @ b, torch.eye(3), atol=1e-5)


def test_summary_pools_by_update_energy():
    """Two matrices, one captured wholly by PiSSA's pair and 9x the energy of one outside
    it: the pooled reach is 0.9, not the plain mean 0.5."""
    g = torch.Generator().manual_seed(5)
    w0 = torch.randn(16, 12, generator=g)
    u, _, vh = torch.linalg.svd(w0)
    inside = 3.0 * torch.outer(u[:, 0], vh[0])                       # energy 9, in the head
    outside = torch.outer(u[:, -1], vh[-1])                          # energy 1, in the tail
    s = premise.premise_summary([("model.layers.0.mlp.up_proj", w0, inside),
                                 ("model.layers.1.mlp.up_proj", w0, outside)],
                                r=2, names=("pissa", "random"))
    assert s["overall"]["capture"]["pissa"]["reach"] == pytest.approx(0.9, abs=1e-3)
    assert s["by_layer"]["0"]["capture"]["pissa"]["reach"] == pytest.approx(1.0, abs=1e-4)
    assert s["overall"]["concentration"]["top_r_share"] == pytest.approx(1.0, abs=1e-5)
    assert list(s["by_type"]) == ["up"] and len(s["modules"]) == 2
    with pytest.raises(ValueError, match=r"unknown premise subspace\(s\) \['nope'\]"):
        premise.premise_summary([], names=("nope",))


def _moved_fullft(seed=0):
    model = geora.prepare_model(build_tiny_qwen3(seed=seed), "fullft", keep_initial=True)
    with torch.no_grad():   # a "training" step: a rank-1 push on every target
        g = torch.Generator().manual_seed(seed)
        for name in geora.surgery.get_state(model).targets:
            w = model.get_submodule(name).weight
            w.add_(1e-2 * torch.outer(torch.randn(w.shape[0], generator=g),
                                      torch.randn(w.shape[1], generator=g)))
    return model


def test_a_full_update_run_gets_a_premise_section_and_an_adapter_run_does_not():
    s = analyse_model(_moved_fullft(), AnalysisSettings(k=4, progress=False))
    p = s["premise"]
    assert p["r"] == 4 and p["n_matrices"] == 14 and len(p["modules"]) == 14
    assert set(p["overall"]["capture"]) == set(premise.SUBSPACES)
    # a rank-1 update: all of its energy in its top-4 directions, a Gaussian far below
    assert p["overall"]["concentration"]["top_r_share"] == pytest.approx(1.0, abs=1e-4)
    assert p["overall"]["concentration_gaussian"]["top_r_share"] < 0.6
    rec = results_record(s)
    assert "modules" not in rec["premise"] and "overall" in rec["premise"]
    assert "premise" not in analyse_model(_moved_fullft(), AnalysisSettings(k=4, progress=False,
                                                                            premise=False))
    lora = geora.prepare_model(build_tiny_qwen3(seed=0), "lora", rank=4)
    assert "premise" not in analyse_model(lora, AnalysisSettings(k=4, progress=False))


def test_track_every_must_be_positive():
    for bad in (0, -2, True, 1.5):
        with pytest.raises(ValueError, match=rf"analysis.track_every={bad!r}: expected an integer >= 1"):
            AnalysisSettings.from_config({"track_every": bad})
    with pytest.raises(ValueError, match=r"analysis.track_every=0"):
        GeometryCallback(None, 0, "x.jsonl")


def _steps(cb, steps):
    args = SimpleNamespace(report_to=[])
    for step in steps:
        cb.on_step_end(args, SimpleNamespace(global_step=step, is_world_process_zero=True), None)


def test_the_callback_logs_every_n_steps(tmp_path):
    """FullFT: records at the multiples of N only, with the capture shares; S_Head equals
    the end-of-run analysis' reading of the same update."""
    model = _moved_fullft()
    log = tmp_path / "train_log.jsonl"
    cb = GeometryCallback(model, 2, log, k=4, capture=True)
    _steps(cb, range(1, 6))
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]
    g = lines[0]["geometry"]
    assert set(g["capture"]) == set(premise.SUBSPACES) and "setup_s" in g
    assert "setup_s" not in lines[1]["geometry"]
    a = analyse_model(model, AnalysisSettings(k=4, progress=False, premise=False))
    assert g["s_head"] == pytest.approx(a["overall"]["s_head"]["either"], abs=1e-4)
    assert g["s_head_chance"] == pytest.approx(a["overall"]["s_head_chance"]["either"], abs=1e-6)
    assert g["nss_delta"] == pytest.approx(a["overall"]["nss"]["delta"], rel=1e-4)
    assert sorted(g["by_type"]) == sorted(["q", "k", "v", "o", "gate", "up", "down"])


def test_the_callback_on_an_adapter_logs_no_capture(tmp_path):
    model = geora.prepare_model(build_tiny_qwen3(seed=0), "geora", rank=4)
    cb = GeometryCallback(model, 1, tmp_path / "log.jsonl", k=4)
    _steps(cb, [1])
    g = json.loads((tmp_path / "log.jsonl").read_text())["geometry"]
    assert "capture" not in g and g["s_head"] is None      # nothing trained yet: dW = 0
    assert g["nss_delta"] == 0.0


def test_a_fullft_run_writes_geometry_records_and_its_premise(tmp_path, monkeypatch):
    """The issue's "done when" at tiny size: train.max_steps=4, analysis.track_every=2."""
    from geora import rewards
    from geora.training.pipeline import train
    from tests.test_analysis_step import config

    monkeypatch.setitem(rewards.REWARDS, "test_length",   # varies within a group
                        lambda completions, **_: [len(rewards.completion_text(c)) / 40.0
                                                  for c in completions])
    res = train(config("method=fullft", "method.rank=null", "train.max_steps=4",
                       "analysis.track_every=2"), tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "geometry" in x] == [2, 4]
    assert sum("reward" in x for x in lines) == 4        # the Trainer's own records are intact
    on_disk = json.loads((tmp_path / "results.json").read_text())["analysis"]["premise"]
    returned = res["analysis"]["premise"]["overall"]["capture"]
    assert on_disk["overall"]["capture"] == json.loads(json.dumps(returned))
    assert 0 < on_disk["overall"]["capture"]["pissa"]["reach"] <= 1
    assert res["train"]["reward_per_step"] and len(res["train"]["reward_per_step"]) == 4
