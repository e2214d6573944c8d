"""`iec sweep SPEC.toml [--out DIR] [--executor local|dask] [--scheduler ADDRESS] [--workers N] [--max-cells N]`:
expand the spec's [sweep] grid and run its cells, resumably (Ctrl-C: exit 130, rerun to resume)."""

from __future__ import annotations

import argparse
import sys

from ..errors import require


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..harness.sweep import DEFAULT_MAX_CELLS

    parser.add_argument("spec", help="experiment spec (TOML) with a [sweep] grid table")
    parser.add_argument("--out", default=None, help="sweep folder (default results/<name>-sweep-<spec hash>)")
    parser.add_argument("--executor", choices=("local", "dask"), default="local",
                        help="local: in-process (1 worker) or a process pool; dask: Dask distributed "
                             "(a LocalCluster, or the cluster at --scheduler)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="address (e.g. tcp://host:8786) of a running Dask scheduler; needs --executor dask")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes of the local pool or LocalCluster (default sweep.workers or 2)")
    parser.add_argument("--max-cells", type=int, default=DEFAULT_MAX_CELLS,
                        help=f"refuse grids with more cells than this (default {DEFAULT_MAX_CELLS:,})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from ..checks import check_output_dir
    from ..harness import SweepInterrupted, load_spec, run_sweep

    if args.out is not None:
        check_output_dir(args.out, "--out")
    require(args.workers is None or args.workers >= 1, f"--workers must be an integer >= 1, got {args.workers}")
    spec = load_spec(args.spec)
    require("sweep" in spec.raw, "sweep: the spec has no [sweep] table (use `iec run` for a single run)")
    try:
        res = run_sweep(spec, args.out, args.workers, progress=not args.no_progress, executor=args.executor,
                        scheduler=args.scheduler, max_cells=args.max_cells)
    except SweepInterrupted as exc:
        print(f"iec sweep: {exc}", file=sys.stderr)
        return 130
    if res["stale"]:
        print(f"note: {res['stale']} cell folder(s) in {res['out']}/cells belong to another version of the spec or "
              f"grid; kept, not in this summary", file=sys.stderr)
    print(f"{spec.name}: {res['cells']} cells ({res['ran']} run, {res['skipped']} already finished); "
          f"results in {res['out']}")
    return 0
