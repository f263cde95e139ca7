"""scripts/bench_init.py: the smoke run on small shapes, its JSON, and the checkpoint reader.

Run: .venv/bin/python -m pytest -q tests/test_bench_init.py
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_init", ROOT / "scripts" / "bench_init.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIELDS = ("shape", "spectrum", "exact_s", "fast_s", "speedup", "energy_ratio",
          "energy_ratio_w", "m_euc_identical", "m_spec_jaccard", "union_jaccard",
          "bf16_m_spec_jaccard", "bf16_union_jaccard", "reproducible", "krylov_steps")


def test_quick_run_writes_complete_json(bench, tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--repeats", "1", "--svd", "randomized", "--json", str(out)])
    data = json.loads(out.read_text())
    assert {"device", "threads", "torch", "cpu"} <= set(data["machine"])
    entries = data["entries"]
    assert {(tuple(e["shape"]), e["spectrum"]) for e in entries} == {
        ((256, 256), "powerlaw"), ((256, 256), "flat"), ((192, 320), "powerlaw"),
        ((192, 320), "flat")}
    for e in entries:
        assert all(e[k] is not None for k in FIELDS), e
        assert e["energy_ratio"] >= 0.995 and e["energy_ratio_w"] >= 0.995
        assert e["m_euc_identical"] and e["reproducible"]
        for key in ("m_spec_jaccard", "union_jaccard", "bf16_m_spec_jaccard",
                    "bf16_union_jaccard"):
            assert 0.98 <= e[key] <= 1.0, (key, e)
        assert e["bf16_m_spec_jaccard"] < 1.0       # one bf16 rounding does move M_spec
        assert e["speedup"] == pytest.approx(e["exact_s"] / e["fast_s"])
    assert set(data["model_estimate"]) == {"powerlaw", "flat"}


def test_synthetic_spectra_are_what_the_docstring_says(bench):
    w = bench.synthetic_weight((64, 96), "powerlaw", 0, "cpu")
    s = torch.linalg.svdvals(w)
    torch.testing.assert_close(s, (1.0 + torch.arange(64)).pow(-0.5), rtol=1e-4, atol=1e-6)
    flat = bench.synthetic_weight((64, 96), "flat", 0, "cpu")
    assert abs(float(flat.std()) - 0.02) < 0.002
    assert torch.equal(flat, bench.synthetic_weight((64, 96), "flat", 0, "cpu"))


def test_model_estimate_sums_counts_times_medians(bench):
    entries = [dict(shape=[4, 4], spectrum="x", fast_s=1.0, exact_s=10.0),
               dict(shape=[2, 4], spectrum="x", fast_s=0.5, exact_s=None)]
    est = bench.model_estimate(entries, {(4, 4): 3, (2, 4): 2})["x"]
    assert est["fast_s"] == pytest.approx(4.0) and est["exact_s"] is None
    assert bench.model_estimate(entries, {(8, 8): 1})["x"]["missing_shapes"] == ["8x8"]


def test_checkpoint_weights_read_from_safetensors(bench, tmp_path):
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(0)
    tensors = {f"model.layers.{i}.{part}.{name}_proj.weight":
               torch.randn(*shape, generator=g).to(torch.bfloat16)
               for i in range(2)
               for part, name, shape in (("self_attn", "q", (32, 32)), ("self_attn", "k", (16, 32)),
                                         ("mlp", "down", (32, 48)))}
    tensors["model.embed_tokens.weight"] = torch.randn(10, 32, generator=g)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    picked, counts = bench.checkpoint_weights(str(tmp_path), [1])
    assert [n for n, _ in picked] == sorted(k for k in tensors if ".layers.1." in k)
    assert counts == {(32, 32): 2, (16, 32): 2, (32, 48): 2}
    result = bench.main(["--model", str(tmp_path), "--layers", "1", "--repeats", "1"])
    assert len(result["entries"]) == 3
    assert all(e["spectrum"] == "checkpoint" and e["m_euc_identical"] for e in result["entries"])
    with pytest.raises(SystemExit, match="no q/k/v/o"):
        bench.checkpoint_weights(str(tmp_path), [7])


def test_bad_shapes_are_refused(bench):
    with pytest.raises(SystemExit, match="'12x'"):
        bench.parse_shapes("4x4,12x")


def test_exact_cache_reused_across_runs(bench, tmp_path):
    argv = ["--shapes", "48x80", "--spectrum", "flat", "--repeats", "1",
            "--exact-cache", str(tmp_path / "cache")]
    first = bench.main(argv)["entries"][0]
    assert len(list((tmp_path / "cache").glob("exact_*.pt"))) == 2      # W and bf16(W)
    second = bench.main(argv)["entries"][0]
    assert second["exact_runs"] == first["exact_runs"]          # read back, not re-timed
    assert second["exact_measured_at"] == first["exact_measured_at"]
    assert second["m_euc_identical"] and second["m_spec_jaccard"] == first["m_spec_jaccard"]
    skipped = bench.main(argv[:-2] + ["--skip-exact-above", "100"])["entries"][0]
    assert skipped["exact_s"] is None and skipped["energy_ratio"] is None
    assert "skipped" in skipped["note"]


def test_jaccard_counts_members_only(bench):
    a = torch.tensor([True, True, False, False, False, False])
    b = torch.tensor([True, False, True, False, False, False])
    assert bench.jaccard(a, b) == pytest.approx(1 / 3)      # entries agree on 4 of 6
    assert bench.jaccard(a, a) == 1.0 and bench.jaccard(a & False, b & False) == 1.0


def test_summary_over_real_matrices(bench, tmp_path):
    """--model mode prints and stores min / median Jaccard and the summed times."""
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(1)
    save_file({f"model.layers.0.mlp.{n}_proj.weight": torch.randn(40, 56, generator=g)
               for n in ("gate", "up")}, str(tmp_path / "model.safetensors"))
    result = bench.main(["--model", str(tmp_path), "--repeats", "1"])
    s = result["summary"]
    assert s["matrices"] == 2 and s["m_spec_jaccard"]["min"] == 1.0     # 40 <= EXACT_MAX_DIM
    assert s["bf16_m_spec_jaccard"]["min"] == min(e["bf16_m_spec_jaccard"]
                                                  for e in result["entries"])
    assert s["fast_s_total"] == pytest.approx(sum(e["fast_s"] for e in result["entries"]))
    with pytest.raises(SystemExit, match="choose one source"):
        bench.main(["--model", str(tmp_path), "--real"])
