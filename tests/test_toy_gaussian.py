"""GaussianToy against independent references (THEORY.md sections 1, 7; docs/TOY_API.md).

References: scipy.stats.multivariate_normal (marginals), torch.autograd of log_prob (eps = -sqrt(1-abar)
grad log p_t), torch.func.jacrev (Jacobian), numpy linear solves (eps formula), ordinary least squares on
simulated (x_t, noise) pairs (E[noise | x_t] by Monte Carlo, 5 standard errors), scipy solve_ivp DOP853 on the
probability-flow ODE written in sigma (exact_flow), and the DDIM sampler's first-order convergence.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.stats import multivariate_normal

from iec_theory import ConfigError, Schedule, sample
from toy_models import GaussianToy

torch.set_num_threads(1)
F64 = torch.float64
SCHED = Schedule.linear()


def _params(kind: str):
    """(model, mean, dense covariance built independently of the model)."""
    g = torch.Generator().manual_seed(7)
    if kind == "full":
        A = torch.randn(3, 3, generator=g, dtype=F64)
        cov = A @ A.T + 0.3 * torch.eye(3, dtype=F64)
        mean = torch.randn(3, generator=g, dtype=F64)
        return GaussianToy(mean, cov, SCHED), mean, cov
    if kind == "diag":
        mean = torch.randn(3, generator=g, dtype=F64)
        var = torch.tensor([0.5, 2.0, 0.05], dtype=F64)
        return GaussianToy.diagonal(mean, var, SCHED), mean, torch.diag(var)
    if kind == "lowrank":
        mean = torch.randn(4, generator=g, dtype=F64)
        U = torch.randn(4, 2, generator=g, dtype=F64)
        s = torch.tensor([1.5, 0.7], dtype=F64)
        tiny = 1e-3
        cov = U @ torch.diag(s**2) @ U.T + tiny * torch.eye(4, dtype=F64)
        return GaussianToy.low_rank(mean, U, s, tiny, SCHED), mean, cov
    raise AssertionError(kind)


KINDS = ["full", "diag", "lowrank"]


def _ref_eps(mean: torch.Tensor, cov: torch.Tensor, a: float, x: torch.Tensor) -> np.ndarray:
    """sqrt(1-a) (a Sigma + (1-a) I)^{-1} (x - sqrt(a) mean) by a dense numpy solve."""
    d = mean.shape[0]
    M = a * cov.numpy() + (1 - a) * np.eye(d)
    r = x.numpy() - math.sqrt(a) * mean.numpy()
    return math.sqrt(1 - a) * np.linalg.solve(M, r.T).T


def _xs(d: int, n: int = 5, seed: int = 3, scale: float = 1.5) -> torch.Tensor:
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ----- marginals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", [-1, 0, 250, 999])
def test_log_prob_and_marginal_match_scipy(kind, t):
    model, mean, cov = _params(kind)
    a = SCHED.abar(t)
    mean_t = math.sqrt(a) * mean.numpy()
    cov_t = a * cov.numpy() + (1 - a) * np.eye(model.dim)
    x = _xs(model.dim) + torch.as_tensor(mean_t)
    ref = multivariate_normal(mean_t, cov_t).logpdf(x.numpy())
    got = model.log_prob(x, t).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-11)
    m, c = model.marginal(t)
    np.testing.assert_allclose(m.numpy(), mean_t, rtol=1e-13, atol=1e-14)
    c = torch.diag(c) if model.is_diagonal else c
    np.testing.assert_allclose(c.numpy(), cov_t, rtol=1e-12, atol=1e-13)


def test_cov_attributes():
    model, _, cov = _params("full")
    V, lam = model.cov_eigvecs, model.cov_eigvals
    assert bool((lam[1:] >= lam[:-1]).all())
    torch.testing.assert_close(V @ torch.diag(lam) @ V.T, cov, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.cov, cov, rtol=0, atol=1e-15)
    lr, _, cov_lr = _params("lowrank")
    assert bool((lr.cov_eigvals[1:] >= lr.cov_eigvals[:-1]).all())
    np.testing.assert_allclose(lr.cov_eigvals.numpy(), np.linalg.eigvalsh(cov_lr.numpy()), rtol=1e-10, atol=1e-13)
    V = lr.cov_eigvecs
    torch.testing.assert_close(V.T @ V, torch.eye(4, dtype=F64), rtol=0, atol=1e-13)
    torch.testing.assert_close(V @ torch.diag(lr.cov_eigvals) @ V.T, cov_lr, rtol=0, atol=1e-12)
    dg, _, cov_d = _params("diag")
    assert dg.is_diagonal and dg.cov_eigvecs is None
    torch.testing.assert_close(dg.cov, cov_d)


# ----- eps ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", [0, 137, 500, 999])
def test_eps_matches_dense_solve_and_affine(kind, t):
    model, mean, cov = _params(kind)
    x = _xs(model.dim)
    ref = _ref_eps(mean, cov, SCHED.abar(t), x)
    got = model(x, torch.full((x.shape[0],), t, dtype=torch.long))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-11, atol=1e-12)
    C, c = model.affine(t)
    torch.testing.assert_close(C, C.T, rtol=0, atol=0)
    np.testing.assert_allclose((x @ C.T + c).numpy(), ref, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_eps_matches_autodiff_of_log_prob(kind):
    """eps*(x, t) = -sqrt(1 - abar) grad_x log p_t(x), gradient by torch.autograd of log_prob."""
    model, _, _ = _params(kind)
    worst = 0.0
    for t in (3, 200, 700, 999):
        x = _xs(model.dim).requires_grad_(True)
        (grad,) = torch.autograd.grad(model.log_prob(x, t).sum(), x)
        ref = -math.sqrt(1 - SCHED.abar(t)) * grad
        got = model.eps(x.detach(), t)
        worst = max(worst, float(((got - ref).norm(dim=1) / ref.norm(dim=1)).max()))
    print(f"[{kind}] eps vs autograd of log_prob: max relative error {worst:.2e}")
    assert worst < 1e-12


def test_eps_per_sample_times():
    model, _, _ = _params("full")
    x = _xs(3, n=4)
    ts = torch.tensor([999, 0, 431, 431])
    got = model.eps(x, ts)
    for i, t in enumerate(ts.tolist()):
        torch.testing.assert_close(got[i : i + 1], model.eps(x[i : i + 1], t), rtol=0, atol=0)


def test_eps_matches_monte_carlo_regression():
    """E[noise | x_t] by Monte Carlo: OLS of noise on (x_t, 1) over simulated pairs.

    (x_t, noise) is jointly Gaussian, so E[noise | x_t] = C x_t + c exactly and the OLS residuals are
    homoscedastic Gaussian: the textbook standard errors se = sqrt(s^2 diag((X^T X)^{-1})) are exact. Every
    one of the 6 coefficients must lie within 5 se of the model's affine(t).
    """
    mean = torch.tensor([1.0, -2.0], dtype=F64)
    cov = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=F64)
    model = GaussianToy(mean, cov, SCHED)
    g = torch.Generator().manual_seed(11)
    n, t = 200_000, 300
    a = SCHED.abar(t)
    x0 = model.sample_data(n, g)
    noise = torch.randn(n, 2, generator=g, dtype=F64)
    xt = math.sqrt(a) * x0 + math.sqrt(1 - a) * noise
    X = torch.cat([xt, torch.ones(n, 1, dtype=F64)], dim=1).numpy()
    Y = noise.numpy()
    XtX_inv = np.linalg.inv(X.T @ X)
    beta = XtX_inv @ X.T @ Y  # [3, 2]
    resid = Y - X @ beta
    s2 = (resid**2).sum(0) / (n - 3)
    se = np.sqrt(np.outer(np.diag(XtX_inv), s2))  # [3, 2]
    C, c = model.affine(t)
    expected = np.concatenate([C.T.numpy(), c.numpy()[None]], axis=0)
    z = (beta - expected) / se
    print(f"MC regression n={n}, t={t}: max |coef error| = {np.abs(beta - expected).max():.2e}, "
          f"se in [{se.min():.1e}, {se.max():.1e}], max |z| = {np.abs(z).max():.2f}")
    assert np.abs(z).max() < 5.0
    # the check has teeth: the eps of a Gaussian with a 10% larger covariance is rejected
    wrong, _ = GaussianToy(mean, 1.1 * cov, SCHED).affine(t)
    assert np.abs((beta[:2] - wrong.T.numpy()) / se[:2]).max() > 5.0


# ----- Jacobian, affine eigenvalues ---------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_jacobian_matches_jacrev(kind):
    model, _, _ = _params(kind)
    x = _xs(model.dim, n=3)
    ts = torch.tensor([5, 480, 999])
    J = model.jacobian(x, ts)
    worst = 0.0
    for i in range(3):
        t = int(ts[i])
        ref = torch.func.jacrev(lambda z, t=t: model.eps(z.unsqueeze(0), t).squeeze(0))(x[i])
        worst = max(worst, float((J[i] - ref).abs().max() / ref.abs().max()))
    print(f"[{kind}] analytic jacobian vs jacrev: max relative error {worst:.2e}")
    assert worst < 1e-10


@pytest.mark.parametrize("kind", ["full", "lowrank"])
def test_affine_eigvals(kind):
    model, _, _ = _params(kind)
    for t in (0, 321, 999):
        C, _ = model.affine(t)
        g = model.affine_eigvals(t)
        a = SCHED.abar(t)
        np.testing.assert_allclose(g.numpy(), math.sqrt(1 - a) / (a * model.cov_eigvals.numpy() + (1 - a)),
                                   rtol=1e-13)
        V = model.cov_eigvecs
        torch.testing.assert_close(V.T @ C @ V, torch.diag(g), rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.sort(g.numpy()), np.linalg.eigvalsh(C.numpy()), rtol=1e-11)


# ----- diagonal model ----------------------------------------------------------------------------
def test_diagonal_equals_full_model():
    mean = torch.tensor([0.3, -1.0, 2.0], dtype=F64)
    var = torch.tensor([0.5, 2.0, 0.05], dtype=F64)
    dg = GaussianToy.diagonal(mean, var, SCHED)
    fl = GaussianToy(mean, torch.diag(var), SCHED)
    x = _xs(3, n=4)
    ts = torch.tensor([999, 10, 500, 0])
    torch.testing.assert_close(dg.eps(x, ts), fl.eps(x, ts), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(dg.jacobian(x, ts), fl.jacobian(x, ts), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(dg.log_prob(x, -1), fl.log_prob(x, -1), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(dg.exact_flow(x, ts, -1), fl.exact_flow(x, ts, -1), rtol=1e-13, atol=1e-14)
    C1, c1 = dg.affine(77)
    C2, c2 = fl.affine(77)
    torch.testing.assert_close(C1, C2, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(c1, c2, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(dg.marginal(77)[1], torch.diag(fl.marginal(77)[1]), rtol=1e-13, atol=1e-14)


def test_diagonal_million_dims():
    """d = 1e6: eps, exact_flow and log_prob in O(B d) memory, checked against numpy elementwise formulas."""
    d = 10**6
    g = torch.Generator().manual_seed(5)
    mean = torch.randn(d, generator=g, dtype=F64)
    var = 0.1 + torch.rand(d, generator=g, dtype=F64)
    model = GaussianToy.diagonal(mean, var, SCHED)
    assert model.cov_eigvecs is None and model.dim == d
    x = torch.randn(2, d, generator=g, dtype=F64)
    ts = torch.tensor([900, 50])
    got = model.eps(x, ts).numpy()
    for i, t in enumerate(ts.tolist()):
        a = SCHED.abar(t)
        ref = math.sqrt(1 - a) * (x[i].numpy() - math.sqrt(a) * mean.numpy()) / (a * var.numpy() + 1 - a)
        np.testing.assert_allclose(got[i], ref, rtol=1e-12, atol=1e-13)
    flow = model.exact_flow(x[:1], 900, -1).numpy()[0]
    s2 = SCHED.sigma(900) ** 2
    m, v = mean.numpy(), var.numpy()
    ref = m + (x[0].numpy() / math.sqrt(SCHED.abar(900)) - m) * np.sqrt(v / (v + s2))
    np.testing.assert_allclose(flow, ref, rtol=1e-12, atol=1e-12)
    lp = model.log_prob(x[:1], -1)
    ref_lp = -0.5 * (((x[0] - mean) ** 2 / var).sum() + torch.log(var).sum() + d * math.log(2 * math.pi))
    torch.testing.assert_close(lp[0], ref_lp, rtol=1e-12, atol=0)
    with pytest.raises(ConfigError, match="dense"):
        _ = model.cov


# ----- exact flow --------------------------------------------------------------------------------
def _continuous_abar(sigma: float) -> float:
    return 1.0 / (1.0 + sigma * sigma)


def _ode_reference(mean: np.ndarray, cov: np.ndarray, x: np.ndarray, t_from: int, t_to: int) -> np.ndarray:
    """Solve d xbar / d sigma = eps(sqrt(abar) xbar, sigma) with solve_ivp (DOP853, rtol 1e-11, atol 1e-13).

    Continuous-time eps from the closed form with abar = 1 / (1 + sigma^2): (a Sigma + (1-a) I) =
    (Sigma + sigma^2 I) / (1 + sigma^2), sqrt(1-a) = sigma / sqrt(1+sigma^2), x - sqrt(a) mean =
    (xbar - mean) / sqrt(1+sigma^2), hence eps = sigma (Sigma + sigma^2 I)^{-1} (xbar - mean).
    The right-hand side is evaluated in that generic form from abar(sigma), by a dense numpy solve.
    """
    d = mean.shape[0]
    n = x.shape[0]

    def rhs(sig, yflat):
        a = _continuous_abar(sig)
        xb = yflat.reshape(n, d)
        xt = math.sqrt(a) * xb
        M = a * cov + (1 - a) * np.eye(d)
        eps = math.sqrt(1 - a) * np.linalg.solve(M, (xt - math.sqrt(a) * mean).T).T
        return eps.reshape(-1)

    s_f, s_t = SCHED.sigma(t_from), SCHED.sigma(t_to)
    xbar0 = x / math.sqrt(SCHED.abar(t_from))
    sol = solve_ivp(rhs, (s_f, s_t), xbar0.reshape(-1), method="DOP853", rtol=1e-11, atol=1e-13)
    assert sol.success, sol.message
    return math.sqrt(SCHED.abar(t_to)) * sol.y[:, -1].reshape(n, d)


@pytest.mark.parametrize("kind", KINDS)
def test_exact_flow_matches_ode_solve(kind):
    model, mean, cov = _params(kind)
    worst = 0.0
    for t_from, t_to in [(999, -1), (600, 50), (20, 900), (0, -1)]:
        a = SCHED.abar(t_from)
        x = math.sqrt(a) * mean + math.sqrt(1 - a) * _xs(model.dim, n=3)  # typical points of p_{t_from} and beyond
        ref = _ode_reference(mean.numpy(), cov.numpy(), x.numpy(), t_from, t_to)
        got = model.exact_flow(x, t_from, t_to).numpy()
        err = np.abs(got - ref).max() / np.abs(ref).max()
        worst = max(worst, err)
    print(f"[{kind}] exact_flow vs solve_ivp DOP853 rtol 1e-11: max relative error {worst:.2e}")
    assert worst < 1e-8


def test_exact_flow_composes_and_inverts():
    model, _, _ = _params("full")
    x = _xs(3, n=4)
    ts = torch.tensor([999, 700, 300, 5])
    mid = torch.tensor([400, 100, -1, 2])
    direct = model.exact_flow(x, ts, -1)
    via = model.exact_flow(model.exact_flow(x, ts, mid), mid, -1)
    torch.testing.assert_close(via, direct, rtol=1e-12, atol=1e-12)
    back = model.exact_flow(direct, -1, ts)
    torch.testing.assert_close(back, x, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(model.exact_flow(x, 123, 123), x, rtol=0, atol=1e-15)


def test_exact_flow_pushes_marginals():
    """The exact flow maps N(m_from, K_from) to N(m_to, K_to): affine map A x + b with A K_from A^T = K_to."""
    model, _, _ = _params("full")
    t_from, t_to = 800, 120
    b = model.exact_flow(torch.zeros(1, 3, dtype=F64), t_from, t_to)[0]
    A = (model.exact_flow(torch.eye(3, dtype=F64), t_from, t_to) - b).T
    m_f, K_f = model.marginal(t_from)
    m_t, K_t = model.marginal(t_to)
    torch.testing.assert_close(A @ m_f + b, m_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(A @ K_f @ A.T, K_t, rtol=1e-11, atol=1e-12)


# ----- sampling ----------------------------------------------------------------------------------
def test_sample_data_moments():
    model, mean, cov = _params("full")
    n = 100_000
    x = model.sample_data(n, torch.Generator().manual_seed(2))
    se_mean = torch.sqrt(torch.diag(cov) / n)
    assert float(((x.mean(0) - mean).abs() / se_mean).max()) < 5.0
    emp = torch.cov(x.T)
    se_cov = torch.sqrt((torch.outer(torch.diag(cov), torch.diag(cov)) + cov**2) / n)
    assert float(((emp - cov).abs() / se_cov).max()) < 5.0


def test_ddim_converges_first_order():
    """Plain DDIM (eta = 0) on a 2-d full-covariance Gaussian converges to exact_flow(x_T, tau_T, -1) at order 1."""
    mean = torch.tensor([0.5, -1.0], dtype=F64)
    cov = torch.tensor([[1.0, 0.8], [0.8, 0.9]], dtype=F64)
    model = GaussianToy(mean, cov, SCHED)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    Ts = (25, 50, 100, 200)
    errs = []
    for T in Ts:
        ts = SCHED.timesteps(T)
        traj = sample(model, SCHED, x_T, ts, eta=0.0)
        ref = model.exact_flow(x_T, ts[0], -1)
        errs.append(float((traj.x0 - ref).norm(dim=1).max()))
    slope = np.polyfit(np.log(Ts), np.log(errs), 1)[0]
    print(f"DDIM errors at T={Ts}: {[f'{e:.3e}' for e in errs]}, measured order {-slope:.3f}")
    assert 0.8 <= -slope <= 1.3


# ----- bad input ---------------------------------------------------------------------------------
def test_rejects_nonsymmetric_cov():
    with pytest.raises(ConfigError, match="not symmetric"):
        GaussianToy(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]), SCHED)


def test_rejects_non_positive_definite_cov():
    with pytest.raises(ConfigError, match="not positive definite"):
        GaussianToy(torch.zeros(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]]), SCHED)
    with pytest.raises(ConfigError, match="not positive definite"):
        GaussianToy(torch.zeros(2), torch.tensor([[1.0, 1.0], [1.0, 1.0]]), SCHED)


def test_rejects_mean_cov_shape_mismatch():
    with pytest.raises(ConfigError, match=r"cov must have shape \[3, 3\]"):
        GaussianToy(torch.zeros(3), torch.eye(2), SCHED)
    with pytest.raises(ConfigError, match="var must have the shape of mean"):
        GaussianToy.diagonal(torch.zeros(3), torch.ones(2), SCHED)
    with pytest.raises(ConfigError, match="s must have shape"):
        GaussianToy.low_rank(torch.zeros(3), torch.ones(3, 2), torch.ones(3), 1e-3, SCHED)


def test_rejects_bad_diag_and_low_rank_parameters():
    with pytest.raises(ConfigError, match="var must be positive"):
        GaussianToy.diagonal(torch.zeros(2), torch.tensor([1.0, 0.0]), SCHED)
    with pytest.raises(ConfigError, match="tiny must be a finite number > 0"):
        GaussianToy.low_rank(torch.zeros(3), torch.ones(3, 1), torch.ones(1), 0.0, SCHED)


def test_rejects_x_dim_mismatch():
    model, _, _ = _params("full")
    with pytest.raises(ConfigError, match=r"x must have shape \[B, 3\]"):
        model.eps(torch.zeros(2, 4, dtype=F64), 10)
    with pytest.raises(ConfigError, match=r"x must have shape \[B, 3\]"):
        model.log_prob(torch.zeros(3, dtype=F64), 10)


def test_rejects_t_out_of_range():
    model, _, _ = _params("full")
    x = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ConfigError, match="out of range"):
        model.eps(x, 1000)
    with pytest.raises(ConfigError, match="out of range"):
        model.eps(x, -1)  # the data end is accepted only by exact_flow, log_prob, marginal
    with pytest.raises(ConfigError, match="t_to out of range"):
        model.exact_flow(x, 10, -2)
    with pytest.raises(ConfigError, match="entries but the batch has"):
        model.eps(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ConfigError, match="integer timestep"):
        model.eps(x, torch.tensor([1.0, 2.0]))


def test_rejects_nan_and_inf():
    model, _, _ = _params("full")
    with pytest.raises(ConfigError, match=r"x contains non-finite values \(1 NaN, 0 Inf\)"):
        model.eps(torch.tensor([[0.0, float("nan"), 1.0]], dtype=F64), 5)
    with pytest.raises(ConfigError, match="mean contains non-finite"):
        GaussianToy(torch.tensor([0.0, float("inf")]), torch.eye(2), SCHED)
    with pytest.raises(ConfigError, match="cov contains non-finite"):
        GaussianToy(torch.zeros(2), torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]]), SCHED)
