"""Metrics against hand-computed values on tiny inputs (FD, KID, PSNR, SSIM) and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iec_theory.errors import ConfigError
from real_models.metrics import (
    InceptionFIDUnavailable,
    feature_stats,
    frechet_distance,
    inception_fid,
    kid,
    psnr,
    ssim,
)


# ----- Frechet distance ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_fd_1d_closed_form(method):
    # (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2) with m1=1, m2=3, s1=4, s2=9: 4 + 13 - 12 = 5
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]], method=method) == pytest.approx(5.0, abs=1e-12)


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_fd_diagonal_2d_closed_form(method):
    m1, m2 = np.array([0.5, -1.0]), np.array([2.0, 1.0])
    s1, s2 = np.array([1.0, 0.25]), np.array([4.0, 2.25])
    expected = float(((m1 - m2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum())
    assert expected == pytest.approx(2.25 + 4.0 + 1.0 + 1.0)  # the hand value: 8.25
    assert frechet_distance(m1, np.diag(s1), m2, np.diag(s2), method=method) == pytest.approx(8.25, abs=1e-12)


def test_fd_self_is_zero_and_methods_agree():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    y = rng.normal(size=(300, 6)) * 2 + 1
    mx, cx = feature_stats(x)
    my, cy = feature_stats(y)
    assert frechet_distance(mx, cx, mx, cx) == pytest.approx(0.0, abs=1e-9)
    a, b = frechet_distance(mx, cx, my, cy), frechet_distance(mx, cx, my, cy, method="sqrtm")
    assert a > 1.0
    assert a == pytest.approx(b, rel=1e-8)
    assert frechet_distance(my, cy, mx, cx) == pytest.approx(a, rel=1e-8)  # symmetric


def test_fd_singular_covariance():
    # rank-1 covariances: x ~ (t, t), y ~ (2t, 2t) with t ~ N(0, 1); sqrt of 2x2 rank-1 handled by eigh
    c1 = np.ones((2, 2))
    c2 = 4 * np.ones((2, 2))
    # tr(c1) + tr(c2) - 2 tr sqrt(c1 c2) = 2 + 8 - 2 * 4 = 2
    assert frechet_distance([0, 0], c1, [0, 0], c2) == pytest.approx(2.0, abs=1e-9)


def test_feature_stats_values():
    f = np.array([[1.0, 2.0], [3.0, 6.0]])
    mu, cov = feature_stats(f)
    np.testing.assert_allclose(mu, [2.0, 4.0])
    np.testing.assert_allclose(cov, [[2.0, 4.0], [4.0, 8.0]])  # unbiased (n - 1)
    assert mu.dtype == np.float64 and cov.dtype == np.float64
    mu_t, _ = feature_stats(torch.tensor(f, dtype=torch.float32))
    np.testing.assert_allclose(mu_t, mu)


def test_fd_and_stats_reject_bad_inputs():
    with pytest.raises(ConfigError, match="shape"):
        frechet_distance([0.0, 0.0], np.eye(2), [0.0, 0.0], np.eye(3))
    with pytest.raises(ConfigError, match="same length|one length"):
        frechet_distance([0.0, 0.0], np.eye(2), [0.0], np.eye(1))
    with pytest.raises(ConfigError, match="non-finite"):
        frechet_distance([np.nan], [[1.0]], [0.0], [[1.0]])
    with pytest.raises(ConfigError, match="symmetric"):
        frechet_distance([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]], [0.0, 0.0], np.eye(2))
    with pytest.raises(ConfigError, match="method"):
        frechet_distance([0.0], [[1.0]], [0.0], [[1.0]], method="nope")
    with pytest.raises(ConfigError, match="at least 2 rows"):
        feature_stats(np.zeros((1, 3)))
    with pytest.raises(ConfigError, match="2-d"):
        feature_stats(np.zeros(3))


# ----- KID ----------------------------------------------------------------------------------------------
def _kid_direct(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 by explicit O(n^2) loops."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kid_matches_direct_computation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 3))
    y = rng.normal(size=(7, 3)) + 0.7
    # subset_size = n uses every row, so each subset is a permutation and the estimate is exact
    r = kid(x, y, subsets=3, subset_size=7, seed=0)
    assert r["mean"] == pytest.approx(_kid_direct(x, y), rel=1e-10)
    assert r["std"] == pytest.approx(0.0, abs=1e-12)
    assert r["mean"] > 0.05  # shifted distributions


def test_kid_hand_value_1d():
    # x = {0, 1}, y = {0, 2}, d = 1: k(a,b) = (ab + 1)^3
    # sxx = 2 k(0,1) / 2 = 1; syy = k(0,2) = 1; sxy = (k(0,0)+k(0,2)+k(1,0)+k(1,2))/4 = (1+1+1+27)/4 = 7.5
    r = kid(np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]]), subsets=1, subset_size=2)
    assert r["mean"] == pytest.approx(1 + 1 - 15.0)


def test_kid_near_zero_for_same_distribution_and_subsets_vary():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same = kid(x, y, subsets=20, subset_size=100, seed=3)
    shifted = kid(x, y + 1.0, subsets=20, subset_size=100, seed=3)
    assert abs(same["mean"]) < 3 * same["std"] + 0.02
    assert same["std"] > 0
    assert shifted["mean"] > 10 * abs(same["mean"]) and shifted["mean"] > 0.2
    assert kid(x, y, subsets=20, subset_size=100, seed=3) == same  # seeded


def test_kid_rejects_bad_inputs():
    x = np.zeros((10, 3))
    with pytest.raises(ConfigError, match="feature dim"):
        kid(x, np.zeros((10, 4)))
    with pytest.raises(ConfigError, match="subset_size"):
        kid(x, x, subsets=2, subset_size=11)
    with pytest.raises(ConfigError, match="non-finite"):
        kid(np.full((10, 3), np.nan), x, subset_size=5)


# ----- PSNR ---------------------------------------------------------------------------------------------
def test_psnr_constant_offset_hand_value():
    a = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    b = a.clone()
    b[0] += 0.1   # MSE 0.01 -> 10 log10(4 / 0.01) = 10 log10(400)
    b[1] -= 0.5   # MSE 0.25 -> 10 log10(16)
    r = psnr(a, b)
    np.testing.assert_allclose(r["per_image"], [10 * math.log10(400), 10 * math.log10(16)], rtol=1e-12)
    assert r["mean"] == pytest.approx((10 * math.log10(400) + 10 * math.log10(16)) / 2)
    assert psnr(a, b, data_range=1.0)["per_image"][0] == pytest.approx(20.0)  # 10 log10(1 / 0.01)


def test_psnr_identical_is_inf_and_validation():
    a = torch.rand(2, 3, 8, 8) * 2 - 1
    assert np.isinf(psnr(a, a)["per_image"]).all()
    with pytest.raises(ConfigError, match="same shape"):
        psnr(a, a[:1])
    with pytest.raises(ConfigError, match="NaN"):
        psnr(a, torch.full_like(a, float("nan")))
    with pytest.raises(ConfigError, match="B, C, H, W"):
        psnr(a[0], a[0])


# ----- SSIM ---------------------------------------------------------------------------------------------
def test_ssim_identical_is_one():
    a = torch.rand(3, 3, 32, 32) * 2 - 1
    r = ssim(a, a)
    np.testing.assert_allclose(r["per_image"], 1.0, atol=1e-12)


def test_ssim_constant_images_hand_value():
    # constant images: all variances 0, so SSIM = (2 u v + C1) / (u^2 + v^2 + C1) after the shift to [0, 2]
    a = torch.full((1, 3, 16, 16), 0.2, dtype=torch.float64)   # u = 1.2
    b = torch.full((1, 3, 16, 16), -0.5, dtype=torch.float64)  # v = 0.5
    c1 = (0.01 * 2) ** 2
    expected = (2 * 1.2 * 0.5 + c1) / (1.2 ** 2 + 0.5 ** 2 + c1)
    assert ssim(a, b)["per_image"][0] == pytest.approx(expected, rel=1e-10)
    assert expected == pytest.approx(0.7102, abs=1e-3)


def test_ssim_single_window_direct():
    # an 11x11 image has exactly one window position: SSIM is the formula with Gaussian-weighted moments
    rng = np.random.default_rng(4)
    x, y = rng.uniform(-1, 1, (11, 11)), rng.uniform(-1, 1, (11, 11))
    t = np.arange(11) - 5.0
    g = np.exp(-t ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    u, v = x + 1, y + 1
    mu_u, mu_v = (w * u).sum(), (w * v).sum()
    s_uu, s_vv = (w * u * u).sum() - mu_u ** 2, (w * v * v).sum() - mu_v ** 2
    s_uv = (w * u * v).sum() - mu_u * mu_v
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    expected = (2 * mu_u * mu_v + c1) * (2 * s_uv + c2) / ((mu_u ** 2 + mu_v ** 2 + c1) * (s_uu + s_vv + c2))
    got = ssim(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None])["per_image"][0]
    assert got == pytest.approx(expected, rel=1e-10)


def test_ssim_matches_0_1_convention_and_is_bounded():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1
    b = (a + 0.3 * torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64)).clamp(-1, 1)
    c = -a  # anti-correlated structure
    r = ssim(a, b)
    # the same images in [0, 1] with data_range 1 give the same SSIM (the standard convention)
    r01 = ssim((a + 1) / 2, (b + 1) / 2, data_range=1.0, low=0.0)
    np.testing.assert_allclose(r["per_image"], r01["per_image"], rtol=1e-10)
    for val in (r["per_image"], ssim(a, c)["per_image"]):
        assert ((val >= -1) & (val <= 1)).all()
    assert 0 < r["mean"] < 1
    assert ssim(a, c)["mean"] < 0.2
    # monotone in noise level
    b2 = (a + 0.05 * torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64)).clamp(-1, 1)
    assert ssim(a, b2)["mean"] > r["mean"]


def test_ssim_rejects_small_images_and_bad_window():
    a = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ConfigError, match="smaller than"):
        ssim(a, a)
    with pytest.raises(ConfigError, match="odd"):
        ssim(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), win_size=4)


# ----- Inception FID --------------------------------------------------------------------------------------
def test_inception_fid_names_missing_weights(tmp_path):
    images = torch.zeros(2, 3, 32, 32)
    with pytest.raises(InceptionFIDUnavailable, match="pt_inception-2015-12-05-6726825d.pth"):
        inception_fid(images)
    with pytest.raises(ConfigError, match="does not exist"):
        inception_fid(images, tmp_path / "missing.pth")
    fake = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    fake.write_bytes(b"x")
    with pytest.raises(InceptionFIDUnavailable, match="ships no Inception reference statistics"):
        inception_fid(images, fake)
