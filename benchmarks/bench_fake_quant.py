"""Forward time of a fake-quantized UNet (W8A8, W4A8) vs the same UNet in full precision.

For each model and batch size: the FP UNet2DModel, and quantized copies from
`real_models.quant.quantize_model` (weights are quantized once, so the per-forward overhead is the
activation quantize-dequantize at every conv / linear input plus the wrapper). Calibration is a
single short FP trajectory (timing does not depend on its quality). Forwards alternate
(FP, W8A8, W4A8, FP, ...) at the same input so drifting machine load hits all; one warm-up each;
medians over repeats; ratios = median(quantized) / median(FP), measured in the same run.

Models: the committed default (real_models/weights/ddpm_cifar10_small) when present, else
`small_config()` with random weights ("small-random"); and, unless --no-cifar, the full
`ddpm_cifar10_config()` (35.7M parameters) with random weights. Random weights time the same as
trained ones.

    python benchmarks/bench_fake_quant.py [--batches 1 4 8] [--cifar-batches 1 8] [--repeats 7] [--threads 1]

Writes benchmarks/results/fake_quant.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def build_models(include_cifar: bool, model_dir: str | None) -> list[tuple[str, torch.nn.Module, str]]:
    from real_models.pretrained import DEFAULT_MODEL_DIR, load_default_model
    from real_models.unet import WEIGHTS_NAME, build_unet, ddpm_cifar10_config, small_config

    models = []
    p = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
    if (p / WEIGHTS_NAME).is_file():
        eps, _ = load_default_model(model_dir)
        models.append(("default", eps.unet.eval(), f"trained weights from {p}"))
    else:
        torch.manual_seed(0)
        models.append(("small-random", build_unet(small_config()).eval(),
                       "small_config(), random weights (default weights absent)"))
    if include_cifar:
        torch.manual_seed(0)
        models.append(("ddpm_cifar10-random", build_unet(ddpm_cifar10_config()).eval(),
                       "ddpm_cifar10_config(), random weights"))
    return models


def time_forwards(fns: dict[str, object], x: torch.Tensor, t: torch.Tensor, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn(x, t)  # warm-up
        for _ in range(repeats):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn(x, t)
                times[name].append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", default=None, help="diffusers UNet folder (default: the committed default)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--cifar-batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--no-cifar", action="store_true", help="skip the full ddpm_cifar10 config")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fake_quant.json"))
    a = p.parse_args(argv)

    from iec_theory import Schedule
    from iec_theory.provenance import provenance
    from real_models.quant import Calibration, quantize_model

    torch.set_num_threads(a.threads)
    schedule = Schedule.linear()
    runs = []
    for name, unet, desc in build_models(not a.no_cifar, a.model_dir):
        cfg = unet.config
        calib = Calibration(schedule, T=2, trajectories=1, batch_size=1, report_evals=0, seed=a.seed)
        t0 = time.perf_counter()
        q8 = quantize_model(unet, "W8A8", calib)
        q4 = quantize_model(unet, "W4A8", calib)
        quantize_s = (time.perf_counter() - t0) / 2
        n_layers = len(q8.quant_layers())

        def fp(x, t, unet=unet):
            return unet(x, t).sample

        fns = {"fp": fp, "W8A8": q8, "W4A8": q4}
        batches = a.batches if name != "ddpm_cifar10-random" else a.cifar_batches
        for b in batches:
            g = torch.Generator().manual_seed(a.seed)
            x = torch.randn((b, cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=g)
            t = torch.full((b,), 500, dtype=torch.long)
            times = time_forwards(fns, x, t, a.repeats)
            med = {k: statistics.median(v) for k, v in times.items()}
            ratio = {k: med[k] / med["fp"] for k in ("W8A8", "W4A8")}
            with torch.no_grad():
                ref = fp(x, t)
                rel = {k: float((fns[k](x, t) - ref).norm() / ref.norm()) for k in ("W8A8", "W4A8")}
            runs.append({"model": name, "description": desc, "batch": b, "quant_layers": n_layers,
                         "quantize_seconds": quantize_s, "seconds": times, "median_seconds": med,
                         "ratio_quant_over_fp": ratio, "eps_rel_err_vs_fp": rel})
            print(f"{name:20s} batch {b:2d}: fp {med['fp'] * 1e3:8.1f} ms  W8A8 {med['W8A8'] * 1e3:8.1f} ms "
                  f"(x{ratio['W8A8']:.3f})  W4A8 {med['W4A8'] * 1e3:8.1f} ms (x{ratio['W4A8']:.3f})", flush=True)
    result = {
        "what": "UNet forward time, fake-quantized (W8A8, W4A8) vs full precision, same input, same run",
        "repeats": a.repeats, "threads": a.threads, "timestep": 500,
        "runs": runs,
        "note": ("CPU, shared machine: absolute times vary, runs alternate so the ratios are fair. Fake "
                 "quantization simulates integer arithmetic in float32, so it can only add time; the ratio "
                 "measures the simulation overhead, not a deployment speed-up. eps_rel_err_vs_fp is for "
                 "random weights where the model is not the trained default."),
        "provenance": provenance(seed=a.seed),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
