"""Timestep grids (real_models.experiment.grids): the official quadratic schedule at T = 100 repeats small
timesteps; sampling its distinct timesteps gives the official loop's trajectory at eta = 0 (written out here
with the repeated pairs), and the refresh step indices below the repeats are unchanged."""

from __future__ import annotations

import math

import numpy as np
import torch

from iec_theory import Schedule, sample
from real_models.experiment.grids import (
    effective_steps,
    official_quad_sequence,
    timesteps_for,
    timesteps_with_steps,
)


def test_official_quad_at_T100_has_96_distinct_steps_repeats_at_the_end():
    seq = official_quad_sequence(1000, 100)
    assert len(seq) == 100 and len(set(seq)) == 96 == effective_steps(100, "quad")
    desc = list(reversed(seq))
    ts = timesteps_for(Schedule.linear(), 100, "quad")
    assert ts == sorted(set(seq), reverse=True)
    first_repeat = next(k for k in range(1, 100) if desc[k] == desc[k - 1])
    assert first_repeat > 90 and desc[:first_repeat] == ts[:first_repeat]   # refresh steps 0, 10, ..., 90 agree
    assert effective_steps(20, "uniform") == 20 and len(timesteps_with_steps(Schedule.linear(), 106, "quad")) == 106


def test_distinct_grid_reproduces_the_official_loop_with_repeated_timesteps():
    sched = Schedule.linear()
    betas = torch.tensor(sched.betas, dtype=torch.float64)
    abar = torch.cumprod(1 - torch.cat([torch.zeros(1, dtype=torch.float64), betas]), 0)  # alpha(t) = abar[t+1]

    def eps(x, t):
        tt = t.double().view(-1, 1, 1, 1) if torch.is_tensor(t) else float(t)
        return 0.3 * x * torch.sin(tt / 100.0) + 0.1 * torch.cos(x)

    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seq = official_quad_sequence(1000, 100)
    seq_next = [-1] + seq[:-1]
    x = x_T
    for i, j in zip(reversed(seq), reversed(seq_next)):      # the official generalized_steps at eta = 0
        at, an = float(abar[i + 1]), float(abar[j + 1])
        e = eps(x, torch.full((2,), i))
        x0 = (x - e * math.sqrt(1 - at)) / math.sqrt(at)
        x = math.sqrt(an) * x0 + math.sqrt(1 - an) * e
    ours = sample(eps, sched, x_T, timesteps_for(sched, 100, "quad"), eta=0.0)
    assert ours.nfe == 96
    np.testing.assert_allclose(ours.x0.numpy(), x.numpy(), rtol=1e-9, atol=1e-9)
