"""Amplification factors of the plain and the IEC step per eigen-direction (THEORY.md T3).

For an affine model eps(x, t) = C_t x + d_t with symmetric C_t and an eigenvalue mu of C_t, put
u = |b_t| mu (b_t < 0).  Along that eigen-direction a propagated error is multiplied per step by

    plain (explicit) step          g    = a - u
    IEC fixed point (implicit)     f*   = a / (1 + u)
    relaxation factor              r_k  = 1 - lambda_k (1 + u)
    after K corrections            f_K  = f* + (prod_k r_k) (g - f*),   g - f* = u (a - 1 - u) / (1 + u)

(docs/PROOFS.md, T3).  In xbar coordinates divide every factor by a (a = sqrt(abar_s / abar_t)).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import require

__all__ = ["amplification_factors", "relaxation_factors", "stability_region"]


def _lambdas(K: int, lambdas: float | Sequence[float] | np.ndarray) -> list:
    require(isinstance(K, (int, np.integer)) and not isinstance(K, bool) and K >= 0,
            f"K must be an integer >= 0, got {K!r}")
    if np.ndim(lambdas) == 0:
        return [lambdas] * int(K)
    lams = list(lambdas)
    require(len(lams) == K, f"lambdas must have length K={K}, got {len(lams)}")
    return lams


def relaxation_factors(u, K: int, lambdas) -> list:
    """[r_1, ..., r_K] with r_k = 1 - lambda_k (1 + u) (broadcasting over u and each lambda_k)."""
    u = np.asarray(u, dtype=np.float64)
    return [1.0 - np.asarray(lam, dtype=np.float64) * (1.0 + u) for lam in _lambdas(K, lambdas)]


def amplification_factors(a, u, K: int, lambdas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(g, f_star, f_K) of THEORY T3 for step coefficient a, u = |b| mu, K corrections with lambdas.

    `a` and `u` are scalars or numpy arrays (broadcast together); `lambdas` is one number (used for
    every k) or a sequence of K numbers or arrays (broadcast against a and u).  K = 0 gives f_K = g.
    Returns numpy float64 arrays (0-d for scalar input).
    """
    a = np.asarray(a, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    g = a - u
    f_star = a / (1.0 + u)
    prod = np.ones(np.broadcast(a, u).shape)
    for r in relaxation_factors(u, K, lambdas):
        prod = prod * r
    f_K = f_star + prod * (g - f_star)
    return g, f_star, f_K


def stability_region(u_grid, lambda_grid, K_values: Sequence[int], a: float = 1.0) -> dict[str, np.ndarray]:
    """|f_K| on the grid (K, lambda, u) for constant lambda_k = lambda, for stability-region plots.

    Returns a dict with the grids, `abs_fK` [nK, nlam, nu], `abs_g` [nu], `abs_fstar` [nu],
    `stable` = |f_K| <= a (in xbar: the factor |f_K| / a <= 1: no growth of the scale-free error),
    `converges` = |1 - lambda (1 + u)| < 1 [nlam, nu] (the iteration converges to f*), and
    `beats_plain` = |f_K| < |g|.
    """
    u = np.asarray(u_grid, dtype=np.float64).reshape(-1)
    lam = np.asarray(lambda_grid, dtype=np.float64).reshape(-1)
    Ks = [int(k) for k in K_values]
    out = np.empty((len(Ks), lam.size, u.size))
    for i, K in enumerate(Ks):
        _, _, fK = amplification_factors(a, u[None, :], K, [lam[:, None]] * K)
        out[i] = np.abs(np.broadcast_to(fK, (lam.size, u.size)))
    g, f_star, _ = amplification_factors(a, u, 0, ())
    return {
        "u": u, "lambda": lam, "K": np.asarray(Ks), "a": np.asarray(a),
        "abs_fK": out, "abs_g": np.abs(g), "abs_fstar": np.abs(f_star),
        "stable": out <= a, "converges": np.abs(1.0 - lam[:, None] * (1.0 + u[None, :])) < 1.0,
        "beats_plain": out < np.abs(g)[None, None, :],
    }
