"""Stage 2, the configurations: the FP model, the efficient models (quantized and/or cached) and
the IEC settings and nominal NFEs of each row."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .spec import ConfigSpec, RealSpec


def _baseline_tag(b: str, spec: RealSpec, c: ConfigSpec) -> str:
    return f"DDIM{_matched_nfe(spec, c)}" if b == "ddim_matched" else "Heun"


def _matched_nfe(spec: RealSpec, c: ConfigSpec) -> int:
    from iec_theory.baselines import iec_nfe

    iec = _iec_for(spec.iec_preset, c.cache)
    return iec_nfe(spec.T, iec, list(range(spec.T)))


def _iec_for(preset: str, cache: int):
    from iec_theory.iec import IECConfig, StepSelection

    cfg = IECConfig.preset(preset)
    if cache:
        cfg = dataclasses.replace(cfg, select=StepSelection.every(cache))
    return cfg


def row_schemes(spec: RealSpec, c: ConfigSpec) -> list[tuple[str, str, Any, int | None]]:
    """(method, row label, IEC config or None, NFE target or None) of every row run on config c, in order."""
    out: list[tuple[str, str, Any, int | None]] = []
    for use in c.iec:
        out.append(("iec" if use else "ddim", c.name + ("+IEC" if use else ""),
                    _iec_for(spec.iec_preset, c.cache) if use else None, None))
    for b in c.baselines:
        out.append((b, f"{c.name}+{_baseline_tag(b, spec, c)}", None, _matched_nfe(spec, c) if b == "ddim_matched"
                    else None))
    return out


def _nominal_nfe(method: str, spec: RealSpec, iec: Any, nfe_target: int | None) -> int:
    from iec_theory.baselines import iec_nfe

    if method == "iec":
        return iec_nfe(spec.T, iec, list(range(spec.T)))
    if method == "ddim_matched":
        return int(nfe_target or spec.T)
    if method == "heun":
        return 2 * spec.T - 1
    return spec.T


@dataclass
class _Models:
    fp: Any
    schedule: Any
    unet: torch.nn.Module
    model_dir: Path
    quantized: dict[str, Any] = field(default_factory=dict)
    quant_seconds: dict[str, float] = field(default_factory=dict)
    corrections: dict[int, Any] = field(default_factory=dict)
    correction_seconds: dict[int, float] = field(default_factory=dict)

    def correction(self, every: int, spec: RealSpec) -> Any:
        """The cached-feature correction for refresh interval `every`, fitted once on FP DDIM trajectories
        (real_models.calibrate_cache; cache.calibration in the spec) at the spec's T, spacing and eta."""
        from ..calibrate_cache import calibrate_correction

        if every not in self.corrections:
            t0 = time.perf_counter()
            cc = spec.cache_calibration
            from .grids import timesteps_for

            self.corrections[every] = calibrate_correction(
                self.unet, self.schedule, timesteps_for(self.schedule, spec.T_requested or spec.T, spec.spacing),
                spec.spacing, refresh_every=every, branch=spec.cache_branch, n=cc["n"], batch_size=cc["batch_size"],
                seed=cc["seed"], eta=spec.eta)
            self.correction_seconds[every] = time.perf_counter() - t0
        return self.corrections[every]

    def efficient(self, c: ConfigSpec, spec: RealSpec) -> Any:
        """A fresh efficient model for config c (the cache wrapper is stateful: a new one per run)."""
        from ..cache import CachedUNet
        from ..quant import Calibration, quantize_model

        base: Any = self.fp
        if c.quant != "none":
            if c.quant not in self.quantized:
                t0 = time.perf_counter()
                from .grids import timesteps_for

                cal = Calibration(self.schedule, T=timesteps_for(self.schedule, spec.calibration["T"], spec.spacing),
                                  trajectories=spec.calibration["trajectories"],
                                  batch_size=spec.calibration["batch_size"], eta=spec.eta,
                                  seed=spec.calibration["seed"], spacing=spec.spacing)
                self.quantized[c.quant] = quantize_model(self.unet, c.quant, calibration=cal, **spec.quant_options)
                self.quant_seconds[c.quant] = time.perf_counter() - t0
            base = self.quantized[c.quant]
        if c.cache:
            corr = self.correction(c.cache, spec) if c.correction else None
            return CachedUNet(base, refresh_every=c.cache, refresh_all_evals=True, branch=spec.cache_branch,
                              correction=corr)
        return base


def _load_models(spec: RealSpec, model_dir: str | Path | None) -> _Models:
    from ..pretrained import DEFAULT_MODEL_DIR, load_default_model

    d = model_dir if model_dir is not None else spec.model_dir
    fp, schedule = load_default_model(d, device=spec.device)
    return _Models(fp, schedule, fp.unet, Path(d) if d is not None else DEFAULT_MODEL_DIR)
