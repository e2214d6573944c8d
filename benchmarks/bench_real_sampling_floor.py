"""Real-model sampling speed against the floor set by the network alone (issue 14, item 4).

    python benchmarks/bench_real_sampling_floor.py [--batch 16] [--T 10] [--threads 1] [--repeats 3]

The committed small default model (real_models/weights/ddpm_cifar10_small) samples --batch images with
plain DDIM (NFE = T) and with the official IEC preset (NFE = 2T) through iec_theory.sampler.sample. The
floor is NFE x one forward pass at the same batch and thread count (the median of --repeats x 5 timed
forward passes, after a warm-up): the time the network alone needs. ratio = floor time / sampling time
(= sampling images/s over floor images/s); the target is >= 0.9. Sampling and forward timings are
interleaved so that a background load hits both alike; medians are reported with every time.
Writes benchmarks/results/real_sampling_floor.json (with provenance and the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iec_theory.iec import IECConfig  # noqa: E402
from iec_theory.provenance import provenance  # noqa: E402
from iec_theory.sampler import NoiseSource, sample  # noqa: E402
from real_models.pretrained import default_model_dir, load_default_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--T", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--machine-busy", choices=("auto", "yes", "no"), default="auto")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "real_sampling_floor.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    model, schedule = load_default_model()
    g = torch.Generator().manual_seed(args.seed)
    x_T = torch.randn((args.batch, 3, 32, 32), generator=g)
    tt = torch.full((args.batch,), 500, dtype=torch.long)

    def forward_s() -> float:
        t0 = time.perf_counter()
        model(x_T, tt)
        return time.perf_counter() - t0

    methods = {"ddim": None, "iec_official": IECConfig.official_ddpm()}
    for _ in range(2):                                   # warm-up
        forward_s()
    sample(model, schedule, x_T, 2, noise=NoiseSource(seed=args.seed, keyed=True))
    fwd: list[float] = []
    times: dict[str, list[float]] = {m: [] for m in methods}
    nfe: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, iec in methods.items():
            fwd += [forward_s() for _ in range(5)]
            t0 = time.perf_counter()
            traj = sample(model, schedule, x_T, args.T, iec=iec, noise=NoiseSource(seed=args.seed, keyed=True))
            times[name].append(time.perf_counter() - t0)
            nfe[name] = traj.nfe
    f_med = statistics.median(fwd)
    rows = []
    for name in methods:
        s_med = statistics.median(times[name])
        floor_s = nfe[name] * f_med
        rows.append({"method": name, "NFE": nfe[name], "sampling_s": s_med, "floor_s": floor_s,
                     "images_per_s": args.batch / s_med, "floor_images_per_s": args.batch / floor_s,
                     "ratio": floor_s / s_med, "meets_0.9": floor_s / s_med >= 0.9, "times_s": times[name]})
        print(f"{name}: NFE {nfe[name]}, {args.batch / s_med:.2f} images/s vs floor {args.batch / floor_s:.2f} "
              f"images/s: ratio {floor_s / s_med:.3f}", flush=True)
    load_after = os.getloadavg()
    busy = {"yes": True, "no": False}.get(args.machine_busy, max(load_before[0], load_after[0]) > 0.5 * os.cpu_count())
    out = {"model": str(default_model_dir().relative_to(ROOT)), "batch": args.batch, "T": args.T,
           "threads": args.threads, "repeats": args.repeats, "forward_median_s": f_med, "forward_times_s": fwd,
           "rows": rows, "machine_busy": busy, "loadavg_before": load_before, "loadavg_after": load_after,
           "cpu_count": os.cpu_count(), "provenance": provenance(seed=args.seed)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
