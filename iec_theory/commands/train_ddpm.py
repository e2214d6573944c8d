"""`iec train-ddpm`: train a DDPM UNet on CIFAR-10 train (resumable), then export the EMA weights.

Example (the committed default):
    iec train-ddpm --data ../shared/data/cifar10 --config small --threads 1 --max-minutes 90 \
        --run-dir runs/ddpm_small
    iec train-ddpm --export-only --run-dir runs/ddpm_small --export-default   # replace the committed default

Without --export-default or --export-dir the weights are exported to <run-dir>/export. SIGINT/SIGTERM
save a checkpoint and exit (code 130/143); rerun the same command to resume.
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
    parser.add_argument("--checkpoint-steps", type=int, default=None,
                        help="also checkpoint every N steps (default: by time only)")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="bf16: CPU bf16 autocast for the forward pass, float32 weights, Adam and EMA "
                             "(about 1.75x faster on AVX512-BF16 CPUs; benchmarks/bench_train_precision.py)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--high-t-share", type=float, default=0.0,
                        help="share of each batch whose t is drawn from U{T0..N-1} (default 0: plain DDPM loss)")
    parser.add_argument("--high-t-from", type=int, default=800, help="T0 of --high-t-share/--high-t-weight")
    parser.add_argument("--high-t-weight", type=float, default=1.0,
                        help="loss weight of items with t >= T0 (weighted batch mean; default 1)")
    parser.add_argument("--init-from", default=None,
                        help="initialise the weights from a diffusers folder (same config) before step 0")
    parser.add_argument("--no-flip", action="store_true", help="disable random horizontal flips")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run dir")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--export-dir", default=None,
                        help="where to export the EMA weights (default <run-dir>/export): a new or empty folder, "
                             "or a previous export (replaced; its quality.json and sample grids are removed)")
    parser.add_argument("--export-default", action="store_true",
                        help="export over the committed default model real_models/weights/ddpm_cifar10_small "
                             "that sample, real-eval and report use (removes its quality.json and sample grids, "
                             "which describe the old weights)")
    parser.add_argument("--export-weights", default="ema", choices=["ema", "model"])
    parser.add_argument("--no-export", action="store_true", help="do not export after training")
    parser.add_argument("--export-only", action="store_true", help="export the run's last checkpoint and exit")


def unet_config_by_name(name: str) -> dict:
    from real_models.unet import ddpm_cifar10_config, small_config, tiny_config

    return {"small": small_config, "tiny": tiny_config, "ddpm-cifar10": ddpm_cifar10_config}[name]()


def _check_args(args: argparse.Namespace) -> None:
    """Every argument checked before the data is read (one-line errors)."""
    from ..checks import check_finite, check_output_dir, check_seed, check_threads
    from ..errors import require

    check_output_dir(args.run_dir, "--run-dir")
    if args.export_dir is not None:
        check_output_dir(args.export_dir, "--export-dir")
        require(not args.export_default, "give --export-dir or --export-default, not both")
    check_threads(args.threads)
    check_seed(args.seed)
    check_finite(args.lr, "--lr", 0.0, strict=True)
    check_finite(args.grad_clip, "--grad-clip (0 = no clipping)", 0.0)
    check_finite(args.ema_decay, "--ema-decay", 0.0)
    require(args.ema_decay < 1.0, f"--ema-decay must be < 1, got {args.ema_decay}")
    check_finite(args.checkpoint_minutes, "--checkpoint-minutes", 0.0, strict=True)
    if args.max_minutes is not None:
        check_finite(args.max_minutes, "--max-minutes", 0.0, strict=True)
    require(args.max_steps is None or args.max_steps >= 0, f"--max-steps must be >= 0, got {args.max_steps}")
    require(args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}")
    require(args.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    require(args.log_every >= 1, f"--log-every must be >= 1, got {args.log_every}")
    require(args.checkpoint_steps is None or args.checkpoint_steps >= 1,
            f"--checkpoint-steps must be >= 1, got {args.checkpoint_steps}")
    require(args.limit is None or args.limit >= 1, f"--limit must be >= 1 (a number of images), got {args.limit}")
    check_finite(args.high_t_share, "--high-t-share", 0.0)
    require(args.high_t_share <= 1.0, f"--high-t-share must be in [0, 1], got {args.high_t_share}")
    require(0 <= args.high_t_from < 1000, f"--high-t-from must be in [0, 999], got {args.high_t_from}")
    check_finite(args.high_t_weight, "--high-t-weight", 0.0, strict=True)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from real_models.checkpoint import CKPT_NAME
    from real_models.train import DEFAULT_EXPORT_DIR, TrainConfig, Trainer, check_export_dir, export_run

    from ..errors import ConfigError
    from ..provenance import repo_relative

    _check_args(args)
    if args.threads is not None:
        torch.set_num_threads(int(args.threads))
    if args.export_default:
        export_dir = DEFAULT_EXPORT_DIR
    else:
        export_dir = Path(args.export_dir) if args.export_dir else Path(args.run_dir) / "export"
    if args.export_only or not args.no_export:
        check_export_dir(export_dir, allow_default=args.export_default)   # before any training
    if args.export_only:
        out = export_run(args.run_dir, export_dir, weights=args.export_weights, allow_default=args.export_default,
                         log=print)
        print(f"exported {args.export_weights} weights of {args.run_dir} to {out}")
        return 0
    if args.no_resume and (Path(args.run_dir) / CKPT_NAME).exists():
        raise ConfigError(f"{args.run_dir} already holds a checkpoint and --no-resume was given")

    from real_models.data import load_cifar10, resolve_root

    cfg = TrainConfig(
        unet_config=unet_config_by_name(args.config), batch_size=args.batch_size, lr=args.lr,
        warmup_steps=args.warmup_steps, grad_clip=args.grad_clip, ema_decay=args.ema_decay, seed=args.seed,
        max_steps=args.max_steps, max_minutes=args.max_minutes, checkpoint_minutes=args.checkpoint_minutes,
        checkpoint_steps=args.checkpoint_steps, log_every=args.log_every, hflip=not args.no_flip,
        precision=args.precision, channels_last=args.channels_last, high_t_share=args.high_t_share,
        high_t_from=args.high_t_from, high_t_weight=args.high_t_weight,
        init_from=None if args.init_from is None else repo_relative(args.init_from),   # recorded repo-relative
        extra={"config_name": args.config},
    )
    cfg.validate()                     # before reading the data
    root = resolve_root(args.data)
    images, _ = load_cifar10("train", root, progress=not args.no_progress)
    if args.limit is not None:
        images = images[: args.limit]
    cfg.dataset = f"CIFAR-10 train from {root} ({len(images)} images)"
    trainer = Trainer(images, cfg, args.run_dir, resume=not args.no_resume, progress=not args.no_progress)
    if trainer.resumed_from is not None:
        print(f"resuming {args.run_dir} from step {trainer.resumed_from}", flush=True)
    print(f"UNet '{args.config}': {trainer._state()['num_parameters']:,} parameters; "
          f"{len(images)} images; threads={torch.get_num_threads()}", flush=True)
    state = trainer.run()
    summary = {k: state[k] for k in ("step", "images_seen", "epoch", "train_seconds", "last_loss")}
    print(json.dumps(summary), flush=True)
    if trainer.interrupted is not None:
        import signal

        name = signal.Signals(trainer.interrupted).name
        print(f"interrupted by {name} at step {state['step']}: checkpoint saved in {args.run_dir}; run the same "
              "command again to resume (not exported)", flush=True)
        return 128 + int(trainer.interrupted)
    if not args.no_export:
        out = export_run(args.run_dir, export_dir, weights=args.export_weights, allow_default=args.export_default,
                         log=print)
        print(f"exported {args.export_weights} weights to {out}", flush=True)
    return 0
