"""Images/s of DDIM sampling (eta 0) with the default model: iec_theory.sample vs a diffusers DDIMScheduler loop.

Same UNet, same x_T, same number of steps and batch. diffusers is configured to the same process and
timesteps (linear betas 1e-4..0.02, N = 1000, 'leading' spacing = range(0, N, N // T), final
abar = 1, no clipping), so both loops evaluate the network at the same timesteps; the script also
reports the max abs difference of the final samples (diffusers builds its betas in float32, we in
float64, so they agree to ~1e-5, not bitwise). Runs alternate (ours, theirs, ours, ...) so drifting
machine load hits both; medians over repeats; one warm-up run of each is discarded.

    python benchmarks/bench_sampler_vs_diffusers.py [--steps 20] [--batch 32] [--repeats 5] [--threads 1]

Writes benchmarks/results/sampler_vs_diffusers.json.
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


class Timed:
    """Wraps a callable and accumulates the CPU time spent inside it (to isolate the loop's own overhead)."""

    def __init__(self, fn):
        self.fn = fn
        self.cpu = 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.process_time()
        out = self.fn(*args, **kwargs)
        self.cpu += time.process_time() - t0
        return out


def diffusers_loop(unet, scheduler, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    scheduler.set_timesteps(steps)
    x = x_T
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = unet(x, t, return_dict=False)[0]
            x = scheduler.step(eps, t, x, eta=0.0, return_dict=False)[0]
    return x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", default=None, help="diffusers UNet folder (default: the committed default)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sampler_vs_diffusers.json"))
    a = p.parse_args(argv)

    from diffusers import DDIMScheduler

    from iec_theory import sample
    from iec_theory.provenance import provenance
    from real_models.pretrained import DEFAULT_MODEL_DIR, load_default_model, model_metadata, weights_sha256

    torch.set_num_threads(a.threads)
    model, schedule = load_default_model(a.model_dir)
    unet = model.unet
    N = schedule.num_train_steps
    sched = DDIMScheduler(num_train_timesteps=N, beta_start=float(schedule.betas[0]),
                          beta_end=float(schedule.betas[-1]), beta_schedule="linear", clip_sample=False,
                          set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    sched.set_timesteps(a.steps)
    ours_ts = schedule.timesteps(a.steps)
    same_ts = [int(t) for t in sched.timesteps] == ours_ts
    cfg = unet.config
    x_T = torch.randn((a.batch, cfg.in_channels, cfg.sample_size, cfg.sample_size),
                      generator=torch.Generator().manual_seed(a.seed))

    timed_model, timed_unet = Timed(model), Timed(unet)

    def run_ours(m=model) -> torch.Tensor:
        return sample(m, schedule, x_T, a.steps, eta=0.0).x0

    def run_theirs(u=unet) -> torch.Tensor:
        return diffusers_loop(u, sched, x_T, a.steps)

    x_ours, x_theirs = run_ours(), run_theirs()  # warm-up, and the agreement check
    max_diff = float((x_ours - x_theirs).abs().max())
    times: dict[str, list[float]] = {"ours": [], "diffusers": []}
    cpu: dict[str, list[float]] = {"ours": [], "diffusers": []}
    for _ in range(a.repeats):
        for name, fn in (("ours", run_ours), ("diffusers", run_theirs)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    # the loops' own overhead: CPU time outside the network calls, per step
    overhead: dict[str, list[float]] = {"ours": [], "diffusers": []}
    for _ in range(min(3, a.repeats)):
        for name, fn, timed in (("ours", run_ours, timed_model), ("diffusers", run_theirs, timed_unet)):
            timed.cpu = 0.0
            c0 = time.process_time()
            fn(timed)
            overhead[name].append((time.process_time() - c0 - timed.cpu) / a.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    med_over = {k: statistics.median(v) for k, v in overhead.items()}
    ips = {k: a.batch / v for k, v in med.items()}
    ratio = ips["ours"] / ips["diffusers"]
    ratio_cpu = med_cpu["diffusers"] / med_cpu["ours"]
    ratio_min = min(times["diffusers"]) / min(times["ours"])  # least-disturbed runs
    result = {
        "model_dir": str(a.model_dir or DEFAULT_MODEL_DIR), "weights_sha256": weights_sha256(a.model_dir),
        "model_training_steps": model_metadata(a.model_dir).get("steps"),
        "timing_note": "throughput depends on the architecture, not on the weights' values",
        "steps": a.steps, "batch": a.batch,
        "repeats": a.repeats, "threads": a.threads, "eta": 0.0, "same_timesteps": same_ts,
        "max_abs_diff_final_samples": max_diff,
        "seconds": times, "median_seconds": med, "images_per_second": ips,
        "ratio_ours_over_diffusers": ratio, "goal": ">= 0.95",
        "ratio_by_fastest_run": ratio_min, "cpu_seconds": cpu, "median_cpu_seconds": med_cpu,
        "ratio_by_cpu_time": ratio_cpu,
        "loop_overhead_cpu_ms_per_step": {k: 1e3 * v for k, v in med_over.items()},
        "note": "CPU; on a shared machine wall time is noisy, so CPU time (time.process_time) is reported too; "
                "runs alternate so drifting load hits both loops; overhead = CPU time outside network calls",
        "provenance": provenance(seed=a.seed),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"steps={a.steps} batch={a.batch} repeats={a.repeats} threads={a.threads} same_timesteps={same_ts}")
    print(f"ours      {ips['ours']:.3f} img/s (median {med['ours']:.3f} s)")
    print(f"diffusers {ips['diffusers']:.3f} img/s (median {med['diffusers']:.3f} s)")
    print(f"ratio ours/diffusers = {ratio:.3f} (wall, medians), {ratio_min:.3f} (wall, fastest runs), "
          f"{ratio_cpu:.3f} (CPU time)   "
          f"max |x0 ours - x0 diffusers| = {max_diff:.2e}")
    print("loop overhead outside the network (CPU ms/step): "
          + ", ".join(f"{k} {1e3 * v:.3f}" for k, v in med_over.items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
