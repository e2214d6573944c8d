"""T5: contraction of the relaxed fixed-point iteration at finite K (THEORY.md T5; proof docs/PROOFS.md#t5)."""

from __future__ import annotations

import numpy as np
import torch

from ..constants import exact_jacobian
from ._common import batch_segment_constants, is_deterministic
from .base import ROUND_REL, Hypothesis, PairedRun, PerStep, StepData, Theorem, norm
from .fixed_point import implicit_fixed_point, q_factor


def perturbed_fixed_point(model, st: StepData, y0: torch.Tensor) -> tuple[torch.Tensor, bool, float]:
    """Newton's method for y = a x~_t + b eps~(y, t) + c z (the perturbed implicit step)."""
    return implicit_fixed_point(model, st.k, st.xp_t, st.z, y0)

class T5(Theorem):
    name = "T5"
    title = "finite K: contraction of the relaxed iteration"
    statement_text = (
        "The relaxed map y -> y + l (F(y) - y), F(y) = a x + b eps~(y, t) + c z, with eps~ m-monotone and L-Lipschitz "
        "on the segment [y, y*] and 0 < l <= 1, satisfies ||y_k - y*|| <= q_k ||y_{k-1} - y*||, "
        "q = sqrt((1-l)^2 - 2 l (1-l) |b| m + l^2 b^2 L^2); hence ||y_K - y*|| <= (prod_k q_k) ||y_0 - y*||.  Linear "
        "symmetric case, exact: q = max over the spectrum of |1 - l (1 + u)|.  Combined with T4, the residual "
        "enters as an extra local error.")
    statement_typst = (
        "norm(y_K - y^*) <= (product_(k=1)^K q_k) norm(y_0 - y^*), quad "
        "q_k = sqrt((1 - lambda_k)^2 - 2 lambda_k (1 - lambda_k) abs(b) m + lambda_k^2 b^2 L^2)")
    hypotheses_text = ("IEC steps with 0 < lambda_k <= 1",
                       "the same noise z at every iteration (eta = 0 or noise='shared')",
                       "eps~ deterministic with a certified Jacobian (not quantized, cached or noisy)",
                       "the perturbed implicit step has a fixed point y* (found by Newton's method)")
    measured_text = "||y~_K - y~*|| per IEC step of the perturbed run"

    def check_hypotheses(self, run: PairedRun) -> list[Hypothesis]:
        steps = [st for st in run.steps if st.iec and st.corr_pert > 0]
        if not steps:
            return [Hypothesis("IEC steps with corrections present", False)]
        lams = run.iec.lambdas
        same_noise = run.eta == 0.0 or run.iec.noise == "shared"
        cert = (is_deterministic(run.perturbed)
                and exact_jacobian(run.perturbed, steps[0].xp_t, steps[0].k.t) is not None)
        hyps = [Hypothesis("IEC steps with corrections present", True),
                Hypothesis("0 < lambda_k <= 1", all(0 < v <= 1 for v in lams), str(lams)),
                Hypothesis("same noise at every iteration", same_noise),
                Hypothesis("eps~ deterministic and certified Lipschitz", cert)]
        if all(h.holds for h in hyps):   # a step whose y* is not found is never silently dropped
            missing = [st.i for st in steps if not perturbed_fixed_point(run.perturbed, st, st.xp_s)[1]]
            hyps.append(Hypothesis("the fixed point y~* found (Newton) at every IEC step", not missing,
                                   f"not found at steps {missing[:5]}" if missing else ""))
        return hyps

    def per_step(self, run: PairedRun) -> PerStep:
        idx, meas, bound, tol, qs, fails, certified = [], [], [], [], [], [], True
        for st in run.steps:
            if not (st.iec and st.corr_pert > 0):
                continue
            K = st.corr_pert
            iterates = [x for x, _ in st.calls_pert[1: K + 1]] + [st.xp_s]   # y~_0 .. y~_K
            ystar, ok, _ = perturbed_fixed_point(run.perturbed, st, st.xp_s)
            if not ok:
                fails.append(st.i)
                continue
            prod = 1.0
            qk = []
            for k in range(1, K + 1):
                c = batch_segment_constants(run.perturbed, iterates[k - 1], ystar, st.k.t)
                certified = certified and bool(c.certified)
                q = q_factor(run.iec.lambdas[k - 1], st.k.b, c.m, c.L)
                qk.append(q)
                prod *= q
            idx.append(st.i)
            meas.append(norm(iterates[-1] - ystar))
            bound.append(prod * norm(iterates[0] - ystar))
            size = 1.0 + norm(ystar) + max(norm(y) for y in iterates)   # diverging iterations grow the states
            tol.append(ROUND_REL * size * (K + 1) + 1e-12 * bound[-1])
            qs.append(qk)
        return PerStep(idx, np.array(meas), np.array(bound), np.array(tol), "upper",
                       {"q": qs, "fixed_point_not_found": fails, "certified": certified})
