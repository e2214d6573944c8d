"""IEC configuration: corrections, relaxation, early stop, noise, step selection (THEORY.md section 2).

At a selected step t -> s the official code runs

    y0 = a x_t + b eps~(x_t, t) + c z
    for k = 1..K:
        yhat = a x_t + b eps~(y_{k-1}, t) + c z_k          (timestep stays t)
        if ||yhat - y_{k-1}|| / (||y_{k-1}|| + 1e-6) < tol: stop, keep y_{k-1}
        y_k = y_{k-1} + lambda_k (yhat - y_{k-1})

a relaxed fixed-point iteration for y* = a x_t + b eps~(y*, t) + c z (backward Euler in the state).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .errors import ConfigError, require

NOISE_MODES = ("fresh", "shared")


def check_K_memory(K: int, T: int = 1, what: str = "K") -> None:
    """Refuse a K whose relaxation list and residual records (T steps) would not fit in memory."""
    from .checks import check_memory

    check_memory(int(K) * (8 + 40 * max(int(T), 1)), f"{what} = {K} corrections (relaxations and residual "
                                                       f"records over {T} step(s))")
RESIDUAL_EPS = 1e-6  # the official code's denominator guard


@dataclass(frozen=True)
class StepSelection:
    """Which sampling steps (0-based index i, step i goes from timesteps[i] to the next) get IEC.

    kinds: "all"; "indices" (explicit list; also cache-refresh steps); "first" m; "last" m;
    "every" n-th (i % n == 0, the cache-refresh rule of the official DDPM code); "callable"
    fn(i, t) -> bool; "topk" k by a per-step score (e.g. an estimated Jacobian spectral radius).
    """

    kind: str = "all"
    indices: tuple[int, ...] = ()
    count: int = 0
    fn: Callable[[int, int], bool] | None = None
    scores: tuple[float, ...] = ()

    # ----- constructors -------------------------------------------------------------------------
    @classmethod
    def all(cls) -> StepSelection:
        return cls("all")

    @classmethod
    def explicit(cls, indices: Sequence[int]) -> StepSelection:
        idx = tuple(int(i) for i in indices)
        require(all(i >= 0 for i in idx), f"step indices must be >= 0, got {idx}")
        return cls("indices", indices=idx)

    @classmethod
    def first(cls, m: int) -> StepSelection:
        require(int(m) >= 0, f"first m needs m >= 0, got {m}")
        return cls("first", count=int(m))

    @classmethod
    def last(cls, m: int) -> StepSelection:
        require(int(m) >= 0, f"last m needs m >= 0, got {m}")
        return cls("last", count=int(m))

    @classmethod
    def every(cls, n: int) -> StepSelection:
        require(int(n) >= 1, f"every n-th needs n >= 1, got {n}")
        return cls("every", count=int(n))

    @classmethod
    def predicate(cls, fn: Callable[[int, int], bool]) -> StepSelection:
        require(callable(fn), "predicate selection needs a callable fn(step_index, t) -> bool")
        return cls("callable", fn=fn)

    @classmethod
    def top_k(cls, k: int, scores: Sequence[float]) -> StepSelection:
        sc = tuple(float(v) for v in scores)
        require(int(k) >= 0, f"top-k needs k >= 0, got {k}")
        require(all(math.isfinite(v) for v in sc), "top-k scores must be finite")
        return cls("topk", count=int(k), scores=sc)

    # ----- resolution ---------------------------------------------------------------------------
    def resolve(self, timesteps: Sequence[int]) -> frozenset[int]:
        """The set of selected step indices for this list of sampled timesteps."""
        T = len(timesteps)
        if self.kind == "all":
            return frozenset(range(T))
        if self.kind == "indices":
            bad = [i for i in self.indices if i >= T]
            require(not bad, f"selected step indices {bad} out of range for T={T} steps")
            return frozenset(self.indices)
        if self.kind == "first":
            return frozenset(range(min(self.count, T)))
        if self.kind == "last":
            return frozenset(range(max(T - self.count, 0), T))
        if self.kind == "every":
            return frozenset(range(0, T, self.count))
        if self.kind == "callable":
            assert self.fn is not None
            return frozenset(i for i, t in enumerate(timesteps) if self.fn(i, int(t)))
        if self.kind == "topk":
            require(len(self.scores) == T, f"top-k selection has {len(self.scores)} scores for T={T} steps")
            order = sorted(range(T), key=lambda i: (-self.scores[i], i))
            return frozenset(order[: self.count])
        raise ConfigError(f"unknown step selection kind {self.kind!r}")


@dataclass(frozen=True)
class IECConfig:
    """IEC settings: K corrections with relaxations lambdas[k-1], early-stop tol, noise mode, selection."""

    K: int
    lambdas: tuple[float, ...]
    tol: float = 0.0
    noise: str = "fresh"
    select: StepSelection = field(default_factory=StepSelection.all)
    name: str = "custom"

    def __post_init__(self) -> None:
        require(isinstance(self.K, int) and not isinstance(self.K, bool), f"K must be an integer, got {self.K!r}")
        require(self.K >= 0, f"K (number of corrections) must be >= 0, got {self.K}")
        lams = tuple(float(v) for v in self.lambdas)
        require(len(lams) == self.K, f"lambdas must have length K={self.K}, got {len(lams)}: {lams}")
        require(all(math.isfinite(v) for v in lams), f"lambdas must be finite, got {lams}")
        require(all(0.0 < v <= 2.0 for v in lams), f"every lambda must lie in (0, 2], got {lams}")
        object.__setattr__(self, "lambdas", lams)
        tol = float(self.tol)
        require(math.isfinite(tol) and tol >= 0.0, f"tol must be finite and >= 0, got {self.tol!r}")
        object.__setattr__(self, "tol", tol)
        require(self.noise in NOISE_MODES, f"noise must be one of {NOISE_MODES}, got {self.noise!r}")
        require(isinstance(self.select, StepSelection), "select must be a StepSelection")

    # ----- presets ------------------------------------------------------------------------------
    @classmethod
    def official_ddpm(cls, select: StepSelection | None = None) -> IECConfig:
        """DDPM/CIFAR code: max_iter = 2 (K = 1), lambda_k = 0.5**k, tol = 1e-3, fresh noise.

        The official code corrects the cache-refresh steps (all steps without a cache): pass
        `StepSelection.every(n)` or `StepSelection.explicit(refresh_steps)` for a cached model.
        """
        return cls(1, (0.5,), 1e-3, "fresh", select or StepSelection.all(), "official_ddpm")

    @classmethod
    def official_ldm(cls, select: StepSelection | None = None) -> IECConfig:
        """LDM code: max_iter = 3 (K = 2), lambda_k = 0.5**(k-1), tol = 1e-6, fresh noise."""
        return cls(2, (1.0, 0.5), 1e-6, "fresh", select or StepSelection.all(), "official_ldm")

    @classmethod
    def relaxed(cls, lam: float, K: int, tol: float = 0.0, noise: str = "fresh",
                select: StepSelection | None = None) -> IECConfig:
        """The paper's form: constant relaxation lambda_k = lam for k = 1..K."""
        require(isinstance(K, int) and K >= 0, f"K must be an integer >= 0, got {K!r}")
        check_K_memory(K)
        return cls(K, (float(lam),) * K, tol, noise, select or StepSelection.all(), f"relaxed(lam={lam},K={K})")

    @classmethod
    def preset(cls, name: str) -> IECConfig:
        """Look a preset up by name: official_ddpm, official_ldm."""
        presets = {"official_ddpm": cls.official_ddpm, "official_ldm": cls.official_ldm}
        if name not in presets:
            raise ConfigError(f"unknown IEC preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]()
