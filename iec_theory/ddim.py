"""The generalized DDIM step x_s = a_t x_t + b_t eps + c_t z (THEORY.md section 1).

    a_t = sqrt(abar_s / abar_t)
    c_t = eta * sqrt((1 - abar_t/abar_s) (1 - abar_s) / (1 - abar_t))
    b_t = sqrt(1 - abar_s - c_t^2) - a_t sqrt(1 - abar_t)

eta = 0 is Euler on the probability-flow ODE in xbar = x / sqrt(abar); eta = 1 between adjacent
timesteps is ancestral DDPM with the posterior variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import require, require_finite_number
from .schedules import Schedule


@dataclass(frozen=True)
class StepCoefficients:
    """Coefficients of one step t -> s, plus the abar values needed by the x0-prediction form."""

    t: int
    s: int
    a: float
    b: float
    c: float
    abar_t: float
    abar_s: float

    @property
    def dsigma(self) -> float:
        """sigma_t - sigma_s > 0; |b| = sqrt(abar_s) dsigma when eta = 0."""
        return math.sqrt((1 - self.abar_t) / self.abar_t) - math.sqrt((1 - self.abar_s) / self.abar_s)


def ddim_coefficients(schedule: Schedule, t: int, s: int, eta: float = 0.0) -> tuple[float, float, float]:
    """Return (a_t, b_t, c_t) of the generalized DDIM step from t to s < t (s = -1: final step)."""
    k = step_coefficients(schedule, t, s, eta)
    return k.a, k.b, k.c


def step_coefficients(schedule: Schedule, t: int, s: int, eta: float = 0.0) -> StepCoefficients:
    """The step's coefficients as a record (see ddim_coefficients)."""
    eta = require_finite_number(eta, "eta")
    require(eta >= 0.0, f"eta must be >= 0, got {eta}")
    require(int(s) < int(t), f"a step must go to a smaller time: got t={t}, s={s}")
    abar_t, abar_s = schedule.abar(t), schedule.abar(s)
    require(t >= 0, f"the start time t of a step must be >= 0, got {t}")
    a = math.sqrt(abar_s / abar_t)
    c = eta * math.sqrt(max((1 - abar_t / abar_s) * (1 - abar_s) / (1 - abar_t), 0.0))
    rem = 1 - abar_s - c * c
    require(rem >= -1e-15, f"eta={eta} too large for step {t}->{s}: 1 - abar_s - c^2 = {rem} < 0")
    b = math.sqrt(max(rem, 0.0)) - a * math.sqrt(1 - abar_t)
    return StepCoefficients(int(t), int(s), a, b, c, abar_t, abar_s)


def apply_step(
    k: StepCoefficients,
    x_t: torch.Tensor,
    eps: torch.Tensor,
    z: torch.Tensor | None,
    clip_x0: float | None = None,
) -> torch.Tensor:
    """One step: a x_t + b eps + c z; with clip_x0 the x0-prediction is clamped to [-clip, clip] first.

    Without clipping this is algebraically the x0-prediction form
    sqrt(abar_s) x0 + sqrt(1 - abar_s - c^2) eps + c z with x0 = (x_t - sqrt(1-abar_t) eps)/sqrt(abar_t).
    """
    if clip_x0 is None:
        out = k.a * x_t + k.b * eps
    else:
        x0 = (x_t - math.sqrt(1 - k.abar_t) * eps) / math.sqrt(k.abar_t)
        x0 = x0.clamp(-clip_x0, clip_x0)
        out = math.sqrt(k.abar_s) * x0 + math.sqrt(max(1 - k.abar_s - k.c * k.c, 0.0)) * eps
    if k.c != 0.0 and z is not None:
        out = out + k.c * z
    return out
