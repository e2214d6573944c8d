"""Exact output law of affine samplers on Gaussian toys (THEORY.md section 7), and W2 / KL distances.

With an affine efficient model eps~(y, t) = A_t y + v_t the whole sampler (generalized DDIM, eta >= 0,
with IEC corrections, fresh or shared noise) is affine in x_T and in every Gaussian draw, so
x_0 = M x_T + sum_j N_j z_j + v is Gaussian. This module propagates the mean and the covariance
step by step, exactly (float64 rounding only):

    per step, every evaluation eps~(y) is an affine "form" in the state w (x, plus the cache h when
    the model caches) and in the step's fresh standard normals; at the end of the step the new state
    is a form L w + sum_k N_k zeta_k + o, so  mean' = L mean + o,  cov' = L cov L^T + sum_k N_k N_k^T.

Supported models: a GaussianToy (toy_models) wrapped in any chain of the affine perturbations of
`iec_theory.perturbations`: Bias, Scale, Adversarial (toy or given direction), IIDNoise (adds a
Gaussian draw per evaluation), AffineWeightActQuant with `a_bits=None` (weight quantization only:
activation quantization is not affine), Cache (eps or x0 mode; at most one cache), StepLocalized,
Compose. Output quantization and the nonlinear errors are rejected (ConfigError).

Not modelled: IEC's data-dependent early stop (tol). The law is that of the sampler that always runs
its K corrections; `ExactLaw.tol_ignored` says when the config had tol > 0.

Two paths:
- "diag": every operator is diagonal in the toy's covariance eigenbasis (the coordinates of a
  diagonal toy; V^T x for a full toy). Coordinates with equal eigenvalue and equal per-coordinate
  inputs are grouped (computed once); offsets are carried symbolically (a coefficient per registered
  vector), so a d = 1e6 toy with a structured spectrum is fast.
- "dense": d x d matrices in the original coordinates; needed when weight quantization breaks the
  commutation with the covariance (a full toy with w_bits set).
`method="auto"` picks "diag" whenever it is exact.

Product-form fast path (diag, large d): for eta = 0, the toy or a global Scale of it (eps~ = kappa eps),
x_T ~ N(0, v I), and either no IEC step or a zero data mean, each eigen-direction (variance z) evolves in
centred xbar coordinates u = xbar - m as u_s = P_i(w) u_t, w = kappa sigma_t dsigma / (z + sigma_t^2), with
P_i a polynomial in w of degree 1 + K (plain: 1 - w; each correction P <- (1 - lam) P - lam a w P + lam),
P_i(0) = 1. Factoring P_i(w) = prod_j (1 - w / w_j) gives P_i = prod_j (z + c_j) / (z + sigma_t^2)^(1+K),
c_j = sigma_t^2 - kappa sigma_t dsigma / w_j, so the whole sampler is M(z) = prod_i P_i, evaluated with a
few fused in-place products per step (numerator and denominator kept apart, renormalized every 4 steps)
instead of the general form algebra. Output: mean m (1 - M), variance M^2 v / abar_T (exact up to rounding;
checked against the general path in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .ddim import step_coefficients
from .errors import ConfigError, require
from .iec import IECConfig
from .perturbations import (
    Adversarial,
    AffineWeightActQuant,
    Bias,
    Cache,
    Compose,
    IIDNoise,
    Perturbation,
    Scale,
    StepLocalized,
    unwrap,
)
from .sampler import resolve_timesteps
from .schedules import Schedule

DT = torch.float64
FAST_MIN_DIM = 50_000   # the product-form path is used (fast="auto") above this dimension

__all__ = [
    "ExactLaw",
    "exact_output_law",
    "kl_diag",
    "kl_gaussian",
    "law_distances",
    "w2_diag",
    "w2_gaussian",
]


# ------------------------------------------------------------------------------------------------
# Gaussian distances
# ------------------------------------------------------------------------------------------------
def _psd_sqrt(S: torch.Tensor) -> torch.Tensor:
    w, V = torch.linalg.eigh(0.5 * (S + S.T))
    return (V * w.clamp_min(0).sqrt()) @ V.T


def w2_gaussian(m1: torch.Tensor, S1: torch.Tensor, m2: torch.Tensor, S2: torch.Tensor) -> float:
    """W2 between N(m1, S1) and N(m2, S2) (Bures): ||m1-m2||^2 + tr S1 + tr S2 - 2 tr (S2^1/2 S1 S2^1/2)^1/2."""
    r2 = _psd_sqrt(S2)
    cross = torch.linalg.eigvalsh(0.5 * ((r2 @ S1 @ r2) + (r2 @ S1 @ r2).T)).clamp_min(0).sqrt().sum()
    val = float(((m1 - m2) ** 2).sum() + torch.trace(S1) + torch.trace(S2) - 2 * cross)
    return math.sqrt(max(val, 0.0))


def w2_diag(m1: torch.Tensor, v1: torch.Tensor, m2: torch.Tensor, v2: torch.Tensor) -> float:
    """W2 between diagonal Gaussians: sqrt(||m1-m2||^2 + sum (sqrt v1 - sqrt v2)^2)."""
    return math.sqrt(float(((m1 - m2) ** 2).sum() + ((v1.clamp_min(0).sqrt() - v2.sqrt()) ** 2).sum()))


def kl_gaussian(m1: torch.Tensor, S1: torch.Tensor, m2: torch.Tensor, S2: torch.Tensor) -> float:
    """KL(N(m1,S1) || N(m2,S2)) = 1/2 [tr(S2^-1 S1) + (m2-m1)^T S2^-1 (m2-m1) - d + log det S2 - log det S1]."""
    d = m1.numel()
    L2 = torch.linalg.cholesky(0.5 * (S2 + S2.T))
    A = torch.cholesky_solve(S1, L2)
    dm = (m2 - m1).reshape(-1, 1)
    maha = float((dm * torch.cholesky_solve(dm, L2)).sum())
    sign, logdet1 = torch.linalg.slogdet(0.5 * (S1 + S1.T))
    if float(sign) <= 0:
        return math.inf
    logdet2 = 2 * float(torch.log(torch.diagonal(L2)).sum())
    return 0.5 * (float(torch.trace(A)) + maha - d + logdet2 - float(logdet1))


def kl_diag(m1: torch.Tensor, v1: torch.Tensor, m2: torch.Tensor, v2: torch.Tensor) -> float:
    """KL(N(m1, diag v1) || N(m2, diag v2)) = 1/2 sum [v1/v2 + (m2-m1)^2/v2 - 1 - log(v1/v2)]."""
    if bool((v1 <= 0).any()):
        return math.inf
    r = v1 / v2
    return 0.5 * float((r + (m2 - m1) ** 2 / v2 - 1 - torch.log(r)).sum())


# ------------------------------------------------------------------------------------------------
# result
# ------------------------------------------------------------------------------------------------
@dataclass
class ExactLaw:
    """The Gaussian law of the sampler's output (and optionally of every intermediate state).

    diag path: `mean` [d] and `var` [d] are in the working basis (`basis` = the toy's eigenvectors, or
    None = the coordinates); `cov` is None. dense path: `mean` [d], `cov` [d,d] in the original
    coordinates, `basis` None. `steps_mean` / `steps_var` (diag) or `steps_cov` (dense): per state
    n = 0..T when keep_steps=True.
    """

    mean: torch.Tensor
    var: torch.Tensor | None
    cov: torch.Tensor | None
    basis: torch.Tensor | None
    path: str
    timesteps: list[int]
    nfe: int
    eta: float
    tol_ignored: bool = False
    groups: int = 0
    steps_mean: torch.Tensor | None = None
    steps_var: torch.Tensor | None = None
    steps_cov: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def mean_original(self) -> torch.Tensor:
        return self.mean if self.basis is None else self.basis @ self.mean

    def cov_dense(self) -> torch.Tensor:
        """Covariance in the original coordinates (dense; small d only)."""
        if self.cov is not None:
            return self.cov
        assert self.var is not None
        if self.basis is None:
            return torch.diag(self.var)
        return (self.basis * self.var) @ self.basis.T


def law_distances(law: ExactLaw, toy: Any) -> dict[str, float]:
    """W2 (Bures), KL(law || data), KL(data || law) and the mean error to the toy's data law."""
    if law.path == "diag":
        m_data = toy.mean if law.basis is None else law.basis.T @ toy.mean
        v_data = toy.cov_eigvals
        return {"w2": w2_diag(law.mean, law.var, m_data, v_data),
                "kl": kl_diag(law.mean, law.var, m_data, v_data),
                "kl_reverse": kl_diag(m_data, v_data, law.mean, law.var),
                "mean_err": float(torch.linalg.vector_norm(law.mean - m_data))}
    S_data = toy.cov
    return {"w2": w2_gaussian(law.mean, law.cov, toy.mean, S_data),
            "kl": kl_gaussian(law.mean, law.cov, toy.mean, S_data),
            "kl_reverse": kl_gaussian(toy.mean, S_data, law.mean, law.cov),
            "mean_err": float(torch.linalg.vector_norm(law.mean - toy.mean))}


# ------------------------------------------------------------------------------------------------
# affine forms
# ------------------------------------------------------------------------------------------------
class _Form:
    """L[b] (coefficient on state block b), N[key] (on a step-local standard normal), o[vid] (offset).

    diag: coefficients are [n] tensors (or python floats); o[vid] multiplies the registered vector vid.
    dense: coefficients are [d,d] tensors; o has the single key "c" holding a [d] vector.
    None/absent entries are zero.
    """

    __slots__ = ("L", "N", "o")

    def __init__(self, L: list, N: dict | None = None, o: dict | None = None):
        self.L = L
        self.N = N or {}
        self.o = o or {}


def _axpy(x, alpha: float, y):
    """x + alpha * y for coefficient objects where None means zero."""
    if y is None:
        return x
    if x is None:
        return y * alpha if alpha != 1.0 else y
    return x + alpha * y if alpha != 1.0 else x + y


def _lin(alpha: float, f: _Form, beta: float, g: _Form) -> _Form:
    """alpha f + beta g."""
    L = [_axpy(None if a is None else a * alpha, beta, b) for a, b in zip(f.L, g.L)]
    N = {k: v * alpha for k, v in f.N.items()}
    for k, v in g.N.items():
        N[k] = _axpy(N.get(k), beta, v)
    o = {k: v * alpha for k, v in f.o.items()}
    for k, v in g.o.items():
        o[k] = _axpy(o.get(k), beta, v)
    return _Form(L, N, o)


def _scale(alpha: float, f: _Form) -> _Form:
    return _Form([None if a is None else a * alpha for a in f.L], {k: v * alpha for k, v in f.N.items()},
                 {k: v * alpha for k, v in f.o.items()})


class _Engine:
    """Backend for the two paths: how to apply an operator A and how to update the moments.

    `self.I` is the identity coefficient; applying A to it returns A itself (no product).
    """

    def __init__(self, dense: bool, n: int):
        self.dense = dense
        self.n = n
        self.I = torch.eye(n, dtype=DT) if dense else torch.ones(n, dtype=DT)

    def _mul(self, A, b):
        if b is self.I:
            return A
        return A @ b if self.dense else A * b

    def apply(self, A, f: _Form) -> _Form:
        if self.dense:
            return _Form([None if b is None else self._mul(A, b) for b in f.L],
                         {k: self._mul(A, v) for k, v in f.N.items()}, {k: A @ v for k, v in f.o.items()})
        return _Form([None if b is None else self._mul(A, b) for b in f.L],
                     {k: self._mul(A, v) for k, v in f.N.items()}, {k: A * v for k, v in f.o.items()})

    def identity(self):
        return self.I


@dataclass
class _Ctx:
    step: int
    t: int
    abar_t: float
    cache_form: dict[int, _Form]
    noise_count: int = 0


class _Program:
    """Builds eps forms for one model chain on one engine (diag or dense)."""

    def __init__(self, model: Any, toy: Any, engine: _Engine, basis: torch.Tensor | None,
                 register: Any):
        self.model = model
        self.toy = toy
        self.engine = engine
        self.basis = basis            # V for a full toy on the diag path, else None
        self.register = register      # diag: vector -> id (full-length vectors in the working basis)
        self._mu: dict[int, torch.Tensor] = {}
        self.caches: list[Cache] = [m for m in _chain(model) if isinstance(m, Cache)]
        require(len(self.caches) <= 1, "exact law: at most one Cache in the model chain")

    # --- vectors in the working basis ---------------------------------------------------------------
    def _vec(self, v: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(v, dtype=DT).reshape(-1)
        return v if self.basis is None else self.basis.T @ v

    # --- the evaluation -------------------------------------------------------------------------------
    def eps(self, m: Any, y: _Form, ctx: _Ctx) -> _Form:
        eng = self.engine
        if m is self.toy:
            if eng.dense:
                C, c = self.toy.affine(ctx.t)
                out = eng.apply(C.to(DT), y)
                out.o["c"] = _axpy(out.o.get("c"), 1.0, c.to(DT))
                return out
            mu = self._mu_t(ctx.t)
            out = eng.apply(mu, y)
            vid = self.register("data_mean", lambda: self._vec(self.toy.mean))
            out.o[vid] = _axpy(out.o.get(vid), 1.0, -math.sqrt(ctx.abar_t) * mu)
            return out
        if isinstance(m, Bias):
            out = self.eps(m.base, y, ctx)
            d = self.toy.dim
            if eng.dense:
                out.o["c"] = _axpy(out.o.get("c"), 1.0, m.bias_vector(d))
            else:
                vid = self.register(("bias", id(m)), lambda: self._vec(m.bias_vector(d)))
                out.o[vid] = _axpy(out.o.get(vid), 1.0, 1.0)
            return out
        if isinstance(m, Scale):
            return _scale(1.0 + m.scale, self.eps(m.base, y, ctx))
        if isinstance(m, Adversarial):
            out = self.eps(m.base, y, ctx)
            if m.direction is not None:
                v, key = m.direction, ("adv", id(m))
            else:
                require(unwrap(m.base) is self.toy, "exact law: adversarial direction must come from the toy")
                v, key = m._eig_direction(ctx.t), ("adv", id(m), ctx.t)
            v = m.magnitude * v
            if eng.dense:
                out.o["c"] = _axpy(out.o.get("c"), 1.0, v)
            else:
                vid = self.register(key, lambda: self._vec(v))
                out.o[vid] = _axpy(out.o.get(vid), 1.0, 1.0)
            return out
        if isinstance(m, IIDNoise):
            out = self.eps(m.base, y, ctx)
            ctx.noise_count += 1
            out.N[("iid", ctx.noise_count)] = eng.identity() * m.std
            return out
        if isinstance(m, AffineWeightActQuant):
            require(m.a_bits is None, "exact law: activation quantization (a_bits) is not affine; "
                                      "use a_bits = none for the exact law")
            require(m.base is self.toy, "exact law: affine_wa_quant must wrap the toy directly")
            if m.w_bits is None:
                return self.eps(self.toy, y, ctx)
            if eng.dense:
                Cq, c = m.quantized_affine(ctx.t)
                out = eng.apply(Cq.to(DT), y)
                out.o["c"] = _axpy(out.o.get("c"), 1.0, c.to(DT))
                return out
            require(self.toy.is_diagonal, "exact law: weight quantization of a full toy needs the dense path")
            return self.eps(self.toy, y, ctx)   # per-row quantization of a diagonal matrix is exact
        if isinstance(m, Cache):
            key = id(m)
            if m.is_refresh(ctx.step):
                e = self.eps(m.base, y, ctx)
                if m.mode == "eps":
                    ctx.cache_form[key] = e
                else:
                    ab = ctx.abar_t
                    ctx.cache_form[key] = _lin(1 / math.sqrt(ab), y, -math.sqrt(1 - ab) / math.sqrt(ab), e)
                return e
            h = ctx.cache_form[key]
            if m.mode == "eps":
                return _scale(1.0, h)
            ab = ctx.abar_t
            return _lin(1 / math.sqrt(1 - ab), y, -math.sqrt(ab) / math.sqrt(1 - ab), h)
        if isinstance(m, StepLocalized):
            return self.eps(m.inner if ctx.step in m.steps else m.base, y, ctx)
        if isinstance(m, Compose):
            return self.eps(m.outer, y, ctx)
        raise ConfigError(f"exact law: {type(m).__name__} is not an affine perturbation "
                          "(supported: bias, scale, adversarial, iid_noise, affine_wa_quant without a_bits, "
                          "cache, step_localized, compose)")

    def _mu_t(self, t: int) -> torch.Tensor:
        if t not in self._mu:
            self._mu[t] = self._mu_fn(t)
        return self._mu[t]

    _mu_fn: Any = None


# ------------------------------------------------------------------------------------------------
# the propagation
# ------------------------------------------------------------------------------------------------
def _chain(model: Any):
    """Every wrapper of a perturbation chain, outermost first (StepLocalized -> inner, Compose -> outer,
    any other Perturbation -> base), ending with the exact model."""
    m = model
    while True:
        yield m
        if isinstance(m, StepLocalized):
            m = m.inner
        elif isinstance(m, Compose):
            m = m.outer
        elif isinstance(m, Perturbation):
            m = m.base
        else:
            return


def _needs_dense(model: Any, toy: Any) -> bool:
    return not toy.is_diagonal and any(isinstance(m, AffineWeightActQuant) and m.w_bits is not None
                                       for m in _chain(model))


def exact_output_law(
    model: Any,
    schedule: Schedule,
    T: int | Sequence[int],
    eta: float = 0.0,
    iec: IECConfig | None = None,
    *,
    spacing: str = "uniform",
    x_T_mean: torch.Tensor | None = None,
    x_T_var: float | torch.Tensor = 1.0,
    method: str = "auto",
    keep_steps: bool = False,
    group: bool = True,
    scheme: str = "ddim",
    chunk: int = 1 << 16,
    fast: str = "auto",
) -> ExactLaw:
    """Mean and covariance of the sampler's output x_0 (and of every state with keep_steps) exactly.

    `model` is a GaussianToy or an affine perturbation chain around one; x_T ~ N(x_T_mean (default 0),
    x_T_var I) (x_T_var may be a [d] vector of variances in the working basis for the diag path).
    IEC corrections follow `iec` (selection, K, lambdas, fresh/shared noise); tol is ignored.
    `scheme`: "ddim" (with IEC when `iec` is given), "heun" (iec_theory.baselines.heun, eta = 0) or
    "repeat" (naive repetition: IEC's loop with every evaluation at x_t, iec_theory.baselines.repeat).
    `fast`: "auto" uses the product-form path (module docstring) for d > FAST_MIN_DIM when it applies;
    "never" / "always" force the choice (always raises when it does not apply).
    """
    require(scheme in ("ddim", "heun", "repeat"), f"scheme must be 'ddim', 'heun' or 'repeat', got {scheme!r}")
    require(scheme != "heun" or eta == 0, "scheme 'heun' needs eta = 0")
    toy = unwrap(model)
    require(hasattr(toy, "affine_eigvals") and hasattr(toy, "cov_eigvals"),
            f"exact law needs a GaussianToy at the core of the model, got {type(toy).__name__}")
    require(method in ("auto", "diag", "dense"), f"method must be 'auto', 'diag' or 'dense', got {method!r}")
    require(eta >= 0, f"eta must be >= 0, got {eta}")
    ts = resolve_timesteps(schedule, T, spacing)
    selected = iec.select.resolve(ts) if iec is not None and iec.K > 0 else frozenset()
    dense = _needs_dense(model, toy) if method == "auto" else method == "dense"
    if not dense:
        require(not _needs_dense(model, toy), "exact law: this model needs method='dense' (weight quantization "
                                               "of a full-covariance toy)")
    if hasattr(model, "reset"):
        model.reset()
    d = toy.dim
    if dense:
        return _run_dense(model, toy, schedule, ts, eta, iec, selected, x_T_mean, x_T_var, keep_steps, scheme)
    require(isinstance(chunk, int) and chunk >= 1, f"chunk must be an integer >= 1, got {chunk!r}")
    require(fast in ("auto", "never", "always"), f"fast must be 'auto', 'never' or 'always', got {fast!r}")
    kappa = _product_form_kappa(model, toy, eta, scheme, x_T_mean, x_T_var, keep_steps, selected)
    if fast == "always":
        require(kappa is not None, "exact law: the product-form fast path does not apply to this configuration")
    if kappa is not None and (fast == "always" or (fast == "auto" and d > FAST_MIN_DIM)):
        return _run_product_form(toy, kappa, schedule, ts, iec, selected, float(x_T_var), chunk)
    return _run_diag(model, toy, schedule, ts, eta, iec, selected, x_T_mean, x_T_var, keep_steps, group, d,
                     scheme, chunk)


def _steps(program: _Program, schedule: Schedule, ts: list[int], eta: float, iec: IECConfig | None,
           selected: frozenset[int], nb: int, on_step: Any, scheme: str) -> int:
    """Run the sampler symbolically; on_step(i, x_form, h_form) updates the moments. Returns NFE."""
    eng = program.engine
    I_ = eng.identity()
    nfe = 0
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        k = step_coefficients(schedule, t, s, eta)
        x = _Form([I_] + [None] * (nb - 1))
        cache_form: dict[int, _Form] = {}
        if nb == 2:
            cache_form[id(program.caches[0])] = _Form([None, I_])
        ctx = _Ctx(i, t, k.abar_t, cache_form)
        e0 = program.eps(program.model, x, ctx)
        nfe += 1
        y = _lin(k.a, x, k.b, e0)
        if k.c != 0.0:
            y.N[("z", 0)] = _axpy(y.N.get(("z", 0)), k.c, I_)
        if scheme == "heun" and s >= 0:
            ctx_s = _Ctx(i, s, k.abar_s, cache_form, ctx.noise_count)
            e2 = program.eps(program.model, y, ctx_s)
            ctx.noise_count = ctx_s.noise_count
            nfe += 1
            y = _lin(k.a, x, 0.5 * k.b, _lin(1.0, e0, 1.0, e2))
        if i in selected and scheme != "heun":
            assert iec is not None
            for j, lam in enumerate(iec.lambdas, start=1):
                ej = program.eps(program.model, x if scheme == "repeat" else y, ctx)
                nfe += 1
                yhat = _lin(k.a, x, k.b, ej)
                if k.c != 0.0:
                    key = ("z", 0) if iec.noise == "shared" else ("z", j)
                    yhat.N[key] = _axpy(yhat.N.get(key), k.c, I_)
                y = _lin(1.0 - lam, y, lam, yhat)
        h = cache_form[id(program.caches[0])] if nb == 2 else None
        on_step(i, y, h)
    return nfe


def _product_form_kappa(model: Any, toy: Any, eta: float, scheme: str, x_T_mean: Any, x_T_var: Any,
                        keep_steps: bool, selected: frozenset[int]) -> float | None:
    """kappa when the product-form fast path applies (module docstring), else None."""
    if eta != 0 or scheme != "ddim" or x_T_mean is not None or keep_steps:
        return None
    if torch.as_tensor(x_T_var).numel() != 1:
        return None
    kappa = 1.0
    m = model
    while isinstance(m, Scale):
        kappa *= 1.0 + m.scale
        m = m.base
    if m is not toy or kappa == 0.0:
        return None
    if selected and bool((torch.as_tensor(toy.mean) != 0).any()):
        return None
    return kappa


def _run_product_form(toy: Any, kappa: float, schedule: Schedule, ts: list[int], iec: IECConfig | None,
                      selected: frozenset[int], v_T: float, chunk: int) -> ExactLaw:
    """The product-form fast path (module docstring)."""
    steps = []   # per step: (q, [real c], [(alpha, beta) of complex pairs: 1 + alpha z + beta z^2 with scale], e)
    log_scale = 0.0
    sign = 1.0
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        sig_t, sig_s = schedule.sigma(t), schedule.sigma(s)
        q = sig_t * sig_t
        W = kappa * sig_t * (sig_t - sig_s)
        a = math.sqrt(schedule.abar(s) / schedule.abar(t))
        P = np.array([1.0, -1.0])                      # ascending coefficients in w
        if i in selected:
            assert iec is not None
            for lam in iec.lambdas:
                wP = np.concatenate([[0.0], P])
                P = np.concatenate([(1 - lam) * P, [0.0]]) - lam * a * wP
                P[0] += lam
        roots = np.roots(P[::-1])                      # the w_j; P(0) = 1 = prod(1 - w/w_j) * 1
        c_all = q - W / roots
        reals, pairs = [], []
        used = np.zeros(len(c_all), dtype=bool)
        for j, c in enumerate(c_all):
            if used[j]:
                continue
            used[j] = True
            if abs(c.imag) <= 1e-12 * max(abs(c.real), q, 1e-300):
                reals.append(float(c.real))
            else:
                k = next(k for k in range(j + 1, len(c_all)) if not used[k] and abs(c_all[k] - np.conj(c)) <= 1e-9
                         * abs(c))
                used[k] = True
                pairs.append((2 * c.real, abs(c) ** 2))
        steps.append((q, reals, pairs, len(P) - 1))
    z_all = torch.as_tensor(toy.cov_eigvals, dtype=DT)
    d = z_all.numel()
    M = torch.empty(d, dtype=DT)
    for lo in range(0, d, chunk):
        z = z_all[lo:lo + chunk]
        z2 = z * z
        N = torch.ones_like(z)
        Dn = torch.ones_like(z)
        acc = torch.ones_like(z)
        log_scale = 0.0
        sign = 1.0
        for n_step, (q, reals, pairs, deg) in enumerate(steps):
            for c in reals:
                if abs(c) < 1e-8 * q:
                    N.mul_(z + c)
                else:
                    N.addcmul_(N, z, value=1.0 / c)     # N (1 + z / c); the factor c goes to the scale
                    log_scale += math.log(abs(c))
                    sign *= 1.0 if c > 0 else -1.0
            for alpha, beta in pairs:                   # (z^2 + alpha z + beta) = beta (1 + alpha/beta z + z^2/beta)
                poly = torch.mul(z2, 1.0 / beta).add_(z, alpha=alpha / beta)
                N.addcmul_(N, poly)                     # N (1 + poly)
                log_scale += math.log(beta)
            for _ in range(deg):
                Dn.addcmul_(Dn, z, value=1.0 / q)      # D (1 + z / q); the factor q goes to the scale
                log_scale -= math.log(q)
            if n_step % 4 == 3 or n_step == len(steps) - 1:
                acc.mul_(N.div_(Dn).mul_(math.exp(log_scale) * sign))
                N.fill_(1.0)
                Dn.fill_(1.0)
                log_scale, sign = 0.0, 1.0
        M[lo:lo + chunk] = acc
    basis = None if toy.is_diagonal else torch.as_tensor(toy.cov_eigvecs, dtype=DT)
    m = torch.as_tensor(toy.mean, dtype=DT) if basis is None else basis.T @ torch.as_tensor(toy.mean, dtype=DT)
    mean = m * (1.0 - M)
    var = M * M * (v_T / schedule.abar(ts[0]))
    nfe = len(ts) + (iec.K * len(selected) if iec is not None else 0)
    return ExactLaw(mean=mean, var=var, cov=None, basis=basis, path="diag", timesteps=ts, nfe=nfe, eta=0.0,
                    tol_ignored=bool(iec is not None and iec.tol > 0 and selected), groups=d,
                    info={"fast": "product_form", "kappa": kappa})


def _run_diag(model, toy, schedule, ts, eta, iec, selected, x_T_mean, x_T_var, keep_steps, group, d,
              scheme, chunk) -> ExactLaw:
    basis = None if toy.is_diagonal else torch.as_tensor(toy.cov_eigvecs, dtype=DT)
    s2_full = torch.as_tensor(toy.cov_eigvals, dtype=DT)
    vectors: dict[Any, int] = {}
    vec_list: list[torch.Tensor] = []

    def register(key: Any, make: Any) -> int:
        if key not in vectors:
            vectors[key] = len(vec_list)
            vec_list.append(torch.as_tensor(make(), dtype=DT).reshape(-1))
        return vectors[key]

    xT_var_full = torch.as_tensor(x_T_var, dtype=DT).expand(d).clone()
    # grouping: coordinates with the same eigenvalue and the same x_T variance share all coefficients
    if group:
        key = torch.stack([s2_full, xT_var_full], 1).numpy()
        if np.all(key[:, 1] == key[0, 1]):
            uniq, inv = np.unique(key[:, 0], return_inverse=True)
            uniq = np.stack([uniq, np.full_like(uniq, key[0, 1])], 1)
        else:
            uniq, inv = np.unique(key, axis=0, return_inverse=True)
        inv_t = torch.from_numpy(inv.reshape(-1).astype(np.int64))
        s2 = torch.from_numpy(np.ascontiguousarray(uniq[:, 0]))
        xT_var = torch.from_numpy(np.ascontiguousarray(uniq[:, 1]))
    else:
        inv_t = None
        s2, xT_var = s2_full, xT_var_full
    n_groups = s2.numel()
    xT_vid = None
    if x_T_mean is not None:
        xT_vid = register("x_T_mean", lambda: torch.as_tensor(x_T_mean, dtype=DT).reshape(-1).expand(d).clone()
                          if basis is None else basis.T @ torch.as_tensor(x_T_mean, dtype=DT).reshape(-1))

    def run_chunk(s2c: torch.Tensor, xvc: torch.Tensor) -> tuple[dict, torch.Tensor, list, list, int]:
        n = s2c.numel()
        eng = _Engine(False, n)
        program = _Program(model, toy, eng, basis, register)
        nb = 2 if program.caches else 1

        def mu_fn(t: int) -> torch.Tensor:
            a = schedule.abar(t)
            return math.sqrt(1 - a) / (a * s2c + (1 - a))

        program._mu_fn = mu_fn
        # state moments: mean as symbolic offsets per block, cov blocks
        mean = [{} if xT_vid is None else {xT_vid: torch.ones(n, dtype=DT)}, {}]
        cov = {(0, 0): xvc.clone(), (0, 1): torch.zeros(n, dtype=DT), (1, 1): torch.zeros(n, dtype=DT)}
        hist_mean: list[dict] = []
        hist_var: list[torch.Tensor] = []
        if keep_steps:
            hist_mean.append(dict(mean[0]))
            hist_var.append(cov[(0, 0)].clone())

        def moments(blocks: list[_Form]) -> None:
            new_mean = []
            for f in blocks:
                m: dict = {}
                for p in range(nb):
                    Lp = f.L[p]
                    if Lp is None:
                        continue
                    for vid, cf in mean[p].items():
                        m[vid] = _axpy(m.get(vid), 1.0, Lp * cf)
                for vid, cf in f.o.items():
                    m[vid] = _axpy(m.get(vid), 1.0, cf)
                new_mean.append(m)
            new_cov = {}
            for a_ in range(nb):
                for b_ in range(a_, nb):
                    fa, fb = blocks[a_], blocks[b_]
                    acc = None
                    for p in range(nb):
                        for q in range(nb):
                            if fa.L[p] is None or fb.L[q] is None:
                                continue
                            S = cov[(min(p, q), max(p, q))]
                            term = fa.L[p] * fb.L[q] * S
                            acc = term if acc is None else acc + term
                    for kk, va in fa.N.items():
                        vb = fb.N.get(kk)
                        if vb is not None:
                            acc = va * vb if acc is None else acc + va * vb
                    new_cov[(a_, b_)] = torch.zeros(n, dtype=DT) if acc is None else acc
            for idx, m in enumerate(new_mean):
                mean[idx] = m
            for kk, v in new_cov.items():
                cov[kk] = v

        def on_step(i: int, y: _Form, h: _Form | None) -> None:
            moments([y] if h is None else [y, h])
            if keep_steps:
                hist_mean.append(dict(mean[0]))
                hist_var.append(cov[(0, 0)].clone())

        nfe = _steps(program, schedule, ts, eta, iec, selected, nb, on_step, scheme)
        return mean[0], cov[(0, 0)], hist_mean, hist_var, nfe

    def full(cf: Any, n: int) -> torch.Tensor:
        return torch.as_tensor(cf, dtype=DT).expand(n)

    def concat(dicts: list[dict], sizes: list[int]) -> dict:
        keys = {k for dct in dicts for k in dct}
        return {k: torch.cat([full(dct.get(k, 0.0), n) for dct, n in zip(dicts, sizes)]) for k in keys}

    bounds = list(range(0, n_groups, chunk)) + [n_groups]
    parts = [run_chunk(s2[lo:hi], xT_var[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
    sizes = [hi - lo for lo, hi in zip(bounds[:-1], bounds[1:])]
    nfe = parts[0][4]
    mean0 = concat([p[0] for p in parts], sizes)
    var0 = torch.cat([p[1] for p in parts])
    hist_mean = [concat([p[2][j] for p in parts], sizes) for j in range(len(parts[0][2]))]
    hist_var = [torch.cat([p[3][j] for p in parts]) for j in range(len(parts[0][3]))]
    n = n_groups

    def expand(coefs: dict, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.zeros(d, dtype=DT)
        for vid, cf in coefs.items():
            c = torch.as_tensor(cf, dtype=DT)
            if c.ndim > 0 and inv_t is not None:
                c = c[inv_t]
            m = m + c * vec_list[vid]
        v = var[inv_t] if inv_t is not None else var
        return m, v

    m_out, v_out = expand(mean0, var0)
    steps_mean = steps_var = None
    if keep_steps:
        pairs = [expand(c, v) for c, v in zip(hist_mean, hist_var)]
        steps_mean = torch.stack([p[0] for p in pairs])
        steps_var = torch.stack([p[1] for p in pairs])
    return ExactLaw(mean=m_out, var=v_out, cov=None, basis=basis, path="diag", timesteps=ts, nfe=nfe, eta=float(eta),
                    tol_ignored=bool(iec is not None and iec.tol > 0 and selected), groups=n,
                    steps_mean=steps_mean, steps_var=steps_var)


def _run_dense(model, toy, schedule, ts, eta, iec, selected, x_T_mean, x_T_var, keep_steps, scheme) -> ExactLaw:
    d = toy.dim
    eng = _Engine(True, d)
    program = _Program(model, toy, eng, None, None)
    nb = 2 if program.caches else 1
    var0 = torch.as_tensor(x_T_var, dtype=DT)
    S0 = torch.diag(var0.expand(d).clone()) if var0.ndim <= 1 else var0.clone()
    m0 = torch.zeros(d, dtype=DT) if x_T_mean is None else torch.as_tensor(x_T_mean, dtype=DT).reshape(-1).clone()
    mean = [m0, torch.zeros(d, dtype=DT)]
    cov = {(0, 0): S0, (0, 1): torch.zeros(d, d, dtype=DT), (1, 1): torch.zeros(d, d, dtype=DT)}
    hist_mean = [m0.clone()] if keep_steps else []
    hist_cov = [S0.clone()] if keep_steps else []

    # square-root form cov = R R^T while no noise has entered (one product per step instead of two)
    fac: dict[str, torch.Tensor | None] = {"R": None}
    if nb == 1:
        fac["R"] = torch.diag(var0.expand(d).sqrt()) if var0.ndim <= 1 else torch.linalg.cholesky(S0)

    def cov00() -> torch.Tensor:
        R = fac["R"]
        return cov[(0, 0)] if R is None else R @ R.T

    def on_step(i: int, y: _Form, h: _Form | None) -> None:
        blocks = [y] if h is None else [y, h]
        new_mean = []
        for f in blocks:
            m = f.o.get("c", torch.zeros(d, dtype=DT))
            for p in range(nb):
                if f.L[p] is not None:
                    m = m + f.L[p] @ mean[p]
            new_mean.append(m)
        if fac["R"] is not None and not y.N:
            mean[0] = new_mean[0]
            L = y.L[0]
            fac["R"] = fac["R"] if L is eng.I else (torch.zeros(d, d, dtype=DT) if L is None else L @ fac["R"])
            if keep_steps:
                hist_mean.append(mean[0].clone())
                hist_cov.append(cov00())
            return
        if fac["R"] is not None:
            cov[(0, 0)] = cov00()
            fac["R"] = None
        new_cov = {}
        for a_ in range(nb):
            # L_a S (for all columns q), then times L_b^T
            LS = [None] * nb
            for q in range(nb):
                acc = None
                for p in range(nb):
                    if blocks[a_].L[p] is None:
                        continue
                    S = cov[(p, q)] if p <= q else cov[(q, p)].T
                    acc = _axpy(acc, 1.0, blocks[a_].L[p] @ S)
                LS[q] = acc
            for b_ in range(a_, nb):
                acc = torch.zeros(d, d, dtype=DT)
                for q in range(nb):
                    if LS[q] is not None and blocks[b_].L[q] is not None:
                        acc = acc + LS[q] @ blocks[b_].L[q].T
                for kk, va in blocks[a_].N.items():
                    vb = blocks[b_].N.get(kk)
                    if vb is not None:
                        acc = acc + va @ vb.T
                new_cov[(a_, b_)] = acc
        for idx, m in enumerate(new_mean):
            mean[idx] = m
        for kk, v in new_cov.items():
            cov[kk] = 0.5 * (v + v.T) if kk[0] == kk[1] else v
        if keep_steps:
            hist_mean.append(mean[0].clone())
            hist_cov.append(cov[(0, 0)].clone())

    nfe = _steps(program, schedule, ts, eta, iec, selected, nb, on_step, scheme)
    return ExactLaw(mean=mean[0], var=None, cov=cov00(), basis=None, path="dense", timesteps=ts, nfe=nfe,
                    eta=float(eta), tol_ignored=bool(iec is not None and iec.tol > 0 and selected), groups=d,
                    steps_mean=torch.stack(hist_mean) if keep_steps else None,
                    steps_cov=torch.stack(hist_cov) if keep_steps else None)
