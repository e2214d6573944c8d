"""`iec sweep SPEC.toml [--out DIR] [--workers N]`: expand the spec's [sweep] grid and run its cells."""

from __future__ import annotations

import argparse

from ..errors import require


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="experiment spec (TOML) with a [sweep] grid table")
    parser.add_argument("--out", default=None, help="sweep folder (default results/<name>-sweep-<spec hash>)")
    parser.add_argument("--workers", type=int, default=None, help="process pool size (default sweep.workers or 2)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from ..checks import check_output_dir
    from ..harness import load_spec, run_sweep

    if args.out is not None:
        check_output_dir(args.out, "--out")
    require(args.workers is None or args.workers >= 1, f"--workers must be an integer >= 1, got {args.workers}")
    spec = load_spec(args.spec)
    require("sweep" in spec.raw, "sweep: the spec has no [sweep] table (use `iec run` for a single run)")
    res = run_sweep(spec, args.out, args.workers, progress=not args.no_progress)
    print(f"{spec.name}: {res['cells']} cells ({res['ran']} run, {res['skipped']} already finished); "
          f"results in {res['out']}")
    return 0
