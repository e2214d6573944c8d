"""Training speed of the DDPM UNet by precision, memory format and thread count (seconds per step, median).

    python benchmarks/bench_train_precision.py [--config small] [--batch 64] [--steps 8] [--threads 1 2]

Synthetic uint8 images (the speed of a step does not depend on the pixels); each setting builds a
fresh Trainer (same seed) in a temporary run folder, runs 2 warm-up steps, then times --steps steps.
Writes benchmarks/results/train_precision.json (medians, all step times, provenance).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iec_theory.commands.train_ddpm import unet_config_by_name  # noqa: E402
from iec_theory.provenance import provenance  # noqa: E402
from real_models.train import TrainConfig, Trainer  # noqa: E402

SETTINGS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def time_setting(images: np.ndarray, config: str, batch: int, steps: int, precision: str, channels_last: bool,
                 threads: int) -> list[float]:
    torch.set_num_threads(threads)
    cfg = TrainConfig(unet_config=unet_config_by_name(config), batch_size=batch, max_steps=10**9,
                      precision=precision, channels_last=channels_last, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(images, cfg, tmp, resume=False, progress=False)
        for _ in range(2):
            trainer.train_step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "train_precision.json"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(max(4 * args.batch, 256), 32, 32, 3), dtype=np.uint8)
    rows = []
    for threads in args.threads:
        for precision, cl in SETTINGS:
            times = time_setting(images, args.config, args.batch, args.steps, precision, cl, threads)
            med = statistics.median(times)
            rows.append({"threads": threads, "precision": precision, "channels_last": cl,
                         "median_s_per_step": med, "steps_per_s": 1.0 / med, "times_s": times})
            print(f"threads={threads} precision={precision} channels_last={cl}: {med:.3f} s/step "
                  f"({1 / med:.2f} steps/s)", flush=True)
    for threads in args.threads:
        base = next(r for r in rows if r["threads"] == threads and r["precision"] == "fp32" and not r["channels_last"])
        for r in rows:
            if r["threads"] == threads:
                r["speedup_vs_fp32"] = base["median_s_per_step"] / r["median_s_per_step"]
    out = {"config": args.config, "batch": args.batch, "steps_timed": args.steps, "rows": rows,
           "provenance": provenance(seed=0)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
