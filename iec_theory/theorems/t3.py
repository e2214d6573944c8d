"""T3: amplification factor per eigen-direction, measured with the sampler's own step code
(THEORY.md T3; proof docs/PROOFS.md#t3)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .. import sampler as S
from ..ddim import apply_step
from ..sampler import NoiseSource, StepRecord
from ..theory import amplification_factors
from ._common import eigenbasis, is_affine
from .base import ROUND_REL, Hypothesis, PairedRun, PerStep, Theorem, eval_model


class T3(Theorem):
    name = "T3"
    title = "amplification factors per eigen-direction (stability region)"
    statement_text = (
        "For symmetric C_t with eigenvector v, eigenvalue mu, u = |b_t| mu: an error along v is multiplied per step by "
        "g = a - u (plain), f* = a / (1 + u) (IEC fixed point), f_K = f* + (prod_k r_k)(g - f*) after K corrections, "
        "r_k = 1 - l_k (1 + u), g - f* = u (a - 1 - u)/(1 + u).  Consequences: the fixed point is stable for mu >= 0 "
        "(|f*| <= a, i.e. <= 1 in xbar); the iteration converges iff |r| < 1 iff lambda < 2/(1 + u); with a = 1, "
        "K = 1, lambda = 1/2: f_1 = ((1 - u)^2 + 1)/2 >= |1 - u| = |g| for every u.")
    statement_typst = (
        "g = a - u, quad f^* = a / (1 + u), quad f_K = f^* + (product_(k=1)^K r_k) (g - f^*), quad "
        "r_k = 1 - lambda_k (1 + u)")
    hypotheses_text = ("the exact model is affine with symmetric C_t and a fixed eigenbasis (Gaussian toy)",
                       "no error on the compared pair (the factor is a property of the scheme)")
    measured_text = ("<x~_s - x_s, v_j> / e for x~_t = x_t + e v_j (e = max(1, 1e-3 |x_t|)), one step of the "
                     "sampler's own code "
                     "(apply_step / iec_step) "
                     "per eigenvector v_j, at the reference states of the run")

    def check_hypotheses(self, run: PairedRun) -> list[Hypothesis]:
        ok = is_affine(run.exact) and callable(getattr(run.exact, "affine_eigvals", None))
        return [Hypothesis("exact model affine symmetric with eigenbasis", ok)]

    def per_step(self, run: PairedRun) -> PerStep:
        V = eigenbasis(run.exact)
        d = V.shape[0]
        idx, meas, pred, tol, dev, leak = [], [], [], [], [], []
        for st in run.steps:
            k = st.k                                            # declared coefficients (the prediction)
            ks = S.step_coefficients(run.schedule, k.t, k.s, run.eta)   # what the sampler's code uses
            X = st.x_t[:1].repeat(d, 1)
            scale = max(1.0, 1e-3 * float(X.abs().max()))   # the difference must stay far above the ulp of x_t
            Xp = X + scale * V.T
            z = st.z[:1].repeat(d, 1) if k.c != 0.0 else None
            K = st.corr_pert if st.iec else 0

            def step(x: torch.Tensor, st=st, k=ks, z=z, K=K) -> torch.Tensor:
                eps = eval_model(run.exact, x, k.t)
                if K == 0:
                    return apply_step(k, x, eps, z)
                cfg = dataclasses.replace(run.iec, K=K, lambdas=run.iec.lambdas[:K], tol=0.0)
                rec = StepRecord(index=st.i, t=k.t, s=k.s, nfe=1)
                return S.iec_step(run.exact, k, x, eps, z, cfg, NoiseSource(seed=st.i, keyed=True), st.i, rec)

            Y = step(X)
            M = (step(Xp) - Y) @ V / scale                    # row j: components of the propagated v_j
            mu = torch.as_tensor(run.exact.affine_eigvals(k.t), dtype=torch.float64).numpy()
            u = abs(k.b) * mu
            lams = run.iec.lambdas[:K] if K else ()
            _, _, fK = amplification_factors(k.a, u, K, list(lams))
            diag = torch.diagonal(M).numpy()
            off = (M - torch.diag(torch.diagonal(M))).abs().max().item() if d > 1 else 0.0
            size = (k.a * float(X.abs().max()) + float(Y.abs().max())) / scale   # states, in units of the probe
            allowance = ROUND_REL * (1.0 + size + float(np.abs(fK).max())) * (K + 1)
            idx.append(st.i)
            meas.append(diag)
            pred.append(fK)
            dev.append(max(float(np.abs(diag - fK).max()), off))
            tol.append(allowance)
            leak.append(off)
        m = np.array([float(np.linalg.norm(v)) for v in meas])
        b = np.array([float(np.linalg.norm(v)) for v in pred])
        return PerStep(idx, m, b, np.array(tol), "identity",
                       {"max_offdiagonal_leak": float(max(leak)) if leak else 0.0,
                        "max_abs_factor_deviation": float(max(dev)) if dev else 0.0},
                       deviation=np.array(dev))
