"""The toy setting `toy_var100` with exact answers (PAPER.md section 5 (iv); THEORY.md section 7).

Data N(0, diag(100, 1, 0.01)), exact eps* (`toy_models.GaussianToy.diagonal`), linear betas 1e-4..0.02,
N = 1000. The exact Jacobian is C_t = diag(g_i), g_i = sqrt(1 - abar_t)/(abar_t s_i^2 + 1 - abar_t), so

    ||A_t I + B_t C_t||_2 = max_i |A_t + B_t g_i|,     L_t(lam) = max_i |1 - lam + lam B_t g_i|,

and the product of the DDIM factors along the variance-100 direction is the PAPER.md 5(iv) reference
(8.35, 9.63, 9.81, 9.96 for uniform T = 10, 50, 100, 1000; 9.13 for the official quadratic T = 100).
The efficient model adds a smooth non-monotone error e(x) = m W^T sin(W x + phase)
(`iec_theory.perturbations.NonMonotoneNonlinear`) so that first order is not exact (S1) and the
transcribed S2 product range can be told apart from the correct one. Everything is float64 and dense.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..ddim import step_coefficients
from ..schedules import Schedule
from .linalg import dense_jacobian

__all__ = [
    "PAPER_PRODUCTS",
    "TOY_VAR",
    "closed_form_norms",
    "official_quad_timesteps",
    "product_along_direction",
    "s2_orders",
    "toy_var100",
]

TOY_VAR = (100.0, 1.0, 0.01)
# PAPER.md section 5 (iv): products of DDIM factors along the variance-100 direction
PAPER_PRODUCTS = {("uniform", 10): 8.35, ("uniform", 50): 9.63, ("uniform", 100): 9.81, ("uniform", 1000): 9.96,
                  ("quad_official", 100): 9.13}


def official_quad_timesteps(N: int = 1000, T: int = 100) -> tuple[list[int], list[int]]:
    """(official sequence with repeats, descending; distinct descending timesteps for the sampler).

    The official code uses seq = int(linspace(0, sqrt(0.8 N), T)^2) and steps seq[i] -> seq[i-1] (seq[-1] -> -1):
    a repeated value is a step t -> t with A = 1, B = 0 (identity). At T = 100, N = 1000 there are 4.
    """
    seq = [int(s) for s in np.linspace(0, math.sqrt(0.8 * N), T) ** 2]
    full = [int(t) for t in reversed(seq)]
    distinct = sorted(set(seq), reverse=True)
    return full, distinct


def toy_var100(schedule: Schedule | None = None):
    """The GaussianToy N(0, diag(100, 1, 0.01)) on the linear schedule (N = 1000)."""
    from toy_models.gaussian import GaussianToy

    sched = schedule or Schedule.linear()
    return GaussianToy.diagonal(torch.zeros(3, dtype=torch.float64), torch.tensor(TOY_VAR, dtype=torch.float64),
                                sched)


def _pairs(timesteps: Sequence[int]) -> list[tuple[int, int]]:
    ts = list(timesteps)
    return [(t, ts[i + 1] if i + 1 < len(ts) else -1) for i, t in enumerate(ts)]


def closed_form_norms(toy, timesteps: Sequence[int], lambdas: Sequence[float]) -> dict[str, list]:
    """Exact per-step ||A + B C_t||_2 (x), the same / A (xbar) and L(lam), from the eigenvalues of C_t."""
    sched = toy.schedule
    nx, nb, L = [], [], {str(lam): [] for lam in lambdas}
    for t, s in _pairs(timesteps):
        k = step_coefficients(sched, t, s, 0.0)
        g = toy.affine_eigvals(t).double()
        nx.append(float((k.a + k.b * g).abs().max()))
        nb.append(nx[-1] / k.a)
        for lam in lambdas:
            L[str(lam)].append(float((1 - lam + lam * k.b * g).abs().max()))
    return {"spectral_norm_x": nx, "spectral_norm_xbar": nb, "contraction_L": L}


def product_along_direction(schedule: Schedule, timesteps: Sequence[int], var: float = 100.0) -> tuple[float, float]:
    """(product, max) of the DDIM factors A_t + B_t mu_t along a data direction of variance var (exact eps).

    mu_t = sqrt(1 - abar_t)/(var abar_t + 1 - abar_t). Steps t -> t (repeated timesteps) contribute 1.
    """
    p, mx = 1.0, 0.0
    for t, s in _pairs(timesteps):
        if s == t:
            continue
        k = step_coefficients(schedule, t, s, 0.0)
        ab = schedule.abar(t)
        f = k.a + k.b * math.sqrt(1 - ab) / (var * ab + 1 - ab)
        p *= f
        mx = max(mx, f)
    return p, mx


def s2_orders(eff, schedule: Schedule, timesteps: Sequence[int], xs_ref: torch.Tensor, ref,
              measured_delta0: torch.Tensor) -> dict[str, float]:
    """S2 exactly (dense Jacobians of eps~ at the reference states): correct vs transcribed product range.

    correct:     sum_i (M_{n-1} ... M_{i+1}) B_i e_i   (factors of the steps executed after step i)
    transcribed: sum_i (M_{i-1} ... M_0) B_i e_i       (factors of the steps executed before step i)
    with M_j = A_j I + B_j J~_j, e_i = eps~(x_i) - eps(x_i); also ||prod_j M_j||_2 vs prod_j ||M_j||_2.
    """
    pairs = _pairs(timesteps)
    Ms, injected = [], []
    for i, (t, s) in enumerate(pairs):
        k = step_coefficients(schedule, t, s, 0.0)
        x = xs_ref[i]
        tt = torch.full((x.shape[0],), t, dtype=torch.long)

        def f(z, tt=tt):
            return eff(z, tt)
        J = dense_jacobian(f, x)
        n = J.shape[0]
        Ms.append(k.a * torch.eye(n, dtype=J.dtype) + k.b * J)
        injected.append(k.b * (eff(x, tt) - ref(x, tt)).reshape(-1))
    n_steps = len(Ms)
    correct = torch.zeros_like(injected[0])
    for i in range(n_steps):      # forward recursion = sum_i (prod_{j>i} M_j) B_i e_i
        correct = Ms[i] @ correct + injected[i]
    wrong = torch.zeros_like(correct)
    P = torch.eye(correct.numel(), dtype=correct.dtype)
    for i in range(n_steps):
        wrong = wrong + P @ injected[i]
        P = Ms[i] @ P
    prod_norms = float(np.prod([float(torch.linalg.matrix_norm(M, 2)) for M in Ms]))
    d0 = measured_delta0.reshape(-1).double()
    nd = float(torch.linalg.vector_norm(d0))
    return {"measured_norm": nd,
            "predicted_norm": float(torch.linalg.vector_norm(correct)),
            "rel_error_correct_order": float(torch.linalg.vector_norm(correct - d0)) / max(nd, 1e-300),
            "rel_error_transcribed_order": float(torch.linalg.vector_norm(wrong - d0)) / max(nd, 1e-300),
            "norm_of_product": float(torch.linalg.matrix_norm(P, 2)),
            "product_of_norms": prod_norms}
