"""Core checks: schedules, the DDIM step, IEC against a literal re-implementation of the official loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iec_theory import ConfigError, IECConfig, NoiseSource, Schedule, StepSelection, ddim_coefficients, sample
from iec_theory.ddim import apply_step, step_coefficients

DT = torch.float64


# ----- schedules -----------------------------------------------------------------------------------
def test_linear_schedule_matches_definition():
    s = Schedule.linear()
    betas = np.linspace(1e-4, 0.02, 1000)
    assert s.alphas_cumprod.dtype == np.float64 and s.alphas_cumprod.shape == (1000,)
    np.testing.assert_allclose(s.alphas_cumprod, np.cumprod(1 - betas), rtol=1e-14)
    assert s.abar(-1) == 1.0 and s.sigma(-1) == 0.0


def test_cosine_schedule_tracks_its_closed_form():
    s = Schedule.cosine(1000)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 100, 500, 900):
        assert s.abar(t) == pytest.approx(f((t + 1) / 1000) / f(0), rel=1e-10)


def test_from_betas_and_quad():
    b = np.full(10, 0.1)
    s = Schedule.from_betas(b)
    np.testing.assert_allclose(s.alphas_cumprod, 0.9 ** np.arange(1, 11), rtol=1e-14)
    q = Schedule.quad(100, 1e-4, 0.02)
    assert q.betas[0] == pytest.approx(1e-4) and q.betas[-1] == pytest.approx(0.02)


@pytest.mark.parametrize("T", [1, 7, 10, 50, 100, 333, 1000])
def test_uniform_timesteps_follow_the_skip_rule(T):
    s = Schedule.linear()
    ts = s.timesteps(T)
    assert len(ts) == T and ts == sorted(ts, reverse=True)
    assert ts == list(reversed(list(range(0, 1000, 1000 // T))[:T]))


def test_quad_timesteps_as_in_ddim():
    ts = Schedule.linear().timesteps(20, "quad")
    expected = [int(v) for v in np.linspace(0, np.sqrt(800), 20) ** 2][::-1]
    assert ts == expected


@pytest.mark.parametrize("T", [0, -3, 1001])
def test_bad_T_is_rejected(T):
    with pytest.raises(ConfigError, match="T"):
        Schedule.linear().timesteps(T)


def test_bad_schedules_are_rejected():
    with pytest.raises(ConfigError, match="betas"):
        Schedule.from_betas([0.1, 1.5])
    with pytest.raises(ConfigError, match="betas"):
        Schedule.from_betas([0.1, float("nan")])
    with pytest.raises(ConfigError, match="spacing"):
        Schedule.linear().timesteps(10, "cubic")
    with pytest.raises(ConfigError, match="decreasing"):
        Schedule.linear().check_timesteps([10, 20])


# ----- the DDIM step -------------------------------------------------------------------------------
@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_ddim_step_equals_textbook_x0_prediction_form(eta):
    """x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - c^2) eps + c z (Song et al. eq. 12)."""
    sch = Schedule.linear()
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for t, s in [(999, 899), (500, 480), (10, 0), (0, -1), (999, -1)]:
        a, b, c = ddim_coefficients(sch, t, s, eta)
        at, as_ = sch.abar(t), sch.abar(s)
        sigma = eta * math.sqrt((1 - as_) / (1 - at) * (1 - at / as_))
        assert c == pytest.approx(sigma, rel=1e-14, abs=1e-300)
        x, eps, z = (torch.randn(5, 4, generator=g, dtype=DT) for _ in range(3))
        x0 = (x - math.sqrt(1 - at) * eps) / math.sqrt(at)
        ref = math.sqrt(as_) * x0 + math.sqrt(1 - as_ - sigma**2) * eps + sigma * z
        ours = a * x + b * eps + c * z
        worst = max(worst, float((ours - ref).abs().max() / ref.abs().max()))
        assert a >= 1.0 and b <= 0.0
    assert worst < 1e-13, worst


def test_eta_zero_step_is_euler_in_xbar():
    sch = Schedule.linear()
    k = step_coefficients(sch, 700, 600)
    assert abs(k.b) == pytest.approx(math.sqrt(k.abar_s) * k.dsigma, rel=1e-12)


def test_eta_one_adjacent_step_has_posterior_variance():
    sch = Schedule.linear()
    for t in (1, 10, 500, 999):
        _, _, c = ddim_coefficients(sch, t, t - 1, eta=1.0)
        beta_tilde = (1 - sch.abar(t - 1)) / (1 - sch.abar(t)) * sch.betas[t]
        assert c**2 == pytest.approx(beta_tilde, rel=1e-10)


def test_clipping_only_changes_out_of_range_x0():
    sch = Schedule.linear()
    k = step_coefficients(sch, 300, 200)
    x = torch.full((1, 3), 0.1, dtype=DT)
    eps = torch.zeros(1, 3, dtype=DT)
    assert torch.allclose(apply_step(k, x, eps, None, clip_x0=1.0), apply_step(k, x, eps, None))
    big = torch.full((1, 3), 50.0, dtype=DT)
    out = apply_step(k, big, eps, None, clip_x0=1.0)
    assert torch.allclose(out, torch.full_like(out, math.sqrt(k.abar_s)))


# ----- IEC vs the official loop --------------------------------------------------------------------
class RandomNet:
    """A random nonlinear eps model: eps(x, t) = tanh(W x + u t/1000) * scale + V x."""

    def __init__(self, d: int, seed: int, scale: float = 1.0):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(d, d, generator=g, dtype=DT) / math.sqrt(d)
        self.V = 0.3 * scale * torch.randn(d, d, generator=g, dtype=DT) / math.sqrt(d)
        self.u = torch.randn(d, generator=g, dtype=DT)
        self.scale = scale
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        tt = t.to(DT)[:, None] / 1000.0
        return self.scale * torch.tanh(x @ self.W.T + self.u * tt) + x @ self.V.T


def official_loop(model, sch, x, seq, eta, lambdas, tol, gen, selected):
    """Literal transcription of the official IEC sampling loop's semantics (THEORY.md section 2):
    x0-prediction form, correction at the same timestep t, relative residual over the whole batch,
    relaxation lambdas[iter - 1] (official: 0.5 ** iter), fresh randn at every iteration."""
    max_iter = len(lambdas) + 1
    seq_next = [-1] + list(seq[:-1])
    xs = [x]
    nfe = 0
    for cur_i, (i, j) in enumerate(zip(reversed(seq), reversed(seq_next))):
        t = torch.full((x.shape[0],), i, dtype=torch.long)
        at = torch.tensor(sch.abar(i), dtype=DT)
        at_next = torch.tensor(sch.abar(j), dtype=DT)
        xt = xs[-1]
        iters = max_iter if cur_i in selected else 1
        c1 = eta * ((1 - at / at_next) * (1 - at_next) / (1 - at)).sqrt()
        c2 = ((1 - at_next) - c1**2).sqrt()
        for it in range(iters):
            if it == 0:
                et = model(xt, t)
                nfe += 1
                x0_t = (xt - et * (1 - at).sqrt()) / at.sqrt()
                xt_next_hat = at_next.sqrt() * x0_t + c1 * torch.randn(x.shape, generator=gen, dtype=DT) + c2 * et
            else:
                et = model(xt_next_hat, t)
                nfe += 1
                xt_next_new = (at_next.sqrt() * ((xt - et * (1 - at).sqrt()) / at.sqrt())
                               + c1 * torch.randn(x.shape, generator=gen, dtype=DT) + c2 * et)
                residual = torch.norm(xt_next_new - xt_next_hat) / (torch.norm(xt_next_hat) + 1e-6)
                if residual < tol:
                    break
                xt_next_hat = xt_next_hat + lambdas[it - 1] * (xt_next_new - xt_next_hat)
        xs.append(xt_next_hat)
    return torch.stack(xs), nfe


PRESETS = {
    # name: (config factory, the official code's lambdas written out independently, tol)
    "official_ddpm": (IECConfig.official_ddpm, [0.5**1], 1e-3),          # gamma ** iter, iter = 1
    "official_ldm": (IECConfig.official_ldm, [0.5**0, 0.5**1], 1e-6),    # gamma ** (iter - 1)
    "relaxed": (lambda: IECConfig.relaxed(0.8, 3, tol=0.0), [0.8, 0.8, 0.8], 0.0),
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tol_override", [None, 0.05])
def test_iec_matches_official_loop(preset, eta, seed, tol_override):
    factory, lambdas, tol = PRESETS[preset]
    cfg = factory()
    if tol_override is not None:  # a large tol makes early stops happen
        cfg = IECConfig(cfg.K, cfg.lambdas, tol_override, cfg.noise, cfg.select, cfg.name)
        tol = tol_override
    d, T = 6, 20
    sch = Schedule.linear()
    model = RandomNet(d, seed, scale=0.2 if tol_override else 1.0)
    x_T = torch.randn(3, d, generator=torch.Generator().manual_seed(100 + seed), dtype=DT)
    selected = set(range(0, T, 3)) if seed == 2 else set(range(T))
    if seed == 2:
        cfg = IECConfig(cfg.K, cfg.lambdas, cfg.tol, cfg.noise, StepSelection.every(3), cfg.name)
    ours = sample(model, sch, x_T, T, eta=eta, iec=cfg, generator=torch.Generator().manual_seed(7))
    ref_xs, ref_nfe = official_loop(model, sch, x_T, list(range(0, 1000, 1000 // T)), eta, lambdas,
                                    tol, torch.Generator().manual_seed(7), selected)
    err = float((ours.xs - ref_xs).abs().max() / ref_xs.abs().max())
    assert err < 1e-12, err
    assert ours.nfe == ref_nfe
    stops = sum(r.early_stop for r in ours.steps)
    if tol == 0.0:
        assert stops == 0 and ours.nfe == T + len(selected) * cfg.K
    if tol_override is not None:
        assert stops > 0, "the configuration meant to trigger early stops did not"
        # an early stop at correction k saves K - k evaluations (none for K = 1)
        assert ours.nfe == T + sum(len(r.residuals) for r in ours.steps)
        if cfg.K >= 2:
            assert ours.nfe < T + len(selected) * cfg.K


def test_nfe_accounting_and_records():
    sch = Schedule.linear()
    model = RandomNet(4, 0)
    x_T = torch.randn(2, 4, dtype=DT)
    tr = sample(model, sch, x_T, 10, iec=IECConfig.relaxed(0.5, 3, tol=0.0, select=StepSelection.last(4)))
    assert tr.nfe == model.calls == 10 + 4 * 3
    assert [r.iec_applied for r in tr.steps] == [False] * 6 + [True] * 4
    assert all(len(r.residuals) == 3 and r.corrections == 3 for r in tr.steps[6:])
    assert tr.xs.shape == (11, 2, 4) and torch.equal(tr.xs[0], x_T)
    assert tr.timesteps == sch.timesteps(10)


def test_shared_noise_reuses_the_step_noise():
    """With noise='shared' every correction uses the plain step's z: the fixed point is then the
    deterministic-in-z implicit step; check against a direct loop."""
    sch = Schedule.linear()
    model = RandomNet(3, 5)
    x_T = torch.randn(2, 3, generator=torch.Generator().manual_seed(3), dtype=DT)
    cfg = IECConfig.relaxed(0.7, 4, noise="shared")
    tr = sample(model, sch, x_T, 5, eta=1.0, iec=cfg, generator=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)
    x = x_T
    for i, t in enumerate(tr.timesteps):
        s = tr.timesteps[i + 1] if i + 1 < len(tr.timesteps) else -1
        a, b, c = ddim_coefficients(sch, t, s, 1.0)
        tt = torch.full((2,), t)
        z = torch.randn(x.shape, generator=g, dtype=DT)
        y = a * x + b * model(x, tt) + c * z
        for _ in range(4):
            y = y + 0.7 * (a * x + b * model(y, tt) + c * z - y)
        x = y
    assert torch.allclose(tr.x0, x, rtol=1e-12, atol=1e-12)


def test_relaxed_iteration_converges_to_the_implicit_step():
    """Many corrections with lambda = 1 on a contraction reach y* = a x + b eps(y*) + c z."""
    sch = Schedule.linear()
    model = RandomNet(4, 9, scale=0.5)
    x_T = torch.randn(2, 4, dtype=DT)
    tr = sample(model, sch, x_T, [999, 950], iec=IECConfig.relaxed(1.0, 60))
    a, b, _ = ddim_coefficients(sch, 999, 950)
    y = tr.xs[1]
    resid = y - (a * x_T + b * model(y, torch.full((2,), 999)))
    assert float(resid.abs().max()) < 1e-10


def test_selection_policies():
    ts = list(range(9, -1, -1))
    assert StepSelection.all().resolve(ts) == frozenset(range(10))
    assert StepSelection.first(3).resolve(ts) == {0, 1, 2}
    assert StepSelection.last(3).resolve(ts) == {7, 8, 9}
    assert StepSelection.every(4).resolve(ts) == {0, 4, 8}
    assert StepSelection.explicit([1, 5]).resolve(ts) == {1, 5}
    assert StepSelection.predicate(lambda i, t: t < 2).resolve(ts) == {8, 9}
    scores = [0.1, 5, 3, 0, 0, 0, 9, 0, 0, 1]
    assert StepSelection.top_k(3, scores).resolve(ts) == {1, 2, 6}
    with pytest.raises(ConfigError, match="out of range"):
        StepSelection.explicit([12]).resolve(ts)
    with pytest.raises(ConfigError, match="scores"):
        StepSelection.top_k(2, [1.0]).resolve(ts)


def test_keyed_noise_is_reproducible_and_independent_of_call_order():
    ns = NoiseSource(seed=3, keyed=True)
    like = torch.zeros(2, 3, dtype=DT)
    a = ns.draw(like, 4, 1)
    ns.draw(like, 0, 0)
    assert torch.equal(a, ns.draw(like, 4, 1)) and not torch.equal(a, ns.draw(like, 4, 2))


# ----- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(K=-1, lambdas=()), "K"),
        (dict(K=2, lambdas=(0.5,)), "length"),
        (dict(K=1, lambdas=(float("nan"),)), "finite"),
        (dict(K=1, lambdas=(0.0,)), "lambda"),
        (dict(K=1, lambdas=(3.0,)), "lambda"),
        (dict(K=1, lambdas=(0.5,), tol=-1.0), "tol"),
        (dict(K=1, lambdas=(0.5,), noise="weird"), "noise"),
    ],
)
def test_bad_iec_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        IECConfig(**kwargs)


def test_bad_sampler_inputs():
    sch = Schedule.linear()
    model = RandomNet(3, 0)
    x = torch.randn(2, 3, dtype=DT)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ConfigError, match="x_T.*non-finite"):
        sample(model, sch, bad, 10)
    with pytest.raises(ConfigError, match="T"):
        sample(model, sch, x, 0)
    with pytest.raises(ConfigError, match="T"):
        sample(model, sch, x, 1001)
    with pytest.raises(ConfigError, match="eps_model returned"):
        sample(lambda x, t: x[:, :2], sch, x, 5)
    with pytest.raises(ConfigError, match="non-finite"):
        sample(lambda x, t: x * float("inf"), sch, x, 5)
    with pytest.raises(ConfigError, match="eta"):
        sample(model, sch, x, 5, eta=-0.1)
    with pytest.raises(ConfigError, match="eta"):
        sample(model, sch, x, 5, eta=float("nan"))
