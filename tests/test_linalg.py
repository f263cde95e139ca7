"""geora.linalg: exact thresholds at any size, exact and randomized SVD, mask statistics.

Run: .venv/bin/python -m pytest -q tests/test_linalg.py
"""
from __future__ import annotations

import math

import pytest
import torch

from geora import linalg
from geora.init import geora_masks


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_threshold_is_kth_smallest_by_definition():
    x = torch.randn(37, 53, generator=gen())
    for rho in (0.01, 0.2, 0.5, 0.99):
        k = math.ceil(rho * x.numel())
        tau = linalg.abs_threshold(x, rho)
        assert tau == x.abs().flatten().sort().values[k - 1]
        assert int(linalg.low_magnitude_mask(x, rho).sum()) == k     # distinct values


def test_threshold_keeps_ties():
    x = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    mask = linalg.low_magnitude_mask(x, 0.25)          # k = 2, but four entries tie at 0
    assert int(mask.sum()) == 4 and bool(mask[0].all()) and not bool(mask[1].any())


def test_threshold_above_torch_quantile_limit():
    x = torch.randn(4100, 4100, generator=gen(1))      # 16.8M > torch.quantile's 16M limit
    with pytest.raises(RuntimeError):
        torch.quantile(x.abs().flatten(), 0.2)
    k = math.ceil(0.2 * x.numel())
    tau = linalg.abs_threshold(x, 0.2)
    a = x.abs()
    assert int((a < tau).sum()) < k <= int((a <= tau).sum())   # the k-th smallest


def test_exact_svd_matches_torch():
    w = torch.randn(40, 24, generator=gen(2), dtype=torch.float64).to(torch.bfloat16)
    u, s, vh = linalg.svd_top(w, 5, method="exact")
    assert u.dtype == s.dtype == vh.dtype == torch.float32
    u_ref, s_ref, vh_ref = torch.linalg.svd(w.float(), full_matrices=False)
    torch.testing.assert_close(s, s_ref[:5])
    torch.testing.assert_close((u * s) @ vh, (u_ref[:, :5] * s_ref[:5]) @ vh_ref[:5])


def _w_geo(shape, seed):
    w = torch.randn(*shape, generator=gen(seed)) * 0.02
    m_spec, m_euc = geora_masks(w, 16, 0.2, svd="exact")
    return w * (m_spec | m_euc)


def test_randomized_defaults_capture_top_r_energy():
    """Gaussian weights give a nearly flat W_geo spectrum: the hardest case measured."""
    w = _w_geo((512, 1024), 3)
    u, _, _ = linalg.svd_top(w, 16, seed=0)
    assert linalg.captured_energy(w, u, 16) >= 0.995
    u_weak, _, _ = linalg.svd_top(w, 16, niter=2, oversample=8, seed=0)
    assert linalg.captured_energy(w, u_weak, 16) < 0.995            # the check can fail


def test_randomized_is_seeded():
    w = torch.randn(64, 96, generator=gen(4))
    a = linalg.svd_top(w, 8, seed=7, niter=1)
    b = linalg.svd_top(w, 8, seed=7, niter=1)
    c = linalg.svd_top(w, 8, seed=8, niter=1)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    state = torch.random.get_rng_state()
    linalg.svd_top(w, 8, seed=7)
    assert torch.equal(state, torch.random.get_rng_state())        # global RNG untouched


def test_nonzero_count():
    w = torch.randn(20, 12, generator=gen(5))
    w[:, 7:] = 0                                        # rank 7
    assert linalg.nonzero_count(torch.linalg.svdvals(w), tuple(w.shape)) == 7


def test_mask_stats_by_hand():
    a = torch.tensor([[1, 1], [0, 0]], dtype=torch.bool)
    b = torch.tensor([[0, 1], [1, 0]], dtype=torch.bool)
    st = linalg.mask_stats(a, b)
    assert (st["frac_a"], st["frac_b"], st["intersection"], st["union"]) == (.5, .5, .25, .75)
    assert st["jaccard"] == pytest.approx(1 / 3)
    assert linalg.mask_stats(a, a)["jaccard"] == 1.0
    none = torch.zeros(2, 2, dtype=torch.bool)
    assert linalg.mask_stats(none, none)["jaccard"] == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        linalg.mask_stats(a, torch.zeros(3, 2, dtype=torch.bool))


def test_aggregate_counts_are_not_mean_of_fractions():
    a1 = torch.ones(1, 10, dtype=torch.bool)
    s1 = linalg.mask_stats(a1, a1)                       # jaccard 1 on 10 entries
    a2 = torch.zeros(1, 90, dtype=torch.bool)
    a2[0, :30] = True
    b2 = torch.zeros(1, 90, dtype=torch.bool)
    b2[0, 30:60] = True
    s2 = linalg.mask_stats(a2, b2)                       # jaccard 0 on 90 entries
    total = {k: s1[k] + s2[k] for k in ("n", "count_a", "count_b", "count_intersection",
                                        "count_union")}
    agg = linalg.stats_from_counts(total)
    assert agg["jaccard"] == pytest.approx(10 / 70) and agg["frac_a"] == pytest.approx(0.4)
