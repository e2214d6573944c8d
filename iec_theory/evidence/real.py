"""Real-network settings on the committed default DDPM, sampled as the official CIFAR-10 code samples.

DDIM, eta = 0, T = 100 with the official quadratic spacing (`toy.official_quad_timesteps`: 96 distinct
timesteps; the 4 repeated ones are identity steps, A = 1, B = 0, and are listed with their exact values).
Settings: `real_fp` (J of the FP network itself), `real_w8a8` / `real_w4a8` (`real_models.quant`, data-free
calibration, J by straight-through estimator), `real_cache` (`real_models.cache.CachedUNet`, refresh
every 10 steps as `--replicate_interval 10`; IEC only at the refresh steps, as the official code).
All numbers are estimates: power iteration / Lanczos with stated iteration counts and residual change,
on `n` images (spread = min..max over images).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..schedules import Schedule

__all__ = ["REAL_SETTINGS", "RealModels", "build_real_models", "real_x_T"]

REAL_SETTINGS = ("real_fp", "real_w8a8", "real_w4a8", "real_cache")
CACHE_INTERVAL = 10


@dataclass
class RealModels:
    """The FP reference and a maker for each efficient setting (fresh instance per run)."""

    fp: Any
    schedule: Schedule
    makers: dict[str, Callable[[], Any]]
    notes: dict[str, str]
    shape: tuple[int, ...]


def build_real_models(model_dir: str | Path, settings: tuple[str, ...] = REAL_SETTINGS,
                      calibration_T: int = 10, calibration_batch: int = 4, seed: int = 0,
                      log: Callable[[str], None] = lambda s: None) -> RealModels:
    """Load the UNet (safetensors only), quantize / wrap it per setting."""
    from real_models.cache import CachedUNet
    from real_models.quant import Calibration, quantize_model
    from real_models.unet import UNetEpsModel, load_unet

    unet = load_unet(model_dir)
    for p in unet.parameters():
        p.requires_grad_(False)
    fp = UNetEpsModel(unet)
    sched = Schedule.linear(1000)
    cfg = unet.config
    shape = (int(cfg.in_channels), int(cfg.sample_size), int(cfg.sample_size))
    makers: dict[str, Callable[[], Any]] = {}
    notes: dict[str, str] = {}
    for name in settings:
        if name == "real_fp":
            makers[name] = lambda: fp
            notes[name] = "full precision (the reference itself: eps^delta = 0, delta = 0)"
        elif name in ("real_w8a8", "real_w4a8"):
            preset = "W8A8" if name == "real_w8a8" else "W4A8"
            log(f"  quantizing {preset} (data-free calibration, T={calibration_T}, batch {calibration_batch})")
            cal = Calibration(sched, T=calibration_T, trajectories=1, batch_size=calibration_batch, seed=seed + 1)
            qm = quantize_model(unet, preset, calibration=cal)
            makers[name] = lambda qm=qm: qm
            err = qm.report.eps_rel_err if qm.report is not None else None
            notes[name] = (f"{preset} fake quantization (MSE weight scales, min-max per-tensor activations), "
                           f"eps relative error on calibration inputs {err:.3g}" if err is not None else preset)
        elif name == "real_cache":
            makers[name] = lambda: CachedUNet(unet, refresh_every=CACHE_INTERVAL, refresh_all_evals=True)
            notes[name] = f"DeepCache-style cache, refresh every {CACHE_INTERVAL} steps, corrections refresh the cache"
        else:
            raise ValueError(f"unknown real setting {name!r}; choose from {REAL_SETTINGS}")
    return RealModels(fp, sched, makers, notes, shape)


def real_x_T(shape: tuple[int, ...], n: int, seed: int) -> list[torch.Tensor]:
    """n independent x_T of batch 1 (seeded)."""
    g = torch.Generator().manual_seed(int(seed) + 2026)
    return [torch.randn((1, *shape), generator=g) for _ in range(n)]
