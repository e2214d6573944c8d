"""The IEC step's implicit equation and its relaxed iteration, computed independently of the sampler.

    y* = a x_t + b eps(y*, t) + c z                      (state-implicit step, THEORY.md section 2)
    y_0 = a x_t + b eps(x_t, t) + c z,   y_k = y_{k-1} + lambda_k (a x_t + b eps(y_{k-1}, t) + c z - y_{k-1})

`implicit_fixed_point` solves the first by Newton's method (certified Jacobians only); `relaxed_iterates`
recomputes the second from the DECLARED coefficients and relaxations, so a theorem that bounds the
sampler's actual states through these quantities can catch a sampler that does something else.
`contraction_factor` is the Lipschitz factor q of one relaxed update (T5).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..constants import _constant_jacobian, exact_jacobian
from ..ddim import StepCoefficients
from ._common import batch_segment_constants
from .base import eval_model, norm

__all__ = ["contraction_factor", "implicit_fixed_point", "q_factor", "relaxed_iterates"]

NEWTON_ITERS = 40
NEWTON_TOL = 1e-13


def q_factor(lam: float, b: float, m: float, L: float) -> float:
    """q = sqrt((1-l)^2 - 2 l (1-l) |b| m + l^2 b^2 L^2) (0 < l <= 1; the radicand is >= (|1-l| - l|b|L)^2 >= 0)."""
    B = abs(b)
    return math.sqrt(max((1 - lam) ** 2 - 2 * lam * (1 - lam) * B * m + (lam * B * L) ** 2, 0.0))


def _residual(model: Any, k: StepCoefficients, x_t: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y - k.a * x_t - k.b * eval_model(model, y, k.t) - k.c * z


def implicit_fixed_point(model: Any, k: StepCoefficients, x_t: torch.Tensor, z: torch.Tensor,
                         y0: torch.Tensor) -> tuple[torch.Tensor, bool, float]:
    """Newton's method for y = a x_t + b eps(y, t) + c z, rows independent; (y*, converged, residual norm)."""
    y = y0.clone().to(torch.float64)
    d = y.shape[-1]
    eye = torch.eye(d, dtype=torch.float64)
    res = float("inf")
    for _ in range(NEWTON_ITERS):
        F = _residual(model, k, x_t, z, y)
        res = norm(F)
        if res <= NEWTON_TOL * (1.0 + norm(y)):
            return y, True, res
        J = exact_jacobian(model, y, k.t)
        if J is None:
            return y, False, res
        try:
            step = torch.linalg.solve(eye - k.b * J, F.unsqueeze(-1)).squeeze(-1)
        except RuntimeError:
            return y, False, res
        y = y - step
        if not bool(torch.isfinite(y).all()):
            return y, False, res
    res = norm(_residual(model, k, x_t, z, y))
    return y, res <= 1e-11 * (1.0 + norm(y)), res


def relaxed_iterates(model: Any, k: StepCoefficients, x_t: torch.Tensor, z: torch.Tensor,
                     lambdas: list[float]) -> list[torch.Tensor]:
    """[y_0, ..., y_K] of the declared relaxed iteration (same noise z at every iteration)."""
    y = k.a * x_t + k.b * eval_model(model, x_t, k.t) + k.c * z
    out = [y]
    for lam in lambdas:
        y = y + lam * (k.a * x_t + k.b * eval_model(model, y, k.t) + k.c * z - y)
        out.append(y)
    return out


def contraction_factor(model: Any, k: StepCoefficients, lam: float, y_prev: torch.Tensor,
                       ystar: torch.Tensor) -> tuple[float, bool] | None:
    """q with ||y_k - y*|| <= q ||y_{k-1} - y*||: exact ||(1 - lam) I + lam b J||_2 for a constant Jacobian (any
    lam > 0), else T5's formula with the segment constants of [y_{k-1}, y*] (0 < lam <= 1).  Returns
    (q, certified) or None when not computable."""
    if _constant_jacobian(model) is True:
        J = exact_jacobian(model, ystar[:1].reshape(1, -1), k.t)
        if J is None:
            return None
        eye = torch.eye(J.shape[-1], dtype=torch.float64)
        return float(torch.linalg.matrix_norm((1 - lam) * eye + lam * k.b * J[0], ord=2)), True
    if not 0 < lam <= 1:
        return None
    c = batch_segment_constants(model, y_prev, ystar, k.t)
    if c is None:
        return None
    return q_factor(lam, k.b, c.m, c.L), bool(c.certified)
