"""Exact output law timings (iec_theory.exact_law): diagonal toys at d = 1e6, T = 1000 and a full-covariance
toy at d = 512, T = 100. A benchmark script, not a timed test.

Cases (x_T ~ N(0, I), linear schedule, uniform spacing, eta = 0 unless noted):
- diag_distinct_*: GaussianToy.diagonal, d = 1e6, 1e6 distinct variances (uniform in [1e-4, 1]), zero mean:
  the product-form fast path (exact_law module docstring), O(T * d) with a few fused in-place products
  per step; "general" (with --general) forces the general form algebra on the same toy (tens of seconds);
- diag_structured_*: d = 1e6, variances from 1000 log-spaced levels (each shared by ~1000 coordinates, like
  an isotropic-per-frequency image spectrum) and a nonzero mean, so the fast path does not apply to IEC:
  the general diag path groups equal eigenvalues (exact), O(T * levels + d);
- full512_*: GaussianToy with a random eigenbasis, d = 512, T = 100: "eig" is the automatic path (the exact
  model and affine wrappers commute with the covariance, so the law is propagated in its eigenbasis);
  "dense_w8" forces d x d matrices by quantizing the weights at 8 bits (the dense path the non-commuting
  perturbations need).
Each case: plain DDIM and IEC (official DDPM preset, every step); one warm-up, median of --repeats runs.

    python benchmarks/bench_exact_law.py [--repeats 3] [--general] [--threads 1]

Writes benchmarks/results/exact_law.json (medians in seconds, the targets and the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--general", action="store_true",
                    help="also time the general diag path on the all-distinct d = 1e6 toy (single run, slow)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "exact_law.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from iec_theory import IECConfig, Schedule
    from iec_theory.exact_law import exact_output_law, law_distances
    from iec_theory.perturbations import AffineWeightActQuant
    from iec_theory.provenance import provenance
    from toy_models import GaussianToy

    sch = Schedule.linear()
    rng = np.random.default_rng(0)
    results: dict[str, dict] = {}
    iecs = {"ddim": None, "iec_official": IECConfig.official_ddpm()}

    def record(name: str, fn, target: float | None) -> None:
        med, runs = _time(fn, args.repeats)
        results[name] = {"median_s": med, "runs_s": runs, "target_s": target,
                         "meets_target": None if target is None else med <= target}
        print(f"{name:32s} median {med:8.3f} s  (target {target})", flush=True)

    d = 1_000_000
    toy_d = GaussianToy.diagonal(torch.zeros(d, dtype=torch.float64), torch.from_numpy(rng.uniform(1e-4, 1, d)),
                                 sch)
    for tag, iec in iecs.items():
        record(f"diag_distinct_d1e6_T1000_{tag}", lambda iec=iec: exact_output_law(toy_d, sch, 1000, 0.0, iec), 2.0)
    results["diag_distinct_d1e6_T1000_ddim"]["path"] = exact_output_law(toy_d, sch, 5, 0.0, None).info
    levels = np.logspace(-4, 0, 1000)
    toy_s = GaussianToy.diagonal(torch.full((d,), 0.5, dtype=torch.float64),
                                 torch.from_numpy(levels[rng.integers(0, levels.size, d)]), sch)
    for tag, iec in iecs.items():
        record(f"diag_structured_d1e6_T1000_{tag}",
               lambda iec=iec: exact_output_law(toy_s, sch, 1000, 0.0, iec, fast="never"), 2.0)
    law = exact_output_law(toy_s, sch, 1000, 0.0, None, fast="never")
    results["diag_structured_d1e6_T1000_ddim"]["w2"] = law_distances(law, toy_s)["w2"]
    results["diag_structured_d1e6_T1000_ddim"]["groups"] = law.groups
    if args.general:
        t0 = time.perf_counter()
        exact_output_law(toy_d, sch, 1000, 0.0, None, fast="never")
        el = time.perf_counter() - t0
        results["diag_distinct_d1e6_T1000_ddim_general_path"] = {"median_s": el, "runs_s": [el], "target_s": None,
                                                                 "meets_target": None, "note": "single run"}
        print(f"{'diag_distinct_..._general_path':32s} single {el:8.3f} s", flush=True)

    d2 = 512
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(d2, d2, generator=g, dtype=torch.float64))
    var = torch.logspace(0, -4, d2, dtype=torch.float64)
    toy_f = GaussianToy(torch.zeros(d2, dtype=torch.float64), (Q * var) @ Q.T, sch)
    for tag, iec in iecs.items():
        record(f"full512_T100_eig_{tag}", lambda iec=iec: exact_output_law(toy_f, sch, 100, 0.0, iec), 5.0)
        record(f"full512_T100_dense_w8_{tag}",
               lambda iec=iec: exact_output_law(AffineWeightActQuant(toy_f, 8, None), sch, 100, 0.0, iec), 5.0)
    out = {"benchmark": "exact_law", "threads": args.threads, "repeats": args.repeats, "results": results,
           "load_average": list(os.getloadavg()), "cpu_count": os.cpu_count(),
           "provenance": provenance(seed=0, machine_detail=platform.processor())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
