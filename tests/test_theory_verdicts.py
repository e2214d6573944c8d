"""Verdict code under planted defects and adversarial input (issue: sound verdicts, items 7 and 8).

Each test names the one-line bug it is about; each fails on that bug (checked by hand and by
scripts/mutants.py).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from iec_theory import Schedule
from iec_theory.claims import C1, C2
from iec_theory.ddim import apply_step, step_coefficients
from iec_theory.growth import GrowthResult, ratio_series
from iec_theory.theorems import THEOREMS
from iec_theory.theorems.instances import ToyInstance
from iec_theory.theorems.sensitivity import DEFECTS, sensitivity_table
from iec_theory.theory import amplification_factors


# ----------------------------------------------------------------------------------------------
# planted sampler defects: every check can fail, every defect is caught
# ----------------------------------------------------------------------------------------------
def test_sensitivity_table_every_theorem_catches_a_defect_and_every_defect_is_caught() -> None:
    table = sensitivity_table()["table"]
    assert all(v == 0 for v in table["none"].values()), table["none"]       # no false alarms without a defect
    for defect in DEFECTS:
        assert sum(table[defect].values()) > 0, f"{defect} caught by no theorem: {table[defect]}"
    for name in THEOREMS:
        assert any(table[d][name] > 0 for d in DEFECTS), f"{name} catches no planted defect: {table}"
    for name in ("T2", "T3", "T4", "T5"):      # the IEC defects are caught by the IEC checks
        assert table["correction_at_s"][name] > 0 and table["one_minus_lambda"][name] > 0, (name, table)
    for name in ("T1m", "T2", "T3"):           # T3 runs the sampler's own step code, coefficients included
        for defect in ("b_plus_5pct", "b_minus_5pct", "a_plus_5pct"):
            assert table[defect][name] > 0, (name, defect, table)


# ----------------------------------------------------------------------------------------------
# item 7: untested behaviours
# ----------------------------------------------------------------------------------------------
def test_ratio_series_uses_dsigma_weights() -> None:
    """R_n = E_n / (E_0 + sum_{m<n} dsig_m eta_m): the step weights matter (R without them flips labels)."""
    E = np.array([0.0, 1.0, 2.0, 3.0])
    eta = np.array([1.0, 1.0, 1.0])
    ds = np.array([0.5, 0.25, 4.0])
    R = ratio_series(E, eta, ds)
    np.testing.assert_allclose(R, [0.0, 1.0 / 0.5, 2.0 / 0.75, 3.0 / 4.75], rtol=1e-14)


def test_t4_hypothesis_guard_rejects_strongly_expansive_steps() -> None:
    """1 + |b| m~ <= 0 (a strongly non-monotone efficient model on a coarse grid) must leave T4's hypotheses
    unmet, never 'holds' (a guard forced to 'met' would pass every run)."""
    inst = ToyInstance(model="gaussian", dim=2, T=5, perturbation="nonmonotone", magnitude=40.0, iec="relaxed",
                       K=1, lam=0.5, seed=3)
    run = inst.run()
    from iec_theory.theorems.t4 import step_quantities

    denoms = [q["denom"] for st in run.steps if st.iec and (q := step_quantities(run, st)) is not None]
    assert min(denoms) <= 0, denoms
    res = THEOREMS["T4"].check(run)
    assert res.status == "hypotheses not met"
    assert any(not h.holds and "1 + |b| m~" in h.name for h in res.hypotheses)


def test_t4_fixed_point_bound_is_attained_in_one_dimension() -> None:
    """1-D affine efficient model, constant bias, delta_T aligned with the forcing: the fixed-point inequality
    is an equality (so the 1/(1 + |b| m~) factor cannot be dropped or altered without a failure)."""
    inst = ToyInstance(model="gaussian", dim=1, T=10, perturbation="scale", magnitude=0.5, iec="relaxed", K=40,
                       lam=0.5, delta_T=0.0)
    run = inst.run()
    from iec_theory.theorems.t4 import step_quantities

    ratios = []
    for st in run.steps:
        q = step_quantities(run, st)
        if q["denom"] > 1.01 and q["fp_bound"] > 0:
            ratios.append(q["fp_measured"] / q["fp_bound"])
    assert ratios and max(ratios) == pytest.approx(1.0, abs=1e-9), ratios
    assert THEOREMS["T4"].check(run).status == "holds"


def test_c2_inconclusive_growth_is_not_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    """C2's conclusion is 'linear'; an 'inconclusive' label never counts as linear."""
    import iec_theory.claims as claims

    def fake(run):
        fit = {"kappa": 2.0, "R_max": 1.0}
        return GrowthResult("inconclusive", 1.1, 2.0, "E", "inconclusive", "linear", fit, fit, None)

    monkeypatch.setattr(claims, "growth_of", fake)
    inst = claims.converging_iec(ToyInstance(model="gaussian", dim=2, T=10, perturbation="scale", magnitude=9.0))
    v = C2.evaluate(inst)
    assert v.under_H and v.status == "violated under H" and v.label == "inconclusive"


def test_clip_x0_with_eta_uses_the_reduced_eps_weight() -> None:
    """With clipping and eta > 0 the eps weight is sqrt(1 - abar_s - c^2) (textbook x0 form), not sqrt(1 - abar_s)."""
    sch = Schedule.linear()
    k = step_coefficients(sch, 500, 400, eta=0.7)
    g = torch.Generator().manual_seed(0)
    x, eps, z = (torch.randn(3, 5, dtype=torch.float64, generator=g) for _ in range(3))
    x0 = ((x - math.sqrt(1 - k.abar_t) * eps) / math.sqrt(k.abar_t)).clamp(-1, 1)
    ref = math.sqrt(k.abar_s) * x0 + math.sqrt(1 - k.abar_s - k.c ** 2) * eps + k.c * z
    torch.testing.assert_close(apply_step(k, x, eps, z, clip_x0=1.0), ref, rtol=1e-14, atol=1e-14)


def test_adversarial_injector_has_the_declared_l2_norm() -> None:
    """Adversarial errors have L2 norm = magnitude per sample (not max-norm = magnitude)."""
    from iec_theory.perturbations import make_perturbation

    inst = ToyInstance(model="gaussian", dim=8, T=10)
    exact = inst.exact_model()
    pert = make_perturbation({"kind": "adversarial", "magnitude": 0.3, "target": "top_eig", "seed": 0}, exact)
    x = torch.randn(4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.full((4,), 500, dtype=torch.long)
    e = pert(x, t) - exact(x, t)
    torch.testing.assert_close(torch.linalg.vector_norm(e, dim=1), torch.full((4,), 0.3, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------
# item 8: from the proof review
# ----------------------------------------------------------------------------------------------
def test_t3_f1_vs_g_iff_u_ge_a_minus_1_for_positive_u_any_a() -> None:
    """f_1 >= |g| iff u >= a - 1 for every a >= 1 and u > 0 (no a <= 9 restriction) ..."""
    for a in (1.0, 1.5, 3.0, 9.0, 20.0, 100.0):
        u = np.concatenate([np.linspace(1e-3, 3 * a + 5, 4001), [a - 1 - 1e-9, a - 1 + 1e-9]])
        u = u[u > 0]
        g, _, f1 = amplification_factors(a, u, 1, 0.5)
        np.testing.assert_array_equal(f1 >= np.abs(g) - 1e-12, u >= a - 1 - 1e-12)


def test_t3_equivalence_fails_for_negative_u() -> None:
    """... but not for u < 0: a = 1.5, u = -0.2 gives f_1 = 1.77 > |g| = 1.7 although u < a - 1."""
    g, _, f1 = amplification_factors(1.5, np.array([-0.2]), 1, 0.5)
    assert float(f1[0]) == pytest.approx(1.77) and float(abs(g[0])) == pytest.approx(1.7)
    assert f1[0] > abs(g[0])


@pytest.mark.parametrize("sched", ["linear", "cosine"])
def test_exact_gaussian_u_ge_a_minus_1_for_variance_at_most_1(sched: str) -> None:
    """By Cauchy-Schwarz u >= a - 1 on every exact-Gaussian direction with variance <= 1; variance 100 breaks it."""
    sch = getattr(Schedule, sched)()
    worst_small, worst_large = np.inf, np.inf
    for T in (5, 10, 50, 100):
        ts = sch.timesteps(T)
        for i, t in enumerate(ts):
            s = ts[i + 1] if i + 1 < len(ts) else -1
            for eta in (0.0, 1.0):
                k = step_coefficients(sch, t, s, eta)
                ab = k.abar_t
                for var, store in ((np.geomspace(1e-6, 1.0, 13), "small"), (np.array([100.0]), "large")):
                    mu = math.sqrt(1 - ab) / (ab * var + 1 - ab)
                    margin = abs(k.b) * mu - (k.a - 1)
                    if store == "small":
                        worst_small = min(worst_small, float(margin.min()))
                    else:
                        worst_large = min(worst_large, float(margin.min()))
    assert worst_small >= -1e-12
    assert worst_large < 0


def test_t1_exponential_form_has_looser_constants_than_the_true_factor() -> None:
    """kappa = 10 (eps~ = 10 eps*), T = 20: log prod (a + |b| L) exceeds log prod |g| by ~14 (33.1 vs 18.9)."""
    inst = ToyInstance(model="stiff", kappa=10.0, dim=4, T=20)
    exact = inst.exact_model()
    sch = exact.schedule
    ts = sch.timesteps(20)
    lt1 = lg = 0.0
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        k = step_coefficients(sch, t, s, 0.0)
        mu = exact.affine_eigvals(t).numpy()
        lt1 += math.log(k.a + abs(k.b) * float(np.abs(mu).max()))
        lg += math.log(float(np.abs(k.a - abs(k.b) * mu).max()))
    assert lt1 == pytest.approx(33.1, abs=0.1) and lg == pytest.approx(18.9, abs=0.1)


def test_noise_weight_condition_is_lambda_2_plus_u_gt_2() -> None:
    """Weights of per-call noise in an IEC step sum to |r|^K + l(1 - |r|^K)/(1 - |r|) -> l / (2 - l(1 + u)) for
    r < 0: above 1 iff l (2 + u) > 2.  l = 0.1, u = 10: l (1 + u) > 1 yet the weights sum to 0.11."""
    def weight(lam: float, u: float, K: int = 200) -> float:
        r = 1 - lam * (1 + u)
        return abs(r) ** K + lam * (1 - abs(r) ** K) / (1 - abs(r))

    assert weight(0.1, 10.0) == pytest.approx(0.1 / 0.9, rel=1e-9) and weight(0.1, 10.0) < 1
    for lam, u in ((0.5, 2.5), (0.3, 5.0), (0.9, 0.3), (0.15, 12.0)):
        assert (weight(lam, u) > 1) == (lam * (2 + u) > 2), (lam, u)


def test_c1_is_proven_by_t6_only() -> None:
    assert C1.proven_by == ("T6",) and "T1m" not in C1.proven_by


def test_t5_never_drops_a_step_whose_fixed_point_is_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    import iec_theory.theorems.t5 as t5

    inst = ToyInstance(model="gaussian", dim=3, T=10, perturbation="bias", iec="relaxed", K=3, lam=0.5)
    run = inst.run()
    assert THEOREMS["T5"].check(run).status == "holds"
    orig = t5.perturbed_fixed_point

    def failing(model, st, y0):
        y, ok, res = orig(model, st, y0)
        return (y, False, res) if st.i == 3 else (y, ok, res)

    monkeypatch.setattr(t5, "perturbed_fixed_point", failing)
    res = THEOREMS["T5"].check(inst.run())
    assert res.status == "hypotheses not met"


def test_sampled_mixture_constants_are_not_reported_as_certified() -> None:
    inst = ToyInstance(model="mixture", dim=2, T=8, perturbation="bias", iec="relaxed", K=2, lam=0.5, every=2)
    run = inst.run()
    for name in ("T1", "T5"):
        res = THEOREMS[name].check(run)
        if res.status == "holds":
            assert res.summary()["certified"] is False, name
    gauss = THEOREMS["T1"].check(replace(inst, model="gaussian").run())
    assert gauss.summary()["certified"] is True


def test_t6_vacuous_instances_are_not_counted_as_holds() -> None:
    """With no error yet along the amplified direction the lower bound is <= 0 everywhere: 'vacuous'."""
    inst = ToyInstance(model="gaussian", dim=3, T=10, perturbation="scale", magnitude=9.0)
    run = inst.run()
    res = THEOREMS["T6"].check(run)
    assert res.status == "holds" and res.detail["informative_steps"] > 0
    flat = replace(inst, magnitude=1e-300)   # an error that underflows: nothing is ever injected along v
    res2 = THEOREMS["T6"].check(flat.run())
    assert res2.status in ("vacuous", "hypotheses not met")


def test_vacuous_t6_is_reported_and_counted_separately() -> None:
    """A stiff model with an error that vanishes in float64: the lower bound is 0 everywhere -> 'vacuous', and
    `iec verify`'s suite counts it as vacuous, not among the checked instances."""
    from iec_theory.theorems.suite import run_suite

    inst = ToyInstance(model="stiff", kappa=10.0, dim=2, T=10, perturbation="bias", magnitude=1e-300)
    res = THEOREMS["T6"].check(inst)
    assert res.status == "vacuous", res.status
    out = run_suite([inst], {"T6": THEOREMS["T6"]})
    s = out["summary"]["T6"]
    assert s["vacuous"] == 1 and s["instances"] == 0 and s["holds"] == 0 and s["vacuous_share"] == 1.0


def test_suite_results_do_not_depend_on_the_worker_count() -> None:
    import json

    from iec_theory.theorems.suite import default_suite, run_suite

    suite = default_suite(4, 1)
    one = run_suite(suite, workers=1)
    two = run_suite(suite, workers=2)
    assert json.dumps(one["records"], default=str) == json.dumps(two["records"], default=str)
    assert one["summary"] == two["summary"] or json.dumps(one["summary"], default=str) == json.dumps(
        two["summary"], default=str)


def test_c1_is_judged_on_E_not_on_the_R_diagnostic(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exponential E with a bounded R (label_R 'linear') is exponential for C1: R never decides."""
    import iec_theory.claims as claims

    def fake(run):
        fit = {"kappa": 12.0, "R_max": 1.0}
        return GrowthResult("exponential", 2.0, 12.0, "E", "exponential", "linear", fit, fit, None)

    monkeypatch.setattr(claims, "growth_of", fake)
    v = C1.evaluate(ToyInstance(model="gaussian", dim=4, T=10, perturbation="scale", magnitude=9.0))
    assert v.under_H and v.status == "holds under H" and v.label == "exponential"


def test_c1_stiffness_needs_the_stated_log_amplification(monkeypatch: pytest.MonkeyPatch) -> None:
    """Efficient factors G~/a = 1.2 I at every step of T = 10: stiff at every step, but log-amplification
    10 log 1.2 = 1.8 < C1_MIN_LOG_AMPLIFICATION, so H1b is not met; 1.6 I (4.7 ... ) neither; 3 I (11) is."""
    import iec_theory.claims as claims

    inst = ToyInstance(model="gaussian", dim=2, T=10, perturbation="scale", magnitude=9.0)
    run = inst.run()
    for factor, expect in ((1.2, False), (1.6, False), (3.0, True)):
        Js = [torch.eye(2, dtype=torch.float64) * (factor - 1.0) * st.k.a / st.k.b for st in run.steps]
        monkeypatch.setattr(claims, "efficient_jacobians", lambda r, Js=Js: Js)
        hyps, info = C1.hypotheses(run)
        stiff = next(h for h in hyps if h.name.startswith("stiff efficient model"))
        every = next(h for h in hyps if h.name.startswith("stiff at every step"))
        assert every.holds
        assert stiff.holds is expect, (factor, info)
        assert info["log_amplification"] == pytest.approx(10 * math.log(factor), rel=1e-9)


def test_c2_h2_rejects_a_slightly_expansive_corrected_factor() -> None:
    """Official DDPM preset with eps~ = 2.2 eps*: the corrected xbar factor reaches ~1.21 > 1, so H2 is not met
    (the curve may still look linear on a short run: 'holds outside H', never 'holds under H')."""
    v = C2.evaluate(ToyInstance(model="gaussian", dim=2, T=10, perturbation="scale", magnitude=1.2,
                                iec="official_ddpm"))
    h = next(h for h in v.hypotheses if "non-expansive" in h.name)
    assert not h.holds and "1.21" in h.detail, h.detail
    assert not v.under_H and v.status != "holds under H"


def test_c2_h2_needs_every_step_corrected() -> None:
    """IEC on every other step only: H2's 'every step corrected' is not met even with a converging relaxation."""
    from iec_theory.claims import converging_iec

    inst = replace(converging_iec(ToyInstance(model="gaussian", dim=2, T=10, perturbation="scale", magnitude=9.0)),
                   every=2)
    v = C2.evaluate(inst)
    assert not v.hypotheses[0].holds and not v.under_H


def test_local_errors_are_measured_at_the_reference_states() -> None:
    """eta_i = ||eps~(x_i) - eps(x_i)|| at the REFERENCE x_i (and at x_{i+1} on IEC steps), whatever the
    perturbed run did: for eps~ = 10 eps* the perturbed states are 1e7 away, the reference ones are not."""
    from iec_theory.theorems.base import eval_model, reference_error

    for iec in ("none", "official_ddpm"):
        run = ToyInstance(model="gaussian", dim=3, T=10, perturbation="scale", magnitude=9.0, iec=iec).run()
        eta = run.local_errors()
        for st in run.steps:
            pts = [st.x_t] + ([st.x_s] if st.iec else [])
            ref = max(float(torch.linalg.vector_norm(eval_model(run.perturbed, x, st.k.t)
                                                     - eval_model(run.exact, x, st.k.t))) for x in pts)
            assert eta[st.i] == pytest.approx(ref, rel=1e-12)
            e = reference_error(run, st)
            torch.testing.assert_close(e, 9.0 * eval_model(run.exact, st.x_t, st.k.t), rtol=1e-12, atol=1e-12)
        assert run.perturbed_local_errors().max() > 1e3 * eta.max()


def test_general_h2_checks_the_efficient_models_monotonicity() -> None:
    """A non-affine efficient model (exact Gaussian + a strongly non-monotone error): the exact model is monotone,
    eps~ is not, and general H2's monotonicity hypothesis must say so."""
    inst = ToyInstance(model="gaussian", dim=2, T=5, perturbation="nonmonotone", magnitude=40.0, iec="relaxed",
                       K=1, lam=0.5, seed=3)
    v = C2.evaluate(inst)
    h = next(h for h in v.hypotheses if "monotone" in h.name)
    assert not h.holds, h.detail


def test_t6_hypothesis_of_growth_is_checked() -> None:
    """The exact Gaussian with a bias error has no direction with |F| > 1: T6's hypotheses are not met (it is
    not run and reported as vacuous or holds)."""
    res = THEOREMS["T6"].check(ToyInstance(model="gaussian", dim=3, T=10, perturbation="bias"))
    assert res.status == "hypotheses not met"
    assert any("|F| > 1" in h.name and not h.holds for h in res.hypotheses)
