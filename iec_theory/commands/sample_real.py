"""`iec sample`: sample a PNG grid from the committed default DDPM (or another diffusers UNet folder).

    iec sample --out grid.png --n 64 --steps 100 --seed 0 [--eta 0] [--iec official_ddpm] [--clip-x0 1]

Uses `iec_theory.sample` (generalized DDIM, optional IEC); needs no dataset. Writes the grid and a JSON
(same name, .json) with the settings, NFE, wall time and provenance; stdout carries only the final
"wrote ..." line, the progress bar goes to stderr. Every argument is checked while parsing, before
torch loads the model, so a typo fails in a second.

Threads: the default `--threads 1` is measured (benchmarks/bench_sample_threads.py, recorded in
benchmarks/results/sample_threads.json): on the shared 2-core machine one thread sampled faster than
two and than torch's default; `--threads auto` keeps torch's default.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

DEFAULT_THREADS = 1     # measured: benchmarks/results/sample_threads.json
PRESETS = ("none", "official_ddpm", "official_ldm")


def _int_at_least(low: int):
    """An argparse type: an integer (its range, >= low, is checked in run() with a one-line error, before any
    model is loaded)."""
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from exc
    return parse


def _threads(text: str) -> int | None:
    """--threads: an integer >= 1, or "auto" (None: torch's default thread count)."""
    if text.strip().lower() == "auto":
        return None
    return _int_at_least(1)(text)


def _finite_float(positive: bool):
    """An argparse type: a float (finite, > 0 when `positive`, else >= 0: checked in run() with a one-line
    error, before any model is loaded)."""
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from exc
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="build/grid.png",
                        help="output PNG (a .json with provenance is written beside; default %(default)s, an ignored "
                             "folder)")
    parser.add_argument("--n", type=_int_at_least(1), default=64, help="number of images (>= 1)")
    parser.add_argument("--steps", type=_int_at_least(1), default=100,
                        help="number of sampling steps T (1 to the schedule's N)")
    parser.add_argument("--spacing", default="uniform", choices=["uniform", "quad"])
    parser.add_argument("--eta", type=_finite_float(False), default=0.0,
                        help="0 = DDIM (deterministic), 1 = DDPM-like")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iec", default="none", choices=PRESETS, help="IEC preset (default none)")
    parser.add_argument("--model-dir", default=None, help="diffusers-format UNet2DModel folder "
                                                          "(default: the committed real_models default)")
    parser.add_argument("--batch-size", type=_int_at_least(1), default=64)
    parser.add_argument("--clip-x0", type=_finite_float(True), default=None,
                        help="clamp the x0 prediction to [-c, c] at every step; plain samples of the small "
                             "default DDPM saturate, --clip-x0 1 keeps them in range (default: no clamp)")
    parser.add_argument("--nrow", type=_int_at_least(1), default=None, help="images per grid row (default sqrt(n))")
    parser.add_argument("--threads", type=_threads, default=DEFAULT_THREADS,
                        help="torch threads, an integer >= 1 or 'auto' for torch's default (default %(default)s, "
                             "measured fastest: benchmarks/results/sample_threads.json)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


class _CountingModel:
    """The eps model, advancing a progress bar by one network evaluation per call (other attributes pass through)."""

    def __init__(self, model, bar) -> None:
        self._model = model
        self._bar = bar

    def __call__(self, x, t):
        out = self._model(x, t)
        self._bar.update(1)
        return out

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def _progress_bar(total: int, quiet: bool):
    """A tqdm bar on stderr counting network evaluations (disabled with --quiet)."""
    from tqdm import tqdm

    return tqdm(total=total, desc="iec sample", unit="NFE", file=sys.stderr, disable=quiet, dynamic_ncols=True,
                mininterval=1.0)


def save_grid(images, path: str | Path, nrow: int | None = None, pad: int = 2) -> None:
    """uint8 [n, H, W, 3] -> one PNG grid with `pad` white pixels between tiles."""
    import numpy as np
    from PIL import Image

    n, h, w, _ = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = images[i]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


def sample_memory_bytes(n: int, batch: int, steps: int, pixels: int) -> float:
    """Estimated bytes: float32 x_T, outputs and x0 for all n images, uint8 images and grid, plus one
    batch's trajectory (steps + 1 states) and about 64 float32 activations per pixel of the batch."""
    return n * pixels * (3 * 4 + 2) + batch * pixels * 4 * (steps + 1 + 64)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from real_models.data import to_uint8_images
    from real_models.experiment.grids import timesteps_for
    from real_models.pretrained import (
        DEFAULT_MODEL_DIR,
        load_default_model,
        model_metadata,
        schedule_for,
        weights_sha256,
    )

    from ..checks import check_device, check_finite, check_memory, check_output_file, check_seed, check_threads
    from ..errors import require
    from ..iec import IECConfig
    from ..provenance import provenance, repo_relative
    from ..sampler import sample

    require(args.n >= 1, f"--n must be >= 1, got {args.n}")
    require(args.steps >= 1, f"--steps must be >= 1, got {args.steps}")
    require(args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}")
    require(args.nrow is None or args.nrow >= 1, f"--nrow must be >= 1, got {args.nrow}")
    check_output_file(args.out, "--out")
    check_finite(args.eta, "--eta", 0.0)
    if args.clip_x0 is not None:
        check_finite(args.clip_x0, "--clip-x0", 0.0, strict=True)
    check_output_file(Path(args.out).with_suffix(".json"), "--out (its .json record)")
    check_threads(args.threads)
    check_seed(args.seed)
    check_device(args.device)
    model_dir = Path(args.model_dir) if args.model_dir else DEFAULT_MODEL_DIR
    if args.model_dir is not None and not model_dir.is_dir():
        raise FileNotFoundError(f"--model-dir {args.model_dir!r} is not a folder")
    n_train = int(schedule_for(args.model_dir).num_train_steps)
    require(args.steps <= n_train, f"--steps must be <= the schedule's {n_train} training steps, got {args.steps}")
    if args.threads is not None:
        torch.set_num_threads(int(args.threads))
    iec = None if args.iec in ("none", "", None) else IECConfig.preset(args.iec)
    model, schedule = load_default_model(args.model_dir, device=args.device)
    cfg = model.config
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    check_memory(sample_memory_bytes(args.n, min(args.batch_size, args.n), args.steps, math.prod(shape)),
                 f"sampling --n {args.n} images of shape {shape} (batch {args.batch_size}, {args.steps} steps)")
    # quad: the official quadratic timesteps without their repeats (a repeated t -> t DDIM step is the identity)
    grid = args.steps if args.spacing == "uniform" else timesteps_for(schedule, args.steps, "quad")
    gen = torch.Generator().manual_seed(args.seed)
    x_T = torch.randn((args.n, *shape), generator=gen)  # all initial noise first: independent of batch size
    noise_gen = torch.Generator().manual_seed(args.seed + 1)
    outs, nfe = [], 0
    n_batches = math.ceil(args.n / args.batch_size)
    per_batch = args.steps * (1 + (iec.K if iec is not None else 0))   # upper bound: early stops skip some
    bar = _progress_bar(n_batches * per_batch, args.quiet)
    counted = _CountingModel(model, bar)
    t0 = time.perf_counter()
    try:
        for start in range(0, args.n, args.batch_size):
            xb = x_T[start:start + args.batch_size].to(args.device)
            traj = sample(counted, schedule, xb, grid, eta=args.eta, iec=iec, generator=noise_gen,
                          spacing=args.spacing, clip_x0=args.clip_x0)
            outs.append(traj.x0.cpu())
            nfe += traj.nfe
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    x0 = torch.cat(outs)
    images = to_uint8_images(x0)
    save_grid(images, args.out, args.nrow)
    record = {
        "out": repo_relative(args.out), "n": args.n, "steps": args.steps, "spacing": args.spacing, "eta": args.eta,
        "steps_run": args.steps if isinstance(grid, int) else len(grid),
        "seed": args.seed, "iec": None if iec is None else {"name": iec.name, "K": iec.K, "lambdas": iec.lambdas,
                                                           "tol": iec.tol, "noise": iec.noise},
        "clip_x0": args.clip_x0, "batch_size": args.batch_size, "nfe_per_batch_total": nfe,
        "wall_seconds": round(wall, 3), "images_per_second": round(args.n / wall, 4),
        "threads": torch.get_num_threads(), "device": args.device,
        "model_dir": repo_relative(model_dir), "weights_sha256": weights_sha256(model_dir),
        "model_metadata": {k: model_metadata(model_dir).get(k) for k in ("steps", "images_seen", "train_hours",
                                                                          "final_loss_mean_last_20_logs")},
        "x0_stats": {"mean": float(x0.mean()), "std": float(x0.std()),
                     "frac_clipped": float((x0.abs() > 1).float().mean()),
                     "pixel_mean_uint8": float(np.asarray(images).mean())},
        "provenance": provenance(seed=args.seed),
    }
    json_path = Path(args.out).with_suffix(".json")
    json_path.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out} and {json_path} ({args.n} images, {args.steps} steps, NFE {nfe}, {wall:.1f} s)")
    return 0
