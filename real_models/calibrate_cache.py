"""Calibrate the cached-feature correction ``h -> a * h + b`` (CacheQuant style; issue 13, item 4).

For a refresh schedule R (step indices) and a split point (``branch``), the cache reuses at step i the
feature ``h_r`` computed at the last refresh step ``r(i) = max{r in R : r <= i}``. The correction is
fitted per reuse step i and per channel c by ordinary least squares over the calibration images and
spatial positions:

    (a_ic, b_ic) = argmin_{a, b} sum_{n, y, x} (a * h_{r(i)}[n, c, y, x] + b - h_i[n, c, y, x])^2,
    a_ic = Cov(h_r, h_i) / Var(h_r),   b_ic = mean(h_i) - a_ic * mean(h_r)

(``a = 1, b = mean(h_i - h_r)`` where ``Var(h_r)`` is 0 to round-off). ``h_i`` is the freshly computed
feature at the state of step i of the calibration trajectories: plain DDIM (eta as given) of the FP
network from ``seed``-drawn x_T, i.e. the states the cache approximates. Sums are accumulated in
float64. Refresh steps get no pair (the correction is never used there).

Command::

    python -m real_models.calibrate_cache --out results/cache_correction.safetensors \
        [--model-dir DIR] [--T 100] [--spacing quad] [--refresh-every 10] [--branch 2] [--n 64] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from iec_theory.errors import ConfigError, require

from .cache import DEFAULT_BRANCH, CacheCorrection, CachedUNet, refresh_steps_for

__all__ = ["AffineSums", "calibrate_correction", "fit_affine", "fit_from_features", "last_refresh", "main"]


def last_refresh(i: int, refresh: Iterable[int]) -> int:
    """r(i): the last refresh step <= i (step 0 always refreshes: the cache starts empty)."""
    return max([r for r in refresh if r <= i] + [0])


class AffineSums:
    """Per-channel running sums for the least-squares fit of y = a x + b (float64)."""

    def __init__(self, channels: int) -> None:
        z = torch.zeros(channels, dtype=torch.float64)
        self.n, self.sx, self.sy, self.sxx, self.sxy, self.syy = 0, z.clone(), z.clone(), z.clone(), z.clone(), \
            z.clone()

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        require(x.shape == y.shape and x.ndim == 4, f"cached and fresh features must be equal [B, C, H, W], got "
                                                     f"{list(x.shape)} and {list(y.shape)}")
        xd, yd = x.double().transpose(0, 1).reshape(x.shape[1], -1), y.double().transpose(0, 1).reshape(y.shape[1], -1)
        self.n += xd.shape[1]
        self.sx += xd.sum(1)
        self.sy += yd.sum(1)
        self.sxx += (xd * xd).sum(1)
        self.sxy += (xd * yd).sum(1)
        self.syy += (yd * yd).sum(1)

    def fit(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """(a [C], b [C], {mse_identity, mse_fitted}) of the least-squares fit."""
        require(self.n >= 2, "need at least 2 values per channel to fit a and b")
        n = self.n
        mx, my = self.sx / n, self.sy / n
        vxx = self.sxx / n - mx * mx
        vxy = self.sxy / n - mx * my
        vyy = self.syy / n - my * my
        flat = vxx <= 1e-12 * (self.sxx / n).clamp_min(1e-300)
        a = torch.where(flat, torch.ones_like(vxx), vxy / torch.where(flat, torch.ones_like(vxx), vxx))
        b = my - a * mx
        mse_id = float(((self.syy - 2 * self.sxy + self.sxx) / n).mean())
        mse_fit = float((vyy - 2 * a * vxy + a * a * vxx).clamp_min(0).mean())
        return a.float(), b.float(), {"mse_identity": mse_id, "mse_fitted": mse_fit}


def fit_affine(cached: torch.Tensor, fresh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Per-channel least squares ``fresh ~ a * cached + b`` over batch and positions ([B, C, H, W] each)."""
    s = AffineSums(cached.shape[1])
    s.add(cached, fresh)
    return s.fit()


def fit_from_features(features: Iterable[dict[int, torch.Tensor]], refresh: Iterable[int], T: int,
                      meta: dict[str, Any] | None = None) -> CacheCorrection:
    """A CacheCorrection from per-trajectory features {step i: fresh split feature [B, C, H, W]}.

    For every step i in [0, T) that is not a refresh step, fits ``h_i ~ a * h_{r(i)} + b`` per channel
    over all trajectories given.
    """
    refresh = sorted(set(int(r) for r in refresh) | {0})
    reuse = [i for i in range(T) if i not in refresh]
    sums: dict[int, AffineSums] = {}
    for feats in features:
        for i in reuse:
            r = last_refresh(i, refresh)
            require(i in feats and r in feats, f"features of step {i} or of its refresh step {r} are missing")
            sums.setdefault(i, AffineSums(feats[i].shape[1])).add(feats[r], feats[i])
    require(bool(sums), "no reuse step to calibrate (every step refreshes)")
    steps = sorted(sums)
    fits = [sums[i].fit() for i in steps]
    a = torch.stack([f[0] for f in fits])
    b = torch.stack([f[1] for f in fits])
    m = dict(meta or {})
    m.update(refresh_steps=refresh, T=T, n_values_per_channel=sums[steps[0]].n,
             mse_identity=[f[2]["mse_identity"] for f in fits], mse_fitted=[f[2]["mse_fitted"] for f in fits])
    return CacheCorrection(steps, a, b, m)


def trajectory_features(unet: torch.nn.Module, schedule: Any, x_T: torch.Tensor, T: int | list[int],
                        spacing: str = "quad",
                        eta: float = 0.0, branch: int = DEFAULT_BRANCH, seed: int = 0) -> dict[int, torch.Tensor]:
    """{step i: the split feature freshly computed at the state of step i} along plain FP DDIM from x_T.

    A CachedUNet that refreshes at every step is exactly the full forward, and after each step's
    evaluation its cache holds that step's fresh feature.
    """
    from iec_theory import sample
    from iec_theory.sampler import NoiseSource

    cached = CachedUNet(unet, refresh_every=1, branch=branch)
    feats: dict[int, torch.Tensor] = {}

    class _Grab:
        def begin_step(self, i: int, t: int) -> None:
            self.i = i
            cached.begin_step(i, t)

        def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = cached(x, t)
            feats.setdefault(self.i, cached.cached_feature.detach().clone())
            return out

    with torch.no_grad():
        sample(_Grab(), schedule, x_T, T, eta=eta, spacing=spacing, noise=NoiseSource(seed=seed, keyed=True))
    return feats


def calibrate_correction(unet: torch.nn.Module, schedule: Any, T: int | list[int], spacing: str = "quad",
                         refresh_every: int | None = 10, refresh_steps: Iterable[int] | None = None,
                         branch: int = DEFAULT_BRANCH, n: int = 64, batch_size: int = 32, seed: int = 1,
                         eta: float = 0.0, shape: tuple[int, int, int] | None = None) -> CacheCorrection:
    """Fit the correction on n calibration trajectories (x_T ~ N(0, I) from torch.Generator(seed)).

    T: number of steps (with spacing), or an explicit descending timestep list (e.g. the distinct official
    quad grid of real_models.experiment.grids)."""
    require(n >= 1 and batch_size >= 1, f"n and batch_size must be >= 1, got {n}, {batch_size}")
    steps = len(T) if isinstance(T, (list, tuple)) else int(T)
    refresh = refresh_steps_for(refresh_every, refresh_steps, steps)
    cfg = unet.config
    shape = shape or (int(cfg.in_channels), int(cfg.sample_size), int(cfg.sample_size))
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn((n, *shape), generator=g)
    dev = next(unet.parameters()).device
    feats = (trajectory_features(unet, schedule, x_T[k:k + batch_size].to(dev), T, spacing, eta, branch, seed)
             for k in range(0, n, batch_size))
    meta = {"branch": branch, "spacing": spacing, "eta": eta, "n": n, "seed": seed,
            "calibration": "FP DDIM trajectories; per reuse step and channel least squares of the fresh on the "
                           "cached split feature"}
    return fit_from_features(feats, refresh, steps, meta)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m real_models.calibrate_cache", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output .safetensors (a, b, steps; metadata)")
    p.add_argument("--model-dir", default=None, help="diffusers UNet2DModel folder (default: the committed model)")
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--spacing", default="quad", choices=("uniform", "quad"))
    p.add_argument("--refresh-every", type=int, default=10)
    p.add_argument("--branch", type=int, default=DEFAULT_BRANCH, choices=(1, 2))
    p.add_argument("--n", type=int, default=64, help="calibration trajectories")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    try:
        require(a.T >= 2 and 1 <= a.refresh_every <= a.T, f"need T >= 2 and 1 <= --refresh-every <= T, got "
                                                          f"T={a.T}, refresh-every={a.refresh_every}")
        require(Path(a.out).suffix == ".safetensors", f"--out must end in .safetensors, got {a.out!r}")
        torch.set_num_threads(a.threads)
        from iec_theory.provenance import provenance

        from .experiment.grids import timesteps_for
        from .pretrained import load_default_model

        model, schedule = load_default_model(a.model_dir)
        t0 = time.perf_counter()
        ts = timesteps_for(schedule, a.T, a.spacing)       # quad: the distinct official timesteps
        corr = calibrate_correction(model.unet, schedule, ts, a.spacing, a.refresh_every, None, a.branch, a.n,
                                    a.batch_size, a.seed)
        corr.meta.update(T_requested=a.T, timesteps=ts)
        corr.meta.update(model_dir=str(a.model_dir or "default"), seconds=round(time.perf_counter() - t0, 1),
                         provenance=provenance(seed=a.seed, command="python -m real_models.calibrate_cache"))
        corr.save(a.out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mi, mf = corr.meta["mse_identity"], corr.meta["mse_fitted"]
    print(f"wrote {a.out}: {len(corr.steps)} reuse steps, {corr.channels} channels; mean squared cache error "
          f"{sum(mi) / len(mi):.4g} -> {sum(mf) / len(mf):.4g} (calibration data)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
