"""Validation helpers: every bad input raises a ValueError that names the problem."""

from __future__ import annotations

import math
from typing import Any

import torch


class ConfigError(ValueError):
    """A configuration or argument is invalid; the message names the field and the rule."""


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds."""
    if not condition:
        raise ConfigError(message)


def require_finite_number(value: Any, name: str) -> float:
    """Return value as float, or raise if it is not a finite real number."""
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a real number, got {value!r}") from exc
    require(math.isfinite(out), f"{name} must be finite, got {value!r}")
    return out


def require_finite_tensor(x: torch.Tensor, name: str) -> None:
    """Raise if x is not a tensor or holds NaN or Inf."""
    require(isinstance(x, torch.Tensor), f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ConfigError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} Inf)")
