"""Noise schedules and sampling subsequences (THEORY.md section 1).

`alphas_cumprod[t] = prod_{i<=t} (1 - beta_i)` for `t = 0..N-1`; by convention `abar_{-1} = 1`
(the end of sampling). Scale-free noise level `sigma_t = sqrt((1 - abar_t) / abar_t)`, `sigma_{-1} = 0`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError, require

SPACINGS = ("uniform", "quad")


@dataclass(frozen=True)
class Schedule:
    """A discrete DDPM forward process given by its betas (float64)."""

    betas: np.ndarray
    name: str = "custom"
    alphas_cumprod: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        betas = np.asarray(self.betas, dtype=np.float64)
        require(betas.ndim == 1 and betas.size >= 2,
                f"betas must be a 1-D array of length >= 2, got shape {betas.shape}")
        require(bool(np.all(np.isfinite(betas))), "betas must be finite")
        require(bool(np.all((betas > 0) & (betas < 1))), "betas must lie in the open interval (0, 1)")
        betas.setflags(write=False)
        abar = np.cumprod(1.0 - betas)
        abar.setflags(write=False)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", abar)

    # ----- constructors -------------------------------------------------------------------------
    @classmethod
    def linear(cls, num_train_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
        """DDPM linear betas from beta_start to beta_end (Ho et al. 2020)."""
        _check_n(num_train_steps)
        return cls(np.linspace(beta_start, beta_end, num_train_steps, dtype=np.float64), name="linear")

    @classmethod
    def quad(cls, num_train_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
        """'quad' betas: linspace(sqrt(beta_start), sqrt(beta_end))**2 (DDIM code)."""
        _check_n(num_train_steps)
        b = np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), num_train_steps, dtype=np.float64) ** 2
        return cls(b, name="quad")

    @classmethod
    def cosine(cls, num_train_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
        """Cosine schedule (Nichol & Dhariwal 2021): abar(t) = cos^2(((t/N)+s)/(1+s) * pi/2), betas clipped."""
        _check_n(num_train_steps)

        def f(u: np.ndarray) -> np.ndarray:
            return np.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        i = np.arange(num_train_steps, dtype=np.float64)
        betas = 1.0 - f((i + 1) / num_train_steps) / f(i / num_train_steps)
        return cls(np.clip(betas, 1e-12, max_beta), name="cosine")

    @classmethod
    def from_betas(cls, betas: Sequence[float] | np.ndarray) -> Schedule:
        """Any explicit betas."""
        return cls(np.asarray(betas, dtype=np.float64), name="custom")

    @classmethod
    def named(cls, name: str, num_train_steps: int = 1000) -> Schedule:
        """Build 'linear', 'quad' or 'cosine' by name with default parameters."""
        makers = {"linear": cls.linear, "quad": cls.quad, "cosine": cls.cosine}
        if name not in makers:
            raise ConfigError(f"unknown schedule {name!r}; choose one of {sorted(makers)}")
        return makers[name](num_train_steps)

    # ----- queries ------------------------------------------------------------------------------
    @property
    def num_train_steps(self) -> int:
        return int(self.betas.size)

    def abar(self, t: int) -> float:
        """alphas_cumprod[t], with abar_{-1} = 1."""
        t = int(t)
        require(-1 <= t < self.num_train_steps, f"timestep {t} outside [-1, {self.num_train_steps - 1}]")
        return 1.0 if t == -1 else float(self.alphas_cumprod[t])

    def sigma(self, t: int) -> float:
        """Scale-free noise level sigma_t = sqrt((1 - abar_t)/abar_t); sigma_{-1} = 0."""
        a = self.abar(t)
        return math.sqrt((1.0 - a) / a)

    def timesteps(self, T: int, spacing: str = "uniform") -> list[int]:
        """Descending sampled timesteps tau_T > ... > tau_1 (tau_0 = -1 is implicit).

        uniform: `range(0, N, N // T)` reversed, truncated to its first T entries when N is not a
        multiple of T (the DDIM code's `skip` rule; identical to it whenever it yields T entries).
        quad: `int(s)` for s in `linspace(0, sqrt(0.8 N), T)**2` (DDIM code), reversed.
        """
        N = self.num_train_steps
        require(isinstance(T, (int, np.integer)) and not isinstance(T, bool), f"T must be an integer, got {T!r}")
        require(1 <= T <= N, f"T (number of sampling steps) must satisfy 1 <= T <= N={N}, got {T}")
        if spacing == "uniform":
            seq = list(range(0, N, N // T))[:T]
        elif spacing == "quad":
            seq = [int(s) for s in np.linspace(0, math.sqrt(N * 0.8), T) ** 2]
            require(len(set(seq)) == T, f"quad spacing gives repeated timesteps for T={T}, N={N}; use uniform")
        else:
            raise ConfigError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
        return [int(t) for t in reversed(seq)]

    def check_timesteps(self, timesteps: Sequence[int]) -> list[int]:
        """Validate an explicit descending list of timesteps in [0, N-1]; return it as ints."""
        ts = [int(t) for t in timesteps]
        require(len(ts) >= 1, "timesteps must not be empty")
        require(all(0 <= t < self.num_train_steps for t in ts),
                f"timesteps must lie in [0, {self.num_train_steps - 1}], got {ts}")
        require(all(a > b for a, b in zip(ts, ts[1:])), f"timesteps must be strictly decreasing, got {ts}")
        return ts


def _check_n(n: int) -> None:
    from .checks import check_memory

    require(isinstance(n, (int, np.integer)) and n >= 2, f"num_train_steps must be an integer >= 2, got {n!r}")
    check_memory(int(n) * 8 * 8, f"num_train_steps = {n} (schedule tables of float64)")
