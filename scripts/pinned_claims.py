"""Print the C1/C2 verdict of every pinned claim instance (tests/test_bounds_claims.py, the report's examples).

    python scripts/pinned_claims.py [--json PATH]

Used to list old and new verdicts when the verdict code changes (run it on both commits).
"""

from __future__ import annotations

import argparse
import json

from iec_theory.claims import C1, C2, converging_iec
from iec_theory.theorems.instances import ToyInstance

SCALE9 = dict(model="gaussian", dim=4, perturbation="scale", magnitude=9.0)

PINNED: list[tuple[str, str, ToyInstance]] = [
    ("C1", "eps~ = 10 eps*, plain DDIM, T = 10", ToyInstance(T=10, **SCALE9)),
    ("C1", "eps~ = 10 eps*, plain DDIM, T = 20", ToyInstance(T=20, **SCALE9)),
    ("C1", "stiff REFERENCE (kappa 10 x exact), bias 1e-3, T = 20",
     ToyInstance(model="stiff", kappa=10.0, dim=4, T=20, perturbation="bias", magnitude=1e-3)),
    ("C1", "stiff REFERENCE (kappa 4), bias 1e-3, T = 20",
     ToyInstance(model="stiff", kappa=4.0, dim=4, T=20, perturbation="bias", magnitude=1e-3)),
    ("C1", "exact Gaussian, bias 1e-2, T = 5", ToyInstance(model="gaussian", dim=1, T=5, perturbation="bias")),
    ("C2", "eps~ = 10 eps*, official DDPM preset, T = 10", ToyInstance(T=10, iec="official_ddpm", **SCALE9)),
    ("C2", "eps~ = 10 eps*, official DDPM preset, T = 20", ToyInstance(T=20, iec="official_ddpm", **SCALE9)),
    ("C2", "eps~ = 10 eps*, relaxed K = 3, lambda = 0.9, T = 10",
     ToyInstance(T=10, iec="relaxed", K=3, lam=0.9, **SCALE9)),
    ("C2", "eps~ = 10 eps*, relaxed K = 3, lambda = 0.9, T = 20",
     ToyInstance(T=20, iec="relaxed", K=3, lam=0.9, **SCALE9)),
    ("C2", "eps~ = 10 eps*, converging IEC (H2 for eps~), T = 20", "converging"),
    ("C2", "stiff reference kappa 14, official DDPM preset, T = 20",
     ToyInstance(model="stiff", kappa=14, dim=8, T=20, perturbation="bias", magnitude=1e-3, iec="official_ddpm")),
    ("C2", "constant bias, relaxed K = 10, lambda = 0.5, T = 200",
     ToyInstance(model="gaussian", dim=8, T=200, perturbation="bias", magnitude=1e-3, iec="relaxed", K=10, lam=0.5)),
    ("C2", "mixture saddle, bias 1e-8, relaxed K = 4",
     ToyInstance(model="mixture", dim=1, T=10, perturbation="bias", magnitude=1e-8, x_T="saddle", iec="relaxed", K=4,
                 lam=0.5, decades=1.0, separation=1.0)),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = []
    for claim, name, inst in PINNED:
        if inst == "converging":
            inst = converging_iec(ToyInstance(T=20, **SCALE9))
        v = (C1 if claim == "C1" else C2).evaluate(inst)
        ev = v.evidence
        fe = ev.get("final_error", ev.get("final_error_iec"))
        rows.append({"claim": claim, "instance": name, "status": v.status, "label": v.label,
                     "final_error": fe, "growth_factor": ev.get("growth_factor")})
        print(f"{claim}  {name:<58} {v.status:<18} {v.label:<13} final {fe:.3g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
