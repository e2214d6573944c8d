"""Per-step linear algebra for the paper's statements (PAPER.md S1-S5): JVP/VJP, power iteration, Lanczos.

The paper's per-step objects are linear maps built from the Jacobian J_t = d eps~(x, t)/dx of the network
at one point (PAPER.md section 1):

* the DDIM error-propagation factor  M_t = A_t I + B_t J_t            (S1, S3; its spectral norm ||M_t||_2),
* the relaxed-map derivative         D_t(lam) = (1 - lam) I + lam B_t J_t   (S4; L(lam) = ||D_t(lam)||_2),
* the symmetric part                 S_t = (J_t + J_t^T) / 2          (S4's sign structure).

For a network, J_t is never formed: `Linearization` gives J v and J^T u from `torch.func.vjp` (J v as the
VJP of the VJP, i.e. the transpose of the linear map u -> J^T u; this works where forward-mode AD does not,
e.g. diffusers GroupNorm on a batch or CPU flash attention). `power_norm` estimates ||M||_2 by power
iteration on M^T M and records its convergence; `lanczos_extremes` gives the extreme eigenvalues of a
symmetric operator. For toys `dense_jacobian` forms J exactly (autograd, float64) so every estimate can be
checked against `torch.linalg.matrix_norm(., 2)` and closed forms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

__all__ = [
    "Linearization",
    "PowerResult",
    "dense_jacobian",
    "lanczos_extremes",
    "power_norm",
    "sdpa_math",
]

Op = Callable[[torch.Tensor], torch.Tensor]


def sdpa_math():
    """Context that routes scaled-dot-product attention to the differentiable 'math' kernel (if available)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])
    except (ImportError, AttributeError, TypeError):  # older torch: nothing to select
        return nullcontext()


class Linearization:
    """The linear map v -> J v of a function f at a point x, and its transpose u -> J^T u.

    f maps a tensor of the shape of x to a tensor of the same shape (an eps model at fixed t).
    J^T u comes from one `torch.func.vjp`; J v is the VJP of the (linear) map u -> J^T u, which is exact
    (no finite differences). `value` is f(x).
    """

    def __init__(self, f: Op, x: torch.Tensor):
        self.x = x.detach()
        with sdpa_math(), torch.enable_grad():
            self.value, self._vjp = torch.func.vjp(f, self.x)
        self.value = self.value.detach()
        self._jvp: Callable | None = None
        self.calls = 0

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """J^T u."""
        self.calls += 1
        with sdpa_math(), torch.enable_grad():
            return self._vjp(u.to(self.value.dtype))[0].detach()

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """J v (transpose of the VJP)."""
        self.calls += 1
        with sdpa_math(), torch.enable_grad():
            if self._jvp is None:
                zero = torch.zeros_like(self.value)
                _, self._jvp = torch.func.vjp(lambda u: self._vjp(u)[0], zero)
            return self._jvp(v.to(self.x.dtype))[0].detach()


def dense_jacobian(f: Op, x: torch.Tensor) -> torch.Tensor:
    """The exact Jacobian of f at x as an [n, n] matrix (n = x.numel()), by reverse-mode autograd."""
    with sdpa_math(), torch.enable_grad():
        jac = torch.func.jacrev(lambda z: f(z.reshape(x.shape)).reshape(-1))(x.detach().reshape(-1))
    return jac.detach()


@dataclass
class PowerResult:
    """A power-iteration estimate of ||M||_2: value, the right singular vector, and how it converged.

    `history` holds the estimate after each iteration; `rel_change` the last relative change; `converged`
    whether it fell below the tolerance within `max_iter`. The estimate is a lower bound of ||M||_2 for
    every iteration (it is ||M v|| for a unit v).
    """

    value: float
    vector: torch.Tensor
    iterations: int
    rel_change: float
    converged: bool
    history: list[float] = field(default_factory=list)


def _unit(v: torch.Tensor) -> torch.Tensor:
    n = torch.linalg.vector_norm(v)
    return v / n.clamp_min(1e-300)


def power_norm(matvec: Op, rmatvec: Op, v0: torch.Tensor, max_iter: int = 50, tol: float = 1e-3,
               min_iter: int = 1) -> PowerResult:
    """||M||_2 by power iteration on M^T M: v <- M^T M v / ||.||, estimate s = ||M v||.

    Convergence is judged by the eigen-residual r = ||M^T M v - s^2 v|| / s^2 of the current unit v (a small
    change of s alone is not enough: from a random start the top direction can be invisible for many
    iterations). Stops when r < tol (after min_iter iterations) or after max_iter; `rel_change` holds r.
    Each iteration costs one matvec and one rmatvec; every estimate is a lower bound of ||M||_2.
    """
    v = _unit(v0)
    hist: list[float] = []
    rel = math.inf
    it = 0
    best_s, best_v = -1.0, v
    for it in range(1, max_iter + 1):
        w = matvec(v)
        s = float(torch.linalg.vector_norm(w))
        hist.append(s)
        if s > best_s:
            best_s, best_v = s, v
        if s == 0.0:
            rel = 0.0
            break
        z = rmatvec(w)
        rel = float(torch.linalg.vector_norm(z - (s * s) * v)) / (s * s)
        if it >= min_iter and rel < tol:
            break
        v = _unit(z)
    return PowerResult(best_s, best_v, it, rel, rel < tol, hist)


def lanczos_extremes(symvec: Op, v0: torch.Tensor, m: int = 12) -> tuple[float, float, list[float]]:
    """(lambda_min, lambda_max, Ritz values) of a symmetric operator from m Lanczos steps (full reorthogonalisation).

    Ritz values lie inside the spectrum: lambda_min is an upper estimate of the smallest eigenvalue and
    lambda_max a lower estimate of the largest (exact when m >= the dimension).
    """
    n = v0.numel()
    m = max(1, min(int(m), n))
    Q: list[torch.Tensor] = [_unit(v0.reshape(-1).double())]
    alpha: list[float] = []
    beta: list[float] = []
    for j in range(m):
        w = symvec(Q[j].reshape(v0.shape).to(v0.dtype)).reshape(-1).double()
        a = float(w @ Q[j])
        alpha.append(a)
        for q in Q:   # full reorthogonalisation (twice is enough)
            w = w - (w @ q) * q
        for q in Q:
            w = w - (w @ q) * q
        b = float(torch.linalg.vector_norm(w))
        if j == m - 1 or b < 1e-12 * max(1.0, abs(a)):
            break
        beta.append(b)
        Q.append(w / b)
    k = len(alpha)
    Tm = torch.diag(torch.tensor(alpha, dtype=torch.float64))
    if k > 1:
        off = torch.tensor(beta[: k - 1], dtype=torch.float64)
        Tm = Tm + torch.diag(off, 1) + torch.diag(off, -1)
    ritz = torch.linalg.eigvalsh(Tm).tolist()
    return float(ritz[0]), float(ritz[-1]), [float(r) for r in ritz]
