"""`iec evidence`: the paper's statements S1-S5 checked on toy_var100 and the real network (issue 12).

    iec evidence [--profile quick|full] [--model-dir PATH] [--seed 0] [--images 1] [--settings ...] --out DIR

Writes DIR/evidence.json (schema in iec_theory.evidence.document). Progress goes to stderr. Bad input
(missing model folder, an output path under a regular file, unknown setting) fails with one line before any
long work.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from ..errors import ConfigError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="quick", choices=["quick", "full"],
                        help="quick: 6 probe steps per real setting (about 2.5-3 min of 1-thread CPU); "
                             "full: every step (roughly 0.5-2 h)")
    parser.add_argument("--model-dir", default=None, help="diffusers-format UNet2DModel folder "
                                                          "(default: the committed real_models default)")
    parser.add_argument("--out", required=True, help="output folder (evidence.json is written inside)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", default=None,
                        help="comma-separated subset of toy_var100,real_fp,real_w8a8,real_w4a8,real_cache")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: leave as is)")
    parser.add_argument("--images", type=int, default=1,
                        help="independent x_T per real setting (spread of the headline numbers; cost x images)")


def _check_out(out: Path) -> None:
    for p in [out, *out.parents]:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"--out {str(out)!r}: {str(p)!r} is a regular file, not a folder")
        if p.exists():
            break
    if out.is_dir() and not os.access(out, os.W_OK):
        raise ConfigError(f"--out {str(out)!r} is not writable")


def run(args: argparse.Namespace) -> int:
    from ..evidence.document import SETTINGS, build_evidence

    out = Path(args.out)
    _check_out(out)
    settings = SETTINGS if not args.settings else tuple(s.strip() for s in args.settings.split(",") if s.strip())
    bad = [s for s in settings if s not in SETTINGS]
    if bad or not settings:
        raise ConfigError(f"--settings: unknown {bad}; choose from {list(SETTINGS)}")
    if any(s.startswith("real_") for s in settings):
        from real_models.unet import check_model_dir

        if args.model_dir is not None:
            check_model_dir(args.model_dir)
        else:
            from real_models.pretrained import DEFAULT_MODEL_DIR

            check_model_dir(DEFAULT_MODEL_DIR)
    if args.images < 1:
        raise ConfigError(f"--images must be >= 1, got {args.images}")
    import torch

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    doc = build_evidence(args.profile, args.model_dir, args.seed, settings, log, images=args.images)
    argv = sys.argv[1:]
    if argv[:1] == ["evidence"]:           # `iec evidence ...` or `python -m iec_theory.cli evidence ...`
        argv = argv[1:]
    doc["command"] = "iec evidence " + " ".join(shlex.quote(a) for a in argv) if sys.argv[0].endswith(
        ("iec", "cli.py")) else f"iec evidence --profile {args.profile} --out {args.out}"
    tmp = out / ".evidence.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False))
    os.replace(tmp, out / "evidence.json")
    log(f"wrote {out / 'evidence.json'} in {time.perf_counter() - t0:.1f} s")
    log(doc["summary_line"])
    return 0
