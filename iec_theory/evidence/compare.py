"""The theory's prescription against the official preset, DDIM at equal NFE and Heun (issue 12, item 8).

All methods run through `iec_theory.sampler.sample` / `iec_theory.baselines` from the same x_T with the same
efficient model; the error is the distance of x_0 to a reference endpoint: the exact probability-flow solution
for toys (`GaussianToy.exact_flow`), and for the network a fine full-precision DDIM run (about 500 uniform steps
from the same start time t = tau_T, a proxy for the ODE solution: the number includes its own discretisation
error). Every method starts at the same t = tau_T (800 for the official quadratic schedule). One x_T (n = 1): no spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..baselines import heun
from ..iec import IECConfig
from ..sampler import sample
from ..schedules import Schedule

__all__ = ["compare_methods", "uniform_grid"]


def uniform_grid(t0: int, n: int) -> list[int]:
    """n (or fewer, if they collide) distinct descending integer timesteps spread uniformly over [0, t0]."""
    import numpy as np

    return [int(v) for v in sorted(set(np.round(np.linspace(0, int(t0), int(n))).astype(int)), reverse=True)]


def _err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm((x - ref).double()))


def compare_methods(make_eff: Any, schedule: Schedule, x_T: torch.Tensor, timesteps: Sequence[int],
                    reference_x0: torch.Tensor, prescribed: IECConfig | None) -> list[dict]:
    """[{method, nfe, error}]: plain DDIM, the official DDPM preset (its relative stop test 1e-3 can skip every
    correction while still spending the evaluation), the paper's form (tol = 0), DDIM at the official NFE, Heun,
    and the prescription."""
    ts = list(timesteps)
    rows = []
    with torch.no_grad():
        def add(name: str, traj) -> None:
            rows.append({"method": name, "nfe": int(traj.nfe), "error": _err(traj.x0, reference_x0)})

        add("ddim", sample(make_eff(), schedule, x_T, ts))
        off = sample(make_eff(), schedule, x_T, ts, iec=IECConfig.official_ddpm())
        add("iec_official_ddpm (K=1, lambda=0.5, tol=1e-3, all steps)", off)
        add("iec_paper (K=1, lambda=0.5, tol=0, all steps)",
            sample(make_eff(), schedule, x_T, ts, iec=IECConfig.relaxed(0.5, 1)))
        grid = uniform_grid(ts[0], off.nfe)   # same start time t = ts[0] as every other method
        add(f"ddim_matched ({len(grid)} uniform steps from t = {ts[0]})", sample(make_eff(), schedule, x_T, grid))
        add("heun (same timesteps)", heun(make_eff(), schedule, x_T, ts))
        if prescribed is not None:
            add(f"iec_prescribed ({prescribed.name}, {len(prescribed.select.indices)} steps)",
                sample(make_eff(), schedule, x_T, ts, iec=prescribed))
        else:
            rows.append({"method": "iec_prescribed (no step selected: equals ddim)", "nfe": rows[0]["nfe"],
                         "error": rows[0]["error"]})
    return rows
