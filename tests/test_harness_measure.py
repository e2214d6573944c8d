"""Measurements (propagated / deployment / total error, local errors, amplification) and the baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iec_theory import IECConfig, NoiseSource, Schedule, sample, step_coefficients
from iec_theory.baselines import ddim_matched, heun, iec_nfe, repeat, run_method
from iec_theory.measure import Recorder, error_curve, measure, state_abars
from iec_theory.perturbations import Bias, Cache, IIDNoise, Scale
from toy_models import GaussianToy

torch.set_num_threads(1)
SCH = Schedule.linear()
D = 4


@pytest.fixture(scope="module")
def toy() -> GaussianToy:
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    var = torch.tensor([1.0, 0.3, 0.01, 1e-3], dtype=torch.float64)
    return GaussianToy(torch.tensor([0.5, 0.0, -0.5, 1.0], dtype=torch.float64), (Q * var) @ Q.T, SCH)


def _xT(n: int = 8) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def test_error_curves_match_their_definitions(toy):
    xT = _xT()
    iec = IECConfig.relaxed(0.5, 1)
    eff = Bias(toy, magnitude=0.02)
    m = measure(toy, eff, SCH, xT, 10, 0.0, iec, keep_trajectories=True)
    tr = m.trajectories
    ts = tr["perturbed"].timesteps
    abars = np.array([SCH.abar(t) for t in ts] + [1.0])
    prop = (tr["perturbed"].xs - tr["reference_same"].xs).norm(dim=-1)        # [T+1, B]
    dep = (tr["perturbed"].xs - tr["reference_plain"].xs).norm(dim=-1)
    assert np.allclose(m.propagated["x"], prop.mean(1).numpy())
    assert np.allclose(m.propagated["xbar"], (prop / torch.tensor(np.sqrt(abars)).unsqueeze(1)).mean(1).numpy())
    assert np.allclose(m.deployment["x"], dep.mean(1).numpy())
    flow_final = toy.exact_flow(xT, ts[0], -1)
    assert m.total["x"][-1] == pytest.approx(float((tr["perturbed"].x0 - flow_final).norm(dim=-1).mean()))
    assert m.propagated["x"][0] == 0.0 and m.nfe["perturbed"] == 20 and m.nfe["reference_plain"] == 10
    # a constant bias: eta_t = ||e|| = 0.02 sqrt(d) at every step, at both points
    assert np.allclose(m.eta, 0.02 * math.sqrt(D)) and np.allclose(m.eta_ref, 0.02 * math.sqrt(D))
    assert np.allclose(m.eta_max, 0.02 * math.sqrt(D))
    assert m.growth["label"] in ("linear", "superlinear", "exponential", "inconclusive")
    s = m.summary()
    assert s["nfe"] == 20 and s["propagated_xbar"] == pytest.approx(m.propagated["xbar"][-1])


def test_propagated_error_zero_for_exact_model_and_deployment_is_iec_effect(toy):
    xT = _xT()
    m = measure(toy, toy, SCH, xT, 8, 0.0, IECConfig.official_ldm())
    assert np.all(m.propagated["x"] == 0.0) and np.all(m.eta == 0.0)
    assert m.deployment["x"][-1] > 0          # IEC on the exact model differs from plain DDIM
    plain = measure(toy, toy, SCH, xT, 8, 0.0, None)
    assert np.all(plain.deployment["x"] == 0.0)


def test_amplification_factors_are_exact_for_affine_toys(toy):
    """One step with the exact model: delta_{i+1} = G delta_i exactly, so the factor max |g|/a bounds the ratio."""
    xT = _xT(16)
    m = measure(toy, Scale(toy, 0.5), SCH, xT, 6, 0.0, None)
    for i, t in enumerate(m.timesteps):
        s = m.timesteps[i + 1] if i + 1 < len(m.timesteps) else -1
        k = step_coefficients(SCH, t, s)
        mu = toy.affine_eigvals(t).numpy()
        assert m.amp_plain[i] == pytest.approx(np.max(np.abs(k.a + k.b * mu)) / k.a)
        mu_eff = 1.5 * mu
        assert m.amp_plain_eff[i] == pytest.approx(np.max(np.abs(k.a + k.b * mu_eff)) / k.a, rel=1e-9)
    assert np.all(np.isfinite(m.amp_rayleigh[1:]))


def test_local_errors_of_cache_are_staleness(toy):
    xT = _xT()
    cache = Cache(toy, every=3)
    m = measure(toy, cache, SCH, xT, 9, 0.0, None)
    refresh = [i for i in range(9) if i % 3 == 0]
    assert all(m.eta[i] == 0.0 for i in refresh) and all(m.eta[i] > 0 for i in range(9) if i not in refresh)
    assert all(m.eta_ref[i] == 0.0 for i in refresh)


def test_recorder_and_state_abars(toy):
    rec = Recorder(Cache(toy, every=2))
    sample(rec, SCH, _xT(2), 4, iec=IECConfig.relaxed(0.5, 1))
    assert [r[0] for r in rec.records] == [0, 0, 1, 1, 2, 2, 3, 3]
    ab = state_abars(SCH, [900, 500])
    assert ab[-1] == 1.0 and ab[0] == pytest.approx(SCH.abar(900))
    c = error_curve(torch.ones(3, 2, D), torch.zeros(3, 2, D), np.array([0.25, 0.25, 1.0]))
    assert np.allclose(c["x"], 2.0) and np.allclose(c["xbar"], [4.0, 4.0, 2.0])


def test_baselines_nfe_and_definitions(toy):
    xT = _xT()
    iec = IECConfig.official_ddpm()
    T = 10
    assert iec_nfe(T, iec, SCH.timesteps(T)) == 20
    dm = ddim_matched(toy, SCH, xT, 20)
    assert dm.nfe == 20 and len(dm.timesteps) == 20
    h = heun(toy, SCH, xT, T)
    assert h.nfe == 2 * T - 1
    # Heun's step by hand at step 0
    ts = SCH.timesteps(T)
    k = step_coefficients(SCH, ts[0], ts[1])
    e1 = toy(xT, torch.full((8,), ts[0]))
    xe = k.a * xT + k.b * e1
    e2 = toy(xe, torch.full((8,), ts[1]))
    assert torch.allclose(h.xs[1], k.a * xT + k.b * 0.5 * (e1 + e2))
    # naive repetition with a deterministic model is the plain step, at IEC's cost
    r = repeat(toy, SCH, xT, T, 0.0, IECConfig.relaxed(0.5, 2))
    plain = sample(toy, SCH, xT, T)
    assert r.nfe == 3 * T and torch.allclose(r.x0, plain.x0, atol=1e-12)
    # with noisy evaluations it averages them: the relaxed mean of K+1 draws
    noisy = IIDNoise(toy, std=0.5, seed=1)
    r2 = repeat(noisy, SCH, xT, 3, 0.0, IECConfig.relaxed(0.5, 1))
    noisy.reset()
    s2 = sample(noisy, SCH, xT, 3)
    assert not torch.allclose(r2.x0, s2.x0)
    for name in ("ddim", "iec", "ddim_matched", "heun", "repeat"):
        tr = run_method(name, toy, SCH, xT, T, 0.0, iec, NoiseSource(seed=0, keyed=True))
        assert tr.nfe == {"ddim": 10, "iec": 20, "ddim_matched": 20, "heun": 19, "repeat": 20}[name]


def test_measure_with_baseline_methods(toy):
    xT = _xT()
    eff = Bias(toy, magnitude=0.05)
    iec = IECConfig.official_ddpm()
    dm = measure(toy, eff, SCH, xT, 10, 0.0, iec, method="ddim_matched")
    assert dm.nfe["perturbed"] == 20 and len(dm.propagated["x"]) == 21
    assert len(dm.deployment["x"]) == 11            # the shared (nested) T-step grid
    h = measure(toy, eff, SCH, xT, 10, 0.0, None, method="heun")
    assert h.nfe["perturbed"] == 19 and h.amp_scheme is not None
    rp = measure(toy, eff, SCH, xT, 10, 0.0, iec, method="repeat")
    plain = measure(toy, eff, SCH, xT, 10, 0.0, None, method="ddim")
    assert np.allclose(rp.propagated["x"], plain.propagated["x"]) and rp.nfe["perturbed"] == 20
