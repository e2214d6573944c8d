#!/usr/bin/env bash
# GPU path check (issue 14, item 3): runs the sampler, IEC, quantization (real_models/quant.py), caching
# (real_models/cache.py), Jacobian estimation (JVP power iteration) and metrics (cifarnet FD) on a CUDA
# device with a small batch of the committed small default model, prints images/s on CUDA and CPU and
# the agreement of every CUDA result with the CPU result from the same inputs.
#
#   scripts/gpu_check.sh                 # from the repository root; at most 8 minutes
#   GPU_CHECK_BATCH=16 GPU_CHECK_T=20 GPU_CHECK_DEVICE=cuda:0 scripts/gpu_check.sh
#
# Agreement: relative L2 difference CUDA vs CPU in float32 with TF32 off (PASS below 1e-3; a long
# trajectory amplifies rounding, so sampler rows allow 1e-2, and fake quantization 5e-2 since a rounding
# difference can move an activation to the next quantization bin). Host synchronisations inside the sampling
# loop are counted with torch.cuda.set_sync_debug_mode (0 is the goal; reported, not failed).
# Exit codes: 0 all PASS, 1 a check failed, 3 no CUDA device (nothing was checked), 124 time limit.
# GPU_CHECK_DRY_RUN=1 runs every check with the CPU standing in for the GPU (tests this script without one).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec timeout "${GPU_CHECK_TIMEOUT:-480}" python - <<'PYEOF'
import json
import os
import sys
import time
import warnings

import torch

dev_name = os.environ.get("GPU_CHECK_DEVICE", "cuda")
DRY = os.environ.get("GPU_CHECK_DRY_RUN") == "1"
if DRY:
    dev_name = "cpu"
    print("gpu_check: DRY RUN, the CPU stands in for the GPU (checks the script, not a GPU)")
elif not torch.cuda.is_available():
    print(f"gpu_check: no CUDA device: torch {torch.__version__} (built with CUDA {torch.version.cuda}) sees none; "
          "nothing was checked. Run this on a machine with an NVIDIA GPU.")
    sys.exit(3)

from iec_theory.iec import IECConfig, StepSelection
from iec_theory.sampler import NoiseSource, sample
from real_models.cache import CachedUNet
from real_models.experiment import differentiable_eps
from real_models.metrics import ClassifierFeatures, frechet_distance, load_test_stats
from real_models.pretrained import load_default_model
from real_models.quant import Calibration, quantize_model

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_num_threads(1)
B = int(os.environ.get("GPU_CHECK_BATCH", "16"))
T = int(os.environ.get("GPU_CHECK_T", "20"))
cuda = torch.device(dev_name)
DEV_LABEL = "cpu (dry run)" if DRY else torch.cuda.get_device_name(cuda)
print(f"gpu_check: {DEV_LABEL}, torch {torch.__version__}, CUDA {torch.version.cuda}; batch {B}, T {T}")
results = []


def rel(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def sync(d):
    if d.type == "cuda":
        torch.cuda.synchronize(d)


def timed(fn, d):
    sync(d)
    t0 = time.perf_counter()
    out = fn()
    sync(d)
    return out, time.perf_counter() - t0


def report(name, err, tol, extra=""):
    ok = err < tol
    results.append({"check": name, "rel_err": err, "tol": tol, "pass": ok})
    print(f"  {'PASS' if ok else 'FAIL'} {name}: rel. difference CUDA vs CPU {err:.2e} (tol {tol:g}) {extra}")


def count_syncs(fn):
    """Run fn with sync debug mode 'warn'; return (result, number of host synchronisations)."""
    if DRY:
        return fn(), 0
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            out = fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return out, sum("synchroniz" in str(x.message).lower() for x in w)


cpu = torch.device("cpu")
ROLES = (("cpu", cpu), ("cuda", cuda))                             # (role, device)
fp = {role: load_default_model(device=d) for role, d in ROLES}
schedule = fp["cpu"][1]
x_T = torch.randn((B, 3, 32, 32), generator=torch.Generator().manual_seed(0))

# 1. sampler (DDIM) and 2. IEC (official DDPM preset), keyed noise (eta = 0: deterministic anyway)
samples = {}
for name, iec in (("ddim", None), ("iec_official", IECConfig.official_ddpm())):
    out = {}
    for role, d in ROLES:
        model = fp[role][0]
        run = lambda: sample(model, schedule, x_T.to(d), T, iec=iec, noise=NoiseSource(seed=0, keyed=True))  # noqa: E731
        timed(lambda: sample(model, schedule, x_T.to(d), 2, iec=iec), d)          # warm-up
        if role == "cuda":
            (traj, syncs), wall = timed(lambda: count_syncs(run), d)
        else:
            traj, wall = timed(run, d)
        out[role] = (traj, wall)
    (tc, wc), (tg, wg) = out["cpu"], out["cuda"]
    samples[name] = (tc.xs[-1], tg.xs[-1])
    report(f"sampler {name} (NFE {tg.nfe})", rel(tg.xs[-1], tc.xs[-1]), 1e-2,
           f"| CUDA {B / wg:.1f} images/s, CPU {B / wc:.1f} images/s, host syncs in the loop: {syncs}")

# 3. quantization W8A8 (data-free calibration on the same device), then sampling with the quantized model
q = {}
for role, d in ROLES:
    cal = Calibration(schedule, T=10, trajectories=1, batch_size=4, seed=1)
    qm, wall = timed(lambda: quantize_model(fp[role][0].unet, "W8A8", calibration=cal), d)
    traj, wall_s = timed(lambda: sample(qm, schedule, x_T.to(d), T), d)
    q[role] = (traj.xs[-1], wall_s, wall)
report("quantization W8A8 (calibrate + sample)", rel(q["cuda"][0], q["cpu"][0]), 5e-2,   # rounding-bin flips
       f"| sampling CUDA {B / q['cuda'][1]:.1f} images/s, CPU {B / q['cpu'][1]:.1f} images/s; "
       f"calibration {q['cuda'][2]:.2f} s vs {q['cpu'][2]:.2f} s")

# 4. caching (DeepCache, refresh every 3 steps) with IEC at the refresh steps
c = {}
for role, d in ROLES:
    cached = CachedUNet(fp[role][0].unet, refresh_every=3)
    iec = IECConfig.official_ddpm(StepSelection.every(3))
    traj, wall = timed(lambda: sample(cached, schedule, x_T.to(d), T, iec=iec), d)
    c[role] = (traj.xs[-1], wall, cached.stats.as_dict())
report("cache every 3 + IEC", rel(c["cuda"][0], c["cpu"][0]), 1e-2,
       f"| CUDA {B / c['cuda'][1]:.1f} images/s, CPU {B / c['cpu'][1]:.1f} images/s, cache stats {c['cuda'][2]}")

# 5. Jacobian: one JVP and a 5-step power iteration on J = d eps / dx at t = 500 (as real-eval estimates it)
v = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(2))
jv = {}
for role, d in ROLES:
    eps = differentiable_eps(fp[role][0].unet)       # math SDPA kernel: flash attention has no forward AD
    tt = torch.full((B,), 500, dtype=torch.long, device=d)
    f = lambda y: eps(y, tt)  # noqa: E731
    (_, w), wall = timed(lambda: torch.func.jvp(f, (x_T.to(d),), (v.to(d),)), d)
    u = v.to(d)
    for _ in range(5):
        u = torch.func.jvp(f, (x_T.to(d),), (u,))[1]
        lam = u.flatten(1).norm(dim=1)
        u = u / lam.clamp_min(1e-30)[:, None, None, None]
    jv[role] = (w.detach(), lam.detach(), wall)
report("Jacobian JVP", rel(jv["cuda"][0], jv["cpu"][0]), 1e-3,
       f"| JVP CUDA {jv['cuda'][2]:.3f} s, CPU {jv['cpu'][2]:.3f} s")
report("Jacobian power iteration |lambda|", rel(jv["cuda"][1], jv["cpu"][1]), 1e-3)

# 6. metrics: cifarnet features and FD vs the committed CIFAR-10 test statistics, from the CPU samples
stats = load_test_stats()
imgs = samples["ddim"][0].clamp(-1, 1)
feats = {}
for role, d in ROLES:
    ext = ClassifierFeatures(device=d)
    feats[role], _ = timed(lambda: ext(imgs.to(d)), d)
report("cifarnet features", rel(feats["cuda"], feats["cpu"]), 1e-3)
if B >= 2:
    import numpy as np

    fd = {k: frechet_distance(v.double().cpu().numpy().mean(0), np.atleast_2d(np.cov(v.double().cpu().numpy(),
                              rowvar=False)), stats["mean"], stats["cov"]) for k, v in feats.items()}
    report("FD_cifarnet", abs(fd["cuda"] - fd["cpu"]) / max(fd["cpu"], 1e-30), 1e-3,
           f"| FD CUDA {fd['cuda']:.4f}, CPU {fd['cpu']:.4f} (batch {B}: biased, a consistency check only)")

failed = [r["check"] for r in results if not r["pass"]]
print(json.dumps({"device": DEV_LABEL, "batch": B, "T": T, "results": results}))
print("gpu_check: " + ("all checks PASS" if not failed else f"FAILED: {', '.join(failed)}"))
sys.exit(1 if failed else 0)
PYEOF
