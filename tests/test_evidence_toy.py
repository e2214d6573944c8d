"""toy_var100 (data N(0, diag(100, 1, 0.01)), exact eps, linear schedule): per-step norms against closed forms,
the PAPER.md 5(iv) products, the official quadratic schedule's repeated timesteps, S1-S2 on the exact toy.

References: the closed forms max_i |A + B g_i| (independent of any power iteration), dense SVD of the
exact Jacobian `GaussianToy.jacobian`, the PAPER.md reference numbers, and dense matrix products (S2).
"""

from __future__ import annotations

import math

import pytest
import torch

from iec_theory.ddim import step_coefficients
from iec_theory.evidence.linalg import Linearization, power_norm
from iec_theory.evidence.toy import (
    PAPER_PRODUCTS,
    closed_form_norms,
    official_quad_timesteps,
    product_along_direction,
    s2_orders,
    toy_var100,
)
from iec_theory.sampler import sample

torch.set_num_threads(1)


def _steps(toy, ts):
    x = torch.zeros(1, 3, dtype=torch.float64)
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        yield i, t, step_coefficients(toy.schedule, t, s), toy.jacobian(x, t)[0]


def test_toy_closed_form_norms_match_dense_svd_of_exact_jacobian():
    toy = toy_var100()
    ts = toy.schedule.timesteps(100)
    cf = closed_form_norms(toy, ts, [0.5, 1.0])
    for i, _t, k, J in _steps(toy, ts):
        M = k.a * torch.eye(3, dtype=torch.float64) + k.b * J
        dense = float(torch.linalg.matrix_norm(M, 2))
        assert abs(dense - cf["spectral_norm_x"][i]) <= 1e-12 * dense
        assert abs(cf["spectral_norm_xbar"][i] - dense / k.a) <= 1e-12       # xbar factor is M / A exactly
        L = float(torch.linalg.matrix_norm(0.5 * torch.eye(3, dtype=torch.float64) + 0.5 * k.b * J, 2))
        assert abs(cf["contraction_L"]["0.5"][i] - L) <= 1e-12
    assert min(cf["spectral_norm_x"]) > 1.0          # per-step norms above 1 at every step ...
    assert max(cf["spectral_norm_xbar"]) <= 1.0      # ... but never in xbar for the exact Gaussian score


def test_toy_evidence_pipeline_norms_match_closed_form_to_1e6_every_step():
    # the JVP/VJP pipeline used for the network (Lanczos Ritz space + warm-started power iteration)
    from iec_theory.evidence.perstep import LinalgPlan
    from iec_theory.evidence.runner import run_setting

    toy = toy_var100()
    ts = toy.schedule.timesteps(100)
    cf = closed_form_norms(toy, ts, [0.3, 0.5, 1.0])
    x_T = torch.randn(1, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    plan = LinalgPlan((0.3, 0.5, 1.0), power_iter=50, power_tol=1e-10, lanczos_m=3, direct_lambdas=(0.5,))
    res = run_setting("toy", toy, lambda: toy, toy.schedule, x_T, ts, range(len(ts)), plan, None, s2=False)
    for i in range(len(ts)):
        r = res.steps[i]
        assert abs(r["norm_x"] - cf["spectral_norm_x"][i]) <= 1e-6 * cf["spectral_norm_x"][i], i
        assert abs(r["norm_xbar"] - cf["spectral_norm_xbar"][i]) <= 1e-6 * cf["spectral_norm_xbar"][i], i
        for lam in ("0.3", "0.5", "1.0"):
            assert abs(r["contraction_L"][lam] - cf["contraction_L"][lam][i]) <= 1e-6 * cf["contraction_L"][lam][i]


def test_toy_plain_power_iteration_converges_where_the_spectrum_has_a_gap():
    toy = toy_var100()
    ts = toy.schedule.timesteps(100)
    cf = closed_form_norms(toy, ts, [])
    checked = 0
    for i, t, k, J in _steps(toy, ts):
        sv = torch.linalg.svdvals(k.a * torch.eye(3, dtype=torch.float64) + k.b * J)
        if float(sv[1] / sv[0]) > 0.98 or i % 4:   # near-degenerate top pair: plain power iteration is slow
            continue
        x = torch.zeros(1, 3, dtype=torch.float64)
        lin = Linearization(lambda z, t=t: toy(z, t), x)
        pw = power_norm(lambda v, k=k, lin=lin: k.a * v + k.b * lin.jvp(v),
                        lambda u, k=k, lin=lin: k.a * u + k.b * lin.vjp(u),
                        torch.tensor([[0.3, 0.5, 0.8]], dtype=torch.float64), max_iter=3000, tol=1e-12)
        assert abs(pw.value - cf["spectral_norm_x"][i]) <= 1e-6 * cf["spectral_norm_x"][i], (i, t)
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("key,ref", sorted(PAPER_PRODUCTS.items()))
def test_paper_products_reproduced(key, ref):
    toy = toy_var100()
    kind, T = key
    ts = official_quad_timesteps(1000, T)[0] if kind == "quad_official" else toy.schedule.timesteps(T)
    prod, mx = product_along_direction(toy.schedule, ts, 100.0)
    assert round(prod, 2) == pytest.approx(ref, abs=1e-9)
    assert mx < math.sqrt(100.0)


def test_official_quad_schedule_has_four_identity_steps():
    full, distinct = official_quad_timesteps(1000, 100)
    assert len(full) == 100 and len(distinct) == 96 and full[0] == 800
    pairs = [(t, full[i + 1] if i + 1 < len(full) else -1) for i, t in enumerate(full)]
    rep = [(t, s) for t, s in pairs if t == s]
    assert len(rep) == 4
    toy = toy_var100()
    for t, _ in rep:   # A = 1, B = 0 for a step t -> t (abar_s = abar_t)
        a_t = toy.schedule.abar(t)
        assert math.sqrt(a_t / a_t) == 1.0 and math.sqrt(1 - a_t) - math.sqrt(1 - a_t) == 0.0


def test_s2_correct_product_range_beats_transcribed_range():
    from iec_theory.perturbations import NonMonotoneNonlinear

    toy = toy_var100()
    ts = toy.schedule.timesteps(20)
    x_T = torch.randn(1, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eff = NonMonotoneNonlinear(toy, 0.01, 1.0, seed=1)
    ref = sample(toy, toy.schedule, x_T, ts)
    pert = sample(eff, toy.schedule, x_T, ts)
    out = s2_orders(eff, toy.schedule, ts, ref.xs, toy, pert.xs[-1] - ref.xs[-1])
    assert out["rel_error_correct_order"] < 1e-3          # first order, small error: nearly exact
    assert out["rel_error_transcribed_order"] > 0.1       # the transcribed range j = i+1..T is wrong
    assert out["norm_of_product"] <= out["product_of_norms"] * (1 + 1e-12)


def test_s2_exact_for_affine_error():
    # affine eps~ (bias): first order is exact, so the correct-order sum equals delta_0 to rounding
    from iec_theory.perturbations import Bias

    toy = toy_var100()
    ts = toy.schedule.timesteps(10)
    x_T = torch.randn(1, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eff = Bias(toy, 0.1, seed=2)
    ref = sample(toy, toy.schedule, x_T, ts)
    pert = sample(eff, toy.schedule, x_T, ts)
    out = s2_orders(eff, toy.schedule, ts, ref.xs, toy, pert.xs[-1] - ref.xs[-1])
    assert out["rel_error_correct_order"] < 1e-12
