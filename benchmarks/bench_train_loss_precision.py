"""Does bf16 autocast train like fp32? Paired short runs on CIFAR-10 (issue 13, item 1).

    python benchmarks/bench_train_loss_precision.py [--data DIR] [--steps 200] [--threads 1]
        [--init-from real_models/weights/ddpm_cifar10_small] [--heldout 512]

Two Trainers with the same seed, the same initial weights (--init-from, default the committed model; "none"
trains from scratch) and the same hyper-parameters as the default model's training (batch 64, lr 5e-4,
warmup 200, EMA 0.999) run --steps steps, one in fp32 and one under bf16 autocast (float32 master weights
and EMA). The data order, timesteps and noise come from the seeded generator alone, so step i of both runs
sees the same batch: the training losses are paired. Reported:

- the paired per-step loss difference bf16 - fp32: mean with a 95% interval (normal approximation over
  steps; successive steps are nearly independent draws of batch, t and noise), against the step-to-step
  standard deviation of the fp32 loss (the noise of one training-loss reading);
- the 25-step moving averages of both curves and their largest relative gap;
- the held-out loss of both final (non-EMA) models, evaluated in fp32 on --heldout CIFAR-10 test images
  with fixed t and noise: mean paired difference with its 95% interval.

"Matches within noise" (rule fixed before the recorded run): the held-out interval contains 0 or |mean| is
below 1% of the loss, and the mean paired training difference is below half of one reading's standard
deviation (a single loss reading cannot tell the curves apart; the paired mean may still be significant). Writes
benchmarks/results/train_loss_precision.json (all per-step losses, provenance).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iec_theory.commands.train_ddpm import unet_config_by_name  # noqa: E402
from iec_theory.provenance import provenance, repo_relative  # noqa: E402
from real_models.train import TrainConfig, Trainer  # noqa: E402


def heldout_losses(model: torch.nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                   sqrt_abar: torch.Tensor, sqrt_1m_abar: torch.Tensor, batch: int = 128) -> np.ndarray:
    """Per-image eps-MSE of `model` in fp32 at fixed (x0, t, noise)."""
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, x0.shape[0], batch):
            xb, tb, nb = x0[i:i + batch], t[i:i + batch], noise[i:i + batch]
            xt = sqrt_abar[tb].view(-1, 1, 1, 1) * xb + sqrt_1m_abar[tb].view(-1, 1, 1, 1) * nb
            pred = model(xt, tb)
            pred = getattr(pred, "sample", pred)
            out.append(((pred.float() - nb) ** 2).flatten(1).mean(1).double().numpy())
    model.train()
    return np.concatenate(out)


def mean_ci(d: np.ndarray) -> tuple[float, float, float]:
    m = float(d.mean())
    h = 1.96 * float(d.std(ddof=1)) / math.sqrt(d.size)
    return m, m - h, m + h


def moving(x: np.ndarray, w: int = 25) -> np.ndarray:
    return np.convolve(x, np.ones(w) / w, mode="valid")


def main(argv: list[str] | None = None) -> int:
    from real_models.data import load_cifar10, resolve_root, to_float_tensor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="CIFAR-10 folder (default $IEC_CIFAR10_DIR)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init-from", default=str(ROOT / "real_models" / "weights" / "ddpm_cifar10_small"))
    ap.add_argument("--heldout", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_loss_precision.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = resolve_root(args.data)
    images, _ = load_cifar10("train", root, progress=False)
    test, _ = load_cifar10("test", root, progress=False)
    init = None if args.init_from == "none" else args.init_from

    def config(precision: str) -> TrainConfig:
        return TrainConfig(unet_config=unet_config_by_name("small"), batch_size=64, lr=5e-4, warmup_steps=200,
                           ema_decay=0.999, seed=args.seed, max_steps=10**9, precision=precision, init_from=init)

    g = torch.Generator().manual_seed(12345)
    idx = torch.randperm(test.shape[0], generator=g)[: args.heldout].sort().values.numpy()
    x0 = to_float_tensor(test[idx])
    t_h = torch.randint(0, 1000, (x0.shape[0],), generator=g)
    n_h = torch.randn(x0.shape, generator=g)

    runs, held = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            tr = Trainer(images, config(precision), Path(tmp) / precision, resume=False, progress=False)
            if "start" not in held:
                held["start"] = heldout_losses(tr.model, x0, t_h, n_h, tr.sqrt_abar, tr.sqrt_1m_abar)
            losses, t0 = [], time.perf_counter()
            for _ in range(args.steps):
                losses.append(float(tr.train_step()))
            runs[precision] = {"losses": losses, "seconds": time.perf_counter() - t0}
            held[precision] = heldout_losses(tr.model, x0, t_h, n_h, tr.sqrt_abar, tr.sqrt_1m_abar)
            print(f"{precision}: {args.steps} steps in {runs[precision]['seconds']:.0f} s, "
                  f"mean loss {np.mean(losses):.5f}, held-out {held[precision].mean():.5f}", flush=True)
    a, b = np.array(runs["fp32"]["losses"]), np.array(runs["bf16"]["losses"])
    d = b - a
    m, lo, hi = mean_ci(d)
    reading_sd = float(np.std(np.diff(a), ddof=1) / math.sqrt(2))     # one reading's noise, trend removed
    w = min(25, args.steps)
    ma, mb = moving(a, w), moving(b, w)
    hd = held["bf16"] - held["fp32"]
    hm, hlo, hhi = mean_ci(hd)
    hl = float(held["fp32"].mean())
    verdict = ((hlo <= 0.0 <= hhi) or abs(hm) < 0.01 * hl) and abs(m) < 0.5 * reading_sd
    res = {"steps": args.steps, "threads": args.threads, "seed": args.seed,
           "init_from": None if init is None else repo_relative(init), "heldout_images": int(x0.shape[0]),
           "train_loss_mean": {"fp32": float(a.mean()), "bf16": float(b.mean())},
           "paired_train_diff_bf16_minus_fp32": {"mean": m, "ci95": [lo, hi], "n": int(d.size)},
           "one_reading_sd_fp32": reading_sd,
           "moving_average_window": w,
           "moving_average_max_rel_gap": float(np.max(np.abs(mb - ma) / ma)),
           "heldout_loss": {"start": float(held["start"].mean()), "fp32": hl, "bf16": float(held["bf16"].mean())},
           "heldout_paired_diff_bf16_minus_fp32": {"mean": hm, "ci95": [hlo, hhi], "n": int(hd.size)},
           "seconds": {p: runs[p]["seconds"] for p in runs},
           "matches_within_noise": bool(verdict),
           "rule": "held-out paired interval contains 0 or |mean| < 1% of the loss; and "
                   "|mean paired training difference| < 0.5 x one reading's sd",
           "losses": {p: runs[p]["losses"] for p in runs},
           "provenance": provenance(seed=args.seed, command="benchmarks/bench_train_loss_precision.py")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"paired training difference {m:.2e} [{lo:.2e}, {hi:.2e}] vs one reading's sd {reading_sd:.2e}; "
          f"held-out {hm:.2e} [{hlo:.2e}, {hhi:.2e}] on loss {hl:.4f}; matches within noise: {verdict}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
