"""T4: IEC at its fixed point with a monotone efficient model, and T4+T5 at the K actually used
(THEORY.md T4, T5; proof docs/PROOFS.md#t4).

Two inequalities, both checked at every IEC step, neither built from the runs' own residuals (a correction
term defined from the two runs' residuals holds for any pair of states and cannot fail):

(fixed point)  ||y~* - y*|| <= (a ||delta_t|| + |b| eta*) / (1 + |b| m~),   eta* = ||e(y*)||,
    y* the REFERENCE fixed point (exact model, from x_t), y~* the perturbed one (efficient model, from x~_t),
    both solved by Newton's method here, m~ the efficient model's monotonicity on [y*, y~*].
    Proof: y~* - y* = a delta_t + b (eps~(y~*) - eps~(y*)) + b e(y*); take the inner product with y~* - y*
    and use b < 0 and monotonicity.  For m~ >= 0, in xbar: ||deltabar_s|| <= ||deltabar_t|| + h eta*: linear.

(finite K)     ||x~_s - x_s|| <= T4 bound + (prod_k q~_k) ||y~_0 - y~*|| + (prod_k q_k) ||y_0 - y*||,
    the sampler's actual states after the K corrections each run applied, with y_0, y~_0 the plain steps and q_k
    the Lipschitz factors of the DECLARED relaxed updates (T5), all recomputed here: a sampler that corrects at
    the wrong time, with other relaxations or other coefficients lands elsewhere and violates it.
"""

from __future__ import annotations

import math

import numpy as np

from ..constants import exact_jacobian
from ._common import batch_segment_constants, is_deterministic
from .base import ROUND_REL, Hypothesis, PairedRun, PerStep, StepData, Theorem, eval_model, norm
from .fixed_point import contraction_factor, implicit_fixed_point, relaxed_iterates

__all__ = ["T4", "step_quantities"]


def _iteration_bound(model, st: StepData, x_t, lams: list[float], ystar) -> tuple[float, bool] | None:
    """(prod_k q_k) ||y_0 - y*|| for the declared iteration from x_t (recomputed iterates), and certified."""
    its = relaxed_iterates(model, st.k, x_t, st.z, lams)
    prod, cert = 1.0, True
    for k, lam in enumerate(lams):
        qc = contraction_factor(model, st.k, lam, its[k], ystar)
        if qc is None:
            return None
        prod *= qc[0]
        cert = cert and qc[1]
    return prod * norm(its[0] - ystar), cert


def step_quantities(run: PairedRun, st: StepData) -> dict | None:
    """Fixed points, constants and both bounds at one IEC step; None where a fixed point is not found
    (cached in run.info: the hypotheses and the per-step check share them)."""
    cache = run.info.setdefault("t4_steps", {})
    if st.i not in cache:
        cache[st.i] = _step_quantities(run, st)
    return cache[st.i]


def _step_quantities(run: PairedRun, st: StepData) -> dict | None:
    k = st.k
    ystar, ok_r, _ = implicit_fixed_point(run.exact, k, st.x_t, st.z, st.x_s)
    ytil, ok_p, _ = implicit_fixed_point(run.perturbed, k, st.xp_t, st.z, st.xp_s)
    if not (ok_r and ok_p):
        return None
    c = batch_segment_constants(run.perturbed, ystar, ytil, k.t)
    if c is None:
        return None
    eta_star = norm(eval_model(run.perturbed, ystar, k.t) - eval_model(run.exact, ystar, k.t))
    dt = norm(st.xp_t - st.x_t)
    denom = 1.0 + abs(k.b) * c.m
    lams = list(run.iec.lambdas)
    it_p = _iteration_bound(run.perturbed, st, st.xp_t, lams[: st.corr_pert], ytil)
    it_r = _iteration_bound(run.exact, st, st.x_t, lams[: st.corr_ref], ystar)
    return {"ystar": ystar, "ytil": ytil, "m": c.m, "denom": denom, "eta_star": eta_star, "dt": dt,
            "fp_measured": norm(ytil - ystar), "fp_bound": (k.a * dt + abs(k.b) * eta_star) / denom if denom > 0
            else math.inf, "it_pert": it_p, "it_ref": it_r, "certified": bool(c.certified)}


class T4(Theorem):
    name = "T4"
    title = "IEC fixed point, monotone eps~: linear accumulation (and T4+T5 at finite K)"
    statement_text = (
        "At an IEC step t -> s, with y* the reference implicit step's fixed point (exact model, from x_t), y~* the "
        "perturbed one (efficient model, from x~_t), eta* = ||e_t(y*)|| the local error at the REFERENCE fixed "
        "point and m~ the efficient model's monotonicity on [y*, y~*] (1 + |b| m~ > 0): ||y~* - y*|| <= (a ||delta_t|| "
        "+ |b| eta*) / (1 + |b| m~); in xbar, for m~ >= 0, ||deltabar_s|| <= ||deltabar_t|| + h_t eta*: linear "
        "accumulation.  At the K corrections actually applied (T5): ||x~_s - x_s|| <= that bound + (prod q~_k) "
        "||y~_0 - y~*|| + (prod q_k) ||y_0 - y*||.")
    statement_typst = (
        "norm(tilde(y)^* - y^*) <= (a_t norm(delta_t) + abs(b_t) eta^*_t) / (1 + abs(b_t) tilde(m)_t), quad "
        "norm(tilde(x)_s - x_s) <= (a_t norm(delta_t) + abs(b_t) eta^*_t) / (1 + abs(b_t) tilde(m)_t) + "
        "product_k tilde(q)_k norm(tilde(y)_0 - tilde(y)^*) + product_k q_k norm(y_0 - y^*)")
    hypotheses_text = ("IEC steps present; the same noise z at every iteration (eta = 0 or shared noise)",
                       "the efficient model deterministic with a certified Jacobian (fixed points by Newton)",
                       "1 + |b_t| m~_t > 0 on [y*, y~*] at every IEC step (m~ >= 0 for the linear form)",
                       "both fixed points found at every IEC step")
    measured_text = "||x~_s - x_s|| (sampler states) and ||y~* - y*|| (fixed points), per IEC step"

    def check_hypotheses(self, run: PairedRun) -> list[Hypothesis]:
        steps = [st for st in run.steps if st.iec]
        if not steps:
            return [Hypothesis("IEC steps present", False)]
        same_noise = run.eta == 0.0 or run.iec.noise == "shared"
        cert = (is_deterministic(run.perturbed)
                and exact_jacobian(run.perturbed, steps[0].xp_t, steps[0].k.t) is not None)
        hyps = [Hypothesis("IEC steps present", True, f"{len(steps)} steps"),
                Hypothesis("same noise at every iteration", same_noise),
                Hypothesis("efficient model deterministic and certified", cert)]
        if not all(h.holds for h in hyps):
            return hyps
        bad, missing = [], []
        for st in steps:
            q = step_quantities(run, st)
            if q is None or q["it_pert"] is None or q["it_ref"] is None:
                missing.append(st.i)
            elif q["denom"] <= 0:
                bad.append(st.i)
        return hyps + [Hypothesis("1 + |b| m~ > 0 on every IEC step", not bad, f"fails at steps {bad[:5]}"),
                       Hypothesis("fixed points and iteration factors found at every IEC step", not missing,
                                  f"not found at steps {missing[:5]}" if missing else "")]

    def per_step(self, run: PairedRun) -> PerStep:
        idx, meas, bound, tol, detail_rows = [], [], [], [], []
        certified = True
        for st in run.steps:
            if not st.iec:
                continue
            q = step_quantities(run, st)
            k = st.k
            size = st.scale() + norm(q["ystar"]) + norm(q["ytil"])
            allowance = ROUND_REL * size * (2 + abs(k.b)) * (len(run.iec.lambdas) + 2)
            finite_k = q["fp_bound"] + q["it_pert"][0] + q["it_ref"][0]
            measured = norm(st.xp_s - st.x_s)
            # the check is the WORSE of the two inequalities (fixed-point form, finite-K form)
            r_fp = (q["fp_measured"] - allowance) / q["fp_bound"] if q["fp_bound"] > 0 else 0.0
            r_k = (measured - allowance) / finite_k if finite_k > 0 else 0.0
            if r_fp >= r_k:
                m_i, b_i = q["fp_measured"], q["fp_bound"]
            else:
                m_i, b_i = measured, finite_k
            idx.append(st.i)
            meas.append(m_i)
            bound.append(b_i)
            tol.append(allowance)
            certified = certified and q["certified"] and q["it_pert"][1] and q["it_ref"][1]
            sq_s, sq_t = math.sqrt(k.abar_s), math.sqrt(k.abar_t)
            detail_rows.append({"step": st.i, "m": q["m"], "fixed_point_measured": q["fp_measured"],
                                "fixed_point_bound": q["fp_bound"], "finite_K_measured": measured,
                                "finite_K_bound": finite_k,
                                "linear_form_bound_xbar": q["dt"] / sq_t + st.h * q["eta_star"] * sq_s / abs(k.b)
                                if k.b != 0 else q["dt"] / sq_t})
        return PerStep(idx, np.array(meas), np.array(bound), np.array(tol), "upper",
                       {"rows": detail_rows, "certified": certified})
