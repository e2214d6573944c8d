"""Timestep grids of a real-model run, including the official quadratic schedule with repeated timesteps.

The official CIFAR-10 code's quadratic skip (``--skip_type quad``) takes
``seq = [int(s) for s in linspace(0, sqrt(0.8 N), T) ** 2]``; at N = 1000 this repeats small timesteps for
every T above ~29 (T = 100: 96 distinct values). The official loop runs a step between each consecutive pair,
so a repeated pair (t, t) is a step with abar_t = abar_s: at eta = 0 it maps x_t to itself exactly
(x_s = sqrt(abar) x0_hat + sqrt(1 - abar) eps = x_t) and only costs an evaluation. The repeats sit at the end
of the trajectory (the smallest t), after every step index a cache refreshes at, so sampling the DISTINCT
timesteps in order gives the official trajectory at eta = 0 with ``len(set(seq))`` steps (same refresh step
indices i % N == 0 below the repeats). iec_theory's sampler takes strictly decreasing timesteps; this module
supplies the distinct grid as an explicit list. ``effective_steps`` is the number of steps actually run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from iec_theory.errors import ConfigError, require

__all__ = ["DDPM_TRAIN_STEPS", "effective_steps", "official_quad_sequence", "timesteps_for", "timesteps_with_steps"]

DDPM_TRAIN_STEPS = 1000


def official_quad_sequence(N: int, T: int) -> list[int]:
    """The official ascending quad sequence, repeats included."""
    return [int(s) for s in np.linspace(0, math.sqrt(N * 0.8), T) ** 2]


def effective_steps(T: int, spacing: str, N: int = DDPM_TRAIN_STEPS) -> int:
    """Steps actually sampled for a requested T: T (uniform), distinct official quad timesteps (quad)."""
    return T if spacing != "quad" else len(set(official_quad_sequence(N, T)))


def timesteps_for(schedule: Any, T: int, spacing: str) -> list[int]:
    """Descending distinct timesteps for the requested T (uniform: Schedule.timesteps; quad: official, distinct)."""
    if spacing == "uniform":
        return schedule.timesteps(T, "uniform")
    require(spacing == "quad", f"unknown spacing {spacing!r}")
    return sorted(set(official_quad_sequence(schedule.num_train_steps, T)), reverse=True)


def timesteps_with_steps(schedule: Any, n: int, spacing: str) -> list[int]:
    """A grid with exactly n steps in the given spacing (for DDIM at a matched NFE): uniform with n steps, or
    the distinct official quad timesteps of the smallest requested T with n distinct values."""
    if spacing == "uniform":
        return schedule.timesteps(n, "uniform")
    N = schedule.num_train_steps
    for T in range(n, N + 1):
        ts = timesteps_for(schedule, T, "quad")
        if len(ts) == n:
            return ts
        if len(ts) > n:
            break
    raise ConfigError(f"no quadratic grid has exactly {n} distinct timesteps at N={N}; use uniform spacing")
