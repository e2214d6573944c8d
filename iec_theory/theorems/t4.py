"""T4: IEC at (or near) its fixed point with a monotone exact model: linear accumulation
(THEORY.md T4; proof docs/PROOFS.md#t4)."""

from __future__ import annotations

import math

import numpy as np

from ._common import batch_segment_constants
from .base import ROUND_REL, Hypothesis, PairedRun, PerStep, StepData, Theorem, eval_model, norm


def step_defect(run: PairedRun, st: StepData):
    """D = R~ - R, R = y - a x_t - b eps(y) - c z (exact model, y the state after the step) for both runs.

    At exact fixed points of the perturbed and reference implicit steps, D = b e(y~*); otherwise it adds
    the two fixed-point residuals (bounded by T5).  Uses only exact-model evaluations.
    """
    k = st.k
    Rp = st.xp_s - k.a * st.xp_t - k.b * eval_model(run.exact, st.xp_s, k.t) - k.c * st.z
    Rr = st.x_s - k.a * st.x_t - k.b * eval_model(run.exact, st.x_s, k.t) - k.c * st.z
    return Rp - Rr, Rr


class T4(Theorem):
    name = "T4"
    title = "IEC fixed point, monotone eps: linear accumulation"
    statement_text = (
        "At an IEC step t -> s whose states y~ = x~_s, y = x_s satisfy y = a x_t + b eps(y) + c z + R (R: fixed-point "
        "residual w.r.t. the exact model; the perturbed run's R~ contains b e(y~) ), with m_t the monotonicity "
        "constant of the exact eps(., t) on [y, y~] and 1 + |b_t| m_t > 0: ||delta_s|| <= (a_t ||delta_t|| + "
        "||D_t||) / (1 + |b_t| m_t), D_t = R~ - R (= b_t e_t(y~*) at exact fixed points, so ||D_t|| = |b_t| eta_t).  "
        "In xbar: ||deltabar_s|| <= (||deltabar_t|| + ||D_t|| / sqrt(abar_s)) / (1 + |b_t| m_t); for m_t >= 0 this is "
        "<= ||deltabar_t|| + h_t eta_t, so ||deltabar_0|| <= ||deltabar_T|| + sum_t h_t eta_t: linear accumulation.")
    statement_typst = (
        "norm(overline(delta)_s) <= (norm(overline(delta)_t) + norm(D_t) / sqrt(overline(alpha)_s)) / "
        "(1 + abs(b_t) m_t) <= norm(overline(delta)_t) + h_t eta_t quad (m_t >= 0)")
    hypotheses_text = ("the step is an IEC step (any K; the residual of an unconverged iteration enters D_t)",
                       "1 + |b_t| m_t > 0 with m_t the exact model's monotonicity on the segment [x_s, x~_s] "
                       "(m_t >= 0 for the linear-accumulation form)",
                       "same noise in both runs (the defect uses the step's first noise z in both)")
    measured_text = "||deltabar_s|| per IEC step"

    def check_hypotheses(self, run: PairedRun) -> list[Hypothesis]:
        steps = [st for st in run.steps if st.iec]
        if not steps:
            return [Hypothesis("IEC steps present", False)]
        bad = []
        for st in steps:
            c = batch_segment_constants(run.exact, st.x_s, st.xp_s, st.k.t)
            if c is None or 1.0 + abs(st.k.b) * c.m <= 0:
                bad.append(st.i)
        return [Hypothesis("IEC steps present", True, f"{len(steps)} steps"),
                Hypothesis("1 + |b| m > 0 on every IEC step", not bad, f"fails at steps {bad[:5]}")]

    def per_step(self, run: PairedRun) -> PerStep:
        idx, meas, bound, tol, ms, lin, resid = [], [], [], [], [], [], []
        for st in run.steps:
            if not st.iec:
                continue
            c = batch_segment_constants(run.exact, st.x_s, st.xp_s, st.k.t)
            D, Rr = step_defect(run, st)
            sq_s = math.sqrt(st.k.abar_s)
            dbt = norm(st.xp_t - st.x_t) / math.sqrt(st.k.abar_t)
            local = norm(D) / sq_s
            idx.append(st.i)
            meas.append(norm(st.xp_s - st.x_s) / sq_s)
            bound.append((dbt + local) / (1.0 + abs(st.k.b) * c.m))
            lin.append(dbt + local)
            tol.append(ROUND_REL * st.scale() * (2 + abs(st.k.b)) / sq_s)
            ms.append(c.m)
            resid.append(norm(Rr))
        return PerStep(idx, np.array(meas), np.array(bound), np.array(tol), "upper",
                       {"m": ms, "linear_form_bound": lin, "reference_residual": resid})
