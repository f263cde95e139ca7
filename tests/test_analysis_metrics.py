"""Analysis metrics on constructed updates whose answers are known in closed form."""
import math

import pytest
import torch

from analysis import metrics as m


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
