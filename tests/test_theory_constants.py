"""Constants: exact toy values and the torch.func estimators tested against them; amplification factors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iec_theory import Schedule
from iec_theory import perturbations as P
from iec_theory.constants import (
    constants_from_jacobians,
    estimate_lipschitz,
    estimate_monotonicity,
    exact_jacobian,
    rayleigh_along,
    segment_constants,
)
from iec_theory.theory import amplification_factors, stability_region
from toy_models import GaussianMixtureToy, GaussianToy

torch.set_num_threads(1)
SCH = Schedule.linear()


def _gauss(d: int = 12, seed: int = 0) -> GaussianToy:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    return GaussianToy(torch.zeros(d, dtype=torch.float64), A @ A.T / d + 1e-3 * torch.eye(d, dtype=torch.float64), SCH)


def _mix(d: int = 6) -> GaussianMixtureToy:
    m = torch.zeros(2, d, dtype=torch.float64)
    m[0, 0], m[1, 0] = 1.0, -1.0
    return GaussianMixtureToy(torch.tensor([0.5, 0.5], dtype=torch.float64), m,
                              torch.stack([0.01 * torch.eye(d, dtype=torch.float64)] * 2), SCH)


@pytest.mark.parametrize("t", [50, 400, 900])
def test_estimators_match_exact_gaussian_spectrum(t: int) -> None:
    toy = _gauss()
    mu = toy.affine_eigvals(t)
    x = torch.randn(3, toy.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    L = estimate_lipschitz(toy, x, t, n_iter=60, generator=g)
    m = estimate_monotonicity(toy, x, t, n_iter=toy.dim, generator=g)
    assert np.allclose(L.value, float(mu.max()), rtol=1e-3)
    assert np.all(L.value <= float(mu.max()) * (1 + 1e-12))          # power iteration: from below
    assert np.allclose(m.value, float(mu.min()), rtol=1e-8, atol=1e-10)
    c = segment_constants(toy, x[0], x[1], t)
    assert c.exact and np.isclose(c.m, float(mu.min())) and np.isclose(c.L, float(mu.max()))


def test_estimators_match_exact_mixture_jacobian() -> None:
    mix = _mix()
    x = 0.05 * torch.randn(2, mix.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = 100
    J = mix.jacobian(x, torch.full((2,), t))
    ev = torch.linalg.eigvalsh(J)
    g = torch.Generator().manual_seed(4)
    m = estimate_monotonicity(mix, x, t, n_iter=mix.dim, generator=g)
    L = estimate_lipschitz(mix, x, t, n_iter=80, generator=g)
    assert np.allclose(m.value, ev[:, 0].numpy(), rtol=1e-8)
    assert np.allclose(L.value, ev.abs().amax(1).numpy(), rtol=1e-3)
    assert ev[:, 0].max() < 0                                      # expansive between the modes
    r = rayleigh_along(mix, x, torch.ones_like(x), t)
    assert np.all(r >= ev[:, 0].numpy() - 1e-9) and np.all(r <= ev[:, -1].numpy() + 1e-9)


def test_segment_constants_worst_case_over_segment() -> None:
    mix = _mix(2)
    x0 = torch.tensor([0.6, 0.0], dtype=torch.float64)
    x1 = torch.tensor([-0.6, 0.0], dtype=torch.float64)
    c = segment_constants(mix, x0, x1, 100)
    ends = [constants_from_jacobians(mix.jacobian(x.reshape(1, -1), torch.tensor([100]))) for x in (x0, x1)]
    assert not c.exact and c.m <= min(e[0] for e in ends) and c.L >= max(e[1] for e in ends)
    assert c.m < 0 < min(e[0] for e in ends)      # the endpoints are monotone, the segment crosses the saddle


def test_perturbed_jacobians() -> None:
    toy = _gauss(5)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    J = toy.jacobian(x, torch.full((4,), 300))
    assert torch.allclose(exact_jacobian(P.Scale(toy, 0.2), x, 300), 1.2 * J)
    assert torch.allclose(exact_jacobian(P.Bias(toy, magnitude=0.1), x, 300), J)
    mono = P.MonotoneNonlinear(toy, magnitude=0.3, length=0.5, seed=1)
    Jm = exact_jacobian(mono, x, 300)
    fd = torch.func.jacrev(lambda y: mono(y.unsqueeze(0), torch.tensor([300])).squeeze(0))
    for b in range(4):
        assert torch.allclose(Jm[b], fd(x[b]), atol=1e-10)
    assert exact_jacobian(P.OutputQuantization(toy, bits=8), x, 300) is None


def test_amplification_factors_contract() -> None:
    a, u = 1.3, np.array([0.0, 0.5, 2.0, 10.0])
    g, fs, fK = amplification_factors(a, u, 2, [0.4, 0.7])
    assert np.allclose(g, a - u) and np.allclose(fs, a / (1 + u))
    prod = (1 - 0.4 * (1 + u)) * (1 - 0.7 * (1 + u))
    assert np.allclose(fK, fs + prod * (g - fs))
    assert np.allclose(g - fs, u * (a - 1 - u) / (1 + u))
    _, _, f0 = amplification_factors(a, u, 0, [])
    assert np.allclose(f0, g)
    g2, _, _ = amplification_factors(np.array([[1.0], [2.0]]), u, 1, 0.5)
    assert g2.shape == (2, 4)


def test_stability_region_grid() -> None:
    reg = stability_region(np.linspace(0, 10, 11), np.array([0.1, 0.5, 1.0]), [1, 5])
    assert reg["abs_fK"].shape == (2, 3, 11)
    assert reg["converges"][0, 10] == (abs(1 - 0.1 * 11) < 1)
