"""Sweep speed-up with 2 local Dask workers over 1 on CPU-bound cells (issue 14, item 4; target >= 1.7x on 2 cores).

    python benchmarks/bench_sweep_executors.py [--cells 8] [--T 100] [--batch 2048] [--workers 1 2]

A toy sweep whose cells are CPU-bound (a 16-dim Gaussian, T steps, a Monte Carlo batch, DDIM and the
official IEC preset; `--cells` seeds) runs on a Dask LocalCluster (processes, one thread per worker) of
each size in --workers. The cluster is started and its workers warmed up (torch and the harness
imported) before the clock starts, so the timings are the cells' wall time through the executor, from
submission to the last written cell folder. Rows of every run are checked to be identical.
speedup = wall(1 worker) / wall(N workers). Writes benchmarks/results/sweep_executors.json with the load
average and "machine_busy" (auto: 1-minute load above half the cores, or --machine-busy yes|no).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC = """
name = "bench_sweep"
seed = 0

[model]
kind = "gaussian"
dim = 16
spectrum = {{lo = 1e-3, hi = 1.0}}

[sampler]
T = {T}
batch = {batch}

[perturbation]
kind = "bias"
magnitude = 0.01

[[methods]]
name = "ddim"

[[methods]]
name = "iec"
iec = {{preset = "official_ddpm"}}

[metrics]
exact_law = false
monte_carlo = true
total = true

[sweep]
grid = {{"seed" = {seeds}}}
"""


def _warm() -> bool:
    import torch  # noqa: F401

    import iec_theory.harness.sweep  # noqa: F401
    return True


def main(argv: list[str] | None = None) -> int:
    from distributed import Client, LocalCluster

    from iec_theory.harness import run_sweep
    from iec_theory.provenance import provenance

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--machine-busy", choices=("auto", "yes", "no"), default="auto")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sweep_executors.json"))
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bench.toml"
        spec.write_text(SPEC.format(T=args.T, batch=args.batch, seeds=list(range(args.cells))))
        ref_rows = None
        for n in args.workers:
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                              silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
                client.run(_warm)
                t0 = time.perf_counter()
                res = run_sweep(str(spec), Path(tmp) / f"w{n}", progress=False, executor="dask",
                                scheduler=cluster.scheduler_address)
                wall = time.perf_counter() - t0
            assert res["ran"] == args.cells
            ref_rows = ref_rows if ref_rows is not None else res["rows"]
            runs.append({"workers": n, "wall_s": wall, "cells_per_s": args.cells / wall,
                         "rows_identical_to_first": res["rows"] == ref_rows})
            print(f"{n} worker(s): {wall:.2f} s for {args.cells} cells", flush=True)
    base = next(r["wall_s"] for r in runs if r["workers"] == min(args.workers))
    for r in runs:
        r["speedup_vs_min_workers"] = base / r["wall_s"]
    load_after = os.getloadavg()
    busy = {"yes": True, "no": False}.get(args.machine_busy, max(load_before[0], load_after[0]) > 0.5 * os.cpu_count())
    out = {"cells": args.cells, "T": args.T, "batch": args.batch, "executor": "dask LocalCluster, 1 thread/worker",
           "runs": runs, "target_speedup_2_vs_1": 1.7, "machine_busy": busy, "loadavg_before": load_before,
           "loadavg_after": load_after, "cpu_count": os.cpu_count(), "note": args.note,
           "provenance": provenance(seed=0)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
