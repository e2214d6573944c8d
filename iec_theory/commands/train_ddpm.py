"""`iec train-ddpm`: train a DDPM UNet on CIFAR-10 train (resumable), then export the EMA weights.

Example (the committed default):
    iec train-ddpm --data ../shared/data/cifar10 --config small --threads 1 --max-minutes 90 \
        --run-dir runs/ddpm_small
    iec train-ddpm --export-only --run-dir runs/ddpm_small      # write real_models/weights/ddpm_cifar10_small
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None,
                        help="CIFAR-10 location (pickle batches, image folders or the jpeg zips); "
                             "default: $IEC_CIFAR10_DIR")
    parser.add_argument("--run-dir", default="runs/ddpm_small", help="checkpoints and loss log (resumed if present)")
    parser.add_argument("--config", default="small", choices=["small", "tiny", "ddpm-cifar10"],
                        help="UNet architecture: the project's small default, a tiny test net, or the "
                             "public DDPM CIFAR-10 architecture (35.7M parameters)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None, help="total optimizer steps (over all sessions)")
    parser.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget of this invocation")
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="bf16: CPU bf16 autocast for the forward pass, float32 weights, Adam and EMA "
                             "(about 1.75x faster on AVX512-BF16 CPUs; benchmarks/bench_train_precision.py)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--init-from", default=None,
                        help="initialise the weights from a diffusers folder (same config) before step 0")
    parser.add_argument("--no-flip", action="store_true", help="disable random horizontal flips")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run dir")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--export-dir", default=None,
                        help="where to export the EMA weights (default real_models/weights/ddpm_cifar10_small)")
    parser.add_argument("--export-weights", default="ema", choices=["ema", "model"])
    parser.add_argument("--no-export", action="store_true", help="do not export after training")
    parser.add_argument("--export-only", action="store_true", help="export the run's last checkpoint and exit")


def unet_config_by_name(name: str) -> dict:
    from real_models.unet import ddpm_cifar10_config, small_config, tiny_config

    return {"small": small_config, "tiny": tiny_config, "ddpm-cifar10": ddpm_cifar10_config}[name]()


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from real_models.checkpoint import CKPT_NAME
    from real_models.train import DEFAULT_EXPORT_DIR, TrainConfig, Trainer, export_run

    from ..errors import ConfigError

    if args.threads is not None:
        torch.set_num_threads(int(args.threads))
    export_dir = Path(args.export_dir) if args.export_dir else DEFAULT_EXPORT_DIR
    if args.export_only:
        out = export_run(args.run_dir, export_dir, weights=args.export_weights)
        print(f"exported {args.export_weights} weights of {args.run_dir} to {out}")
        return 0
    if args.no_resume and (Path(args.run_dir) / CKPT_NAME).exists():
        raise ConfigError(f"{args.run_dir} already holds a checkpoint and --no-resume was given")

    from real_models.data import load_cifar10, resolve_root

    root = resolve_root(args.data)
    images, _ = load_cifar10("train", root, progress=not args.no_progress)
    if args.limit is not None:
        images = images[: args.limit]
    cfg = TrainConfig(
        unet_config=unet_config_by_name(args.config), batch_size=args.batch_size, lr=args.lr,
        warmup_steps=args.warmup_steps, grad_clip=args.grad_clip, ema_decay=args.ema_decay, seed=args.seed,
        max_steps=args.max_steps, max_minutes=args.max_minutes, checkpoint_minutes=args.checkpoint_minutes,
        log_every=args.log_every, hflip=not args.no_flip, precision=args.precision,
        channels_last=args.channels_last, init_from=args.init_from,
        dataset=f"CIFAR-10 train from {root} ({len(images)} images)", extra={"config_name": args.config},
    )
    trainer = Trainer(images, cfg, args.run_dir, resume=not args.no_resume, progress=not args.no_progress)
    if trainer.resumed_from is not None:
        print(f"resuming {args.run_dir} from step {trainer.resumed_from}", flush=True)
    print(f"UNet '{args.config}': {trainer._state()['num_parameters']:,} parameters; "
          f"{len(images)} images; threads={torch.get_num_threads()}", flush=True)
    state = trainer.run()
    summary = {k: state[k] for k in ("step", "images_seen", "epoch", "train_seconds", "last_loss")}
    print(json.dumps(summary), flush=True)
    if not args.no_export:
        out = export_run(args.run_dir, export_dir, weights=args.export_weights)
        print(f"exported {args.export_weights} weights to {out}", flush=True)
    return 0
