"""T2: exact propagation identity for affine models (THEORY.md T2; proof docs/PROOFS.md#t2)."""

from __future__ import annotations

import numpy as np
import torch

from ._common import is_affine
from .base import Hypothesis, PairedRun, PerStep, Theorem, eval_model

EPS64 = float(np.finfo(np.float64).eps)
ROUNDING_FACTOR = 256.0   # allowance = ROUNDING_FACTOR * eps64 * (K + 2) * (size of the states combined)


def propagation_matrices(a: float, b: float, C: torch.Tensor, lambdas: list[float],
                         errors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(P_K [d,d], r_K [B,d]) of THEORY T2 for K = len(lambdas) corrections.

    P_0 = a I + b C, r_0 = b e_0;  P_k = (1 - l_k) P_{k-1} + l_k (a I + b C P_{k-1}),
    r_k = (1 - l_k) r_{k-1} + l_k b (C r_{k-1} + e_k), with e_k the error at the k-th evaluation of the step
    (e_0 at x~_t, e_k at y~_{k-1}).  delta_s = P_K delta_t + r_K (rows: delta @ P^T).
    """
    d = C.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    P = a * eye + b * C
    r = b * errors[0]
    for lam, e in zip(lambdas, errors[1:]):
        P = (1 - lam) * P + lam * (a * eye + b * (C @ P))
        r = (1 - lam) * r + lam * b * (r @ C.T + e)
    return P, r


class T2(Theorem):
    name = "T2"
    title = "exact propagation identity (affine eps)"
    statement_text = (
        "If eps(x, t) = C_t x + d_t, then for ANY error e: plain step delta_s = G_t delta_t + b_t e_t(x~_t), "
        "G_t = a_t I + b_t C_t; IEC with k = 1..K corrections: delta_s = P_K delta_t + r_K, P_0 = G_t, "
        "P_k = (1 - l_k) P_{k-1} + l_k (a_t I + b_t C_t P_{k-1}), r_0 = b_t e(x~_t), "
        "r_k = (1 - l_k) r_{k-1} + l_k b_t (C_t r_{k-1} + e(y~_{k-1})).  Holds to float64 rounding.")
    statement_typst = (
        "delta_s = P_K delta_t + r_K, quad P_k = (1 - lambda_k) P_(k-1) + lambda_k (a_t I + b_t C_t P_(k-1)), quad "
        "r_k = (1 - lambda_k) r_(k-1) + lambda_k b_t (C_t r_(k-1) + e(tilde(y)_(k-1)))")
    hypotheses_text = ("the exact model is affine in x at each step (Gaussian toy)",
                       "both runs apply the same number of corrections at every step (true with tol = 0)",
                       "the same noise in both runs (keyed noise); no x0 clipping")
    measured_text = "delta_s from sample() (perturbed minus reference), compared with P_K delta_t + r_K"

    def check_hypotheses(self, run: PairedRun) -> list[Hypothesis]:
        same = all(st.corr_ref == st.corr_pert for st in run.steps)
        return [Hypothesis("exact model affine", is_affine(run.exact)),
                Hypothesis("same corrections in both runs", same)]

    def per_step(self, run: PairedRun) -> PerStep:
        idx, meas, pred, tol, rel, dev = [], [], [], [], [], []
        lams = list(run.iec.lambdas) if run.iec is not None else []
        for st in run.steps:
            C, _ = run.exact.affine(st.k.t)
            C = torch.as_tensor(C, dtype=torch.float64)
            K = st.corr_pert if st.iec else 0
            errs = [y - eval_model(run.exact, x, st.k.t) for x, y in st.calls_pert[: K + 1]]
            P, r = propagation_matrices(st.k.a, st.k.b, C, lams[:K], errs)
            d_t = st.xp_t - st.x_t
            predicted = d_t @ P.T + r
            measured = st.xp_s - st.x_s
            err = float(torch.linalg.vector_norm(measured - predicted))
            allowance = ROUNDING_FACTOR * EPS64 * (K + 2) * st.scale()
            idx.append(st.i)
            meas.append(float(torch.linalg.vector_norm(measured)))
            pred.append(float(torch.linalg.vector_norm(predicted)))
            dev.append(err)
            tol.append(allowance)
            rel.append(err / (EPS64 * st.scale()))
        return PerStep(idx, np.array(meas), np.array(pred), np.array(tol), "identity",
                       {"error_in_ulps_of_state": rel, "max_error_in_ulps": float(max(rel)) if rel else 0.0},
                       deviation=np.array(dev))
