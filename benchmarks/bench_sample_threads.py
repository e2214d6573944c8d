"""Wall time of `iec sample` by torch thread count: --threads 1, 2 and torch's default (no --threads).

Each setting runs `python -m iec_theory.cli sample` as its own process (so torch's thread pool starts
fresh, as for a user), on the committed default DDPM, with the same n, steps and seed; settings are
interleaved (1, 2, default, 1, 2, default, ...) so drifting machine load hits all of them, and the
sampling time reported by the command itself (its JSON's wall_seconds, model loading excluded) is
recorded beside the process wall time. Medians over repeats decide the default of `iec sample --threads`.

    python benchmarks/bench_sample_threads.py [--n 16] [--steps 20] [--repeats 3]

Writes benchmarks/results/sample_threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = (("1", ["--threads", "1"]), ("2", ["--threads", "2"]), ("torch default", ["--threads", "auto"]))


def run_once(args: list[str], n: int, steps: int, out: Path) -> tuple[float, float, int]:
    """(sampling seconds from the command's JSON, process wall seconds, threads it used)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    cmd = [sys.executable, "-m", "iec_theory.cli", "sample", "--out", str(out), "--n", str(n), "--steps",
           str(steps), "--seed", "0", "--quiet", *args]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    rec = json.loads(out.with_suffix(".json").read_text())
    return float(rec["wall_seconds"]), wall, int(rec["threads"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sample_threads.json"))
    a = ap.parse_args()
    samples: dict[str, list[float]] = {name: [] for name, _ in SETTINGS}
    walls: dict[str, list[float]] = {name: [] for name, _ in SETTINGS}
    threads: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench_sample_") as d:
        for r in range(a.repeats):
            for name, extra in SETTINGS:
                s, w, t = run_once(extra, a.n, a.steps, Path(d) / "grid.png")
                samples[name].append(s)
                walls[name].append(w)
                threads[name] = t
                print(f"repeat {r + 1}/{a.repeats} threads {name} ({t}): sampling {s:.2f} s, process {w:.2f} s",
                      file=sys.stderr, flush=True)
    med = {name: statistics.median(v) for name, v in samples.items()}
    best = min(med, key=med.get)
    doc = {
        "what": "iec sample sampling time (model loading excluded) by torch thread count, interleaved runs",
        "command": f"iec sample --n {a.n} --steps {a.steps} --seed 0 [--threads N]",
        "repeats": a.repeats, "cpu_count": os.cpu_count(), "machine": platform.platform(),
        "load_note": "shared machine: 2 CPU cores, other jobs running (load average at the start below)",
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "threads_used": threads, "sampling_seconds": samples, "process_seconds": walls,
        "median_sampling_seconds": med, "best": best,
        "speedup_of_best_vs_torch_default": med["torch default"] / med[best],
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({"median_sampling_seconds": med, "best": best}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
