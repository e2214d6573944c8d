"""`iec run SPEC.toml [--out DIR]`: run one experiment spec and write its results folder.

Toy specs (kind = "toy", the default) run in iec_theory.harness; real-network specs (kind = "real") are
handed to `iec real-eval` (iec_theory.commands.real_eval) with the same arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="experiment spec (TOML), e.g. experiments/stiff.toml")
    parser.add_argument("--out", default=None, help="results folder (default results/<name>-<spec hash>)")
    parser.add_argument("--model-dir", default=None, help="real-network specs only: see `iec real-eval --help`")
    parser.add_argument("--quiet", action="store_true", help="do not print the results table")


def _spec_kind(path: str) -> str:
    from ..harness.spec import tomllib

    p = Path(path)
    if not p.is_file():
        return "toy"   # load_spec reports the missing file
    try:
        return str(tomllib.loads(p.read_text(encoding="utf-8")).get("kind", "toy"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return "toy"   # load_spec reports the TOML or encoding error


def run(args: argparse.Namespace) -> int:
    from ..checks import check_output_dir

    if args.out is not None:
        check_output_dir(args.out, "--out")
    if _spec_kind(args.spec) == "real":
        from . import real_eval

        return int(real_eval.run(args) or 0)
    from ..harness import load_spec, run_spec

    spec = load_spec(args.spec)          # validated before any work
    run_spec(spec, args.out, quiet=args.quiet)
    return 0
