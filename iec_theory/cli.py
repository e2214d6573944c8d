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
