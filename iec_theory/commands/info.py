"""`iec info`: versions, presets and a sanity run of DDIM and IEC on a Gaussian toy with an exact answer."""

from __future__ import annotations

import argparse

import torch

from ..iec import IECConfig
from ..provenance import provenance
from ..sampler import sample
from ..schedules import Schedule


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of the toy sanity run (recorded)")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps T of the sanity run")


def run(args: argparse.Namespace) -> int:
    from toy_models import GaussianToy

    from ..checks import check_seed
    from ..errors import require

    check_seed(args.seed)
    require(args.steps >= 1, f"--steps must be >= 1, got {args.steps}")
    for key, value in provenance(seed=args.seed).items():
        print(f"{key:>14}: {value}")
    presets = (IECConfig.official_ddpm(), IECConfig.official_ldm(), IECConfig.relaxed(0.5, 3))
    for cfg in presets:
        print(f"preset {cfg.name}: K={cfg.K} lambdas={cfg.lambdas} tol={cfg.tol} noise={cfg.noise}")

    schedule = Schedule.linear()
    g = torch.Generator().manual_seed(args.seed)
    d = 8
    toy = GaussianToy.diagonal(torch.zeros(d, dtype=torch.float64), torch.logspace(-3, 0, d, dtype=torch.float64),
                               schedule)
    ts = schedule.timesteps(args.steps)
    x_T = torch.randn(16, d, generator=g, dtype=torch.float64)
    exact = toy.exact_flow(x_T, ts[0], -1)
    print(f"\nsanity run: {d}-d Gaussian toy, T={args.steps}, eta=0, 16 samples; error vs the exact ODE flow")
    for name, cfg in [("DDIM", None)] + [(c.name, c) for c in presets]:
        tr = sample(toy, schedule, x_T, args.steps, iec=cfg)
        err = float((tr.x0 - exact).norm(dim=1).mean())
        print(f"  {name:<22} NFE={tr.nfe:<5d} mean ||x0 - x0_exact|| = {err:.3e}")
    return 0
