"""Analysis metrics on constructed updates whose answers are known in closed form."""
import math

import pytest
import torch

from geora.geometry import metrics as m


def _orthonormal(n, k, seed):
    q, _ = torch.linalg.qr(torch.randn(n, k, generator=torch.Generator().manual_seed(seed)))
    return q


@pytest.fixture
def w0():
    torch.manual_seed(0)
    u, v = _orthonormal(40, 30, 1), _orthonormal(30, 30, 2)
    s = torch.logspace(1, -2, 30)
    return u @ torch.diag(s) @ v.T


def test_s_head_readings_on_head_tail_and_pissa_like_updates(w0):
    k = 4
    u_k, v_k = m.head_subspace(w0, k)
    u, _, vh = torch.linalg.svd(w0, full_matrices=False)
    head = u[:, :k] @ torch.randn(k, k) @ vh[:k]                  # inside on both sides
    tail = u[:, k:] @ torch.randn(30 - k, 30 - k) @ vh[k:]        # outside on both sides
    pissa_like = u[:, :k] @ torch.randn(k, 30) + torch.randn(40, k) @ vh[:k]  # B0 dA + dB A0
    for reading in m.S_HEAD_READINGS:
        assert m.s_head(head, u_k, v_k, reading) == pytest.approx(1.0, abs=1e-5)
        assert m.s_head(tail, u_k, v_k, reading) == pytest.approx(0.0, abs=1e-5)
    assert m.s_head(pissa_like, u_k, v_k, "either") == pytest.approx(1.0, abs=1e-5)
    assert m.s_head(pissa_like, u_k, v_k, "two_sided") < 0.5
    assert m.s_head(torch.zeros_like(w0), u_k, v_k) == 0.0
    with pytest.raises(ValueError, match="reading"):
        m.s_head(head, u_k, v_k, "both")


def test_s_head_of_a_mix_is_its_energy_share(w0):
    u, _, vh = torch.linalg.svd(w0, full_matrices=False)
    u_k, v_k = m.head_subspace(w0, 2)
    head = 3.0 * torch.outer(u[:, 0], vh[0])        # energy 9
    tail = 4.0 * torch.outer(u[:, 5], vh[7])        # energy 16, orthogonal to head
    assert m.s_head(head + tail, u_k, v_k, "two_sided") == pytest.approx(9 / 25, abs=1e-5)


def test_nss_scopes(w0):
    assert m.nss(w0, w0) == 0.0
    assert m.nss(w0, 2 * w0) == pytest.approx(1.0, abs=1e-5)
    assert m.nss(w0, 2 * w0, scope="topk", k=3) == pytest.approx(1.0, abs=1e-5)
    # a rotation keeps the spectrum: whole-spectrum NSS is 0, the update itself is not
    q = _orthonormal(40, 40, 3)
    assert m.nss(w0, q @ w0) == pytest.approx(0.0, abs=1e-5)
    assert m.nss(w0, q @ w0, scope="delta") > 0.1
    with pytest.raises(ValueError, match="scope"):
        m.nss(w0, w0, scope="nope")


def test_principal_angles():
    a = _orthonormal(20, 3, 4)
    assert torch.allclose(m.principal_angle_cosines(a, a), torch.ones(3), atol=1e-5)
    b = torch.linalg.qr(torch.cat([a, torch.randn(20, 3)], 1))[0][:, 3:]  # orthogonal complement part
    assert m.principal_angle_cosines(a, b).max() < 1e-5


def test_update_sparsity_and_mask_overlap():
    w0 = torch.randn(10, 10, generator=torch.Generator().manual_seed(5)) + 3.0
    w1 = w0.clone()
    w1[:2] += 1.0                       # 20 entries clearly changed
    w1[5, 5] *= 1 + 1e-5                # below bf16 resolution: unchanged
    assert m.update_sparsity(w0, w1) == pytest.approx(0.8)
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[0] = True
    assert m.updated_in_mask(w0, w1, mask) == pytest.approx(0.5)
    assert math.isnan(m.updated_in_mask(w0, w0, mask))


def test_head_subspace_rejects_bad_k(w0):
    with pytest.raises(ValueError, match="k=0"):
        m.head_subspace(w0, 0)


def test_compare_weights_tabulates_each_matrix():
    from analysis.weights import compare_weights, summarise

    g = torch.Generator().manual_seed(7)
    base = {"a.q_proj": torch.randn(12, 8, generator=g), "a.up_proj": torch.randn(16, 8, generator=g)}
    trained = {n: w.clone() for n, w in base.items()}
    trained["a.q_proj"] += 0.5 * torch.randn(12, 8, generator=g)
    df = compare_weights(base, trained, k=2)
    assert list(df["module"]) == ["a.q_proj", "a.up_proj"]
    row = df.set_index("module")
    assert row.loc["a.up_proj", "unchanged_frac"] == 1.0 and row.loc["a.up_proj", "delta_norm"] == 0.0
    assert row.loc["a.q_proj", "unchanged_frac"] < 0.5 and row.loc["a.q_proj", "nss_delta"] > 0
    # the untouched matrix carries no update energy, so the weighted S_Head is q_proj's
    assert summarise(df)["s_head_either"] == pytest.approx(row.loc["a.q_proj", "s_head_either"])
    with pytest.raises(KeyError, match="only one"):
        compare_weights(base, {"a.q_proj": base["a.q_proj"]})


# ----------------------------------------------------------------- readings and chance levels
def _gaussian(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _pissa_update(w0, r, scale, seed):
    """dW = (B0 + dB)(A0 + dA) - B0 A0 on W0's top-r triplets, dA, dB random."""
    u, s, vh = torch.linalg.svd(w0, full_matrices=False)
    b0, a0 = u[:, :r] * s[:r].sqrt(), s[:r].sqrt()[:, None] * vh[:r]
    d_b = scale * _gaussian(b0.shape, seed)
    d_a = scale * _gaussian(a0.shape, seed + 1)
    return (b0 + d_b) @ (a0 + d_a) - b0 @ a0


def test_chance_levels_match_monte_carlo():
    """Mean of each reading over i.i.d. Gaussian updates = its closed-form chance level."""
    shape, k, trials = (48, 24), 4, 300
    u_k, v_k = m.head_subspace(_gaussian(shape, 0), k)
    samples = {r: [] for r in m.S_HEAD_READINGS}
    for t in range(trials):
        d = _gaussian(shape, 100 + t)
        basis = m.update_subspace(d, k)
        for r in m.S_HEAD_READINGS:
            samples[r].append(m.s_head(d, u_k, v_k, r, update_basis=basis))
    for r, xs in samples.items():
        x = torch.tensor(xs)
        se = float(x.std() / math.sqrt(trials))
        chance = m.s_head_chance(r, shape, k)
        assert abs(float(x.mean()) - chance) < 4 * se + 1e-4, (r, float(x.mean()), chance, se)
    # the closed forms themselves, and that the test can tell readings apart
    assert m.s_head_chance("either", shape, k) == pytest.approx(1 - (1 - 4 / 48) * (1 - 4 / 24))
    assert m.s_head_chance("two_sided", shape, k) == pytest.approx(16 / (48 * 24))
    assert m.s_head_chance("overlap", shape, k) == pytest.approx((4 / 48 + 4 / 24) / 2)
    assert abs(float(torch.tensor(samples["left"]).mean()) - m.s_head_chance("right", shape, k)) > 0.05


def test_the_default_is_the_only_reading_with_pissa_in_the_head(w0):
    """The selection rule of DEFAULT_READING, checked on every reading: a PiSSA-style update
    scores >= 0.99 and a random one its chance level (checked above) only under the default."""
    k = 4
    u_k, v_k = m.head_subspace(w0, k)
    scores = {r: m.s_head(_pissa_update(w0, k, 1e-3, 3), u_k, v_k, r) for r in m.S_HEAD_READINGS}
    in_head = {r for r, v in scores.items() if v >= 0.99}
    assert in_head == {m.DEFAULT_READING}, scores


def test_overlap_readings_on_head_tail_and_low_rank_updates(w0):
    k = 4
    u_k, v_k = m.head_subspace(w0, k)
    u, _, vh = torch.linalg.svd(w0, full_matrices=False)
    head = u[:, :k] @ _gaussian((k, k), 1) @ vh[:k]
    tail = u[:, k:] @ _gaussian((30 - k, 30 - k), 2) @ vh[k:]
    rank2_in_head = u[:, :2] @ _gaussian((2, 2), 3) @ vh[:2]
    for r in m.OVERLAP_READINGS:
        assert m.s_head(head, u_k, v_k, r) == pytest.approx(1.0, abs=1e-5)
        assert m.s_head(tail, u_k, v_k, r) == pytest.approx(0.0, abs=1e-5)
        # dW of rank 2 < k: only its 2 real directions count (its null space is arbitrary)
        assert m.s_head(rank2_in_head, u_k, v_k, r) == pytest.approx(1.0, abs=1e-5)
    assert m.update_subspace(rank2_in_head, k)[0].shape == (40, 2)
    assert m.update_subspace(torch.zeros_like(w0), k)[0].shape == (40, 0)
    left_only = u[:, :k] @ _gaussian((k, 30), 4)                    # head on the left side only
    assert m.s_head(left_only, u_k, v_k, "overlap_left") == pytest.approx(1.0, abs=1e-5)
    assert m.s_head(left_only, u_k, v_k, "right") < 0.5
    assert m.s_head(left_only, u_k, v_k, "left") == pytest.approx(1.0, abs=1e-5)


def test_span_overlap_and_chance_errors():
    a = _orthonormal(20, 3, 4)
    assert m.span_overlap(a, a) == pytest.approx(1.0, abs=1e-6)
    assert m.span_overlap(a, a[:, :0]) == 0.0
    with pytest.raises(ValueError, match="k=9"):
        m.s_head_chance("left", (8, 16), 9)
    with pytest.raises(ValueError, match="reading 'both'"):
        m.s_head_chance("both", (8, 16), 2)


def test_randomized_head_subspace_spans_the_exact_one(w0):
    u_e, v_e = m.head_subspace(w0, 4)
    u_r, v_r = m.head_subspace(w0, 4, svd="randomized")
    assert m.principal_angle_cosines(u_e, u_r).min() > 1 - 1e-5
    assert m.principal_angle_cosines(v_e, v_r).min() > 1 - 1e-5
    with pytest.raises(ValueError, match="svd='fast'"):
        m.head_subspace(w0, 4, svd="fast")
