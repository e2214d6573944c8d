"""T6: lower bound, exponential growth is real (THEORY.md T6; proof docs/PROOFS.md#t6)."""

from __future__ import annotations

import numpy as np
import torch

from ..theory import amplification_factors
from ._common import eigenbasis, is_affine
from .base import ROUND_REL, Hypothesis, PairedRun, PerStep, Theorem, eval_model


def direction_factors(run: PairedRun) -> np.ndarray:
    """[T, d] per-step factor of every eigen-direction: g (plain step) or f_K (IEC, K applied corrections)."""
    rows = []
    for st in run.steps:
        mu = torch.as_tensor(run.exact.affine_eigvals(st.k.t), dtype=torch.float64).numpy()
        K = st.corr_pert if st.iec else 0
        lams = list(run.iec.lambdas[:K]) if K else []
        _, _, fK = amplification_factors(st.k.a, abs(st.k.b) * mu, K, lams)
        rows.append(np.broadcast_to(fK, mu.shape))
    return np.array(rows)


class T6(Theorem):
    name = "T6"
    title = "lower bound: exponential growth is real"
    statement_text = (
        "For an affine exact model with symmetric C_t (fixed eigenbasis) and an eigen-direction v with per-step "
        "factor F_i = g_i (plain) or f_K,i (IEC): delta^v_n = (prod_{i<n} F_i) delta^v_0 + sum_{i<n} "
        "(prod_{i<j<n} F_j) r^v_i exactly (r^v_i: the step's error term along v, T2), hence |<delta_n, v>| >= "
        "prod|F_i| |delta^v_0| - sum_i |r^v_i| prod_{j>i} |F_j|.  Where |F| > 1 (stiff: u > a + 1; or IEC with "
        "|f_K| > 1) the component grows at least geometrically: no upper bound better than exponential exists.")
    statement_typst = (
        "abs(lr(chevron.l delta_n, v chevron.r)) >= product_(i<n) abs(F_i) abs(delta^v_0) - "
        "sum_(i<n) abs(r^v_i) product_(i<j<n) abs(F_j)")
    hypotheses_text = ("the exact model is affine with symmetric C_t in a fixed eigenbasis (Gaussian toy)",
                       "both runs apply the same corrections; same noise")
    measured_text = "|<delta_n, v>| along the most amplified eigen-direction v, n = 1..T"

    def check_hypotheses(self, run: PairedRun) -> list[Hypothesis]:
        ok = is_affine(run.exact) and callable(getattr(run.exact, "affine_eigvals", None))
        same = all(st.corr_ref == st.corr_pert for st in run.steps)
        return [Hypothesis("exact model affine symmetric with eigenbasis", ok),
                Hypothesis("same corrections in both runs", same)]

    def per_step(self, run: PairedRun) -> PerStep:
        V = eigenbasis(run.exact)
        F = direction_factors(run)                          # [T, d]
        logamp = np.log(np.abs(F) + 1e-300).sum(0)
        j = int(np.argmax(logamp))
        v = V[:, j]
        r = []
        for st in run.steps:
            K = st.corr_pert if st.iec else 0
            mu = float(torch.as_tensor(run.exact.affine_eigvals(st.k.t), dtype=torch.float64)[j])
            u = abs(st.k.b) * mu
            ev = [float(((y - eval_model(run.exact, x, st.k.t)) @ v).sum()) for x, y in st.calls_pert[: K + 1]]
            rv = st.k.b * ev[0]
            for lam, e in zip(run.iec.lambdas[:K] if K else [], ev[1:]):
                rv = (1 - lam * (1 + u)) * rv + lam * st.k.b * e
            r.append(rv)
        delta = run.delta()                                  # [T+1, B, d]
        comp = np.abs((delta @ v).sum(-1).numpy())          # |<delta_n, v>|
        Fj = np.abs(F[:, j])
        amp, err, tol_acc = comp[0], 0.0, 0.0
        meas, bound, tol, idx = [], [], [], []
        for i, st in enumerate(run.steps):
            amp = amp * Fj[i]
            err = err * Fj[i] + abs(r[i])
            tol_acc = tol_acc * Fj[i] + ROUND_REL * st.scale()
            idx.append(i)
            meas.append(comp[i + 1])
            bound.append(amp - err)
            tol.append(tol_acc)
        return PerStep(idx, np.array(meas), np.array(bound), np.array(tol), "lower",
                       {"direction": j, "log_amplification": float(logamp[j]),
                        "max_factor": float(Fj.max()), "stiff_steps": int((Fj > 1).sum())})
