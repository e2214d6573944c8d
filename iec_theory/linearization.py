"""Linearised step maps of the EFFICIENT model eps~ along the reference path (THEORY.md sections 3-5).

The propagated error of two runs of the same scheme splits exactly, for an affine eps~ = C~_t x + c~_t, into
a homogeneous part carried by the efficient model's Jacobian and a forcing by the local errors at the
REFERENCE states (which does not depend on the perturbed run):

    plain step:  delta_s = G~ delta_t + b e(x_t),                       G~ = a I + b C~
    IEC step:    d_0 = G~ delta_t + b e(x_t),
                 d_k = (1 - lambda_k) d_{k-1} + lambda_k (a delta_t + b C~ d_{k-1} + b e(y_{k-1}))
                 => delta_s = P~_K delta_t + forcing,
                 P~_0 = G~,  P~_k = (1 - lambda_k) P~_{k-1} + lambda_k (a I + b C~ P~_{k-1})

(y_{k-1}: the reference run's iterates).  In xbar coordinates the factors are divided by a (a = sqrt(abar_s /
abar_t)).  Compounding is therefore decided by C~, never by the exact model's C: an efficient model
eps~ = 10 eps* of a Gaussian is stiff although the exact Gaussian score never is (docs/PROOFS.md).  These
helpers give the per-step factors used by the hypotheses H1 (C1) and H2 (C2) and by T6.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .constants import _constant_jacobian, exact_jacobian
from .ddim import StepCoefficients

__all__ = ["common_eigenbasis", "efficient_jacobians", "reference_at_data_scale", "step_factor_xbar"]

EIGENBASIS_TOL = 1e-9      # relative off-diagonal size below which V^T J V counts as diagonal
DATA_SCALE_FACTOR = 10.0   # reference samples farther than this many data standard deviations "diverge"


def efficient_jacobians(run: Any) -> list[torch.Tensor] | None:
    """J~_i = d eps~ / dx at the reference state of step i ([d, d] each), or None unless eps~ is affine
    (constant, certified Jacobian: a Gaussian toy under bias, scale or constant-direction errors)."""
    if _constant_jacobian(run.perturbed) is not True:
        return None
    out = []
    for st in run.steps:
        J = exact_jacobian(run.perturbed, st.x_t[:1].reshape(1, -1).double(), st.k.t)
        if J is None:
            return None
        out.append(J[0])
    return out


def step_factor_xbar(k: StepCoefficients, J: torch.Tensor, lambdas: list[float] | tuple[float, ...]) -> torch.Tensor:
    """The xbar propagation matrix of one step for an affine model with Jacobian J: P_K / a (module docstring);
    `lambdas` are the relaxations of the corrections actually applied (empty: the plain step G / a)."""
    eye = torch.eye(J.shape[-1], dtype=torch.float64)
    J = J.to(torch.float64)
    G = k.a * eye + k.b * J
    P = G
    for lam in lambdas:
        P = (1.0 - lam) * P + lam * (k.a * eye + k.b * (J @ P))
    return P / k.a


def common_eigenbasis(V: torch.Tensor, mats: list[torch.Tensor]) -> bool:
    """True when every matrix is diagonal in the orthonormal basis V (columns), to EIGENBASIS_TOL."""
    for M in mats:
        D = V.T @ M.to(torch.float64) @ V
        off = D - torch.diag(torch.diagonal(D))
        if float(off.abs().max()) > EIGENBASIS_TOL * (1.0 + float(D.abs().max())):
            return False
    return True


def reference_at_data_scale(run: Any) -> tuple[bool, str]:
    """Do the reference samples lie at the data's scale (the reference samples the data law)?

    Checks max_b ||xbar_0,b - mu|| <= DATA_SCALE_FACTOR * sqrt(trace Sigma) + the same for a unit-variance
    law, with mu and Sigma the data mean and covariance when the exact model exposes them (Gaussian toys,
    mixtures); otherwise the check is not possible and returns False with the reason.
    """
    exact = run.exact
    x0 = run.xs_ref[-1].reshape(run.xs_ref.shape[1], -1).double()
    mean = getattr(exact, "mean", None)
    var = getattr(exact, "cov_eigvals", None)
    if mean is None or var is None:
        means = getattr(exact, "means", None)
        if means is None:
            return False, "the exact model exposes no data law (mean, covariance)"
        mean = torch.as_tensor(means, dtype=torch.float64).mean(0)
        spread = float(torch.linalg.vector_norm(torch.as_tensor(means, dtype=torch.float64) - mean, dim=-1).max())
        scale = spread + float(np.sqrt(x0.shape[-1]))
    else:
        scale = float(torch.as_tensor(var, dtype=torch.float64).sum().sqrt()) + float(np.sqrt(x0.shape[-1]))
    dist = float(torch.linalg.vector_norm(x0 - torch.as_tensor(mean, dtype=torch.float64), dim=-1).max())
    ok = bool(np.isfinite(dist) and dist <= DATA_SCALE_FACTOR * scale)
    return ok, f"max ||x0_ref - mean|| = {dist:.3g} vs data scale {scale:.3g} (x{DATA_SCALE_FACTOR:g} allowed)"
