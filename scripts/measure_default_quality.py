"""Measure the committed default DDPM's sample quality: FD_cifarnet and KID_cifarnet vs the CIFAR-10 test set.

Samples N images with DDIM (eta 0) from fixed noise, with and without x0 clipping, and also scores N
real CIFAR-10 training images (when the data is available) as the same-N floor of each metric, since FD
is biased upwards at small N. Writes a JSON with seed, settings and provenance.

    python scripts/measure_default_quality.py --n 256 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from iec_theory import sample
from iec_theory.provenance import provenance
from real_models.metrics import fd_kid_vs_cifar_test
from real_models.pretrained import load_default_model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="real_models/weights/ddpm_cifar10_small/quality.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, schedule = load_default_model()
    g = torch.Generator().manual_seed(args.seed)
    x_T = torch.randn(args.n, 3, 32, 32, generator=g)
    rows = {}
    for name, clip in (("ddim", None), ("ddim_clip_x0", 1.0)):
        t0 = time.perf_counter()
        outs = [sample(model, schedule, x_T[i:i + args.batch], args.steps, clip_x0=clip).x0
                for i in range(0, args.n, args.batch)]
        images = torch.cat(outs).clamp(-1, 1)
        m = fd_kid_vs_cifar_test(images)
        m["seconds"] = round(time.perf_counter() - t0, 1)
        rows[name] = m
        print(name, {k: m[k] for k in ("FD_cifarnet", "KID_cifarnet", "KID_cifarnet_std", "seconds")}, flush=True)
    root = os.environ.get("IEC_CIFAR10_DIR")
    if root:
        from real_models.data import load_cifar10, to_float_tensor

        imgs, _ = load_cifar10("train", root)
        idx = torch.randperm(len(imgs), generator=torch.Generator().manual_seed(args.seed))[: args.n].numpy()
        rows["real_train_images_floor"] = fd_kid_vs_cifar_test(to_float_tensor(imgs[idx]))
        print("real train floor", rows["real_train_images_floor"]["FD_cifarnet"], flush=True)
    record = {"what": "FD_cifarnet / KID_cifarnet of the default DDPM vs the CIFAR-10 test set (NOT Inception FID)",
              "n": args.n, "steps": args.steps, "eta": 0.0, "samples_clamped_to_[-1,1]_before_scoring": True,
              "rows": rows, "provenance": provenance(seed=args.seed, command="scripts/measure_default_quality.py")}
    Path(args.out).write_text(json.dumps(record, indent=2, default=str) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
