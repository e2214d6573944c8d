"""`iec info`: versions, presets and a one-line sanity run on a Gaussian toy."""

from __future__ import annotations

import argparse

from ..iec import IECConfig
from ..provenance import provenance


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed recorded in the provenance")


def run(args: argparse.Namespace) -> int:
    for key, value in provenance(seed=args.seed).items():
        print(f"{key:>14}: {value}")
    for cfg in (IECConfig.official_ddpm(), IECConfig.official_ldm(), IECConfig.relaxed(0.5, 3)):
        print(f"preset {cfg.name}: K={cfg.K} lambdas={cfg.lambdas} tol={cfg.tol} noise={cfg.noise}")
    return 0
