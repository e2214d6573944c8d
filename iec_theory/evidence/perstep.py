"""Per-step quantities of statements S1-S5 at one sampling step t -> s (PAPER.md sections 2-3).

At step i the reference run (exact or full-precision model, plain DDIM) is at x_t and goes to x_s; the
efficient run arrives at xt~ = x_t + delta_t. With M_t = A_t I + B_t J_t, J_t the Jacobian of eps~(., t) at
x_t, and eps^delta = eps~(x_t, t) - eps(x_t, t) (the local error at the reference point, THEORY.md section 3):

* S1: residual ||delta_s - (M_t delta_t + B_t eps^delta)|| / ||delta_s|| with delta_s = A xt~ + B eps~(xt~) - x_s;
* S2: one step of the linear recursion dhat_s = M_t dhat_t + B_t eps^delta (the correct unrolling of S1);
* S3: ||M_t||_2 by power iteration (x coordinates) and ||M_t||_2 / A_t (xbar coordinates: since
  xbar_s = xbar_t - dsig eps and B/A = -dsig sqrt(abar_t), the xbar factor is M_t / A_t exactly);
* S4: L(lambda) = ||(1 - lambda) I + lambda B_t J_t||_2 with J_t at x_t as in the paper's formula, the extreme
  eigenvalues of the symmetric part of J_t (Lanczos), and L on the Lanczos (Ritz) subspace for every lambda at
  once (a lower bound), refined by warm-started power iteration at `direct_lambdas`. The contraction over
  the segment actually travelled is the secant ratio of `s5_step`.
S5 lives in `s5_step` (it needs the IEC iterates).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..ddim import StepCoefficients
from ..iec import IECConfig
from ..sampler import NoiseSource, StepRecord, iec_step
from .linalg import Linearization, lanczos_extremes, power_norm

__all__ = ["LinalgPlan", "StepInputs", "analyse_step", "contraction_on_subspace", "s5_step"]

Op = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LinalgPlan:
    """How much linear algebra a step gets (the profile decides)."""

    lambdas: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 11))
    power_iter: int = 30
    power_tol: float = 1e-2
    lanczos_m: int = 10
    direct_lambdas: tuple[float, ...] = (0.5, 1.0)   # L(lambda) also by direct power iteration
    fd_scales: tuple[float, ...] = ()                  # finite-difference check of J v along the top vector
    sweep_lanczos_m: int = 3                           # cheap Ritz lower estimate of ||A + B J|| at swept steps
    seed: int = 0


@dataclass
class StepInputs:
    """Everything one step's analysis needs (pure functions of x at the step's time t)."""

    index: int
    k: StepCoefficients
    x_t: torch.Tensor
    x_s: torch.Tensor
    xt_tilde: torch.Tensor
    f_ref: Op
    f_eff: Op
    linearize: Callable[[Op, torch.Tensor], Linearization] = Linearization
    extra: dict = field(default_factory=dict)


def _n(v: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(v.double()))


def _rand_like(x: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)


def contraction_on_subspace(Q: torch.Tensor, JQ: torch.Tensor, B: float, lambdas: Sequence[float]) -> list[float]:
    """max over unit y of ||((1-lam) Q + lam B JQ) y|| for orthonormal columns Q (n x m): a lower bound of L(lam)."""
    out = []
    for lam in lambdas:
        Mq = (1.0 - lam) * Q + lam * B * JQ
        out.append(float(torch.linalg.matrix_norm(Mq, 2)))
    return out


def analyse_step(inp: StepInputs, full: bool, plan: LinalgPlan, dhat: torch.Tensor | None = None,
                 sweep: bool = False) -> dict:
    """S1 (and one S2 recursion step if dhat is given) always; S3/S4 linear algebra when full; when only
    sweep, a cheap Ritz lower estimate of ||A + B J||_2 from `plan.sweep_lanczos_m` Lanczos steps.

    Returns a dict of plain numbers (and 'dhat_next' tensor when dhat is given).
    """
    k = inp.k
    A, B = k.a, k.b
    out: dict = {"index": inp.index, "t": k.t, "s": k.s, "A": A, "B": B, "dsigma": k.dsigma}
    delta_t = inp.xt_tilde - inp.x_t
    eff_xt = inp.f_eff(inp.x_t)
    eps_delta = eff_xt - inp.f_ref(inp.x_t)
    delta_s = A * inp.xt_tilde + B * inp.f_eff(inp.xt_tilde) - inp.x_s
    out.update(delta_t=_n(delta_t), delta_s=_n(delta_s), eps_delta=_n(eps_delta))
    need_lin = full or sweep or dhat is not None or _n(delta_t) > 0
    lin = inp.linearize(inp.f_eff, inp.x_t) if need_lin else None
    if lin is not None and _n(delta_t) > 0:
        pred = A * delta_t + B * lin.jvp(delta_t) + B * eps_delta
        out["s1_residual"] = _n(delta_s - pred) / max(_n(delta_s), 1e-300)
        out["s1_zeroth_order_residual"] = _n(delta_s - (A * delta_t + B * eps_delta)) / max(_n(delta_s), 1e-300)
    else:
        out["s1_residual"] = None
        out["s1_zeroth_order_residual"] = None
    if dhat is not None:
        assert lin is not None
        out["dhat_next"] = A * dhat + B * lin.jvp(dhat) + B * eps_delta
    if not full and not sweep:
        return out
    assert lin is not None
    # Lanczos on the symmetric part of J at x_t; its basis Q (with J Q, stored) is a Ritz subspace for S3 and S4
    store: list[tuple[torch.Tensor, torch.Tensor]] = []

    def symvec(v: torch.Tensor) -> torch.Tensor:
        jv_, jtv = lin.jvp(v), lin.vjp(v)
        store.append((v.reshape(-1).double(), jv_.reshape(-1).double()))
        return 0.5 * (jv_ + jtv)

    m = plan.lanczos_m if full else plan.sweep_lanczos_m
    mu_min, mu_max, _ = lanczos_extremes(symvec, _rand_like(inp.x_t, plan.seed + 31 * inp.index), m)
    out.update(mu_min_sym=mu_min, mu_max_sym=mu_max, u_min=abs(B) * mu_min, u_max=abs(B) * mu_max,
               lanczos_m=len(store))
    Q = torch.stack([q for q, _ in store], 1)
    JQ = torch.stack([j for _, j in store], 1)

    def warm(c0: float, c1: float) -> tuple[float, torch.Tensor]:
        """Ritz estimate of ||c0 I + c1 J|| on span(Q) and its maximising unit vector (the warm start)."""
        _, sv, vh = torch.linalg.svd(c0 * Q + c1 * JQ, full_matrices=False)
        return float(sv[0]), (Q @ vh[0]).reshape(inp.x_t.shape).to(inp.x_t.dtype)

    # S3: ||A I + B J||_2 at x_t
    ritz3, v3 = warm(A, B)
    if not full:
        out.update(norm_x=ritz3, norm_xbar=ritz3 / A, norm_ritz=ritz3, norm_iterations=0, norm_rel_change=None,
                   norm_converged=False, norm_kind="ritz lower estimate")
        out["jacobian_calls"] = lin.calls
        return out
    pw = power_norm(lambda v: A * v + B * lin.jvp(v), lambda u: A * u + B * lin.vjp(u), v3,
                    plan.power_iter, plan.power_tol)
    val = max(pw.value, ritz3)
    out.update(norm_x=val, norm_xbar=val / A, norm_ritz=ritz3, norm_iterations=pw.iterations,
               norm_rel_change=pw.rel_change, norm_converged=pw.converged)
    if plan.fd_scales:
        v = pw.vector
        jv = _n(lin.jvp(v))
        fd = {}
        for h in plan.fd_scales:
            fd[str(h)] = _n(inp.f_eff(inp.x_t + h * v) - eff_xt) / h / max(jv, 1e-300)
        out["fd_over_jvp"] = fd
        out["jv_top"] = jv
    # S4: L(lambda) = ||(1-lam) I + lam B J||_2 (J_t as in the paper's formula), Ritz for all lambdas
    L: dict[str, float] = {}
    direct: dict[str, dict] = {}
    for lam in plan.lambdas:
        r, v0 = warm(1 - lam, lam * B)
        L[str(lam)] = r
        if any(abs(lam - d) < 1e-9 for d in plan.direct_lambdas):
            pwl = power_norm(lambda v, lam=lam: (1 - lam) * v + lam * B * lin.jvp(v),
                             lambda u, lam=lam: (1 - lam) * u + lam * B * lin.vjp(u), v0,
                             plan.power_iter, plan.power_tol)
            direct[str(lam)] = {"value": pwl.value, "iterations": pwl.iterations, "residual": pwl.rel_change,
                                "converged": pwl.converged, "ritz": r}
            L[str(lam)] = max(r, pwl.value)
    out["contraction_L"] = L
    out["contraction_direct"] = direct
    out["jacobian_calls"] = lin.calls
    return out


def s5_step(inp: StepInputs, iec: IECConfig, L_point: float | None) -> dict:
    """S5 at an IEC step: measured ||delta^(K)|| against L^K ||delta^(0)|| + C (1 - L^K)/(1 - L) (PAPER.md S5).

    inp.xt_tilde is the IEC run's incoming state; delta^(k) = y_k - x_s with x_s the reference (plain DDIM,
    exact model). C = lam (||B (eps(x_s) - eps(x_t))|| + ||A delta_t + B eps^delta||), split into the incoming
    part lam A ||delta_t|| and the rest lam (||B (eps(x_s) - eps(x_t))|| + |B| ||eps^delta||). The secant
    contraction ||G(y_0) - G(x_s)|| / ||y_0 - x_s|| is the L the first term actually sees on the segment.
    """
    k = inp.k
    A, B = k.a, k.b
    lam = iec.lambdas[0]
    K = iec.K
    delta_t = inp.xt_tilde - inp.x_t
    eps_delta = inp.f_eff(inp.x_t) - inp.f_ref(inp.x_t)
    eff_in = inp.f_eff(inp.xt_tilde)
    y0 = A * inp.xt_tilde + B * eff_in

    def model(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return inp.f_eff(x)

    rec = StepRecord(index=inp.index, t=k.t, s=k.s, nfe=1)
    yK = iec_step(model, k, inp.xt_tilde, eff_in, None, iec, NoiseSource(), inp.index, rec)
    d0, dK = _n(y0 - inp.x_s), _n(yK - inp.x_s)

    def G(x: torch.Tensor) -> torch.Tensor:
        return (1 - lam) * x + lam * (A * inp.xt_tilde + B * inp.f_eff(x))

    secant = _n(G(y0) - G(inp.x_s)) / max(d0, 1e-300)
    c_drift = abs(B) * _n(inp.f_ref(inp.x_s) - inp.f_ref(inp.x_t))
    C = lam * (c_drift + _n(A * delta_t + B * eps_delta))
    C_in = lam * A * _n(delta_t)
    C_rest = lam * (c_drift + abs(B) * _n(eps_delta))
    out = {"index": inp.index, "t": k.t, "lambda": lam, "K": K, "corrections": rec.corrections,
           "delta_in": _n(delta_t), "delta0": d0, "deltaK": dK, "C": C, "C_incoming": C_in, "C_rest": C_rest,
           "secant_L": secant, "L_point": L_point}
    for name, L in (("bound", L_point), ("bound_secant", secant)):
        if L is None or not math.isfinite(L):
            out[name] = None
            continue
        LK = L ** K
        geo = K if abs(1 - L) < 1e-12 else (1 - LK) / (1 - L)
        out[name] = LK * d0 + C * geo
    out["bound_holds"] = None if out["bound"] is None else bool(dK <= out["bound"] * (1 + 1e-6))
    out["incoming_fraction"] = C_in / max(C_in + C_rest, 1e-300)
    return out
