"""geora.linalg: exact thresholds at any size, exact and randomized SVD, mask statistics.

Run: .venv/bin/python -m pytest -q tests/test_linalg.py
"""
from __future__ import annotations

import math

import pytest
import torch

from geora import krylov, linalg
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


# ------------------------------------------------------- exact selection inside a band
def _bits(t):
    return t.float().reshape(1).view(torch.int32).item()


def _adversarial_inputs():
    g = gen(10)
    yield "gaussian", torch.randn(300, 200, generator=g)
    yield "three values", torch.randint(0, 3, (250, 160), generator=g).float()
    yield "all equal", torch.full((123, 77), 0.5)
    yield "mostly zeros", torch.where(torch.rand(200, 150, generator=g) < 0.9, 0.0,
                                      torch.randn(200, 150, generator=g))
    yield "signed with ties", torch.randint(-4, 5, (180, 90), generator=g).float() * 0.25
    yield "sorted", torch.arange(40000.0).reshape(200, 200)
    yield "huge and tiny", torch.randn(100, 100, generator=g) * 10.0 ** torch.randint(
        -30, 30, (100, 100), generator=g).float()
    yield "bf16", torch.randn(256, 128, generator=g).to(torch.bfloat16)
    yield "one entry", torch.tensor([[-2.5]])
    yield "two entries", torch.tensor([3.0, -1.0])


@pytest.mark.parametrize("name,x", list(_adversarial_inputs()), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_kth_smallest_band_path_equals_kthvalue(name, x, monkeypatch):
    """direct_max=0 forces the sampled band on every size; the value must be torch.kthvalue's
    to the bit, for signed values and for magnitudes, at the extremes and in between."""
    calls = []
    real = torch.kthvalue
    monkeypatch.setattr(torch, "kthvalue", lambda t, k: calls.append(t.numel()) or real(t, k))
    n = x.numel()
    for k in sorted(k for k in {1, 2, n // 5 + 1, n // 2, n - 1, n} if 1 <= k <= n):
        for values in (x, x.abs()):
            got = linalg.kth_smallest(values, k, direct_max=0)
            ref = real(values.reshape(-1), k).values
            assert got.dtype == ref.dtype and torch.equal(got, ref), (name, k)
            if values is not x or not bool((x == 0).any()):   # -0.0 vs 0.0 in signed ties
                assert _bits(got) == _bits(ref)
    if n > 1000 and name not in ("all equal", "mostly zeros", "three values"):
        assert min(calls) < n / 5          # the band, not everything, was selected from


def test_kth_smallest_falls_back_when_the_band_misses(monkeypatch):
    """With a zero-width margin the sampled band usually misses k; the answer must not
    change, and the full selection must really have been taken."""
    monkeypatch.setattr(linalg, "KTH_SAMPLE_SIGMAS", 0.0)
    calls = []
    real = torch.kthvalue
    monkeypatch.setattr(torch, "kthvalue", lambda t, k: calls.append(t.numel()) or real(t, k))
    x = torch.randn(400, 500, generator=gen(11)).abs()
    for k in range(1000, x.numel(), 9973):
        assert torch.equal(linalg.kth_smallest(x, k, direct_max=0),
                           real(x.reshape(-1), k).values)
    assert calls.count(x.numel()) >= 3            # fell back at least a few times


def test_kth_smallest_with_nans_matches_kthvalue():
    x = torch.randn(300, 300, generator=gen(12))
    x[torch.rand(300, 300, generator=gen(13)) < 0.3] = float("nan")
    for k in (1, 1000, 60000, 63000, 90000):
        ref = torch.kthvalue(x.reshape(-1), k).values
        got = linalg.kth_smallest(x, k, direct_max=0)
        assert torch.equal(got, ref) or (bool(got.isnan()) and bool(ref.isnan()))


def test_threshold_default_path_above_direct_max():
    x = torch.randn(1500, 1000, generator=gen(14)).to(torch.bfloat16)   # 1.5M > 2^20, ties
    a = x.abs().float().reshape(-1)
    for rho in (0.01, 0.2, 0.5):
        k = math.ceil(rho * a.numel())
        assert _bits(linalg.abs_threshold(x, rho)) == _bits(torch.kthvalue(a, k).values)
    with pytest.raises(ValueError, match="k=0"):
        linalg.kth_smallest(a, 0)


def test_low_magnitude_mask_is_exact_on_ties_and_bf16():
    x = (torch.randn(200, 300, generator=gen(15)) * 4).round().to(torch.bfloat16)
    for rho in (0.05, 0.2, 0.6):
        mask = linalg.low_magnitude_mask(x, rho)
        a = x.float().abs()
        tau = a.flatten().sort().values[math.ceil(rho * a.numel()) - 1]
        assert torch.equal(mask, a <= tau) and int(mask.sum()) > math.ceil(rho * a.numel())


# --------------------------------------------------- block Krylov SVD: accuracy, depth
def powerlaw(m, n, seed):
    g = gen(seed)
    k = min(m, n)
    u = torch.linalg.qr(torch.randn(m, k, generator=g)).Q
    v = torch.linalg.qr(torch.randn(n, k, generator=g)).Q
    return (u * (1.0 + torch.arange(k)).pow(-0.5)) @ v.T


@pytest.mark.parametrize("spectrum", ["powerlaw", "flat"])
def test_default_svd_reaches_target_energy_and_tiny_niter_does_not(spectrum):
    w = powerlaw(400, 600, 16) if spectrum == "powerlaw" else torch.randn(400, 600,
                                                                           generator=gen(16))
    u, s, vh = linalg.svd_top(w, 16, seed=0)
    assert linalg.captured_energy(w, u, 16) >= 0.995
    assert (u.T @ u - torch.eye(16)).abs().max() < 1e-5
    assert (vh @ vh.T - torch.eye(16)).abs().max() < 1e-4
    # S Vh is U^T W exactly, so U S Vh is the projection of W onto span(U)
    torch.testing.assert_close((u * s) @ vh, u @ (u.T @ w), atol=1e-5, rtol=0)
    u0, _, _ = linalg.svd_top(w, 16, seed=0, niter=0)
    assert linalg.captured_energy(w, u0, 16) < 0.995                 # the check can fail


def test_adaptive_depth_follows_the_spectrum(monkeypatch):
    """Power-law spectra converge in a few Krylov steps; flat ones need more; niter=int
    forces the count and more steps never lose energy (nested Krylov spaces)."""
    depth = {}
    real = krylov._converged
    monkeypatch.setattr(krylov, "_converged",
                        lambda e, tol: depth.__setitem__("n", len(e)) or real(e, tol))
    linalg.svd_top(powerlaw(400, 600, 17), 16, seed=0)
    fast = depth["n"]
    linalg.svd_top(torch.randn(400, 600, generator=gen(17)), 16, seed=0)
    assert fast <= 5 and depth["n"] >= fast + 2
    w = torch.randn(300, 500, generator=gen(18))
    energies = [linalg.captured_energy(w, linalg.svd_top(w, 8, niter=q)[0], 8)
                for q in range(5)]
    assert all(b >= a - 1e-6 for a, b in zip(energies, energies[1:]))
    assert energies[-1] > energies[0] + 0.05


def test_svd_top_on_rank_deficient_weight(monkeypatch):
    """Rank below r: a dense rank-5 product, and a weight that is zero outside a 10 x 10
    block, whose first Krylov block is exactly singular (Cholesky fails, the deflation
    path must take over). The exact triplets must come back, the rest with s = 0."""
    deflated = []
    real = krylov._deflated_block
    monkeypatch.setattr(krylov, "_deflated_block",
                        lambda y, basis: deflated.append(1) or real(y, basis))
    dense = torch.randn(120, 5, generator=gen(19)) @ torch.randn(5, 90, generator=gen(20))
    block = torch.zeros(200, 150)
    block[:10, :10] = torch.randn(10, 10, generator=gen(21))
    for w, rank, r in ((dense, 5, 8), (block, 10, 12)):
        for niter in (None, 4):
            u, s, vh = linalg.svd_top(w, r, seed=0, niter=niter)
            assert bool(torch.isfinite(u).all() and torch.isfinite(vh).all())
            torch.testing.assert_close(s[:rank], torch.linalg.svdvals(w)[:rank], rtol=1e-5,
                                       atol=1e-5)
            assert float(s[rank:].max()) < 1e-4 * float(s[0])
            torch.testing.assert_close((u * s) @ vh, w, atol=1e-4, rtol=0)
            torch.testing.assert_close(u[:, :rank].T @ u[:, :rank], torch.eye(rank),
                                       atol=1e-5, rtol=0)
    assert deflated                                     # the fallback really ran


def test_svd_top_seeded_bitwise_and_options_checked():
    w = powerlaw(200, 300, 21)
    a, b = linalg.svd_top(w, 8, seed=5), linalg.svd_top(w, 8, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], linalg.svd_top(w, 8, seed=6)[0])
    with pytest.raises(ValueError, match="tol"):
        linalg.svd_top(w, 8, tol=0.0)
    with pytest.raises(ValueError, match="niter=-2"):
        linalg.svd_top(w, 8, niter=-2)


def test_check_weight_counts_non_finite_entries_once_the_sum_overflows():
    big = torch.full((4, 4), 3e38)                      # finite entries, sum overflows
    linalg.check_weight(big)
    big[1, 2] = float("inf")
    with pytest.raises(ValueError, match="1 NaN/Inf"):
        linalg.check_weight(big)


def test_warm_start_helps_and_a_misleading_one_cannot_hide_the_top():
    """As in geora_init: W's Ritz vectors start the SVD of W_geo = W * (M_spec | M_euc)
    ahead (one step: 0.93 vs 0.90 of the top-r energy); a start orthogonal to W_geo's top
    100 singular vectors still reaches the target (the probes keep a random part)."""
    w = powerlaw(400, 600, 22)
    m_spec, m_euc = geora_masks(w, 16, 0.2)
    w_geo = w * (m_spec | m_euc)
    good = krylov.block_krylov_svd(w, 16, seed=0, settle=3).ritz
    bad = torch.linalg.svd(w_geo, full_matrices=False)[2][100:132].T.contiguous()

    def energy(start, niter=None):
        res = krylov.block_krylov_svd(w_geo, 16, seed=1, niter=niter, start=start)
        assert torch.allclose(res.ritz[:, :16].T, res.vh)
        return linalg.captured_energy(w_geo, res.u, 16)

    assert energy(good, niter=1) > energy(None, niter=1) + 0.02
    assert energy(bad, niter=1) < energy(None, niter=1)              # it does mislead...
    assert min(energy(None), energy(good), energy(bad)) >= 0.995     # ...but not for long
