"""Shared validation and schedule helpers for the toy models (THEORY.md sections 1 and 7).

Conventions (docs/TOY_API.md): all tensors are torch float64 and batched; a time `t` is a Python
int or an integer LongTensor of shape [] or [B] with values in [0, N-1]; `t = -1` is the data end
(abar_{-1} = 1, sigma_{-1} = 0) and is accepted only where a method says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from iec_theory.errors import ConfigError, require
from iec_theory.schedules import Schedule

DTYPE = torch.float64
LOG_2PI = math.log(2.0 * math.pi)


def as_float_tensor(value: Any, name: str, ndim: int) -> torch.Tensor:
    """value as a finite float64 CPU tensor with exactly `ndim` dimensions (a detached copy)."""
    try:
        out = torch.as_tensor(value, dtype=DTYPE).detach().clone().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{name} must be a real array, got {type(value).__name__}") from exc
    require(out.ndim == ndim, f"{name} must have {ndim} dimension(s), got shape {tuple(out.shape)}")
    require(out.numel() > 0, f"{name} must not be empty, got shape {tuple(out.shape)}")
    if not bool(torch.isfinite(out).all()):
        raise ConfigError(f"{name} contains non-finite values (NaN or Inf)")
    return out


def check_schedule(schedule: Any) -> Schedule:
    require(isinstance(schedule, Schedule), f"schedule must be an iec_theory.Schedule, got {type(schedule).__name__}")
    return schedule


def abar_table(schedule: Schedule) -> torch.Tensor:
    """[N+1] float64 tensor with table[t + 1] = abar_t for t = -1..N-1 (table[0] = abar_{-1} = 1)."""
    ac = torch.tensor(np.array(schedule.alphas_cumprod, dtype=np.float64), dtype=DTYPE)
    return torch.cat([torch.ones(1, dtype=DTYPE), ac])


def eigh_spd(cov: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Check that cov [d,d] is symmetric positive definite; return (eigvals ascending [d], eigvecs [d,d]).

    Symmetry: max|cov - cov^T| <= 1e-10 * max(1, max|cov|). Positive definiteness: the smallest
    eigenvalue must exceed d * 2.2e-16 * (largest eigenvalue), the accuracy of a symmetric eigensolver,
    below which definiteness is not numerically established.
    """
    d = cov.shape[-1]
    require(cov.ndim == 2 and cov.shape[0] == d, f"{name} must be a square [d, d] matrix, got {tuple(cov.shape)}")
    scale = max(1.0, float(cov.abs().max()))
    asym = float((cov - cov.T).abs().max())
    require(asym <= 1e-10 * scale, f"{name} is not symmetric (max |C - C^T| = {asym:.3e})")
    sym = 0.5 * (cov + cov.T)
    lam, vec = torch.linalg.eigh(sym)
    lam_max = float(lam[-1])
    thresh = d * 2.2e-16 * max(abs(lam_max), 1e-300)
    require(lam_max > 0 and float(lam[0]) > thresh,
            f"{name} is not positive definite (smallest eigenvalue {float(lam[0]):.3e}, largest {lam_max:.3e})")
    return lam, vec


def check_x(x: Any, dim: int, name: str = "x") -> torch.Tensor:
    """x as a float64 tensor of shape [B, dim] with finite entries (dtype promoted; autograd kept)."""
    require(isinstance(x, torch.Tensor), f"{name} must be a torch.Tensor, got {type(x).__name__}")
    require(x.is_floating_point(), f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    require(x.ndim == 2 and x.shape[1] == dim,
            f"{name} must have shape [B, {dim}] (batch, dim={dim}), got {tuple(x.shape)}")
    require(x.shape[0] >= 1, f"{name} must have a nonzero batch size, got shape {tuple(x.shape)}")
    if x.dtype != DTYPE:
        x = x.to(DTYPE)
    _require_finite(x, name)
    return x


def _require_finite(x: torch.Tensor, name: str) -> None:
    try:
        ok = bool(torch.isfinite(x).all())
    except RuntimeError:  # inside a vmap transform a data-dependent check is impossible; skip it
        return
    if not ok:
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ConfigError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} Inf)")


def time_index(t: Any, batch: int, n_train: int, allow_data_end: bool, name: str = "t") -> torch.Tensor:
    """Validate t (int, or integer tensor of shape [] or [batch]); return a CPU LongTensor [batch]."""
    lo = -1 if allow_data_end else 0
    rng = f"[{lo}, {n_train - 1}]"
    if isinstance(t, torch.Tensor):
        require(not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool,
                f"{name} must be an integer timestep tensor, got dtype {t.dtype}")
        require(t.ndim in (0, 1), f"{name} must be a scalar or a [B] tensor, got shape {tuple(t.shape)}")
        tt = t.detach().to("cpu", torch.long)
        if tt.ndim == 0:
            tt = tt.expand(batch)
        require(tt.shape[0] == batch, f"{name} has {tt.shape[0]} entries but the batch has {batch}")
    elif isinstance(t, (int, np.integer)) and not isinstance(t, (bool, np.bool_)):
        tt = torch.full((batch,), int(t), dtype=torch.long)
    else:
        raise ConfigError(f"{name} must be an int or an integer LongTensor, got {type(t).__name__}")
    tmin, tmax = int(tt.min()), int(tt.max())
    require(lo <= tmin and tmax <= n_train - 1,
            f"timestep {name} out of range: got values in [{tmin}, {tmax}], allowed {rng}"
            + ("" if allow_data_end else " (t = -1 is only accepted by exact_flow, log_prob and marginal)"))
    return tt


def single_time(t: Any, n_train: int, allow_data_end: bool, name: str = "t") -> int:
    """A single timestep from an int or a tensor whose entries are all equal."""
    if isinstance(t, torch.Tensor) and t.ndim == 1:
        tt = time_index(t, int(t.shape[0]), n_train, allow_data_end, name)
        require(bool((tt == tt[0]).all()), f"{name} must be a single timestep here, got several distinct values")
        return int(tt[0])
    return int(time_index(t, 1, n_train, allow_data_end, name)[0])


def check_n(n: Any) -> int:
    require(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1,
            f"n (number of samples) must be a positive integer, got {n!r}")
    return int(n)


class DeviceCache:
    """Per-device copies of a model's parameter tensors (created on first use on that device)."""

    def __init__(self, **tensors: torch.Tensor | None):
        self._cpu = tensors
        self._by_device: dict[torch.device, dict[str, torch.Tensor | None]] = {}

    def on(self, device: torch.device) -> dict[str, torch.Tensor | None]:
        if device.type == "cpu":
            return self._cpu
        if device not in self._by_device:
            self._by_device[device] = {k: (v.to(device) if v is not None else None) for k, v in self._cpu.items()}
        return self._by_device[device]
