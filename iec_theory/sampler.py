"""One sampler for toy and real models: generalized DDIM (eta >= 0) with optional IEC.

`sample` walks timesteps tau_T > ... > tau_1 > -1 and at each step i applies
x_{i+1} = a x_i + b eps~(x_i, t) + c z (THEORY.md section 1), then, at steps selected by the IEC
policy, the official relaxed fixed-point corrections (section 2). eta = 1 with adjacent timesteps is
ancestral DDPM sampling with the posterior variance.

Models may define `begin_step(step_index, t)`: the sampler calls it before the first evaluation
of each step, so cached or per-timestep-quantized models know where they are (a cached model that
refreshes at step i refreshes on every evaluation of that step, IEC's corrections included, as the
official code does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .checks import derive_seed
from .ddim import StepCoefficients, apply_step, step_coefficients
from .errors import ConfigError, require, require_finite_number, require_finite_tensor
from .iec import RESIDUAL_EPS, IECConfig
from .schedules import Schedule

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StepRecord:
    """What happened at step i (t -> s): network evaluations, IEC residuals, early stop."""

    index: int
    t: int
    s: int
    nfe: int
    iec_applied: bool = False
    corrections: int = 0          # relaxed updates actually applied
    residuals: list[float] = field(default_factory=list)
    early_stop: bool = False


@dataclass
class Trajectory:
    """xs[0] = x_T, xs[i+1] = state after step i; timesteps[i] is the start time of step i."""

    xs: torch.Tensor
    timesteps: list[int]
    nfe: int
    steps: list[StepRecord]
    eta: float = 0.0

    @property
    def x0(self) -> torch.Tensor:
        return self.xs[-1]


class NoiseSource:
    """Gaussian noise z for (step index, iteration k): sequential draws from a torch.Generator, or
    keyed draws (`keyed=True`) so two runs with different early stops still share every z."""

    def __init__(self, generator: torch.Generator | None = None, seed: int | None = None, keyed: bool = False):
        self.generator = generator
        self.seed = seed
        self.keyed = keyed
        require(not keyed or seed is not None, "keyed noise needs a seed")

    def draw(self, like: torch.Tensor, step: int, k: int) -> torch.Tensor:
        if self.keyed:
            g = torch.Generator(device="cpu").manual_seed(derive_seed(int(self.seed) * 1_000_003 + step * 1009 + k))
            return torch.randn(like.shape, generator=g, dtype=like.dtype).to(like.device)
        gen = self.generator
        if gen is not None and gen.device != like.device:
            return torch.randn(like.shape, generator=gen, dtype=like.dtype, device=gen.device).to(like.device)
        return torch.randn(like.shape, generator=gen, dtype=like.dtype, device=like.device)


# A custom update rule for one step: rule(eps_model, k, x_t, eps_t, z, step_index, record, noise) -> x_s.
# It receives the step's first evaluation eps_t = eps~(x_t, t) (already counted in record.nfe) and the
# step's noise z (None when c = 0), and must add any further evaluations it makes to record.nfe.
StepRule = Callable[["EpsModel", StepCoefficients, torch.Tensor, torch.Tensor, "torch.Tensor | None", int,
                     StepRecord, NoiseSource], torch.Tensor]


def same_schedule(a: Schedule, b: Schedule) -> bool:
    """True if a and b have the same number of steps and (to 1e-12 relative) the same abar table."""
    if a is b:
        return True
    return a.num_train_steps == b.num_train_steps and bool(
        np.allclose(a.alphas_cumprod, b.alphas_cumprod, rtol=1e-12, atol=0.0))


def check_model_schedule(eps_model: EpsModel, schedule: Schedule) -> None:
    """A model that carries its own schedule (toys, their perturbations) must be sampled with it."""
    require(isinstance(schedule, Schedule), f"schedule must be an iec_theory Schedule, got {type(schedule).__name__}")
    own = getattr(eps_model, "schedule", None)
    if isinstance(own, Schedule) and not same_schedule(own, schedule):
        raise ConfigError(f"the sampler's schedule ({schedule.name}, N={schedule.num_train_steps}) differs from the "
                          f"model's own schedule ({own.name}, N={own.num_train_steps}); sample with model.schedule")


def resolve_timesteps(schedule: Schedule, T: int | Sequence[int], spacing: str = "uniform") -> list[int]:
    """T as a number of steps (with spacing) or an explicit descending list of timesteps."""
    if isinstance(T, (list, tuple)) or (isinstance(T, torch.Tensor) and T.ndim == 1):
        return schedule.check_timesteps([int(t) for t in T])
    return schedule.timesteps(T, spacing)


def evaluate(eps_model: EpsModel, x: torch.Tensor, t: int, check_finite: bool = True) -> torch.Tensor:
    """eps_model(x, t * ones(batch)) with its output shape (and finiteness) checked."""
    tt = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
    out = eps_model(x, tt)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"eps_model returned {shape} for input of shape {tuple(x.shape)} at t={t}")
    if not out.is_floating_point():
        kind = "complex" if out.is_complex() else "non-floating-point"
        raise ConfigError(f"eps_model returned {kind} values (dtype {out.dtype}) at t={t}; it must return a real "
                          "floating-point tensor")
    if check_finite and not bool(torch.isfinite(out).all()):
        raise ConfigError(f"eps_model returned non-finite values at t={t}")
    return out


def relative_residual(y_hat: torch.Tensor, y: torch.Tensor) -> float:
    """||yhat - y|| / (||y|| + 1e-6), norms over the whole batch tensor as in the official code."""
    return float(torch.linalg.vector_norm(y_hat - y) / (torch.linalg.vector_norm(y) + RESIDUAL_EPS))


def iec_step(
    eps_model: EpsModel,
    k: StepCoefficients,
    x_t: torch.Tensor,
    eps_t: torch.Tensor,
    z: torch.Tensor | None,
    iec: IECConfig,
    noise: NoiseSource,
    step_index: int,
    record: StepRecord,
    clip_x0: float | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """The plain step from eps_t = eps~(x_t, t), then up to K official IEC corrections."""
    y = apply_step(k, x_t, eps_t, z, clip_x0)
    record.iec_applied = True
    for j, lam in enumerate(iec.lambdas, start=1):
        eps_y = evaluate(eps_model, y, k.t, check_finite)
        record.nfe += 1
        z_k = z if (iec.noise == "shared" or k.c == 0.0) else noise.draw(x_t, step_index, j)
        y_hat = apply_step(k, x_t, eps_y, z_k, clip_x0)
        res = relative_residual(y_hat, y)
        record.residuals.append(res)
        if res < iec.tol:
            record.early_stop = True
            break
        y = y + lam * (y_hat - y)
        record.corrections = j
    return y


def sample(
    eps_model: EpsModel,
    schedule: Schedule,
    x_T: torch.Tensor,
    T: int | Sequence[int],
    eta: float = 0.0,
    iec: IECConfig | None = None,
    generator: torch.Generator | None = None,
    *,
    spacing: str = "uniform",
    clip_x0: float | None = None,
    noise: NoiseSource | None = None,
    check_finite: bool = True,
    step_rule: StepRule | None = None,
) -> Trajectory:
    """Sample from x_T over T steps (or explicit timesteps) with generalized DDIM and optional IEC.

    Returns a Trajectory with xs of shape [T+1, *x_T.shape], the timesteps, the total NFE and the
    per-step records. `noise` overrides `generator` (e.g. keyed noise for paired runs). `step_rule`
    replaces the plain step at every step not selected for IEC (baselines such as Heun use it).
    """
    require(isinstance(x_T, torch.Tensor), f"x_T must be a torch.Tensor, got {type(x_T).__name__}")
    require(x_T.device.type != "meta", "x_T is on the meta device (no data); create it on cpu or cuda")
    require(x_T.is_floating_point(), f"x_T must be a real floating-point tensor, got dtype {x_T.dtype}")
    require_finite_tensor(x_T, "x_T")
    check_model_schedule(eps_model, schedule)
    require(x_T.ndim >= 1 and x_T.shape[0] >= 1,
            f"x_T must have a leading batch dimension, got shape {tuple(x_T.shape)}")
    eta = require_finite_number(eta, "eta")
    require(eta >= 0.0, f"eta must be >= 0, got {eta}")
    if clip_x0 is not None:
        clip_x0 = require_finite_number(clip_x0, "clip_x0")
        require(clip_x0 > 0, f"clip_x0 must be > 0, got {clip_x0}")
    require(iec is None or isinstance(iec, IECConfig), "iec must be an IECConfig or None")
    timesteps = resolve_timesteps(schedule, T, spacing)
    selected = iec.select.resolve(timesteps) if iec is not None and iec.K > 0 else frozenset()
    noise = noise or NoiseSource(generator)
    begin_step = getattr(eps_model, "begin_step", None)

    xs = torch.empty((len(timesteps) + 1, *x_T.shape), dtype=x_T.dtype, device=x_T.device)
    xs[0] = x_T
    x = x_T
    records: list[StepRecord] = []
    for i, t in enumerate(timesteps):
        s = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        k = step_coefficients(schedule, t, s, eta)
        if begin_step is not None:
            begin_step(i, t)
        record = StepRecord(index=i, t=t, s=s, nfe=1)
        eps = evaluate(eps_model, x, t, check_finite)
        z = noise.draw(x, i, 0) if k.c != 0.0 else None
        if i in selected:
            assert iec is not None
            x = iec_step(eps_model, k, x, eps, z, iec, noise, i, record, clip_x0, check_finite)
        elif step_rule is not None:
            x = step_rule(eps_model, k, x, eps, z, i, record, noise)
        else:
            x = apply_step(k, x, eps, z, clip_x0)
        xs[i + 1] = x
        records.append(record)
    return Trajectory(xs=xs, timesteps=timesteps, nfe=sum(r.nfe for r in records), steps=records, eta=eta)
