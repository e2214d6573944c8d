"""Perturbations: wrap an exact eps model into an "efficient" model eps~ = eps + e (THEORY.md section 3).

Every wrapper is a small class `Wrapper(base, ..., seed=0)`, callable as `model(x, t)` with
`x` a float tensor [B, d] and `t` a LongTensor [B] (an int is accepted too). Each one

- keeps the wrapped model as `self.base` and its definition of the error `e_t(x) = eps~(x, t) - base(x, t)`
  in its docstring, with the magnitude in natural units (the units of eps, i.e. per-dimension values
  of the error vector unless stated otherwise);
- forwards `begin_step(step_index, t)` to the base when the base has one (the sampler calls it
  before the first evaluation of each step; stateful wrappers such as `Cache` and `IIDNoise` use it);
- exposes `error(x, t)`: eps~(x, t) - base(x, t) evaluated now. For stateful wrappers (Cache,
  IIDNoise) this call advances their state exactly like a normal evaluation does.

`make_perturbation(spec, base)` builds any of them from a TOML table such as
`{kind = "bias", magnitude = 0.01}`; unknown kinds and unknown or missing fields raise ConfigError
naming the field.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from .checks import derive_seed
from .errors import ConfigError, require, require_finite_number

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = [
    "Adversarial",
    "AffineWeightActQuant",
    "Bias",
    "Cache",
    "Compose",
    "IIDNoise",
    "MonotoneNonlinear",
    "NonMonotoneNonlinear",
    "OutputQuantization",
    "PERTURBATIONS",
    "Perturbation",
    "Scale",
    "StepLocalized",
    "make_perturbation",
    "quantize_uniform",
    "quantize_symmetric",
    "unwrap",
]


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _as_t(t: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        if t.ndim == 0:
            return t.reshape(1).expand(batch).to(device=device, dtype=torch.long)
        return t.to(device=device, dtype=torch.long)
    return torch.full((batch,), int(t), dtype=torch.long, device=device)


def _single_t(t: torch.Tensor) -> int | None:
    """The common timestep of a batch, or None when the batch mixes timesteps."""
    if t.numel() == 0:
        return None
    t0 = int(t.reshape(-1)[0])
    if bool((t == t0).all()):
        return t0
    return None


def quantize_uniform(x: torch.Tensor, bits: int, lo: float, hi: float) -> torch.Tensor:
    """Uniform quantizer on [lo, hi] with 2**bits levels lo + k*Delta, Delta = (hi - lo)/(2**bits - 1).

    Values are clamped to [lo, hi] and rounded to the nearest level (torch.round: ties to even).
    """
    levels = 2 ** int(bits) - 1
    delta = (hi - lo) / levels
    q = torch.round((x.clamp(lo, hi) - lo) / delta)
    return lo + q * delta


def quantize_symmetric(x: torch.Tensor, bits: int, scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric signed quantizer: scale * clamp(round(x / scale), -(2**(bits-1) - 1), 2**(bits-1) - 1).

    `scale` broadcasts against x (per-row weight scales, per-tensor activation scale). A zero scale
    (an all-zero row or tensor) returns zeros.
    """
    qmax = 2 ** (int(bits) - 1) - 1
    scale_t = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    safe = torch.where(scale_t > 0, scale_t, torch.ones_like(scale_t))
    q = torch.round(x / safe).clamp(-qmax, qmax) * safe
    return torch.where(scale_t > 0, q, torch.zeros_like(q))


def _check_bits(bits: Any, name: str) -> int:
    require(isinstance(bits, int) and not isinstance(bits, bool), f"{name} must be an integer, got {bits!r}")
    require(2 <= bits <= 32, f"{name} must lie in [2, 32], got {bits}")
    return int(bits)


def _unit_rms_vector(d: int, kind: str, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """A vector of RMS 1 (norm sqrt(d)): all ones, or a seeded random direction."""
    if kind == "ones":
        return torch.ones(d, dtype=dtype)
    if kind == "random":
        g = torch.Generator().manual_seed(int(seed))
        v = torch.randn(d, generator=g, dtype=torch.float64)
        return (v * math.sqrt(d) / torch.linalg.vector_norm(v)).to(dtype)
    raise ConfigError(f"direction must be 'ones' or 'random', got {kind!r}")


def _random_orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed))
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def unwrap(model: Any) -> Any:
    """The innermost base of a chain of wrappers (the exact model)."""
    while isinstance(model, Perturbation):
        model = model.base
    return model


# ------------------------------------------------------------------------------------------------
# base class
# ------------------------------------------------------------------------------------------------
class Perturbation:
    """Common machinery: `base`, `seed`, begin_step forwarding, step bookkeeping, `error(x, t)`."""

    kind = "perturbation"

    def __init__(self, base: EpsModel, seed: int = 0):
        require(callable(base), f"{type(self).__name__}: base must be callable eps(x, t), got {type(base).__name__}")
        self.base = base
        self.seed = int(seed)
        self.step_index: int | None = None
        self.step_t: int | None = None

    def begin_step(self, step_index: int, t: int) -> None:
        self.step_index = int(step_index)
        self.step_t = int(t)
        fn = getattr(self.base, "begin_step", None)
        if fn is not None:
            fn(step_index, t)

    def reset(self) -> None:
        """Forget step state (call between independent sampling runs)."""
        self.step_index = None
        self.step_t = None
        fn = getattr(self.base, "reset", None)
        if fn is not None:
            fn()

    def __call__(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        return self.forward(x, _as_t(t, x.shape[0], x.device))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def error(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """e_t(x) = eps~(x, t) - base(x, t) (advances the state of stateful wrappers)."""
        tt = _as_t(t, x.shape[0], x.device)
        return self(x, tt) - self.base(x, tt)

    @property
    def schedule(self):  # noqa: ANN201 - forwarded attribute
        return getattr(self.base, "schedule", None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base={type(self.base).__name__})"


# ------------------------------------------------------------------------------------------------
# simple static perturbations
# ------------------------------------------------------------------------------------------------
class Bias(Perturbation):
    """Constant bias: e_t(x) = v for every x and t.

    `vector` gives v explicitly (shape [d]); otherwise v = magnitude * u with u of RMS 1
    (`direction="ones"`: u = (1, ..., 1); `"random"`: a seeded random direction scaled to norm sqrt(d)),
    so `magnitude` is the per-dimension size of the error and ||e|| = magnitude * sqrt(d).
    """

    kind = "bias"

    def __init__(self, base: EpsModel, magnitude: float | None = None,
                 vector: Sequence[float] | torch.Tensor | None = None, direction: str = "ones", seed: int = 0):
        super().__init__(base, seed)
        require((magnitude is None) != (vector is None), "bias: give exactly one of magnitude or vector")
        self.magnitude = None if magnitude is None else require_finite_number(magnitude, "bias.magnitude")
        self.direction = direction
        self.vector = None if vector is None else torch.as_tensor(vector, dtype=torch.float64).reshape(-1)
        if self.vector is not None:
            require(bool(torch.isfinite(self.vector).all()), "bias.vector must be finite")
        require(direction in ("ones", "random"), f"bias.direction must be 'ones' or 'random', got {direction!r}")

    def bias_vector(self, d: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        if self.vector is not None:
            require(self.vector.numel() == d, f"bias.vector has length {self.vector.numel()}, model dimension is {d}")
            return self.vector.to(dtype)
        return self.magnitude * _unit_rms_vector(d, self.direction, self.seed, dtype)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = self.bias_vector(x.shape[-1], x.dtype).to(x.device)
        return self.base(x, t) + v


class Scale(Perturbation):
    """Relative scale error: eps~ = (1 + s) eps, i.e. e_t(x) = s * eps(x, t) (s = `scale`, dimensionless)."""

    kind = "scale"

    def __init__(self, base: EpsModel, scale: float, seed: int = 0):
        super().__init__(base, seed)
        self.scale = require_finite_number(scale, "scale.scale")

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (1.0 + self.scale) * self.base(x, t)


class OutputQuantization(Perturbation):
    """Uniform quantization of the output: eps~ = Q(eps), e_t(x) = Q(eps(x, t)) - eps(x, t).

    Q has 2**bits levels lo + k Delta on [lo, hi] (Delta = (hi - lo)/(2**bits - 1)), clamps and rounds to
    the nearest level. `range` is a number r (meaning [-r, r]), a pair (lo, hi), or "dynamic"
    (per call: [min, max] of the output tensor). Inside the range |e| <= Delta/2 per entry.
    """

    kind = "output_quant"

    def __init__(self, base: EpsModel, bits: int = 8, range: float | Sequence[float] | str = 4.0,  # noqa: A002
                 seed: int = 0):
        super().__init__(base, seed)
        self.bits = _check_bits(bits, "output_quant.bits")
        if isinstance(range, str):
            require(range == "dynamic", f"output_quant.range must be a number, [lo, hi] or 'dynamic', got {range!r}")
            self.range: tuple[float, float] | None = None
        elif isinstance(range, (int, float)):
            r = require_finite_number(range, "output_quant.range")
            require(r > 0, f"output_quant.range must be > 0, got {r}")
            self.range = (-r, r)
        else:
            vals = [require_finite_number(v, "output_quant.range") for v in range]
            require(len(vals) == 2 and vals[0] < vals[1],
                    f"output_quant.range must be [lo, hi] with lo < hi, got {vals}")
            self.range = (vals[0], vals[1])

    @property
    def delta(self) -> float | None:
        """The quantization step for a fixed range (None when dynamic)."""
        if self.range is None:
            return None
        return (self.range[1] - self.range[0]) / (2**self.bits - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.base(x, t)
        if self.range is None:
            lo, hi = float(out.min()), float(out.max())
            if hi <= lo:
                return out
        else:
            lo, hi = self.range
        return quantize_uniform(out, self.bits, lo, hi)


class AffineWeightActQuant(Perturbation):
    """Toy W/A quantization of an affine denoiser eps(x, t) = C_t x + c_t (from `base.affine(t)`).

    eps~(x, t) = Q_A(x) @ Q_W(C_t)^T + c_t, e_t(x) = eps~(x, t) - (C_t x + c_t), where
    Q_W quantizes each row r of C_t symmetrically at `w_bits` with scale max_j |C_rj| / (2**(w_bits-1) - 1)
    ("per-row" / per-output-channel), and Q_A quantizes the input x per tensor (the whole batch) at
    `a_bits` with the dynamic scale max |x| / (2**(a_bits-1) - 1) (`a_bits=None`: no activation
    quantization, which keeps the model affine). The offset c_t stays in full precision.
    "W4A8" is w_bits=4, a_bits=8; "W8A8" is w_bits=8, a_bits=8.
    """

    kind = "affine_wa_quant"

    def __init__(self, base: EpsModel, w_bits: int | None = 8, a_bits: int | None = 8, seed: int = 0):
        super().__init__(base, seed)
        require(callable(getattr(base, "affine", None)),
                "affine_wa_quant: the base model must be affine and define affine(t) -> (C, c) (a Gaussian toy)")
        self.w_bits = None if w_bits is None else _check_bits(w_bits, "affine_wa_quant.w_bits")
        self.a_bits = None if a_bits is None else _check_bits(a_bits, "affine_wa_quant.a_bits")
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def quantized_affine(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q_W(C_t), c_t), cached per timestep."""
        t = int(t)
        if t not in self._cache:
            C, c = self.base.affine(t)
            C = torch.as_tensor(C, dtype=torch.float64)
            c = torch.as_tensor(c, dtype=torch.float64)
            if self.w_bits is not None:
                scale = C.abs().amax(dim=1, keepdim=True) / (2 ** (self.w_bits - 1) - 1)
                C = quantize_symmetric(C, self.w_bits, scale)
            self._cache[t] = (C, c)
        return self._cache[t]

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.a_bits is None:
            return x
        scale = x.abs().max() / (2 ** (self.a_bits - 1) - 1)
        return quantize_symmetric(x, self.a_bits, scale)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xq = self.quantize_input(x)
        out = torch.empty_like(x)
        for tv in torch.unique(t).tolist():
            mask = t == tv
            C, c = self.quantized_affine(int(tv))
            out[mask] = xq[mask] @ C.to(x.dtype).T + c.to(x.dtype)
        return out


# ------------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------------
class Cache(Perturbation):
    """Toy DeepCache: reuse the output of the last fully computed step.

    Refresh steps: step indices i with i % every == 0 (the official DeepCache / IEC convention;
    step 0 always refreshes), or the explicit list `refresh` (step 0 is added if missing, since
    nothing is cached before it). The step index comes from `begin_step(i, t)`, which the sampler
    calls before each step; without it every call recomputes.

    During a refresh step EVERY evaluation (IEC's corrections included) calls the base and updates
    the cache. During any other step the cache is reused:
      mode "eps": eps~(x, t) = eps_r, the last computed eps, whatever x is;
      mode "x0":  eps~(x, t) = (x - sqrt(abar_t) x0_r) / sqrt(1 - abar_t), with
                  x0_r = (x_r - sqrt(1 - abar_r) eps_r) / sqrt(abar_r) the last x0-prediction
                  (needs the schedule: `schedule=` or `base.schedule`).
    e_t(x) = eps~(x, t) - base(x, t) is zero on refresh steps and the staleness error otherwise.
    """

    kind = "cache"

    def __init__(self, base: EpsModel, every: int | None = None, refresh: Sequence[int] | None = None,
                 mode: str = "eps", schedule: Any = None, seed: int = 0):
        super().__init__(base, seed)
        require((every is None) != (refresh is None), "cache: give exactly one of every (N) or refresh (a list)")
        if every is not None:
            require(isinstance(every, int) and not isinstance(every, bool) and every >= 1,
                    f"cache.every must be an integer >= 1, got {every!r}")
        self.every = every
        if refresh is not None:
            idx = sorted({int(i) for i in refresh} | {0})
            require(all(i >= 0 for i in idx), f"cache.refresh indices must be >= 0, got {list(refresh)}")
            self.refresh: frozenset[int] | None = frozenset(idx)
        else:
            self.refresh = None
        require(mode in ("eps", "x0"), f"cache.mode must be 'eps' or 'x0', got {mode!r}")
        self.mode = mode
        self._schedule = schedule if schedule is not None else getattr(base, "schedule", None)
        require(mode == "eps" or self._schedule is not None,
                "cache mode 'x0' needs a schedule (schedule= or base.schedule)")
        self._abar_table: torch.Tensor | None = None
        self.cached_eps: torch.Tensor | None = None
        self.cached_x0: torch.Tensor | None = None
        self.computed = 0   # base evaluations
        self.reused = 0     # evaluations answered from the cache

    @property
    def schedule(self):  # noqa: ANN201
        return self._schedule

    def is_refresh(self, step_index: int | None) -> bool:
        if step_index is None:
            return True
        if self.every is not None:
            return step_index % self.every == 0
        assert self.refresh is not None
        return step_index in self.refresh

    def refresh_steps(self, T: int) -> list[int]:
        """The refresh step indices among 0..T-1 (e.g. for IEC's StepSelection.explicit)."""
        return [i for i in range(T) if self.is_refresh(i)]

    def reset(self) -> None:
        super().reset()
        self.cached_eps = None
        self.cached_x0 = None
        self.computed = 0
        self.reused = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        stale_ok = self.cached_eps is not None and self.cached_eps.shape == x.shape
        if self.is_refresh(self.step_index) or not stale_ok:
            eps = self.base(x, t)
            self.computed += 1
            self.cached_eps = eps.detach().clone()
            if self.mode == "x0":
                ab = self._abar(t, x)
                self.cached_x0 = ((x - torch.sqrt(1 - ab) * eps) / torch.sqrt(ab)).detach().clone()
            return eps
        self.reused += 1
        if self.mode == "eps":
            return self.cached_eps.clone()
        ab = self._abar(t, x)
        return (x - torch.sqrt(ab) * self.cached_x0) / torch.sqrt(1 - ab)

    def _abar(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self._abar_table is None:
            self._abar_table = torch.tensor(list(self._schedule.alphas_cumprod), dtype=torch.float64)
        return self._abar_table.to(dtype=x.dtype, device=x.device)[t].reshape(-1, *([1] * (x.ndim - 1)))


# ------------------------------------------------------------------------------------------------
# random and nonlinear errors
# ------------------------------------------------------------------------------------------------
class IIDNoise(Perturbation):
    """Fresh Gaussian error per call: e_t(x) = std * xi, xi ~ N(0, I) (std per dimension, units of eps).

    xi is deterministic per (seed, step index, call number within the step) when the sampler calls
    begin_step; otherwise per (seed, global call number). Two runs with the same seed see the same xi.
    """

    kind = "iid_noise"

    def __init__(self, base: EpsModel, std: float, seed: int = 0):
        super().__init__(base, seed)
        self.std = require_finite_number(std, "iid_noise.std")
        require(self.std >= 0, f"iid_noise.std must be >= 0, got {self.std}")
        self._calls_in_step = 0
        self._global_calls = 0

    def begin_step(self, step_index: int, t: int) -> None:
        super().begin_step(step_index, t)
        self._calls_in_step = 0

    def reset(self) -> None:
        super().reset()
        self._calls_in_step = 0
        self._global_calls = 0

    def noise_key(self) -> int:
        if self.step_index is None:
            return self.seed * 1_000_003 + 7_919 * self._global_calls + 1
        return self.seed * 1_000_003 + self.step_index * 1009 + self._calls_in_step + 500_000

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(derive_seed(self.noise_key()))
        xi = torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype=x.dtype, device=x.device)
        self._calls_in_step += 1
        self._global_calls += 1
        return self.base(x, t) + self.std * xi


class _RotatedElementwise(Perturbation):
    """e(x) = magnitude * W^T phi((W x) / length + phase) with W orthogonal (seeded) or the identity."""

    def __init__(self, base: EpsModel, magnitude: float, length: float = 1.0, rotate: bool = True, seed: int = 0):
        super().__init__(base, seed)
        self.magnitude = require_finite_number(magnitude, f"{self.kind}.magnitude")
        self.length = require_finite_number(length, f"{self.kind}.length")
        require(self.length > 0, f"{self.kind}.length must be > 0, got {self.length}")
        self.rotate = bool(rotate)
        self._W: torch.Tensor | None = None
        self._phase: torch.Tensor | None = None

    def W(self, d: int) -> torch.Tensor | None:
        if not self.rotate:
            return None
        if self._W is None or self._W.shape[0] != d:
            self._W = _random_orthogonal(d, self.seed)
        return self._W

    def phase(self, d: int) -> torch.Tensor:
        if self._phase is None or self._phase.numel() != d:
            g = torch.Generator().manual_seed(self.seed + 12_345)
            self._phase = self._make_phase(d, g)
        return self._phase

    def _make_phase(self, d: int, g: torch.Generator) -> torch.Tensor:
        return torch.zeros(d, dtype=torch.float64)

    def phi(self, u: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def error_fn(self, x: torch.Tensor) -> torch.Tensor:
        """The (stateless) error e(x)."""
        d = x.shape[-1]
        W = self.W(d)
        u = x if W is None else x @ W.to(x.dtype).T
        v = self.magnitude * self.phi(u / self.length + self.phase(d).to(x.dtype))
        return v if W is None else v @ W.to(x.dtype)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.base(x, t) + self.error_fn(x)


class MonotoneNonlinear(_RotatedElementwise):
    """Monotone error, the gradient of a convex function:

        e(x) = magnitude * W^T tanh(W x / length + phase)
             = grad_x [ magnitude * length * sum_j log cosh(w_j . x / length + phase_j) ],

    a convex potential, so <e(u) - e(v), u - v> >= 0 and the Jacobian
    (magnitude/length) W^T diag(sech^2) W is symmetric positive semidefinite with norm <= magnitude/length.
    W is a seeded random orthogonal matrix (`rotate=False`: the identity), phase a seeded offset in
    [-1, 1]^d so that e(0) != 0. Each entry of W e is bounded by `magnitude` (units of eps).
    """

    kind = "monotone"

    def _make_phase(self, d: int, g: torch.Generator) -> torch.Tensor:
        return 2 * torch.rand(d, generator=g, dtype=torch.float64) - 1

    def phi(self, u: torch.Tensor) -> torch.Tensor:
        return torch.tanh(u)

    @property
    def lipschitz(self) -> float:
        return abs(self.magnitude) / self.length


class NonMonotoneNonlinear(_RotatedElementwise):
    """Non-monotone error: e(x) = magnitude * W^T sin(W x / length + phase).

    Its Jacobian (magnitude/length) W^T diag(cos) W has eigenvalues of both signs (not monotone);
    W seeded random orthogonal (`rotate=False`: identity), phase seeded uniform in [0, 2 pi).
    """

    kind = "nonmonotone"

    def _make_phase(self, d: int, g: torch.Generator) -> torch.Tensor:
        return 2 * math.pi * torch.rand(d, generator=g, dtype=torch.float64)

    def phi(self, u: torch.Tensor) -> torch.Tensor:
        return torch.sin(u)

    @property
    def lipschitz(self) -> float:
        return abs(self.magnitude) / self.length


class Adversarial(Perturbation):
    """Error aligned with the most amplified direction: e_t(x) = magnitude * v_t, ||v_t|| = 1.

    `magnitude` is the NORM of the error vector (not per dimension). v_t is
    - `direction` (a given vector, normalised), when given;
    - for an affine Gaussian toy (has `affine_eigvals`): the eigenvector of C_t with the largest
      eigenvalue (`target="top_eig"`, the direction the plain step amplifies most once stiff), or, with
      `target="amplified"` and the sampler's `timesteps` (and `eta`), the eigenvector maximising the
      plain step's factor |a_t + b_t mu_i|;
    - otherwise (a model with `jacobian(x, t)`): per sample, the top eigenvector of the symmetric part
      of the Jacobian at x, sign fixed so that its entries sum to >= 0.
    """

    kind = "adversarial"

    def __init__(self, base: EpsModel, magnitude: float, direction: Sequence[float] | torch.Tensor | None = None,
                 target: str = "top_eig", timesteps: Sequence[int] | None = None, eta: float = 0.0, seed: int = 0):
        super().__init__(base, seed)
        self.magnitude = require_finite_number(magnitude, "adversarial.magnitude")
        require(target in ("top_eig", "amplified"),
                f"adversarial.target must be 'top_eig' or 'amplified', got {target!r}")
        self.target = target
        self.timesteps = None if timesteps is None else [int(v) for v in timesteps]
        require(target != "amplified" or self.timesteps is not None,
                "adversarial.target 'amplified' needs the sampler's timesteps")
        self.eta = require_finite_number(eta, "adversarial.eta")
        if direction is not None:
            v = torch.as_tensor(direction, dtype=torch.float64).reshape(-1)
            n = torch.linalg.vector_norm(v)
            require(bool(n > 0) and bool(torch.isfinite(v).all()), "adversarial.direction must be finite and nonzero")
            self.direction: torch.Tensor | None = v / n
        else:
            self.direction = None
            require(hasattr(base, "affine_eigvals") or hasattr(base, "jacobian"),
                    "adversarial: without a direction the base needs affine_eigvals (Gaussian toy) or jacobian")
        self._vcache: dict[int, torch.Tensor] = {}

    def _eig_direction(self, t: int) -> torch.Tensor:
        base = unwrap(self.base)
        mu = torch.as_tensor(base.affine_eigvals(t), dtype=torch.float64)
        if self.target == "top_eig":
            j = int(torch.argmax(mu))
        else:
            from .ddim import step_coefficients

            ts = self.timesteps
            assert ts is not None
            require(t in ts, f"adversarial: timestep {t} is not among the sampler's timesteps")
            i = ts.index(t)
            s = ts[i + 1] if i + 1 < len(ts) else -1
            k = step_coefficients(base.schedule, t, s, self.eta)
            j = int(torch.argmax((k.a + k.b * mu).abs()))
        vecs = getattr(base, "cov_eigvecs", None)
        if vecs is None:
            v = torch.zeros(mu.numel(), dtype=torch.float64)
            v[j] = 1.0
            return v
        return torch.as_tensor(vecs, dtype=torch.float64)[:, j].clone()

    def direction_at(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Unit directions [B, d] for this batch."""
        B, d = x.shape[0], x.shape[-1]
        if self.direction is not None:
            require(self.direction.numel() == d, f"adversarial.direction has length {self.direction.numel()}, d = {d}")
            return self.direction.to(x.dtype).expand(B, d)
        base = unwrap(self.base)
        if hasattr(base, "affine_eigvals"):
            out = torch.empty_like(x)
            for tv in torch.unique(t).tolist():
                if tv not in self._vcache:
                    self._vcache[tv] = self._eig_direction(tv)
                out[t == tv] = self._vcache[tv].to(x.dtype)
            return out
        J = base.jacobian(x, t)
        S = 0.5 * (J + J.transpose(-1, -2))
        _, vecs = torch.linalg.eigh(S)
        v = vecs[..., -1]
        sign = torch.where(v.sum(-1, keepdim=True) >= 0, 1.0, -1.0).to(v.dtype)
        return v * sign

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.base(x, t) + self.magnitude * self.direction_at(x, t)


# ------------------------------------------------------------------------------------------------
# combinators
# ------------------------------------------------------------------------------------------------
class StepLocalized(Perturbation):
    """Apply `inner` only at chosen step indices: eps~ = inner(x, t) at steps i in `steps`, base(x, t)
    elsewhere; e_t = e^inner_t at those steps and 0 elsewhere.

    `inner` is a perturbation wrapping this same base, or a spec table for make_perturbation. Without
    begin_step (no step index known) the inner model is used.
    """

    kind = "step_localized"

    def __init__(self, base: EpsModel, inner: Perturbation | Mapping[str, Any], steps: Iterable[int], seed: int = 0):
        super().__init__(base, seed)
        if isinstance(inner, Mapping):
            inner = make_perturbation(inner, base, seed=seed)
        require(isinstance(inner, Perturbation), "step_localized.inner must be a perturbation or a spec table")
        require(inner.base is base, "step_localized.inner must wrap the same base model")
        self.inner = inner
        self.steps = frozenset(int(i) for i in steps)
        require(all(i >= 0 for i in self.steps), f"step_localized.steps must be >= 0, got {sorted(self.steps)}")

    def begin_step(self, step_index: int, t: int) -> None:
        self.step_index = int(step_index)
        self.step_t = int(t)
        self.inner.begin_step(step_index, t)  # forwards to the base too

    def reset(self) -> None:
        super().reset()
        self.inner.reset()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.step_index is None or self.step_index in self.steps:
            return self.inner(x, t)
        return self.base(x, t)


class Compose(Perturbation):
    """A chain of perturbations applied in order: layers[0] wraps the base, layers[1] wraps that, ...

    eps~ = L_n(... L_2(L_1(base))); the total error is e = eps~ - base. Layers are spec tables (for
    make_perturbation) or callables `f(model) -> model`. Example "cache + quantization" of the
    affine toy: layers = [{kind = "affine_wa_quant", ...}, {kind = "cache", every = 5}] quantizes the
    network and caches its (quantized) outputs; for output quantization the order does not matter.
    """

    kind = "compose"

    def __init__(self, base: EpsModel, layers: Sequence[Mapping[str, Any] | Callable[[Any], Any]], seed: int = 0):
        super().__init__(base, seed)
        require(len(layers) >= 1, "compose.layers must hold at least one perturbation")
        model: Any = base
        self.layers: list[Any] = []
        for j, layer in enumerate(layers):
            if isinstance(layer, Mapping):
                model = make_perturbation(layer, model, seed=seed + j, field=f"compose.layers[{j}]")
            else:
                require(callable(layer), f"compose.layers[{j}] must be a spec table or a callable")
                model = layer(model)
            self.layers.append(model)
        self.outer = model

    def begin_step(self, step_index: int, t: int) -> None:
        self.step_index = int(step_index)
        self.step_t = int(t)
        fn = getattr(self.outer, "begin_step", None)
        if fn is not None:
            fn(step_index, t)   # the chain forwards down to the base
        elif hasattr(self.base, "begin_step"):
            self.base.begin_step(step_index, t)

    def reset(self) -> None:
        super().reset()
        for layer in self.layers:
            fn = getattr(layer, "reset", None)
            if fn is not None and layer is not self:
                # each layer's reset also resets its base; harmless repetition
                fn()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.outer(x, t)


# ------------------------------------------------------------------------------------------------
# factory
# ------------------------------------------------------------------------------------------------
PERTURBATIONS: dict[str, type[Perturbation]] = {
    cls.kind: cls
    for cls in (Bias, Scale, OutputQuantization, AffineWeightActQuant, Cache, IIDNoise, MonotoneNonlinear,
                NonMonotoneNonlinear, Adversarial, StepLocalized, Compose)
}
ALIASES = {"quant": "output_quant", "output_quantization": "output_quant", "wa_quant": "affine_wa_quant",
           "noise": "iid_noise", "step_local": "step_localized"}


def _params(cls: type) -> dict[str, inspect.Parameter]:
    sig = inspect.signature(cls.__init__)
    return {k: p for k, p in sig.parameters.items() if k not in ("self", "base")}


def make_perturbation(spec: Mapping[str, Any] | None, base: EpsModel, seed: int | None = None,
                      field: str = "perturbation") -> Any:
    """Build a perturbation from a table `{kind = "...", <parameters>}` (TOML style).

    kind "none" (or an empty/None spec) returns the base unchanged; a field value "none" means None
    (TOML has no null: e.g. a_bits = "none" for weight-only quantization). `seed` is used when the table has
    none. Unknown kinds or fields, and missing required fields, raise ConfigError naming the field.
    """
    if spec is None or len(spec) == 0:
        return base
    require(isinstance(spec, Mapping), f"{field} must be a table, got {type(spec).__name__}")
    require("kind" in spec, f"{field}.kind is missing; choose one of {sorted(PERTURBATIONS) + ['none']}")
    kind = ALIASES.get(str(spec["kind"]), str(spec["kind"]))
    if kind == "none":
        extra = sorted(k for k in spec if k != "kind")
        require(not extra, f"{field}: kind 'none' takes no fields, got {extra}")
        return base
    if kind not in PERTURBATIONS:
        raise ConfigError(f"{field}.kind: unknown perturbation {spec['kind']!r}; choose one of "
                          f"{sorted(PERTURBATIONS) + ['none']}")
    cls = PERTURBATIONS[kind]
    params = _params(cls)
    kwargs = {k: (None if isinstance(v, str) and v == "none" else v) for k, v in spec.items() if k != "kind"}
    for k in kwargs:
        if k not in params:
            raise ConfigError(f"{field}.{k}: unknown field for kind {kind!r}; allowed: {sorted(params)}")
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in kwargs]
    require(not missing, f"{field}.{missing[0] if missing else ''}: required for kind {kind!r}")
    if "seed" not in kwargs and seed is not None:
        kwargs["seed"] = int(seed)
    if kind == "output_quant" and isinstance(kwargs.get("range"), list):
        kwargs["range"] = tuple(kwargs["range"])
    try:
        return cls(base, **kwargs)
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(field) else f"{field}: {msg}") from exc
    except TypeError as exc:
        raise ConfigError(f"{field}: bad arguments for kind {kind!r}: {exc}") from exc
