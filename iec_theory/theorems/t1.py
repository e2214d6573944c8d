"""T1: the explicit step is Lipschitz in the propagated error (THEORY.md T1; proof docs/PROOFS.md#t1)."""

from __future__ import annotations

import numpy as np

from ._common import batch_segment_constants
from .base import ROUND_REL, Hypothesis, PairedRun, PerStep, Theorem, eval_model, norm


class T1(Theorem):
    name = "T1"
    title = "explicit step, Lipschitz (discrete Gronwall)"
    statement_text = (
        "At a plain (explicit) step t -> s with L_t the Lipschitz constant of the exact eps(., t) on the segment "
        "[x_t, x~_t] and eta_t = ||e_t(x~_t)|| (error at the perturbed state): ||delta_s|| <= (a_t + |b_t| L_t) "
        "||delta_t|| + |b_t| eta_t.  Unrolled: ||delta_0|| <= sum_i |b_i| eta_i prod_{j after i} (a_j + |b_j| L_j) "
        "+ ||delta_T|| prod_j (a_j + |b_j| L_j).")
    statement_typst = (
        "norm(delta_s) <= (a_t + abs(b_t) L_t) norm(delta_t) + abs(b_t) eta_t, quad "
        "eta_t = norm(e_t(tilde(x)_t)), quad L_t = sup_([x_t, tilde(x)_t]) norm(J_epsilon)_2")
    hypotheses_text = ("the step is a plain DDIM step (no IEC correction), any eta >= 0, same noise in both runs",
                       "the exact eps(., t) is Lipschitz on the segment [x_t, x~_t] (certified Jacobian)")
    measured_text = "||delta_s|| in x coordinates, per plain step"

    def check_hypotheses(self, run: PairedRun) -> list[Hypothesis]:
        plain = [st.i for st in run.steps if not st.iec]
        return [Hypothesis("plain steps present", bool(plain), f"{len(plain)} plain steps")]

    def per_step(self, run: PairedRun) -> PerStep:
        idx, meas, bound, tol, Ls = [], [], [], [], []
        certified = True
        for st in run.steps:
            if st.iec:
                continue
            c = batch_segment_constants(run.exact, st.x_t, st.xp_t, st.k.t)
            certified = certified and bool(c is not None and c.certified)
            assert c is not None, "exact toy Jacobians are always certifiable"
            xin, yout = st.calls_pert[0]
            eta = norm(yout - eval_model(run.exact, xin, st.k.t))
            dt = norm(st.xp_t - st.x_t)
            idx.append(st.i)
            meas.append(norm(st.xp_s - st.x_s))
            bound.append((st.k.a + abs(st.k.b) * c.L) * dt + abs(st.k.b) * eta)
            tol.append(ROUND_REL * st.scale())
            Ls.append(c.L)
        return PerStep(idx, np.array(meas), np.array(bound), np.array(tol), "upper", {"L": Ls, "certified": certified})
