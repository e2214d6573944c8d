"""The theory's prescription (T3): lambda*_t minimises max |1 - lambda (1 + u)| over [u_min, u_max]."""

from __future__ import annotations

import math

import numpy as np

from iec_theory.evidence.compare import uniform_grid
from iec_theory.evidence.prescribe import prescribe, prescribed_config


def test_prescribed_lambda_is_the_minimax_relaxation():
    rows = [{"index": 0, "t": 900, "u_min": 0.1, "u_max": 3.0, "norm_xbar": 1.02},
            {"index": 1, "t": 800, "u_min": -0.5, "u_max": 0.2, "norm_xbar": 1.10},
            {"index": 2, "t": 700, "u_min": 0.0, "u_max": 0.1, "norm_xbar": 0.97},
            {"index": 3, "t": 600, "u_min": -1.5, "u_max": 1.0, "norm_xbar": 1.30}]
    p = prescribe(rows, target=0.1, K_max=4)["steps"]
    for r, row in zip(p[:3], rows[:3]):
        grid = np.linspace(0.01, 1.99, 19801)
        us = np.linspace(row["u_min"], row["u_max"], 201)
        worst = np.abs(1 - grid[:, None] * (1 + us[None, :])).max(1)   # brute force over lambda
        assert abs(grid[worst.argmin()] - r["lambda_star"]) < 2e-4
        assert abs(worst.min() - r["q"]) < 2e-4
        assert r["K"] == min(4, max(1, math.ceil(math.log(0.1) / math.log(r["q"]))))
    assert p[3]["contracts"] is False and p[3]["lambda_star"] is None and not p[3]["correct"]   # 1 + u_min <= 0
    assert [r["correct"] for r in p] == [True, True, False, False]     # xbar norm > 1 and contractible
    cfg = prescribed_config({"steps": p})
    assert cfg is not None and cfg.select.indices == (0, 1)
    lam = cfg.lambdas[0]
    for row in rows[:2]:   # the single lambda contracts at every selected step
        assert max(abs(1 - lam * (1 + u)) for u in (row["u_min"], row["u_max"])) < 1


def test_uniform_grid_starts_at_the_given_time():
    g = uniform_grid(800, 200)
    assert g[0] == 800 and g[-1] == 0 and len(g) == 200 and all(a > b for a, b in zip(g, g[1:]))
