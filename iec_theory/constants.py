"""Local constants of an eps model at a step (THEORY.md section 3): Lipschitz L and monotonicity m.

    L = sup ||J||_2            m = inf lambda_min((J + J^T) / 2)        (J = d eps / dx at time t)

both taken over a SET of states: for the theorems the set is the segment between the two states the
step compares (reference and perturbed), because the mean-value identity

    eps(x~) - eps(x) = (int_0^1 J(x + s (x~ - x)) ds) (x~ - x)

gives <eps(x~) - eps(x), x~ - x> >= m ||x~ - x||^2 and ||eps(x~) - eps(x)|| <= L ||x~ - x|| with m, L
the worst case over the segment.  In xbar = x / sqrt(abar_t) the constants are mbar = sqrt(abar_t) m,
Lbar = sqrt(abar_t) L.

Exact (toys): Gaussian toys have a constant Jacobian C_t (symmetric, eigenvalues `affine_eigvals`), so the
segment worst case is exact; for mixtures the analytic Jacobian is evaluated at `n` equally spaced points
of the segment (endpoints included; default 65) and the worst point is taken (the exact value up to the
sampling of the segment).  Perturbed models (iec_theory.perturbations) get their Jacobian from the base's
plus the error's where that is known in closed form (bias, iid noise: unchanged; scale: (1 + s) J;
monotone / non-monotone nonlinear: + autograd of the stateless error); other wrappers (quantization,
cache, adversarial with x-dependent direction, combinators) are not Lipschitz-certified and return None.

Estimators (any differentiable eps model, e.g. a real network): `estimate_lipschitz` (power iteration
on J^T J with torch.func.jvp / vjp) and `estimate_monotonicity` (Lanczos on the symmetric part
(J + J^T)/2, built from one JVP and one VJP per iteration); both run from several random starts and
return an `Estimate` with the spread over starts.  Power iteration and Lanczos converge from inside the
spectrum: the Lipschitz estimate is a lower bound of the true value, the monotonicity estimate an upper
bound of the true lambda_min, each up to the iteration's convergence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import require

__all__ = [
    "Estimate",
    "SegmentConstants",
    "constants_from_jacobians",
    "estimate_lipschitz",
    "estimate_monotonicity",
    "exact_jacobian",
    "rayleigh_along",
    "segment_constants",
]

DEFAULT_SEGMENT_POINTS = 65     # points on a segment whose Jacobian's length scale is unknown (the maximum)
POINTS_PER_SCALE = 16           # otherwise: this many points per length scale of the Jacobian ...
MIN_SEGMENT_POINTS = 5          # ... and at least this many ...
MAX_SEGMENT_POINTS = 4097       # ... and at most this many; then
REFINE_POINTS = 17              # two refinements around the worst point, this many points each


@dataclass(frozen=True)
class SegmentConstants:
    """Worst-case constants of a model over a set of states (in x coordinates)."""

    m: float          # inf of lambda_min of the symmetric part (may be negative)
    L: float          # sup of the spectral norm
    exact: bool       # True when the constants are exact (constant Jacobian), False when sampled
    points: int       # number of states the worst case was taken over
    rigorous: bool = False   # True for rigorous bounds that are not exact (interval bounds of elementwise errors)

    @property
    def certified(self) -> bool:
        """Exact or rigorous (a proof), as opposed to sampled over the segment (an estimate)."""
        return self.exact or self.rigorous

    def xbar(self, abar_t: float) -> tuple[float, float]:
        """(mbar, Lbar) of xbar -> eps(sqrt(abar_t) xbar)."""
        s = math.sqrt(abar_t)
        return s * self.m, s * self.L


@dataclass
class Estimate:
    """An estimated constant per sample with its spread over random starts."""

    value: np.ndarray            # [B] best estimate per sample
    spread: np.ndarray           # [B] max - min over starts
    std: np.ndarray              # [B] standard deviation over starts
    samples: np.ndarray          # [n_starts, B]
    method: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Estimate({self.method}: value={self.value}, spread={self.spread})"


# ------------------------------------------------------------------------------------------------
# exact Jacobians
# ------------------------------------------------------------------------------------------------
def _tt(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)


def _autograd_jacobian(fn: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """Per-sample Jacobians [n, d, d] of a row-wise map fn: [n, d] -> [n, d] (d reverse passes)."""
    X = X.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = fn(X)
        d = out.shape[-1]
        rows = []
        for j in range(d):
            (g,) = torch.autograd.grad(out[:, j].sum(), X, retain_graph=j < d - 1)
            rows.append(g)
    return torch.stack(rows, dim=1).detach()


def _elementwise_error_jacobian(model: Any, X: torch.Tensor) -> torch.Tensor:
    """Analytic Jacobian of e(x) = mag W^T phi(W x / len + phase): (mag / len) W^T diag(phi'(.)) W."""
    from . import perturbations as P

    d = X.shape[-1]
    W = model.W(d)
    u = (X if W is None else X @ W.to(X.dtype).T) / model.length + model.phase(d).to(X.dtype)
    dphi = 1.0 - torch.tanh(u) ** 2 if isinstance(model, P.MonotoneNonlinear) else torch.cos(u)
    dphi = (model.magnitude / model.length) * dphi                   # [n, d]
    if W is None:
        return torch.diag_embed(dphi)
    W = W.to(X.dtype)
    return torch.einsum("ji,nj,jk->nik", W, dphi, W)


def exact_jacobian(model: Any, X: torch.Tensor, t: int) -> torch.Tensor | None:
    """d model / dx at the rows of X ([n, d] -> [n, d, d]), or None when not certifiable.

    Exact models use their analytic `jacobian`; perturbation wrappers add their error's Jacobian where
    it is known (see the module docstring).  Never advances the state of a stateful wrapper.
    """
    from . import perturbations as P

    if isinstance(model, P.Perturbation):
        Jb = exact_jacobian(model.base, X, t)
        if Jb is None:
            return None
        if isinstance(model, (P.Bias, P.IIDNoise)):
            return Jb
        if isinstance(model, P.Scale):
            return (1.0 + model.scale) * Jb
        if isinstance(model, (P.MonotoneNonlinear, P.NonMonotoneNonlinear)):
            return Jb + _elementwise_error_jacobian(model, X)
        if isinstance(model, P.Adversarial) and (model.direction is not None or hasattr(P.unwrap(model.base),
                                                                                         "affine_eigvals")):
            return Jb  # the error is constant in x (per timestep)
        return None
    jac = getattr(model, "jacobian", None)
    if jac is not None:
        return jac(X, _tt(X, t))
    return _autograd_jacobian(lambda Y: model(Y, _tt(Y, t)), X)


def constants_from_jacobians(J: torch.Tensor) -> tuple[float, float]:
    """(m, L) = (min lambda_min(sym J), max ||J||_2) over a stack of Jacobians [n, d, d]."""
    S = 0.5 * (J + J.transpose(-1, -2))
    ev = torch.linalg.eigvalsh(S)
    m = float(ev[..., 0].min())
    if float((J - S).abs().max()) <= 1e-13 * float(J.abs().max() + 1e-300):
        L = float(ev.abs().amax())          # symmetric: spectral norm = largest |eigenvalue|
    else:
        L = float(torch.linalg.matrix_norm(J, ord=2).max())
    return m, L


def segment_constants(model: Any, x0: torch.Tensor, x1: torch.Tensor, t: int,
                      n: int | None = None) -> SegmentConstants | None:
    """Worst-case (m, L) of `model(., t)` over the segment [x0, x1] (each a single state [d] or [1, d]).

    Constant-Jacobian models (Gaussian toys, and their bias / scale / iid-noise perturbations) are exact.
    Elementwise nonlinear errors (monotone / non-monotone wrappers) are bounded rigorously by intervals:
    along the segment each coordinate's phi'(u_j) lies in an exactly computed interval [lo_j, hi_j], so
    J_e lies between (mag/len) W^T diag(lo) W and (mag/len) W^T diag(hi) W in the Loewner order; with a
    constant symmetric base Jacobian C this gives m >= lambda_min(C + W^T D_lo W) and
    L <= max(|lambda_min(C + W^T D_lo W)|, |lambda_max(C + W^T D_hi W)|) (exact when the segment is a
    point).  Other models (mixtures, and elementwise errors on them): the Jacobian is
    evaluated at equally spaced points (POINTS_PER_SCALE per `length_scale`, between MIN_SEGMENT_POINTS
    and MAX_SEGMENT_POINTS; DEFAULT_SEGMENT_POINTS when the scale is unknown, or `n` when given).
    None when the model's Jacobian is not certifiable (quantization, cache, ...).
    """
    from . import perturbations as P

    x0 = x0.reshape(1, -1).to(torch.float64)
    x1 = x1.reshape(1, -1).to(torch.float64)
    const = _constant_jacobian(model)
    if const is not None:
        J = exact_jacobian(model, x0, t)
        if J is None:
            return None
        m, L = constants_from_jacobians(J)
        return SegmentConstants(m, L, True, 1)
    if isinstance(model, (P.MonotoneNonlinear, P.NonMonotoneNonlinear)) and _constant_jacobian(model.base):
        return _elementwise_segment_constants(model, x0, x1, t)
    if n is None:
        n = DEFAULT_SEGMENT_POINTS
        ell = length_scale(model, t)
        if ell is not None and math.isfinite(ell) and ell > 0:  # POINTS_PER_SCALE points per length scale
            seg = float(torch.linalg.vector_norm(x1 - x0))
            n = int(min(MAX_SEGMENT_POINTS, max(MIN_SEGMENT_POINTS, 1 + math.ceil(POINTS_PER_SCALE * seg / ell))))
    s = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    vals = _pointwise_constants(model, x0, x1, s, t)
    if vals is None:
        return None
    mp, Lp = vals
    m, L = float(mp.min()), float(Lp.max())
    points = n
    # refine around the worst sampled points (twice, REFINE_POINTS each): the sampled extremum of a smooth
    # function converges quadratically in the spacing, the refinement makes the residual negligible
    for arr, worst_is_min in ((mp, True), (Lp, False)):
        grid = s
        vals_k = arr
        for _ in range(2):
            i = int(torch.argmin(vals_k)) if worst_is_min else int(torch.argmax(vals_k))
            lo, hi = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, grid.numel() - 1)])
            if hi <= lo:
                break
            grid = torch.linspace(lo, hi, REFINE_POINTS, dtype=torch.float64)
            r = _pointwise_constants(model, x0, x1, grid, t)
            points += REFINE_POINTS
            vals_k = r[0] if worst_is_min else r[1]
            if worst_is_min:
                m = min(m, float(vals_k.min()))
            else:
                L = max(L, float(vals_k.max()))
    return SegmentConstants(m, L, False, points)


def _pointwise_constants(model: Any, x0: torch.Tensor, x1: torch.Tensor, s: torch.Tensor,
                         t: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(lambda_min(sym J), ||J||_2) at the points x0 + s (x1 - x0), in chunks."""
    ms, Ls = [], []
    for chunk in torch.split(s.unsqueeze(1), 256):
        J = exact_jacobian(model, x0 + chunk * (x1 - x0), t)
        if J is None:
            return None
        S = 0.5 * (J + J.transpose(-1, -2))
        ev = torch.linalg.eigvalsh(S)
        ms.append(ev[:, 0])
        if float((J - S).abs().max()) <= 1e-13 * float(J.abs().max() + 1e-300):
            Ls.append(ev.abs().amax(-1))
        else:
            Ls.append(torch.linalg.matrix_norm(J, ord=2))
    return torch.cat(ms), torch.cat(Ls)


def _phi_prime_interval(kind: str, ua: torch.Tensor, ub: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact range [lo, hi] of phi'(u) for u on each interval [min(ua, ub), max(ua, ub)]."""
    lo_u, hi_u = torch.minimum(ua, ub), torch.maximum(ua, ub)
    if kind == "monotone":   # phi' = sech^2 = 1 - tanh^2: largest at the point of smallest |u|
        near = torch.where((lo_u <= 0) & (hi_u >= 0), torch.zeros_like(lo_u), torch.minimum(lo_u.abs(), hi_u.abs()))
        far = torch.maximum(lo_u.abs(), hi_u.abs())
        return 1.0 - torch.tanh(far) ** 2, 1.0 - torch.tanh(near) ** 2
    # phi' = cos: endpoints, plus +1 at 2 pi k and -1 at pi + 2 pi k inside the interval
    ca, cb = torch.cos(lo_u), torch.cos(hi_u)
    two_pi = 2.0 * math.pi
    has_max = torch.floor(hi_u / two_pi) >= torch.ceil(lo_u / two_pi)
    has_min = torch.floor((hi_u - math.pi) / two_pi) >= torch.ceil((lo_u - math.pi) / two_pi)
    hi = torch.where(has_max, torch.ones_like(ca), torch.maximum(ca, cb))
    lo = torch.where(has_min, -torch.ones_like(ca), torch.minimum(ca, cb))
    return lo, hi


def _elementwise_segment_constants(model: Any, x0: torch.Tensor, x1: torch.Tensor, t: int) -> SegmentConstants:
    """Interval (Loewner) bounds for an elementwise error on a constant symmetric base Jacobian."""
    from . import perturbations as P

    d = x0.shape[-1]
    W = model.W(d)
    W = torch.eye(d, dtype=torch.float64) if W is None else W.to(torch.float64)
    ph = model.phase(d).to(torch.float64)
    ua = (x0 @ W.T)[0] / model.length + ph
    ub = (x1 @ W.T)[0] / model.length + ph
    lo, hi = _phi_prime_interval("monotone" if isinstance(model, P.MonotoneNonlinear) else "sine", ua, ub)
    c = model.magnitude / model.length
    d_lo, d_hi = (c * lo, c * hi) if c >= 0 else (c * hi, c * lo)
    C = exact_jacobian(model.base, x0, t)[0]
    C = 0.5 * (C + C.T)
    e_lo = torch.linalg.eigvalsh(C + (W.T * d_lo) @ W)
    e_hi = torch.linalg.eigvalsh(C + (W.T * d_hi) @ W)
    m = float(e_lo[0])
    L = max(abs(float(e_lo[0])), abs(float(e_hi[-1])))
    return SegmentConstants(m, L, bool(torch.equal(lo, hi)), 1, rigorous=True)


def length_scale(model: Any, t: int) -> float | None:
    """The smallest distance over which the model's Jacobian changes appreciably (None: unknown).

    Gaussian toys: inf (constant).  Mixtures: min(sqrt(l), l / (2 sqrt(abar) max ||m_k||)) with
    l = abar min_k,i s_ki^2 + 1 - abar (component width at time t; the second term is the scale on which the
    posterior weights switch).  Elementwise nonlinear errors: their `length`.  Other wrappers: their base's.
    """
    from . import perturbations as P

    if isinstance(model, (P.Bias, P.IIDNoise, P.Scale)):
        return length_scale(model.base, t)
    if isinstance(model, (P.MonotoneNonlinear, P.NonMonotoneNonlinear)):
        base = length_scale(model.base, t)
        return model.length if base is None else min(base, model.length)
    if isinstance(model, P.Perturbation):
        return None
    if hasattr(model, "affine_eigvals"):
        return math.inf
    if hasattr(model, "means") and hasattr(model, "cov_eigvals") and hasattr(model, "schedule"):
        ab = model.schedule.abar(t)
        lam = ab * float(torch.as_tensor(model.cov_eigvals).min()) + 1.0 - ab
        mmax = float(torch.linalg.vector_norm(torch.as_tensor(model.means), dim=-1).max())
        return min(math.sqrt(lam), lam / (2.0 * math.sqrt(ab) * mmax + 1e-300))
    return None


def _constant_jacobian(model: Any) -> bool | None:
    """True when the model's Jacobian does not depend on x (affine Gaussian toy and affine wrappers)."""
    from . import perturbations as P

    while isinstance(model, (P.Bias, P.IIDNoise, P.Scale, P.Adversarial)):
        model = model.base
    if isinstance(model, P.Perturbation):
        return None
    return True if hasattr(model, "affine_eigvals") else None


# ------------------------------------------------------------------------------------------------
# estimators for any differentiable model (torch.func)
# ------------------------------------------------------------------------------------------------
def _flat_norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1)


def _bview(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return s.reshape(-1, *([1] * (like.ndim - 1)))


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / _bview(_flat_norm(v).clamp_min(1e-300), v)


def _bdot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u.reshape(u.shape[0], -1) * v.reshape(v.shape[0], -1)).sum(1)


def _operators(model: Any, x: torch.Tensor, t: int | torch.Tensor):
    tt = t if isinstance(t, torch.Tensor) else _tt(x, t)

    def f(y: torch.Tensor) -> torch.Tensor:
        return model(y, tt)

    x = x.detach()
    _, vjp_fn = torch.func.vjp(f, x)

    def jv(v: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(f, (x,), (v,))[1].detach()

    def jtv(w: torch.Tensor) -> torch.Tensor:
        return vjp_fn(w)[0].detach()

    return jv, jtv


def _summarize(samples: np.ndarray, best: str, method: str, **info: Any) -> Estimate:
    value = samples.max(0) if best == "max" else samples.min(0)
    return Estimate(value, samples.max(0) - samples.min(0), samples.std(0), samples, method, dict(info))


def estimate_lipschitz(model: Any, x: torch.Tensor, t: int | torch.Tensor, n_iter: int = 30, n_starts: int = 3,
                       generator: torch.Generator | None = None) -> Estimate:
    """Spectral norm of J(x_b) = d model(., t)/dx at each sample x_b by power iteration on J^T J.

    One JVP and one VJP per iteration (torch.func); `n_starts` random starts; value = max over starts
    (power iteration approaches the top singular value from below).
    """
    require(n_iter >= 1 and n_starts >= 1, "n_iter and n_starts must be >= 1")
    jv, jtv = _operators(model, x, t)
    out = np.empty((n_starts, x.shape[0]))
    for r in range(n_starts):
        v = _normalize(torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device))
        sig = torch.zeros(x.shape[0], dtype=torch.float64)
        for _ in range(n_iter):
            w = jv(v)
            sig = _flat_norm(w)
            v = _normalize(jtv(w))
        out[r] = sig.double().cpu().numpy()
    return _summarize(out, "max", "power iteration on J^T J (jvp/vjp)", n_iter=n_iter)


def estimate_monotonicity(model: Any, x: torch.Tensor, t: int | torch.Tensor, n_iter: int = 30, n_starts: int = 3,
                          generator: torch.Generator | None = None) -> Estimate:
    """Most negative Rayleigh quotient of S = (J + J^T)/2 at each sample: lambda_min(S) by Lanczos.

    S v = (J v + J^T v) / 2 with one JVP and one VJP; full reorthogonalisation; `n_iter` Lanczos steps
    (at most the dimension); value = min over starts (Ritz values approach lambda_min from above).
    """
    from scipy.linalg import eigvalsh_tridiagonal

    require(n_iter >= 1 and n_starts >= 1, "n_iter and n_starts must be >= 1")
    jv, jtv = _operators(model, x, t)
    B = x.shape[0]
    n = int(np.prod(x.shape[1:]))
    k = min(int(n_iter), n)

    def S(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (jv(v) + jtv(v))

    out = np.empty((n_starts, B))
    for r in range(n_starts):
        V = [_normalize(torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device))]
        alphas, betas = [], []
        for j in range(k):
            w = S(V[j])
            alpha = _bdot(w, V[j])
            alphas.append(alpha)
            for q in V:  # full reorthogonalisation (twice is enough)
                w = w - _bview(_bdot(w, q), w) * q
            for q in V:
                w = w - _bview(_bdot(w, q), w) * q
            if j == k - 1:
                break
            beta = _flat_norm(w)
            scale = alpha.abs().clamp_min(1e-30)
            broke = beta <= 1e-12 * scale
            if bool(broke.any()):  # restart the broken samples with a fresh orthogonal direction
                fresh = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
                for q in V:
                    fresh = fresh - _bview(_bdot(fresh, q), fresh) * q
                w = torch.where(_bview(broke, w), fresh, w)
                beta = torch.where(broke, torch.zeros_like(beta), beta)
            betas.append(beta)
            V.append(_normalize(w))
        a = torch.stack(alphas).double().cpu().numpy()       # [k, B]
        bb = torch.stack(betas).double().cpu().numpy() if betas else np.zeros((0, B))
        for i in range(B):
            out[r, i] = eigvalsh_tridiagonal(a[:, i], bb[:, i], select="i", select_range=(0, 0))[0]
    return _summarize(out, "min", "Lanczos on (J + J^T)/2 (jvp/vjp)", n_iter=k)


def rayleigh_along(model: Any, x: torch.Tensor, delta: torch.Tensor, t: int | torch.Tensor) -> np.ndarray:
    """<J(x) delta, delta> / ||delta||^2 per sample: the monotonicity seen along a trajectory difference."""
    jv, _ = _operators(model, x, t)
    d = delta.to(x.dtype)
    return (_bdot(jv(d), d) / _flat_norm(d).clamp_min(1e-300) ** 2).double().cpu().numpy()
