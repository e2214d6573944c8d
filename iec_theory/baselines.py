"""Compute-matched baselines for IEC, each returning a Trajectory with its NFE (network evaluations).

IEC with K corrections on every one of T steps costs T (1 + K) evaluations (2T for the official DDPM
preset). The baselines a reviewer asks for at equal compute:

- `ddim_matched`: plain DDIM (same eta) with as many steps as the IEC run has evaluations
  (`steps = nfe_target`, default (1 + K) T), i.e. more, smaller steps at the same NFE;
- `heun`: a second-order Heun step on the probability-flow ODE in xbar (eta = 0 only):
      e1 = eps(x_t, t); x_e = a x_t + b e1 (the DDIM/Euler predictor);
      e2 = eps(x_e, s); x_s = a x_t + b (e1 + e2) / 2,
  2 NFE per step, except the final step to s = -1 (there is no model at sigma = 0), which is the
  Euler step (1 NFE), as in EDM's sampler: T steps cost 2T - 1;
- `repeat` ("naive repetition"): IEC's relaxed loop with the SAME K, lambdas, step selection and noise
  handling, but every extra evaluation is made at the same point x_t instead of at the iterate:
      yhat = a x_t + b eps~(x_t, t) + c z_k,   y_k = y_{k-1} + lambda_k (yhat - y_{k-1}).
  For a deterministic model it returns the plain step exactly (same NFE as IEC, no benefit); with
  noisy evaluations it averages them. It separates "IEC's fixed point" from "spending more NFEs".

`run_method(name, ...)` dispatches "ddim", "iec", "ddim_matched", "heun", "repeat".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .ddim import StepCoefficients, apply_step
from .errors import ConfigError, require
from .iec import IECConfig
from .sampler import NoiseSource, StepRecord, Trajectory, evaluate, resolve_timesteps, sample
from .schedules import Schedule

__all__ = ["METHODS", "ddim_matched", "heun", "iec_nfe", "repeat", "run_method"]

METHODS = ("ddim", "iec", "ddim_matched", "heun", "repeat")


def iec_nfe(T: int, iec: IECConfig | None, timesteps: Sequence[int] | None = None) -> int:
    """NFE of an IEC run without early stops: T + K * (number of selected steps)."""
    if iec is None or iec.K == 0:
        return T
    ts = list(timesteps) if timesteps is not None else list(range(T))
    return T + iec.K * len(iec.select.resolve(ts))


def ddim_matched(model: Any, schedule: Schedule, x_T: torch.Tensor, nfe_target: int, eta: float = 0.0,
                 noise: NoiseSource | None = None, spacing: str = "uniform") -> Trajectory:
    """Plain DDIM with `nfe_target` uniform steps (one evaluation each): the same NFE as the IEC run."""
    require(1 <= nfe_target <= schedule.num_train_steps,
            f"ddim_matched: nfe_target must lie in [1, {schedule.num_train_steps}], got {nfe_target}")
    return sample(model, schedule, x_T, int(nfe_target), eta, None, noise=noise, spacing=spacing)


def _heun_rule(model: Any, k: StepCoefficients, x: torch.Tensor, e1: torch.Tensor, z: torch.Tensor | None,
               i: int, rec: StepRecord, noise: NoiseSource) -> torch.Tensor:
    """Heun step from e1 = eps(x_t, t): Euler predictor, trapezoidal corrector (Euler on the last step)."""
    x_e = apply_step(k, x, e1, None)
    if k.s < 0:
        return x_e
    e2 = evaluate(model, x_e, k.s)
    rec.nfe += 1
    return apply_step(k, x, 0.5 * (e1 + e2), None)


def heun(model: Any, schedule: Schedule, x_T: torch.Tensor, T: int | Sequence[int], eta: float = 0.0,
         noise: NoiseSource | None = None, spacing: str = "uniform") -> Trajectory:
    """Heun (2nd order, trapezoidal corrector) on the probability-flow ODE; 2 NFE per step, 1 on the last."""
    require(eta == 0.0, f"heun is a deterministic ODE solver: eta must be 0, got {eta}")
    return sample(model, schedule, x_T, T, 0.0, None, noise=noise, spacing=spacing, step_rule=_heun_rule)


def repeat(model: Any, schedule: Schedule, x_T: torch.Tensor, T: int | Sequence[int], eta: float = 0.0,
           iec: IECConfig | None = None, noise: NoiseSource | None = None, spacing: str = "uniform",
           generator: torch.Generator | None = None) -> Trajectory:
    """Naive repetition: IEC's relaxed loop with every evaluation at x_t (module docstring)."""
    require(iec is not None, "repeat needs an IECConfig (K, lambdas, selection, noise) to mirror")
    selected = iec.select.resolve(resolve_timesteps(schedule, T, spacing)) if iec.K > 0 else frozenset()

    def rule(model: Any, k: StepCoefficients, x: torch.Tensor, e0: torch.Tensor, z: torch.Tensor | None,
             i: int, rec: StepRecord, noise: NoiseSource) -> torch.Tensor:
        y = apply_step(k, x, e0, z)
        if i not in selected:
            return y
        rec.iec_applied = True
        for j, lam in enumerate(iec.lambdas, start=1):
            ej = evaluate(model, x, k.t)
            rec.nfe += 1
            z_k = z if (iec.noise == "shared" or k.c == 0.0) else noise.draw(x, i, j)
            y = y + lam * (apply_step(k, x, ej, z_k) - y)
            rec.corrections = j
        return y

    return sample(model, schedule, x_T, T, eta, None, generator, noise=noise, spacing=spacing, step_rule=rule)


def run_method(name: str, model: Any, schedule: Schedule, x_T: torch.Tensor, T: int, eta: float = 0.0,
               iec: IECConfig | None = None, noise: NoiseSource | None = None, spacing: str = "uniform",
               nfe_target: int | None = None) -> Trajectory:
    """One method by name: ddim (plain, T steps), iec, ddim_matched (NFE of the IEC run), heun, repeat."""
    if name == "ddim":
        return sample(model, schedule, x_T, T, eta, None, noise=noise, spacing=spacing)
    if name == "iec":
        require(iec is not None, "method 'iec' needs an IEC config")
        return sample(model, schedule, x_T, T, eta, iec, noise=noise, spacing=spacing)
    if name == "ddim_matched":
        target = nfe_target if nfe_target is not None else iec_nfe(T, iec, schedule.timesteps(T, spacing))
        return ddim_matched(model, schedule, x_T, target, eta, noise, spacing)
    if name == "heun":
        return heun(model, schedule, x_T, T, eta, noise, spacing)
    if name == "repeat":
        return repeat(model, schedule, x_T, T, eta, iec, noise, spacing)
    raise ConfigError(f"unknown method {name!r}; choose one of {METHODS}")
