"""T1m: the explicit step with monotonicity, in xbar (THEORY.md T1m; proof docs/PROOFS.md#t1m)."""

from __future__ import annotations

import math

import numpy as np

from ._common import batch_segment_constants
from .base import ROUND_REL, Hypothesis, PairedRun, PerStep, Theorem, eval_model, norm


def rho_t1m(h: float, mbar: float, Lbar: float) -> float:
    """rho = sqrt(1 - 2 h mbar + h^2 Lbar^2) (the radicand is >= (1 - h Lbar)^2 >= 0 since mbar <= Lbar)."""
    return math.sqrt(max(1.0 - 2.0 * h * mbar + h * h * Lbar * Lbar, 0.0))


class T1m(Theorem):
    name = "T1m"
    title = "explicit step, monotone + Lipschitz (xbar)"
    statement_text = (
        "At a plain step t -> s, with mbar_t, Lbar_t the monotonicity and Lipschitz constants of "
        "xbar -> eps(sqrt(abar_t) xbar, t) (exact model) on the segment [xbar_t, xbar~_t], h_t = |b_t| / "
        "sqrt(abar_s) (= dsig_t when eta = 0) and eta_t = ||e_t(x~_t)||: ||deltabar_s|| <= rho_t ||deltabar_t|| + "
        "h_t eta_t, rho_t = sqrt(1 - 2 h_t mbar_t + h_t^2 Lbar_t^2).  rho_t <= 1 iff h_t <= 2 mbar_t / Lbar_t^2.")
    statement_typst = (
        "norm(overline(delta)_s) <= rho_t norm(overline(delta)_t) + h_t eta_t, quad "
        "rho_t = sqrt(1 - 2 h_t overline(m)_t + h_t^2 overline(L)_t^2), quad h_t = abs(b_t) / sqrt(overline(alpha)_s)")
    hypotheses_text = ("the step is a plain DDIM step, any eta >= 0 (h_t = dsig_t at eta = 0), same noise in both runs",
                       "exact eps(., t) monotone with constant mbar (possibly negative) and Lbar-Lipschitz "
                       "on the segment")
    measured_text = "||deltabar_s|| (xbar coordinates), per plain step"

    def check_hypotheses(self, run: PairedRun) -> list[Hypothesis]:
        plain = [st.i for st in run.steps if not st.iec]
        return [Hypothesis("plain steps present", bool(plain), f"{len(plain)} plain steps")]

    def per_step(self, run: PairedRun) -> PerStep:
        idx, meas, bound, tol, rhos = [], [], [], [], []
        certified = True
        for st in run.steps:
            if st.iec:
                continue
            c = batch_segment_constants(run.exact, st.x_t, st.xp_t, st.k.t)
            certified = certified and bool(c is not None and c.certified)
            assert c is not None
            mbar, Lbar = c.xbar(st.k.abar_t)
            h = st.h
            rho = rho_t1m(h, mbar, Lbar)
            xin, yout = st.calls_pert[0]
            eta = norm(yout - eval_model(run.exact, xin, st.k.t))
            dbt = norm(st.xp_t - st.x_t) / math.sqrt(st.k.abar_t)
            idx.append(st.i)
            meas.append(norm(st.xp_s - st.x_s) / math.sqrt(st.k.abar_s))
            bound.append(rho * dbt + h * eta)
            tol.append(ROUND_REL * st.scale() / math.sqrt(st.k.abar_s))
            rhos.append(rho)
        return PerStep(idx, np.array(meas), np.array(bound), np.array(tol), "upper",
                       {"rho": rhos, "certified": certified})
