"""The `iec` command line: one subcommand per module, each with add_arguments(parser) and run(args).

Subcommands are imported lazily so that `iec --help` stays fast and a heavy dependency (diffusers,
typst) is loaded only by the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import ConfigError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("iec_theory.commands.info", "print versions, presets and a toy sanity run"),
    "verify": ("iec_theory.commands.verify", "check every theorem (T1-T6) on the default toy suite"),
    "run": ("iec_theory.commands.run", "run one experiment spec (TOML) and write its results folder"),
    "sweep": ("iec_theory.commands.sweep", "run a spec's [sweep] grid in a process pool, resumably"),
    "train-ddpm": ("iec_theory.commands.train_ddpm", "train a DDPM UNet on CIFAR-10 (resumable) and export it"),
    "sample": ("iec_theory.commands.sample_real", "sample a PNG grid from the committed default DDPM (no data)"),
    "report": ("iec_theory.commands.report", "build the typeset PDF report (typst): verdicts, theorems, experiments"),
    "real-eval": ("iec_theory.commands.real_eval", "run a real-network IEC experiment spec (kind = \"real\")"),
    "evidence": ("iec_theory.commands.evidence", "check the paper's statements S1-S5 on toys and the real network"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iec", description="Test-time Iterative Error Correction: theory checks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"iec {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
