"""Run an `iec sweep` on a SLURM cluster through dask-jobqueue (optional: `pip install -e ".[slurm]"`).

    python scripts/dask_slurm_sweep.py experiments/few_step.toml --out results/few_step-slurm \\
        --jobs 4 --cores 8 --memory 16GB --walltime 01:00:00 [--queue QUEUE] [--account ACCOUNT]
    python scripts/dask_slurm_sweep.py experiments/few_step.toml --print-job-script   # show the sbatch script only

Starts a `dask_jobqueue.SLURMCluster` from this process (run it on a login node or inside an
allocation): each SLURM job runs `--cores` single-threaded Dask worker processes (OMP_NUM_THREADS=1), and
the cluster is scaled to `--jobs` jobs. The sweep then runs with `executor="dask"` on that cluster, exactly
as `iec sweep SPEC --executor dask --scheduler ADDRESS` would: cells are pure functions of their spec and
return their results to this process, which writes the sweep folder (the compute nodes need this package
installed in the same environment, not a shared results filesystem). Interrupting (Ctrl-C) cancels the
pending cells and prints how to resume; closing the cluster cancels the SLURM jobs.

Alternatively start any Dask cluster yourself (dask-jobqueue, `dask scheduler` + `dask worker` over ssh,
Kubernetes...) and pass its address: `iec sweep SPEC --executor dask --scheduler tcp://HOST:8786`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", help="experiment spec (TOML) with a [sweep] grid")
    ap.add_argument("--out", default=None, help="sweep folder (default results/<name>-sweep-<hash>)")
    ap.add_argument("--jobs", type=int, default=2, help="SLURM jobs to start")
    ap.add_argument("--cores", type=int, default=8, help="cores (= single-threaded worker processes) per job")
    ap.add_argument("--memory", default="16GB", help="memory per job")
    ap.add_argument("--walltime", default="01:00:00")
    ap.add_argument("--queue", default=None, help="SLURM partition")
    ap.add_argument("--account", default=None)
    ap.add_argument("--max-cells", type=int, default=None)
    ap.add_argument("--print-job-script", action="store_true", help="print the sbatch script and exit")
    args = ap.parse_args(argv)
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        print('dask_slurm_sweep: needs dask-jobqueue: pip install -e ".[slurm]"', file=sys.stderr)
        return 2
    from distributed import Client

    from iec_theory.errors import ConfigError
    from iec_theory.harness import SweepInterrupted, load_spec, run_sweep
    from iec_theory.harness.sweep import DEFAULT_MAX_CELLS

    try:
        spec = load_spec(args.spec)          # bad input fails here, before any job is submitted
    except (ConfigError, FileNotFoundError) as exc:
        print(f"dask_slurm_sweep: error: {exc}", file=sys.stderr)
        return 2
    cluster = SLURMCluster(cores=args.cores, processes=args.cores, memory=args.memory, walltime=args.walltime,
                           queue=args.queue, account=args.account,
                           job_script_prologue=["export OMP_NUM_THREADS=1", "export MKL_NUM_THREADS=1"])
    if args.print_job_script:
        print(cluster.job_script())
        cluster.close()
        return 0
    with cluster, Client(cluster) as client:
        cluster.scale(jobs=args.jobs)
        print(f"dashboard: {client.dashboard_link}; waiting for workers (squeue shows the jobs)", flush=True)
        try:
            res = run_sweep(spec, args.out, progress=True, executor="dask", scheduler=cluster.scheduler_address,
                            max_cells=args.max_cells or DEFAULT_MAX_CELLS)
        except SweepInterrupted as exc:
            done = str(exc).split("; resume with:")[0]
            print(f"dask_slurm_sweep: {done}; rerun this command with the same --out to resume", file=sys.stderr)
            return 130
        except ConfigError as exc:
            print(f"dask_slurm_sweep: error: {exc}", file=sys.stderr)
            return 2
    print(f"{spec.name}: {res['cells']} cells ({res['ran']} run, {res['skipped']} already finished); "
          f"results in {res['out']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
