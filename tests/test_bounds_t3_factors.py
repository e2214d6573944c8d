"""T3's amplification factors and their consequences (property tests over a, u, K, lambda)."""

from __future__ import annotations

import numpy as np
import torch
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from iec_theory.theorems.t2 import propagation_matrices
from iec_theory.theory import amplification_factors, stability_region

A = st.floats(1.0, 9.0)
U = st.floats(0.0, 100.0)
LAMS = st.lists(st.floats(0.01, 2.0), min_size=0, max_size=8)


@settings(max_examples=examples(200))
@given(A, U, LAMS)
def test_bounds_t3_closed_form_matches_the_recursion(a: float, u: float, lams: list[float]) -> None:
    p = a - u
    err = 4e-16 * (abs(a) + abs(u) + abs(p))      # forward rounding error of the recursion, propagated
    for lam in lams:
        r = 1 - lam * (1 + u)
        p = r * p + lam * a
        err = abs(r) * err + 4e-16 * (abs(p) + lam * (abs(a) + (1 + u) * abs(p)))
    _, _, fK = amplification_factors(a, u, len(lams), lams)
    assert abs(fK - p) <= 10 * err + 1e-12 * (1 + abs(p))


@settings(max_examples=examples(200))
@given(A, U, st.floats(0.01, 2.0), st.integers(1, 30))
def test_bounds_t3_fixed_point_stable_and_convergence_iff(a: float, u: float, lam: float, K: int) -> None:
    g, fs, fK = amplification_factors(a, u, K, lam)
    assert 0 < fs <= a * (1 + 1e-15)                      # (i) stable fixed point in xbar: f*/a = 1/(1+u) <= 1
    r = 1 - lam * (1 + u)
    assert (abs(r) < 1) == (lam < 2 / (1 + u))          # (ii) convergence iff lambda < 2/(1+u)
    assert np.isclose(abs(fK - fs), abs(r) ** K * abs(g - fs), rtol=1e-9, atol=1e-14 * (a + abs(g)))


@settings(max_examples=examples(300))
@given(A, U)
def test_bounds_t3_official_ddpm_preset_vs_plain(a: float, u: float) -> None:
    """(iii) K = 1, lambda = 1/2: f_1 = (a + (1-u)(a-u))/2; f_1 >= |g| iff u >= a - 1 (1 <= a <= 9); at a = 1
    always (AM-GM) -- THEORY states only a = 1 (docs/PROOFS.md, deviation)."""
    g, _, f1 = amplification_factors(a, u, 1, 0.5)
    assert np.isclose(f1, (a + (1 - u) * (a - u)) / 2, rtol=1e-12, atol=1e-12)
    tol = 1e-9 * (1 + u * u + a)
    if u >= a - 1 + 1e-9:
        assert f1 >= abs(g) - tol
    elif u <= a - 1 - 1e-9 and u > 1e-9:
        assert f1 < abs(g) + tol
    _, _, f1_unit = amplification_factors(1.0, u, 1, 0.5)
    assert f1_unit >= abs(1 - u) - tol and np.isclose(f1_unit, ((1 - u) ** 2 + 1) / 2)


@settings(max_examples=examples(25))
@given(st.integers(1, 8), st.integers(0, 4), st.floats(-3, 3), st.floats(0.5, 1.5), st.integers(0, 10_000))
def test_bounds_t3_matrix_recursion_is_diagonal_in_the_eigenbasis(d: int, K: int, logb: float, a: float,
                                                                  seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    mu = torch.rand(d, generator=g, dtype=torch.float64) * 5
    C = (Q * mu) @ Q.T
    b = -(10.0**logb)
    lams = [0.3 + 0.1 * k for k in range(K)]
    P, _ = propagation_matrices(a, b, C, lams, [torch.zeros(1, d, dtype=torch.float64)] * (K + 1))
    _, _, fK = amplification_factors(a, abs(b) * mu.numpy(), K, lams)
    pred = (Q * torch.as_tensor(fK)) @ Q.T
    assert torch.allclose(P, pred, rtol=1e-9, atol=1e-9 * float(pred.abs().max() + 1))


def test_bounds_t3_stability_region_boundary() -> None:
    u = np.linspace(0, 20, 201)
    lam = np.linspace(0.02, 1.0, 50)
    reg = stability_region(u, lam, [40], a=1.0)
    conv = reg["converges"]
    # where the iteration converges and K is large, |f_K| -> f* = 1/(1+u) <= 1: stable
    assert np.all(reg["abs_fK"][0][conv & (np.abs(1 - lam[:, None] * (1 + u[None, :])) < 0.5)] <= 1 + 1e-9)
    # lambda >= 2/(1+u) and stiff (u > 2): divergent and worse than the plain step
    div = ~conv & (u[None, :] > 2)
    assert np.all(reg["abs_fK"][0][div] >= reg["abs_g"][None, :].repeat(lam.size, 0)[div] - 1e-9)
