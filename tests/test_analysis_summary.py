"""The run-level analysis summary on synthetic updates whose answers are known."""
import json
import time
from pathlib import Path

import pytest
import torch

from geora.geometry import metrics
from geora.geometry.summary import analyse_matrix, layer_index, module_type, summarise_updates

SHAPES = {"self_attn.q_proj": (48, 48), "self_attn.k_proj": (24, 48), "mlp.up_proj": (96, 48),
          "mlp.down_proj": (48, 96)}
R = 4


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _weights(layers=2, seed=0):
    """name -> W0 with a decaying spectrum (sigma_i ~ i^-1/2, as trained weights have)."""
    out, g = {}, _gen(seed)
    for i in range(layers):
        for leaf, (o, n) in SHAPES.items():
            q1, _ = torch.linalg.qr(torch.randn(o, min(o, n), generator=g))
            q2, _ = torch.linalg.qr(torch.randn(n, min(o, n), generator=g))
            s = torch.arange(1, min(o, n) + 1, dtype=torch.float32) ** -0.5
            out[f"model.layers.{i}.{leaf}"] = (q1 * s) @ q2.T
    return out


def _pissa(w0, g, scale=1e-2):
    u, s, vh = torch.linalg.svd(w0, full_matrices=False)
    b0, a0 = u[:, :R] * s[:R].sqrt(), s[:R].sqrt()[:, None] * vh[:R]
    return (b0 + scale * torch.randn(b0.shape, generator=g)) @ (a0 + scale * torch.randn(a0.shape, generator=g)) - b0 @ a0


def _bottom(w0, g):
    u, _, vh = torch.linalg.svd(w0, full_matrices=False)
    return (u[:, -R:] * torch.rand(R, generator=g)) @ vh[-R:]       # W0's bottom triplets, both sides


def _updates(make, seed=1):
    g = _gen(seed)
    return [(n, w, make(w, g)) for n, w in _weights().items()]


def test_names_parse():
    assert module_type("model.layers.3.self_attn.q_proj") == "q"
    assert module_type("transformer.h.0.attn.c_attn") == "c_attn"
    assert layer_index("model.layers.12.mlp.up_proj") == 12
    assert layer_index("lm_head") is None


def test_pissa_random_bottom_and_zero_updates():
    k = R
    pissa = summarise_updates(_updates(_pissa), k=k, progress=False)
    assert pissa["default_reading"] == metrics.DEFAULT_READING
    assert json.loads(json.dumps(pissa, allow_nan=False))["by_layer"] == pissa["by_layer"]  # round trip
    assert pissa["overall"]["s_head"][metrics.DEFAULT_READING] >= 0.9
    for agg in (*pissa["by_type"].values(), *pissa["by_layer"].values()):
        assert agg["s_head"][metrics.DEFAULT_READING] >= 0.9

    rnd = summarise_updates(_updates(lambda w, g: torch.randn(w.shape, generator=g)), k=k, progress=False)
    for r in metrics.S_HEAD_READINGS:
        value, chance = rnd["overall"]["s_head"][r], rnd["overall"]["s_head_chance"][r]
        assert abs(value - chance) < 0.25 * chance + 0.005, (r, value, chance)
    assert pissa["overall"]["s_head"]["either"] > 3 * rnd["overall"]["s_head_chance"]["either"]

    bottom = summarise_updates(_updates(_bottom), k=k, progress=False)
    for r in metrics.S_HEAD_READINGS:
        assert bottom["overall"]["s_head"][r] < 1e-3, r

    zero = summarise_updates(_updates(lambda w, g: torch.zeros_like(w)), k=k, progress=False)
    text = json.dumps(zero, allow_nan=False)                          # JSON-able, no NaN
    o = json.loads(text)["overall"]
    assert all(v is None for v in o["s_head"].values()) and all(v is None for v in o["s_head_chance"].values())
    assert o["unchanged_frac"] == 1.0 and o["zero_frac"] == 1.0 and o["nss"]["delta"] == 0.0
    assert o["nss"]["full"] == 0.0 and o["head_cos_mean"] == pytest.approx(1.0, abs=1e-5)


def test_aggregates_weigh_s_head_by_energy_and_group_by_type_and_layer():
    w = _weights(layers=1)
    g = _gen(3)
    q, up = "model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj"
    ups = [(up, w[up], torch.zeros_like(w[up])), (q, w[q], _pissa(w[q], g)),
           ("lm_head", torch.randn(10, 48, generator=g), 0.1 * torch.randn(10, 48, generator=g))]
    s = summarise_updates(ups, k=R, progress=False)
    assert list(s["by_type"]) == ["q", "up", "lm_head"] and set(s["by_layer"]) == {"0"}
    assert s["by_layer"]["0"]["n_matrices"] == 2 and s["overall"]["n_matrices"] == 3
    mods = s["modules"]
    e_q, e_h = mods[q]["update_energy"], mods["lm_head"]["update_energy"]
    for r in metrics.S_HEAD_READINGS:                                  # the zero update weighs nothing
        assert s["by_layer"]["0"]["s_head"][r] == pytest.approx(mods[q]["s_head"][r])
        expect = (e_q * mods[q]["s_head"][r] + e_h * mods["lm_head"]["s_head"][r]) / (e_q + e_h)
        assert s["overall"]["s_head"][r] == pytest.approx(expect)
    # counts, not means: the unchanged fraction of all entries
    n = sum(m["n_params"] for m in mods.values())
    assert s["overall"]["unchanged_frac"] == pytest.approx(sum(m["count_unchanged"] for m in mods.values()) / n)
    assert s["overall"]["nss"]["delta"] == pytest.approx(sum(m["nss"]["delta"] for m in mods.values()) / 3)
    assert "modules" not in summarise_updates(ups, k=R, progress=False, modules=False)


def test_mask_overlaps_of_a_sparse_update():
    g = _gen(4)
    w0 = torch.randn(40, 30, generator=g)
    spec = torch.rand(40, 30, generator=g) < 0.2
    euc = torch.rand(40, 30, generator=g) < 0.2
    dw = torch.where(spec & ~euc, 0.5 * torch.randn(40, 30, generator=g).sign(), torch.zeros(()))
    rec = analyse_matrix("model.layers.0.mlp.up_proj", w0, dw, {"spec": spec, "euc": euc}, k=4)
    ms = rec["masks"]
    assert ms["spec"]["updated_in_mask"] == 1.0 and ms["euc"]["updated_in_mask"] == 0.0
    assert ms["union"]["updated_in_mask"] == 1.0 and ms["spec"]["energy_in_mask"] == pytest.approx(1.0)
    assert ms["spec"]["updated_in_mask_chance"] == pytest.approx(float(spec.float().mean()))
    assert ms["union"]["mask_frac"] == pytest.approx(float((spec | euc).float().mean()))
    assert rec["zero_frac"] == pytest.approx(1 - float((spec & ~euc).float().mean()))
    s = summarise_updates([("a.q_proj", w0, dw, {"spec": spec, "euc": euc}), ("b.q_proj", w0, dw)],
                          k=4, progress=False)
    assert s["overall"]["masks"]["spec"]["updated_in_mask"] == 1.0     # only the masked matrix counts
    with pytest.raises(ValueError, match="masks must be"):
        analyse_matrix("x", w0, dw, {"spec": spec}, k=4)


def test_randomized_path_agrees_with_the_exact_one():
    """On matrices wider than the randomized probes (k + 32), so the range finder matters."""
    g = _gen(6)
    ups = []
    for i, (o, n) in enumerate([(256, 192), (192, 320)]):
        q1, _ = torch.linalg.qr(torch.randn(o, n if n < o else o, generator=g))
        q2, _ = torch.linalg.qr(torch.randn(n, q1.shape[1], generator=g))
        w0 = (q1 * torch.arange(1, q1.shape[1] + 1) ** -0.5) @ q2.T
        ups.append((f"model.layers.{i}.mlp.up_proj", w0, _pissa(w0, g, scale=3e-2)))
    exact = summarise_updates(ups, k=R, progress=False, svd="exact")
    rand = summarise_updates(ups, k=R, progress=False, svd="randomized")
    capped = summarise_updates(ups, k=R, progress=False, svd="randomized", nss_full_max_numel=100)
    for r in metrics.S_HEAD_READINGS:
        assert rand["overall"]["s_head"][r] == pytest.approx(exact["overall"]["s_head"][r], abs=1e-4)
    for scope in metrics.NSS_SCOPES:
        assert rand["overall"]["nss"][scope] == pytest.approx(exact["overall"]["nss"][scope], rel=1e-3)
    assert rand["overall"]["head_cos_mean"] == pytest.approx(exact["overall"]["head_cos_mean"], abs=1e-5)
    assert capped["overall"]["nss"]["full"] is None and capped["overall"]["nss"]["topk"] is not None


def test_bad_input_is_named():
    w = torch.randn(8, 6)
    with pytest.raises(ValueError, match="m.q_proj: W0 .8, 6. and dW .6, 8. differ"):
        summarise_updates([("m.q_proj", w, w.T)], progress=False)
    with pytest.raises(ValueError, match="'m.q_proj' appears twice"):
        summarise_updates([("m.q_proj", w, w), ("m.q_proj", w, w)], k=2, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        summarise_updates([("m.q_proj", w, w * float("nan"))], k=2, progress=False)
    with pytest.raises(ValueError, match="empty"):
        summarise_updates([], progress=False)
    zero_w0 = summarise_updates([("m.q_proj", torch.zeros(8, 6), w)], k=2, progress=False)
    assert zero_w0["overall"]["nss"] == {"full": None, "topk": None, "delta": None}
    json.dumps(zero_w0, allow_nan=False)
    with pytest.raises(ValueError, match="k=0"):
        summarise_updates([("m.q_proj", w, w)], k=0, progress=False)


def test_progress_bar_is_shown_and_can_be_disabled(capsys):
    ups = _updates(_pissa)[:2]
    summarise_updates(ups, k=R)
    assert "weight analysis" in capsys.readouterr().err
    summarise_updates(ups, k=R, progress=False)
    assert "weight analysis" not in capsys.readouterr().err


MICRO = Path(__file__).resolve().parents[1] / "geora" / "assets" / "micro" / "model.safetensors"


def test_micro_model_budget():
    """All 28 micro matrices within 10 s (5% of a ~200 s micro training run), one thread."""
    from safetensors.torch import load_file

    base = load_file(str(MICRO))
    g = _gen(5)
    ups = [(n[:-len(".weight")], w, 1e-3 * torch.randn(w.shape, generator=g))
           for n, w in base.items() if n.endswith("_proj.weight")]
    assert len(ups) == 28
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        s = summarise_updates(ups, progress=False)
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    assert elapsed < 10.0, elapsed
    for r in metrics.S_HEAD_READINGS:
        assert s["overall"]["s_head"][r] == pytest.approx(s["overall"]["s_head_chance"][r], rel=0.1, abs=2e-3)
