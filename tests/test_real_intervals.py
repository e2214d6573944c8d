"""Bootstrap intervals for FD/KID (real_models.intervals): point estimates against direct formulas,
interval coverage on synthetic Gaussians whose true FD / KID are known in closed form (or to Monte-Carlo
precision far below the interval width), and the no-ranking rule."""

from __future__ import annotations

import numpy as np
import pytest

from iec_theory.errors import ConfigError
from real_models.intervals import bootstrap_fd_kid, distinguishable, indistinguishable_pairs, percentile_interval
from real_models.metrics import feature_stats, frechet_distance

MU = np.array([0.6, -0.3])
A = np.array([[1.0, 0.0], [0.4, 0.7]])
SIGMA = A @ A.T


def _true_fd() -> float:
    # reference N(0, I): |mu|^2 + tr(S) + 2 - 2 tr(S^(1/2))
    w = np.linalg.eigvalsh(SIGMA)
    return float(MU @ MU + w.sum() + 2 - 2 * np.sqrt(w).sum())


def _draw(rng, n):
    return MU + rng.standard_normal((n, 2)) @ A.T


def test_point_estimates_match_direct_formulas():
    rng = np.random.default_rng(0)
    f, r = _draw(rng, 50), rng.standard_normal((40, 2))
    out = bootstrap_fd_kid(f, np.zeros(2), np.eye(2), r, B=20, seed=1)
    mu, cov = feature_stats(f)
    assert out["FD"] == pytest.approx(frechet_distance(mu, cov, np.zeros(2), np.eye(2)), rel=1e-10)
    k = lambda x, y: (x @ y.T / 2 + 1) ** 3  # noqa: E731
    n, m = len(f), len(r)
    direct = ((k(f, f).sum() - np.trace(k(f, f))) / (n * (n - 1)) + (k(r, r).sum() - np.trace(k(r, r))) / (m * (m - 1))
              - 2 * k(f, r).mean())
    assert out["KID"] == pytest.approx(direct, rel=1e-10)
    assert out["FD_ci"][0] <= out["FD_ci"][1] and out["KID_ci"][0] <= out["KID_ci"][1]
    assert out["n"] == 50 and out["B"] == 20 and "percentile" in out["method"]


def test_fd_interval_covers_the_closed_form_value():
    rng = np.random.default_rng(1)
    true = _true_fd()
    hits = [bootstrap_fd_kid(_draw(rng, 400), np.zeros(2), np.eye(2), B=200, seed=s, level=0.9)["FD_ci"]
            for s in range(150)]
    cover = np.mean([lo <= true <= hi for lo, hi in hits])
    assert 0.82 <= cover <= 0.97, cover


def test_kid_interval_covers_the_population_value():
    rng = np.random.default_rng(2)
    r = rng.standard_normal((60, 2)) * 1.2
    m = len(r)
    krr = (r @ r.T / 2 + 1) ** 3
    syy = (krr.sum() - np.trace(krr)) / (m * (m - 1))
    # E_x k(x, r_j) exactly: u = x.r/2 + 1 ~ N(mu.r/2 + 1, r^T S r / 4), E u^3 = mean^3 + 3 mean var
    mean_u = MU @ r.T / 2 + 1
    var_u = np.einsum("ji,ik,jk->j", r, SIGMA, r) / 4
    exy = float(np.mean(mean_u ** 3 + 3 * mean_u * var_u))
    x1, x2 = _draw(rng, 2_000_000), _draw(rng, 2_000_000)
    exx = float((((x1 * x2).sum(1) / 2 + 1) ** 3).mean())      # Monte Carlo, error ~1e-3
    true = exx + syy - 2 * exy
    hits = [bootstrap_fd_kid(_draw(rng, 300), np.zeros(2), np.eye(2), r, B=200, seed=s, level=0.9)["KID_ci"]
            for s in range(150)]
    widths = np.mean([hi - lo for lo, hi in hits])
    assert widths > 50 * 2e-3                                     # the Monte-Carlo error is negligible
    cover = np.mean([lo <= true <= hi for lo, hi in hits])
    assert 0.82 <= cover <= 0.97, cover


def test_no_ranking_rule_and_validation():
    assert distinguishable([1, 2], [1.5, 3]) is False and distinguishable([1, 2], [2.5, 3]) is True
    assert distinguishable(None, [0, 1]) is None
    assert indistinguishable_pairs({"a": [0, 1], "b": [0.5, 2], "c": [3, 4]}) == [["a", "b"]]
    assert percentile_interval(np.arange(101), 0.9) == pytest.approx((5.0, 95.0))
    with pytest.raises(ConfigError, match="B must"):
        bootstrap_fd_kid(np.ones((5, 2)), np.zeros(2), np.eye(2), B=3)
    with pytest.raises(ConfigError, match="reference mean"):
        bootstrap_fd_kid(np.random.default_rng(0).standard_normal((5, 2)), np.zeros(3), np.eye(3))
