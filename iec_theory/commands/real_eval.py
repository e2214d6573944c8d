"""`iec real-eval SPEC.toml [--out DIR] [--model-dir PATH]`: run a real-network experiment spec (kind = "real").

FP, W8A8, W4A8, cache and cache + W8A8 rows with and without IEC, compute-matched baselines, error curves,
growth classification (shares over independent x_T batches), Jacobian estimates and the quality table with FD/KID
bootstrap intervals, the real-data floor at the same n and the rows that are not distinguishable at that n (printed
at the end); layout in real_models/experiment/__init__.py. The spec is validated completely (fields, device, a memory
estimate of the batch) before any model is loaded; a bad spec is a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="real-model spec (TOML with kind = \"real\"), e.g. experiments/real_quick.toml")
    parser.add_argument("--out", default=None, help="results folder (default results/<name>-<spec hash>)")
    parser.add_argument("--model-dir", default=None,
                        help="diffusers-format UNet2DModel folder (default: the spec's model.dir, else the "
                             "committed real_models default), e.g. a converted public DDPM CIFAR-10 checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress lines or table")


def run(args: argparse.Namespace) -> int:
    from real_models.experiment import load_real_spec, run_real_spec

    spec = load_real_spec(args.spec)          # validated before any work
    run_real_spec(spec, args.out, model_dir=args.model_dir, quiet=args.quiet)
    return 0
