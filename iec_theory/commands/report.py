"""`iec report`: run or collect the experiments and typeset the report PDF (typst, offline)."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys

DEFAULT_OUT = "build/iec_report.pdf"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..report.builder import PROFILES, SECTIONS

    profiles = ", ".join(f"{p.name}: {p.expected_time}" for p in PROFILES.values())
    parser.add_argument("--profile", choices=list(PROFILES), default="quick",
                        help=f"sizes of the experiments ({profiles}); default quick")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="PDF to write (default %(default)s, an ignored folder, so a run leaves git status "
                             "clean; the committed reference copy is rebuilt with --out reports/iec_report.pdf)")
    parser.add_argument("--seed", type=int, default=0, help="seed for every random draw (default %(default)s)")
    parser.add_argument("--results", action="append", default=None, metavar="DIR",
                        help="results folder(s) of `iec run`, the real-model code and `iec evidence` to read "
                             "(default: results, runs and the committed reports/evidence)")
    parser.add_argument("--reuse-results", action="store_true",
                        help="toy experiments: read finished `iec run` folders with the same spec hash from the "
                             "results folders instead of recomputing them (default: recompute; they are cheap)")
    parser.add_argument("--run-real", action=argparse.BooleanOptionalAction, default=None,
                        help="run each real-model spec (experiments/*.toml with kind = \"real\") that has no "
                             "results folder yet, into results/<name>-<hash> (minutes per spec; the quick profile "
                             "runs only real_quick), then report it; default: on for quick and full, off for ci")
    parser.add_argument("--sections", default=None,
                        help="comma-separated subset of sections: " + ",".join(s.key for s in SECTIONS))
    parser.add_argument("--keep-build", default=None, metavar="DIR",
                        help="also copy the typst source and SVG figures to DIR (a new or empty folder; "
                             "nothing in it is ever deleted)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any section failed")
    parser.add_argument("--quiet", action="store_true", help="no progress lines (they go to stderr)")


DEFAULT_RESULTS = ("results", "runs", "reports/evidence")   # reports/evidence: the committed `iec evidence` run


def _progress(msg: str) -> None:
    """Progress lines go to stderr, so stdout carries only the final summary line."""
    print(msg, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..checks import check_output_dir, check_output_file, check_seed
    from ..report.builder import build_report

    check_output_file(args.out, "--out")                    # before the build, not after it
    check_seed(args.seed)
    if args.keep_build is not None:
        check_output_dir(args.keep_build, "--keep-build", must_be_empty=True)
    torch.set_num_threads(1)
    # SIGTERM -> SystemExit, so the builder's finally blocks remove its temporaries (SIGKILL cannot be
    # caught: the next run removes what it left, see builder.clean_stale_temporaries)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    run_real = args.run_real if args.run_real is not None else args.profile != "ci"
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip()) if args.sections else None
    command = "iec " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["report"] else None
    try:
        result = build_report(profile=args.profile, out=args.out, seed=args.seed,
                              results_dirs=tuple(args.results or DEFAULT_RESULTS), sections=sections,
                              keep_build=args.keep_build, command=command,
                              reuse_results=args.reuse_results, run_real=run_real,
                              log=(lambda m: None) if args.quiet else _progress)
    except ValueError as exc:
        print(f"iec report: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"iec report: interrupted; {args.out} was not changed", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"wrote {result.out} ({result.pages} pages) in {result.seconds:.0f} s"
          + (f"; {len(result.failures)} section(s) FAILED" if result.failures else ""))
    return 1 if (args.strict and result.failures) else 0
