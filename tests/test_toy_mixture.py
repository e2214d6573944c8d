"""GaussianMixtureToy against independent references (THEORY.md sections 1, 7; docs/TOY_API.md).

References: scipy.stats (marginal mixture density, posterior weights, 1-d CDFs), torch.autograd of log_prob
(eps = -sqrt(1-abar) grad log p_t), torch.func.jacrev (Jacobian), self-normalised importance sampling over data
samples (E[noise | x_t] by Monte Carlo, 5 standard errors), GaussianToy's closed-form flow (one component),
the 1-d monotone transport F_to^{-1}(F_from(x)) (the flow map of a 1-d probability-flow ODE), and
forward-backward integration.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, norm

from iec_theory import ConfigError, Schedule, sample
from toy_models import GaussianMixtureToy, GaussianToy

torch.set_num_threads(1)
F64 = torch.float64
SCHED = Schedule.linear()

WEIGHTS = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
MEANS = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=F64)
COVS = torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.5, -0.2], [-0.2, 0.4]], [[0.15, 0.0], [0.0, 0.15]]], dtype=F64)


def _mix() -> GaussianMixtureToy:
    return GaussianMixtureToy(WEIGHTS, MEANS, COVS, SCHED)


def _xs(n: int = 6, seed: int = 3, scale: float = 2.0) -> torch.Tensor:
    return scale * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _scipy_components(x: np.ndarray, t: int) -> np.ndarray:
    """log pi_k N(x; sqrt(a) m_k, a S_k + (1-a) I) by scipy, [B, K]."""
    a = SCHED.abar(t)
    cols = [math.log(float(WEIGHTS[k])) + multivariate_normal(math.sqrt(a) * MEANS[k].numpy(),
                                                               a * COVS[k].numpy() + (1 - a) * np.eye(2)).logpdf(x)
            for k in range(3)]
    return np.stack(cols, axis=1)


# ----- density, weights, marginal ----------------------------------------------------------------
@pytest.mark.parametrize("t", [-1, 0, 300, 999])
def test_log_prob_and_posterior_weights_match_scipy(t):
    mix = _mix()
    x = math.sqrt(SCHED.abar(t)) * _xs(scale=1.0) + torch.tensor([0.5, -0.3], dtype=F64)
    lj = _scipy_components(x.numpy(), t)
    np.testing.assert_allclose(mix.log_prob(x, t).numpy(), logsumexp(lj, axis=1), rtol=1e-11, atol=1e-11)
    w_ref = np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
    np.testing.assert_allclose(mix.posterior_weights(x, t).numpy(), w_ref, rtol=1e-10, atol=1e-14)
    w, m, c = mix.marginal(t)
    a = SCHED.abar(t)
    torch.testing.assert_close(w, WEIGHTS)
    torch.testing.assert_close(m, math.sqrt(a) * MEANS, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(c, a * COVS + (1 - a) * torch.eye(2, dtype=F64), rtol=1e-14, atol=1e-15)


def test_overall_moments():
    mix = _mix()
    x = mix.sample_data(100_000, torch.Generator().manual_seed(4))
    se = torch.sqrt(torch.diag(mix.cov) / x.shape[0])
    z = (x.mean(0) - mix.mean).abs() / se
    assert float(z.max()) < 5.0
    ref_mean = (WEIGHTS[:, None] * MEANS).sum(0)
    torch.testing.assert_close(mix.mean, ref_mean)
    d = MEANS - ref_mean
    ref_cov = (WEIGHTS[:, None, None] * (COVS + d[:, :, None] * d[:, None, :])).sum(0)
    torch.testing.assert_close(mix.cov, ref_cov, rtol=1e-13, atol=1e-14)


# ----- eps ---------------------------------------------------------------------------------------
def test_eps_matches_autodiff_of_log_prob():
    mix = _mix()
    worst = 0.0
    for t in (0, 40, 300, 999):
        x = (math.sqrt(SCHED.abar(t)) * _xs()).requires_grad_(True)
        (grad,) = torch.autograd.grad(mix.log_prob(x, t).sum(), x)
        ref = -math.sqrt(1 - SCHED.abar(t)) * grad
        got = mix(x.detach(), torch.full((x.shape[0],), t, dtype=torch.long))
        worst = max(worst, float(((got - ref).norm(dim=1) / ref.norm(dim=1)).max()))
    print(f"mixture eps vs autograd of log_prob: max relative error {worst:.2e}")
    assert worst < 1e-11


def test_eps_matches_importance_sampling():
    """E[noise | x_t = x] by self-normalised importance sampling over x0 ~ data law (n = 400000).

    noise = (x - sqrt(a) x0) / sqrt(1-a) given x0, with weight w_i = N(x; sqrt(a) x0_i, (1-a) I). Estimator
    sum w f / sum w; delta-method standard error sqrt(sum w_i^2 (f_i - est)^2) / sum w_i. Each coordinate
    must be within 5 standard errors; the moment-matched Gaussian's eps and 1.03 * eps must be rejected.
    """
    mix = _mix()
    t = 300
    a = SCHED.abar(t)
    x0 = mix.sample_data(400_000, torch.Generator().manual_seed(21)).numpy()
    queries = np.concatenate([math.sqrt(a) * MEANS.numpy() + 0.3, [[0.0, 0.0], [0.8, -1.0]]])
    got = mix.eps(torch.as_tensor(queries), t).numpy()
    gauss = GaussianToy(mix.mean, mix.cov, SCHED).eps(torch.as_tensor(queries), t).numpy()
    zmax, zgauss, zscaled, min_ess = 0.0, 0.0, 0.0, np.inf
    for q, e, eg in zip(queries, got, gauss):
        r = q - math.sqrt(a) * x0
        logw = -0.5 * (r**2).sum(1) / (1 - a)
        w = np.exp(logw - logw.max())
        f = r / math.sqrt(1 - a)
        est = (w[:, None] * f).sum(0) / w.sum()
        se = np.sqrt((w[:, None] ** 2 * (f - est) ** 2).sum(0)) / w.sum()
        min_ess = min(min_ess, w.sum() ** 2 / (w**2).sum())
        zmax = max(zmax, float(np.abs((e - est) / se).max()))
        zgauss = max(zgauss, float(np.abs((eg - est) / se).max()))
        zscaled = max(zscaled, float(np.abs((1.03 * e - est) / se).max()))
        print(f"  x={q}: eps={e}, SNIS={est} +- {se}")
    print(f"SNIS check at t={t}: max |z| = {zmax:.2f}, min ESS = {min_ess:.0f}, moment-matched Gaussian max |z| = "
          f"{zgauss:.1f}, 1.03 * eps max |z| = {zscaled:.1f}")
    assert zmax < 5.0
    assert zgauss > 5.0 and zscaled > 5.0


def test_eps_per_sample_times_and_single_component():
    mix = _mix()
    x = _xs(n=4)
    ts = torch.tensor([999, 0, 431, 431])
    got = mix.eps(x, ts)
    for i, t in enumerate(ts.tolist()):
        torch.testing.assert_close(got[i : i + 1], mix.eps(x[i : i + 1], t), rtol=0, atol=0)
    one = GaussianMixtureToy([1.0], MEANS[1:2], COVS[1:2], SCHED)
    g = GaussianToy(MEANS[1], COVS[1], SCHED)
    torch.testing.assert_close(one.eps(x, ts), g.eps(x, ts), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(one.jacobian(x, ts), g.jacobian(x, ts), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(one.log_prob(x, ts), g.log_prob(x, ts), rtol=1e-13, atol=1e-13)


# ----- Jacobian ----------------------------------------------------------------------------------
def test_jacobian_matches_jacrev():
    mix = _mix()
    worst = 0.0
    for t in (0, 60, 300, 999):
        x = math.sqrt(SCHED.abar(t)) * _xs(n=4)
        J = mix.jacobian(x, t)
        torch.testing.assert_close(J, J.transpose(1, 2), rtol=0, atol=1e-14)
        for i in range(x.shape[0]):
            ref = torch.func.jacrev(lambda z, t=t: mix.eps(z.unsqueeze(0), t).squeeze(0))(x[i])
            worst = max(worst, float((J[i] - ref).abs().max() / ref.abs().max()))
    print(f"mixture analytic jacobian vs jacrev: max relative error {worst:.2e}")
    assert worst < 1e-10


def test_jacobian_indefinite_between_modes():
    """THEORY.md section 7: negative eigenvalue between two separated modes, positive definite at the modes."""
    mix = GaussianMixtureToy([0.5, 0.5], [[-3.0, 0.0], [3.0, 0.0]], 0.05 * torch.eye(2).repeat(2, 1, 1), SCHED)
    t = 20
    a = SCHED.abar(t)
    pts = torch.tensor([[0.0, 0.0], [-3 * math.sqrt(a), 0.0], [3 * math.sqrt(a), 0.0]], dtype=F64)
    ev = torch.linalg.eigvalsh(mix.jacobian(pts, t))
    ref_mode = math.sqrt(1 - a) / (a * 0.05 + 1 - a)
    print(f"eigenvalues at midpoint {ev[0].tolist()}, at modes {ev[1].tolist()} (single-mode value {ref_mode:.3f})")
    assert float(ev[0, 0]) < -1.0 and float(ev[0, 1]) > 0  # negative along the line of the modes
    assert bool((ev[1:] > 0).all())
    torch.testing.assert_close(ev[1:], torch.full((2, 2), ref_mode, dtype=F64), rtol=1e-6, atol=0)
    ref = torch.func.jacrev(lambda z: mix.eps(z.unsqueeze(0), t).squeeze(0))(pts[0])
    torch.testing.assert_close(mix.jacobian(pts[:1], t)[0], ref, rtol=1e-10, atol=1e-12)


# ----- flow --------------------------------------------------------------------------------------
def test_exact_flow_forward_backward():
    mix = _mix()
    x_T = _xs(n=5, scale=1.0)
    x0 = mix.exact_flow(x_T, 999, -1)
    back = mix.exact_flow(x0, -1, 999)
    err = float((back - x_T).abs().max())
    mid = mix.exact_flow(x0, -1, torch.tensor([100, 500, 999, 0, 700]))
    back2 = mix.exact_flow(mid, torch.tensor([100, 500, 999, 0, 700]), 999)
    err2 = float((back2 - x_T).abs().max())
    print(f"mixture flow 999 -> -1 -> 999: max error {err:.2e}; via mixed intermediate times {err2:.2e}")
    assert err < 1e-8 and err2 < 1e-8
    torch.testing.assert_close(mix.exact_flow(x_T, 999, 999), x_T, rtol=0, atol=0)


def test_single_component_flow_equals_gaussian_closed_form():
    one = GaussianMixtureToy([1.0], MEANS[1:2], COVS[1:2], SCHED)
    g = GaussianToy(MEANS[1], COVS[1], SCHED)
    x = _xs(n=4, scale=1.0)
    worst = 0.0
    for t_from, t_to in [(999, -1), (500, 20), (10, 800)]:
        got = one.exact_flow(x, t_from, t_to)
        ref = g.exact_flow(x, t_from, t_to)
        worst = max(worst, float((got - ref).abs().max() / ref.abs().max()))
    print(f"1-component mixture flow vs Gaussian closed form: max relative error {worst:.2e}")
    assert worst < 1e-8


def test_flow_is_monotone_transport_in_1d():
    """In 1-d the flow map is the increasing map pushing p_from to p_to: x -> F_to^{-1}(F_from(x))."""
    w = np.array([0.35, 0.65])
    m = np.array([-1.5, 2.0])
    s2 = np.array([0.2, 0.6])
    mix = GaussianMixtureToy(w, m[:, None], s2[:, None, None], SCHED)

    def cdf(x, t):
        a = SCHED.abar(t)
        return float((w * norm.cdf((x - math.sqrt(a) * m) / np.sqrt(a * s2 + 1 - a))).sum())

    worst = 0.0
    for t_from, t_to in [(800, -1), (600, 100), (50, 900)]:
        xs = math.sqrt(SCHED.abar(t_from)) * np.array([-2.0, -1.0, 0.1, 0.4, 1.5, 2.5])
        got = mix.exact_flow(torch.as_tensor(xs[:, None]), t_from, t_to).numpy()[:, 0]
        ref = []
        for x in xs:
            u = cdf(x, t_from)
            ref.append(brentq(lambda y, u=u, t_to=t_to: cdf(y, t_to) - u, -20, 20, xtol=1e-14, rtol=1e-14))
        worst = max(worst, float(np.abs(got - np.array(ref)).max()))
    print(f"1-d mixture flow vs quantile transport: max abs error {worst:.2e}")
    assert worst < 1e-7


def test_ddim_approaches_flow():
    """Plain DDIM on the mixture converges to the reference flow (first order: error halves with T doubling)."""
    mix = _mix()
    x_T = _xs(n=4, scale=1.0)
    errs = []
    for T in (50, 100, 200):
        ts = SCHED.timesteps(T)
        errs.append(float((sample(mix, SCHED, x_T, ts).x0 - mix.exact_flow(x_T, ts[0], -1)).norm(dim=1).max()))
    order = -np.polyfit(np.log([50, 100, 200]), np.log(errs), 1)[0]
    print(f"mixture DDIM errors {[f'{e:.3e}' for e in errs]}, measured order {order:.2f}")
    assert 0.7 <= order <= 1.5


# ----- bad input ---------------------------------------------------------------------------------
def test_rejects_nonpositive_weights():
    with pytest.raises(ConfigError, match="weights must be positive"):
        GaussianMixtureToy([1.2, -0.2], MEANS[:2], COVS[:2], SCHED)


def test_rejects_weights_not_summing_to_one():
    with pytest.raises(ConfigError, match="must sum to 1"):
        GaussianMixtureToy([0.5, 0.4], MEANS[:2], COVS[:2], SCHED)


def test_rejects_shape_mismatches():
    with pytest.raises(ConfigError, match="weights has 3 entries"):
        GaussianMixtureToy(WEIGHTS, MEANS[:2], COVS[:2], SCHED)
    with pytest.raises(ConfigError, match=r"covs must have shape \[3, 2, 2\]"):
        GaussianMixtureToy(WEIGHTS, MEANS, COVS[:2], SCHED)
    with pytest.raises(ConfigError, match=r"x must have shape \[B, 2\]"):
        _mix().eps(torch.zeros(3, 3, dtype=F64), 5)


def test_rejects_bad_covariances():
    bad = COVS.clone()
    bad[1, 0, 1] = 0.3
    with pytest.raises(ConfigError, match=r"covs\[1\] is not symmetric"):
        GaussianMixtureToy(WEIGHTS, MEANS, bad, SCHED)
    bad = COVS.clone()
    bad[2] = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ConfigError, match=r"covs\[2\] is not positive definite"):
        GaussianMixtureToy(WEIGHTS, MEANS, bad, SCHED)


def test_rejects_t_out_of_range_and_nonfinite():
    mix = _mix()
    x = torch.zeros(2, 2, dtype=F64)
    with pytest.raises(ConfigError, match="out of range"):
        mix.eps(x, 1000)
    with pytest.raises(ConfigError, match="out of range"):
        mix.jacobian(x, -1)
    with pytest.raises(ConfigError, match="t_from out of range"):
        mix.exact_flow(x, 1000, -1)
    with pytest.raises(ConfigError, match="non-finite"):
        mix.eps(torch.tensor([[0.0, float("inf")]], dtype=F64), 3)
    with pytest.raises(ConfigError, match="means contains non-finite"):
        GaussianMixtureToy(WEIGHTS, MEANS * float("nan"), COVS, SCHED)
