"""Property tests: every proven bound (T1, T1m, T2, T3, T4, T5, T6) holds on every random toy instance.

Instances (hypothesis): Gaussian (diagonal and rotated), the stiff construction (kappa times the exact
Gaussian eps) and two-mode mixtures (x_T random or on the saddle plane); dimensions 1..64 (mixtures
1..16), variances spanning 4..8 decades, T 5..200 (with d * T <= COST_CAP to keep CI fast; the stiff
model T <= 40 so that amplified errors stay finite), eta in {0, 1}, perturbations bias, scale, output
quantization, iid noise, monotone and non-monotone nonlinear, affine weight quantization, cache,
adversarial; no IEC, the official presets, or relaxed IEC (K 1..6, lambda in (0, 1.2], every 1..3 steps,
shared or fresh noise); optional initial perturbation.  Profiles: tests/conftest.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import examples
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from iec_theory.theorems import THEOREMS
from iec_theory.theorems.instances import ToyInstance

COST_CAP = 1600          # d * T of one CI example (the thorough profile raises it)
PERTS = ("none", "bias", "scale", "quant", "iid_noise", "monotone", "nonmonotone", "affine_quant", "cache",
         "adversarial")


@st.composite
def toy_instances(draw, models=("gaussian", "gaussian_full", "stiff", "mixture"), perts=PERTS,
                  iec_modes=("none", "official_ddpm", "official_ldm", "relaxed"), cost_cap: int = COST_CAP):
    model = draw(st.sampled_from(models))
    T = draw(st.integers(5, 40 if model == "stiff" else 200))
    dmax = 16 if model == "mixture" else 64
    dim = draw(st.integers(1, max(1, min(dmax, cost_cap // T))))
    pert = draw(st.sampled_from([p for p in perts if not (p == "affine_quant" and model == "mixture")]))
    iec = draw(st.sampled_from(iec_modes))
    return ToyInstance(
        model=model, dim=dim, T=T, decades=draw(st.floats(4.0, 8.0)), seed=draw(st.integers(0, 2**16)),
        eta=draw(st.sampled_from([0.0, 1.0])), perturbation=pert,
        magnitude=10.0 ** draw(st.floats(-6.0, -0.5)), iec=iec, K=draw(st.integers(1, 6)),
        lam=draw(st.floats(0.05, 1.2)), noise=draw(st.sampled_from(["shared", "fresh"])),
        every=draw(st.integers(1, 3)), kappa=draw(st.floats(2.0, 20.0)) if model == "stiff" else 1.0,
        separation=draw(st.floats(0.5, 3.0)), mode_var=10.0 ** draw(st.floats(-3.0, -1.0)),
        x_T=draw(st.sampled_from(["random", "saddle"])) if model == "mixture" else "random",
        delta_T=draw(st.sampled_from([0.0, 1e-3, 1.0])),
    )


def _note(msg: str) -> None:
    try:
        note(msg)
    except InvalidArgument:  # outside a hypothesis test
        pass


def _check_all(inst: ToyInstance) -> dict[str, str]:
    _note(f"instance: {inst}")
    run = inst.run()
    statuses = {}
    for name, th in THEOREMS.items():
        res = th.check(run)
        statuses[name] = res.status
        _note(f"{name}: {res.status}, worst margin {res.worst_margin:.3g}, hypotheses "
             f"{[(h.name, h.holds) for h in res.hypotheses]}")
        assert res.status != "violated", (
            f"{name} violated on {inst}: worst margin {res.worst_margin}, measured {res.measured}, bound {res.bound}")
    return statuses


@settings(max_examples=examples(14))
@given(toy_instances(cost_cap=COST_CAP * (4 if examples(1) > 1 else 1)))
def test_bounds_every_theorem_holds_on_random_instances(inst: ToyInstance) -> None:
    _check_all(inst)


@settings(max_examples=examples(8))
@given(toy_instances(models=("gaussian", "gaussian_full", "stiff"), perts=("monotone", "nonmonotone", "bias", "scale"),
                     iec_modes=("relaxed",), cost_cap=800))
def test_bounds_t4_t5_on_converging_iec(inst: ToyInstance) -> None:
    """IEC-heavy instances (lambda <= 1 where T5 applies, shared noise possible): T4 and T5 must hold."""
    _check_all(inst)


@settings(max_examples=examples(10))
@given(toy_instances(models=("gaussian", "gaussian_full", "stiff"), cost_cap=800))
def test_bounds_t2_identity_to_float64_rounding(inst: ToyInstance) -> None:
    """T2 through sample(): |measured delta_s - (P_K delta_t + r_K)| within a few hundred ulps of the states."""
    run = inst.run()
    res = THEOREMS["T2"].check(run)
    note(f"{inst}: {res.status} {res.detail}")
    if res.status == "hypotheses not met":   # only early stops that differ between the two runs
        assert any(st.corr_ref != st.corr_pert for st in run.steps)
        return
    assert res.status == "holds"
    assert res.detail["max_error_in_ulps"] <= 256.0 * (max(inst.K, 2) + 2)


FIXED = [
    ToyInstance(model="gaussian_full", dim=8, T=30, perturbation="monotone", magnitude=0.05, iec="relaxed", K=3,
                lam=0.5, every=2, delta_T=1e-3),
    ToyInstance(model="stiff", kappa=14, dim=6, T=20, perturbation="bias", magnitude=1e-3, iec="relaxed", K=4,
                lam=0.3, every=2, eta=1.0, delta_T=1e-3),
    ToyInstance(model="mixture", dim=3, T=20, perturbation="nonmonotone", magnitude=1e-2, iec="relaxed", K=2, lam=0.5,
                every=2),
    ToyInstance(model="gaussian", dim=16, T=50, perturbation="iid_noise", iec="official_ddpm", every=2, eta=1.0),
    ToyInstance(model="stiff", kappa=10, dim=4, T=15, perturbation="iid_noise", magnitude=1e-4, delta_T=1.0),
]


@pytest.mark.parametrize("inst", FIXED, ids=lambda i: f"{i.model}-{i.perturbation}-{i.iec}")
def test_bounds_fixed_instances_each_theorem_checked(inst: ToyInstance) -> None:
    statuses = _check_all(inst)
    assert statuses["T1"] == "holds" and statuses["T1m"] == "holds"


def test_bounds_every_theorem_is_exercised() -> None:
    """Across the fixed instances every theorem is checked (status holds) at least once."""
    seen = {name: 0 for name in THEOREMS}
    for inst in FIXED:
        run = inst.run()
        for name, th in THEOREMS.items():
            seen[name] += th.check(run).status == "holds"
    assert all(v >= 1 for v in seen.values()), seen


def test_bounds_t6_lower_bound_is_tight_in_the_stiff_regime() -> None:
    """Initial error along the stiff direction, tiny model error: |<delta_n, v>| ~ prod |g| |delta^v_0|."""
    run = ToyInstance(model="stiff", kappa=10, dim=4, T=15, perturbation="iid_noise", magnitude=1e-9,
                      delta_T=1.0).run()
    res = THEOREMS["T6"].check(run)
    assert res.status == "holds"
    assert res.detail["log_amplification"] > 5.0
    assert res.tightness[-1] > 0.99


def test_bounds_t1m_rho_is_at_most_one_iff_step_short() -> None:
    """T1m's rho <= 1 iff h <= 2 mbar / Lbar^2 (checked on a grid)."""
    from iec_theory.theorems.t1m import rho_t1m

    for h in np.geomspace(1e-3, 10, 25):
        for m in (0.1, 0.5, 1.0):
            for L in (1.0, 2.0, 5.0):
                assert (rho_t1m(h, m, L) <= 1 + 1e-15) == (h <= 2 * m / L**2 + 1e-15)


def test_bounds_theorem_objects_are_complete() -> None:
    for name, th in THEOREMS.items():
        d = th.describe()
        assert d["statement"] and d["typst"] and d["hypotheses"] and d["measured"], name
        assert math.isfinite(len(d["statement"]))
