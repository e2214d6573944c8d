"""Which width and depth for a CPU training budget? Quality per CPU-hour on short runs (issue 13, item 2).

    python benchmarks/bench_train_arch.py [--data DIR] [--minutes 10] [--threads 1] [--heldout 512]
        [--candidates small,wide,deep,wider]

Each candidate UNet (the DDPM CIFAR-10 design scaled down, `real_models.unet.small_config`) trains from
scratch on CIFAR-10 for the same wall-clock budget on the same thread count, with the default model's
hyper-parameters (batch 64, lr 5e-4, bf16 autocast, seed 1) except a 50-step warm-up so that every candidate
leaves warm-up inside the budget. The measure of quality is the held-out eps-MSE of the raw (non-EMA) weights
in fp32 on --heldout CIFAR-10 test images at fixed (t, noise) shared by all candidates, overall and on the
high-noise end t >= 800 (whose error decides whether DDIM from t = 990 saturates). It is a PROXY for
sample quality, not a sample metric. Differences against the current default ("small") are paired over
the same images, with 95% normal intervals.

Rule (fixed before the run): a candidate is better than "small" for this budget only if its paired
held-out difference interval lies below 0 overall; among candidates not distinguishable from the best,
the fewest parameters wins. Short runs favour small networks (a larger one may win at a larger budget): the
recorded budget is part of the result. Writes benchmarks/results/train_arch.json.
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

from iec_theory.provenance import provenance  # noqa: E402
from real_models.train import TrainConfig, Trainer  # noqa: E402
from real_models.unet import count_parameters, small_config  # noqa: E402

CANDIDATES = {
    "small": dict(block_out_channels=(32, 64, 64), layers_per_block=1),      # the current default
    "wide": dict(block_out_channels=(48, 96, 96), layers_per_block=1),
    "deep": dict(block_out_channels=(32, 64, 64), layers_per_block=2),
    "wider": dict(block_out_channels=(64, 128, 128), layers_per_block=1),
    "narrow": dict(block_out_channels=(16, 32, 32), layers_per_block=1),
}


def heldout(model: torch.nn.Module, x0, t, noise, sa, s1, batch: int = 128) -> np.ndarray:
    """Per-image fp32 eps-MSE at fixed (x0, t, noise)."""
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, x0.shape[0], batch):
            tb, nb = t[i:i + batch], noise[i:i + batch]
            xt = sa[tb].view(-1, 1, 1, 1) * x0[i:i + batch] + s1[tb].view(-1, 1, 1, 1) * nb
            out.append(((model(xt, tb, return_dict=False)[0].float() - nb) ** 2).flatten(1).mean(1).double().numpy())
    model.train()
    return np.concatenate(out)


def paired(d: np.ndarray) -> dict:
    m, h = float(d.mean()), 1.96 * float(d.std(ddof=1)) / math.sqrt(d.size)
    return {"mean": m, "ci95": [m - h, m + h], "n": int(d.size)}


def main(argv: list[str] | None = None) -> int:
    from real_models.data import load_cifar10, resolve_root, to_float_tensor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="CIFAR-10 folder (default $IEC_CIFAR10_DIR)")
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget per candidate")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--heldout", type=int, default=512)
    ap.add_argument("--candidates", default="small,wide,deep,wider")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_arch.json"))
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.candidates.split(",") if c.strip()]
    bad = [c for c in names if c not in CANDIDATES]
    if bad or "small" not in names or args.minutes <= 0:
        print(f"error: --candidates must include 'small' and come from {sorted(CANDIDATES)} (got {bad or names}); "
              f"--minutes > 0", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    root = resolve_root(args.data)
    images, _ = load_cifar10("train", root, progress=False)
    test, _ = load_cifar10("test", root, progress=False)
    g = torch.Generator().manual_seed(12345)
    idx = torch.randperm(test.shape[0], generator=g)[: args.heldout].sort().values.numpy()
    x0 = to_float_tensor(test[idx])
    t_h = torch.randint(0, 1000, (x0.shape[0],), generator=g)
    n_h = torch.randn(x0.shape, generator=g)
    high = (t_h >= 800).numpy()

    rows, held = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            ucfg = small_config(**CANDIDATES[name])
            cfg = TrainConfig(unet_config=ucfg, batch_size=64, lr=5e-4, warmup_steps=50, ema_decay=0.999,
                              seed=args.seed, max_steps=10**9, precision="bf16")
            tr = Trainer(images, cfg, Path(tmp) / name, resume=False, progress=False)
            t0, c0, losses = time.perf_counter(), time.process_time(), []
            while time.perf_counter() - t0 < 60 * args.minutes:
                losses.append(float(tr.train_step()))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            held[name] = heldout(tr.model, x0, t_h, n_h, tr.sqrt_abar, tr.sqrt_1m_abar)
            nparam = count_parameters(tr.model)
            rows[name] = {"block_out_channels": list(CANDIDATES[name]["block_out_channels"]),
                          "layers_per_block": CANDIDATES[name]["layers_per_block"], "parameters": nparam,
                          "export_mb_fp32": round(4 * nparam / 2**20, 2), "steps": len(losses),
                          "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "s_per_step": round(wall / len(losses), 3),
                          "train_loss_last50": float(np.mean(losses[-50:])),
                          "heldout_eps_mse": float(held[name].mean()),
                          "heldout_eps_mse_t_ge_800": float(held[name][high].mean())}
            print(f"{name}: {nparam:,} params, {len(losses)} steps in {wall:.0f} s, held-out {held[name].mean():.5f} "
                  f"(t>=800: {held[name][high].mean():.2e})", flush=True)
    for name in names:
        rows[name]["vs_small_paired"] = paired(held[name] - held["small"])
        rows[name]["vs_small_paired_t_ge_800"] = paired(held[name][high] - held["small"][high])
    best = min(names, key=lambda c: rows[c]["heldout_eps_mse"])
    tied = [c for c in names if c == best or paired(held[c] - held[best])["ci95"][0] <= 0.0]
    choice = min(tied, key=lambda c: rows[c]["parameters"])
    res = {"budget_minutes_per_candidate": args.minutes, "threads": args.threads, "heldout_images": int(x0.shape[0]),
           "heldout_high_t_images": int(high.sum()), "seed": args.seed, "rows": rows,
           "lowest_heldout": best, "not_distinguishable_from_lowest": tied, "choice": choice,
           "rule": "lowest held-out eps-MSE; candidates whose paired interval vs the lowest reaches 0 are tied; "
                   "the fewest parameters among the tied wins",
           "caveat": "held-out eps-MSE is a proxy for sample quality; short budgets favour small networks",
           "provenance": provenance(seed=args.seed, command="benchmarks/bench_train_arch.py " + " ".join(
               sys.argv[1:] if argv is None else argv))}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"lowest held-out: {best}; not distinguishable: {tied}; choice: {choice}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
