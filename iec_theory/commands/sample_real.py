"""`iec sample`: sample a PNG grid from the committed default DDPM (or another diffusers UNet folder).

    iec sample --out grid.png --n 64 --steps 100 --seed 0 [--eta 0] [--iec official_ddpm] [--model-dir PATH]

Uses `iec_theory.sample` (generalized DDIM, optional IEC); needs no dataset. Writes the grid and a JSON
(same name, .json) with the settings, NFE, wall time and provenance.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="grid.png", help="output PNG (a .json with provenance is written beside)")
    parser.add_argument("--n", type=int, default=64, help="number of images")
    parser.add_argument("--steps", type=int, default=100, help="number of sampling steps T")
    parser.add_argument("--spacing", default="uniform", choices=["uniform", "quad"])
    parser.add_argument("--eta", type=float, default=0.0, help="0 = DDIM (deterministic), 1 = DDPM-like")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iec", default="none", help="IEC preset: none, official_ddpm, official_ldm")
    parser.add_argument("--model-dir", default=None, help="diffusers-format UNet2DModel folder "
                                                          "(default: the committed real_models default)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--clip-x0", type=float, default=None, help="clamp the x0 prediction to [-c, c]")
    parser.add_argument("--nrow", type=int, default=None, help="images per grid row (default sqrt(n))")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")


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
    from real_models.pretrained import DEFAULT_MODEL_DIR, load_default_model, model_metadata, weights_sha256

    from ..checks import check_device, check_finite, check_memory, check_output_file, check_seed, check_threads
    from ..errors import require
    from ..iec import IECConfig
    from ..provenance import provenance
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
    if args.threads is not None:
        torch.set_num_threads(int(args.threads))
    iec = None if args.iec in ("none", "", None) else IECConfig.preset(args.iec)
    model, schedule = load_default_model(args.model_dir, device=args.device)
    model_dir = Path(args.model_dir) if args.model_dir else DEFAULT_MODEL_DIR
    cfg = model.config
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    check_memory(sample_memory_bytes(args.n, min(args.batch_size, args.n), args.steps, math.prod(shape)),
                 f"sampling --n {args.n} images of shape {shape} (batch {args.batch_size}, {args.steps} steps)")
    gen = torch.Generator().manual_seed(args.seed)
    x_T = torch.randn((args.n, *shape), generator=gen)  # all initial noise first: independent of batch size
    noise_gen = torch.Generator().manual_seed(args.seed + 1)
    outs, nfe = [], 0
    t0 = time.perf_counter()
    for start in range(0, args.n, args.batch_size):
        xb = x_T[start:start + args.batch_size].to(args.device)
        traj = sample(model, schedule, xb, args.steps, eta=args.eta, iec=iec, generator=noise_gen,
                      spacing=args.spacing, clip_x0=args.clip_x0)
        outs.append(traj.x0.cpu())
        nfe += traj.nfe
    wall = time.perf_counter() - t0
    x0 = torch.cat(outs)
    images = to_uint8_images(x0)
    save_grid(images, args.out, args.nrow)
    record = {
        "out": str(args.out), "n": args.n, "steps": args.steps, "spacing": args.spacing, "eta": args.eta,
        "seed": args.seed, "iec": None if iec is None else {"name": iec.name, "K": iec.K, "lambdas": iec.lambdas,
                                                           "tol": iec.tol, "noise": iec.noise},
        "clip_x0": args.clip_x0, "batch_size": args.batch_size, "nfe_per_batch_total": nfe,
        "wall_seconds": round(wall, 3), "images_per_second": round(args.n / wall, 4),
        "threads": torch.get_num_threads(), "device": args.device,
        "model_dir": str(model_dir), "weights_sha256": weights_sha256(model_dir),
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
