"""geora.init.geora_init on bare tensors: the identity, the masks, the factors, ablations.

Run: .venv/bin/python -m pytest -q tests/test_init.py
"""
from __future__ import annotations

import math

import pytest
import torch

from geora.init import geora_init



def weight(shape=(48, 80), seed=0, dtype=torch.float32):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.05).to(dtype)


def bottom_mask(x, rho):
    """Independent reference: the ceil(rho*n) smallest |x| by a full sort."""
    flat = x.abs().flatten()
    tau = flat.sort().values[math.ceil(rho * flat.numel()) - 1]
    return x.abs() <= tau


def reference_w_geo(w, r, rho, masks="union"):
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    w_hat = ((u[:, :r] * s[:r]) @ vh[:r]).float()
    m_spec, m_euc = bottom_mask(w_hat, rho), bottom_mask(w, rho)
    keep = {"union": m_spec | m_euc, "spec": m_spec, "euc": m_euc}[masks]
    return w * keep, m_spec, m_euc


@pytest.mark.parametrize("alpha,alpha_norm", [(None, "none"), (32.0, "none"), (32.0, "peft")])
def test_residual_plus_adapter_is_w(alpha, alpha_norm):
    w = weight()
    f = geora_init(w, rank=8, alpha=alpha, svd="exact", alpha_norm=alpha_norm)
    assert f.scaling == (alpha or 8) / 8
    assert f.A.shape == (8, 80) and f.B.shape == (48, 8) and f.residual.dtype == w.dtype
    torch.testing.assert_close(f.residual + f.scaling * f.B @ f.A, w, atol=1e-6, rtol=0)
    assert (f.residual - w).abs().max() > 1e-3           # the residual really differs from W


def test_bf16_residual_in_weight_dtype():
    w = weight(dtype=torch.bfloat16)
    f = geora_init(w, rank=8)
    assert f.residual.dtype == torch.bfloat16 and f.A.dtype == f.B.dtype == torch.float32
    err = (f.residual.float() + f.B @ f.A - w.float()).abs().max()
    assert err <= 2 ** -8 * w.float().abs().max()        # bf16 rounding of the residual only


def test_masks_cover_rho_and_match_sort_reference():
    w = weight((64, 96), 1)
    f = geora_init(w, rank=8, rho=0.2, svd="exact")
    k = math.ceil(0.2 * w.numel())
    assert int(f.mask_euc.sum()) == k and int(f.mask_spec.sum()) == k
    _, m_spec, m_euc = reference_w_geo(w, 8, 0.2)
    assert torch.equal(f.mask_euc, m_euc)
    assert (f.mask_spec != m_spec).sum() <= 2            # fp32 vs fp64 W_hat: ties at tau only
    st = f.mask_stats()
    inter = int((f.mask_spec & f.mask_euc).sum())
    assert st["count_intersection"] == inter
    assert st["jaccard"] == pytest.approx(inter / int((f.mask_spec | f.mask_euc).sum()))


@pytest.mark.parametrize("masks", ["union", "spec", "euc"])
def test_exact_factors_are_top_r_of_w_geo(masks):
    w = weight((64, 96), 2)
    f = geora_init(w, rank=8, svd="exact", masks=masks)
    w_geo = w * {"union": f.mask_spec | f.mask_euc, "spec": f.mask_spec, "euc": f.mask_euc}[masks]
    u, s, vh = torch.linalg.svd(w_geo, full_matrices=False)
    torch.testing.assert_close(f.B @ f.A, (u[:, :8] * s[:8]) @ vh[:8], atol=1e-5, rtol=0)
    # A = S^1/2 Vh: rows orthogonal with squared norms S; B = U S^1/2 likewise
    torch.testing.assert_close(f.A @ f.A.T, torch.diag(s[:8]), atol=1e-5, rtol=0)
    torch.testing.assert_close(f.B.T @ f.B, torch.diag(s[:8]), atol=1e-5, rtol=0)


def test_mask_choice_changes_the_factors():
    w = weight((64, 96), 2)
    fu, fs, fe = (geora_init(w, rank=8, svd="exact", masks=m) for m in ("union", "spec", "euc"))
    assert (fu.B @ fu.A - fs.B @ fs.A).abs().max() > 1e-3
    assert (fu.B @ fu.A - fe.B @ fe.A).abs().max() > 1e-3


def test_randomized_close_to_exact():
    w = weight((64, 96), 3)
    fr, fx = geora_init(w, rank=8, svd="randomized"), geora_init(w, rank=8, svd="exact")
    sr, sx = torch.linalg.svdvals(fr.A), torch.linalg.svdvals(fx.A)   # sqrt(S) each
    assert (sr.pow(2).sum() / sx.pow(2).sum()).item() >= 0.995


def test_tail_takes_smallest_nonzero_triplets():
    w = weight((64, 48), 4)
    w[:, 44:] = 0                     # W_geo has rank <= 44: 4 zero singular values
    f = geora_init(w, rank=8, factors="tail")
    s = torch.linalg.svdvals(w * (f.mask_spec | f.mask_euc))
    nz = int((s > 1e-6 * s[0]).sum())
    assert nz == 44
    torch.testing.assert_close(torch.linalg.svdvals(f.A).pow(2), s[nz - 8:nz],
                               atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(f.residual + f.B @ f.A, w, atol=1e-6, rtol=0)


def test_random_picks_seeded_nonzero_triplets():
    w = weight((64, 48), 5)
    f0, f0b, f1 = (geora_init(w, rank=8, factors="random", seed=s) for s in (0, 0, 1))
    s = torch.linalg.svdvals(w * (f0.mask_spec | f0.mask_euc))
    picked = torch.linalg.svdvals(f0.A).pow(2)
    # every picked value is one of W_geo's singular values, and not simply the top 8
    assert torch.cdist(picked[:, None], s[:, None]).min(1).values.max() < 1e-4 * s[0]
    assert not torch.allclose(picked, s[:8])
    assert torch.equal(f0.A, f0b.A) and not torch.equal(f0.A, f1.A)
    torch.testing.assert_close(f0.residual + f0.B @ f0.A, w, atol=1e-6, rtol=0)


def test_seed_reproducible_on_randomized_path():
    w = weight()
    a, b = (geora_init(w, rank=8, seed=3, svd="randomized") for _ in range(2))
    assert torch.equal(a.A, b.A)


# --------------------------------------- the randomized (Krylov) path; the default by size
def powerlaw_weight(shape, seed):
    g = torch.Generator().manual_seed(seed)
    k = min(shape)
    u = torch.linalg.qr(torch.randn(shape[0], k, generator=g)).Q
    v = torch.linalg.qr(torch.randn(shape[1], k, generator=g)).Q
    return (u * (1.0 + torch.arange(k)).pow(-0.5)) @ v.T


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_default_masks_are_exact_selections(dtype, monkeypatch):
    """KTH_DIRECT_MAX = 0 sends every threshold through the sampled band: M_euc must be the
    sort reference on |W|, M_spec the sort reference on |W_hat_r| of the same seeded SVD."""
    from geora import linalg
    monkeypatch.setattr(linalg, "KTH_DIRECT_MAX", 0)
    w = weight((96, 160), 6, dtype)
    f = geora_init(w, rank=8, rho=0.2, seed=1, svd="randomized")
    u, s, vh = linalg.svd_top(w, 8, seed=1, method="randomized")
    assert torch.equal(f.mask_euc, bottom_mask(w.float(), 0.2))
    assert torch.equal(f.mask_spec, bottom_mask((u * s) @ vh, 0.2))


@pytest.mark.parametrize("spectrum", ["powerlaw", "flat"])
def test_default_factors_capture_w_geo_energy(spectrum):
    w = powerlaw_weight((256, 384), 7) if spectrum == "powerlaw" else weight((256, 384), 7)
    for niter, ok in ((None, True), (0, False)):
        f = geora_init(w, rank=16, niter=niter, svd="randomized")
        w_geo = w * (f.mask_spec | f.mask_euc)
        top = torch.linalg.svdvals(w_geo)[:16].pow(2).sum()
        q = torch.linalg.qr(f.B).Q
        ratio = float((q.T @ w_geo).pow(2).sum() / top)
        assert (ratio >= 0.995) == ok, (niter, ratio)      # a forced 0 steps falls short


def test_default_path_bitwise_reproducible():
    w = powerlaw_weight((120, 200), 8)
    a, b, c = (geora_init(w, rank=8, seed=s, svd="randomized") for s in (4, 4, 5))
    for key in ("A", "B", "residual", "mask_spec", "mask_euc"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert not torch.equal(a.A, c.A)


def test_auto_is_exact_up_to_exact_max_dim(monkeypatch):
    """svd="auto" (the default): bitwise the exact path at or below EXACT_MAX_DIM on the
    short side, bitwise the randomized path above it."""
    from geora import linalg
    w = powerlaw_weight((120, 200), 9)
    keys = ("A", "B", "residual", "mask_spec", "mask_euc")
    same = lambda f, g: all(torch.equal(getattr(f, k), getattr(g, k)) for k in keys)  # noqa: E731
    exact, krylov = geora_init(w, rank=8, svd="exact"), geora_init(w, rank=8, svd="randomized")
    assert not same(exact, krylov)
    monkeypatch.setattr(linalg, "EXACT_MAX_DIM", 120)
    assert same(geora_init(w, rank=8), exact) and geora_init(w, rank=8).krylov_steps is None
    monkeypatch.setattr(linalg, "EXACT_MAX_DIM", 119)
    assert same(geora_init(w, rank=8), krylov)
    with pytest.raises(ValueError, match="layer.q: svd='fast'"):
        geora_init(w, rank=8, svd="fast", where="layer.q")
