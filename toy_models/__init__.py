"""Toy data laws with exact answers (THEORY.md section 7; contract in docs/TOY_API.md).

`GaussianToy` (full, diagonal, low-rank + tiny covariance) and `GaussianMixtureToy` give the exact
eps*(x, t) = -sqrt(1 - abar_t) grad log p_t(x), its Jacobian and the probability-flow solution; both are
eps_models for `iec_theory.sample` (called as model(x, t) with t a LongTensor [B]).
"""

from .gaussian import GaussianToy
from .mixture import GaussianMixtureToy

__all__ = ["GaussianMixtureToy", "GaussianToy"]
