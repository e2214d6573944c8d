"""Gaussian data law N(mean, Sigma): exact eps*, Jacobian, probability-flow solution (THEORY.md section 7).

With a = abar_t, the marginal of x_t is N(sqrt(a) mean, a Sigma + (1 - a) I) (THEORY.md section 1), so
the exact noise prediction eps*(x, t) = E[noise | x_t = x] = -sqrt(1 - a) grad_x log p_t(x) is affine:

    eps*(x, t) = sqrt(1 - a) (a Sigma + (1 - a) I)^{-1} (x - sqrt(a) mean) = C_t x + c_t.

Everything is computed in the eigenbasis Sigma = V diag(s_i^2) V^T, found once at construction:
C_t = V diag(g_i) V^T with g_i = sqrt(1 - a) / (a s_i^2 + 1 - a) (`affine_eigvals`).

In the scale-free coordinates xbar = x / sqrt(a), sigma^2 = (1 - a) / a, eps* = sigma (Sigma + sigma^2 I)^{-1}
(xbar - mean), so the probability-flow ODE d xbar / d sigma = eps* (THEORY.md section 1) decouples per
eigen-direction, d y_i / d sigma = sigma y_i / (s_i^2 + sigma^2) with y = V^T (xbar - mean), and is solved
exactly by y_i(sigma) proportional to sqrt(s_i^2 + sigma^2) (`exact_flow`).

The diagonal variant keeps Sigma as a vector of variances (V = I is never formed), so eps, exact_flow,
log_prob and sample_data cost O(B d) and work for d = 1e6.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from iec_theory.errors import ConfigError, require
from iec_theory.schedules import Schedule

from ._common import (
    DTYPE,
    LOG_2PI,
    DeviceCache,
    abar_table,
    as_float_tensor,
    check_n,
    check_schedule,
    check_x,
    eigh_spd,
    single_time,
    time_index,
)

DENSE_DIAGONAL_LIMIT = 10_000  # largest d for which a diagonal model will build dense d x d matrices


class GaussianToy:
    """Data law N(mean, Sigma) with the exact eps*, its Jacobian and the exact probability flow.

    Constructors: `GaussianToy(mean[d], cov[d,d], schedule)` (symmetric positive definite, checked),
    `GaussianToy.diagonal(mean[d], var[d], schedule)` (never forms d x d), and
    `GaussianToy.low_rank(mean[d], U[d,r], s[r], tiny, schedule)` for Sigma = U diag(s^2) U^T + tiny I.

    Attributes: `dim`, `schedule`, `mean` [d], `is_diagonal`, `cov_eigvals` [d] (the s_i^2), `cov_eigvecs`
    [d,d] (None when diagonal: the identity), `cov` (dense; for diagonal models only when d <= 10000).
    `cov_eigvals` is ascending for full and low-rank models; for diagonal models it is `var` in coordinate
    order (so that it matches the identity eigenbasis).

    Use as an eps_model: `model(x, t)` with x [B, d] and t an int or a LongTensor [B] in [0, N-1].
    """

    def __init__(self, mean: Any, cov: Any, schedule: Schedule):
        mean_t = as_float_tensor(mean, "mean", 1)
        cov_t = as_float_tensor(cov, "cov", 2)
        d = mean_t.shape[0]
        require(tuple(cov_t.shape) == (d, d), f"cov must have shape [{d}, {d}] to match mean [{d}], got "
                                               f"{tuple(cov_t.shape)}")
        lam, vec = eigh_spd(cov_t, "cov")
        self._build(mean_t, lam, vec, 0.5 * (cov_t + cov_t.T), schedule)

    # ----- constructors -------------------------------------------------------------------------
    @classmethod
    def diagonal(cls, mean: Any, var: Any, schedule: Schedule) -> GaussianToy:
        """N(mean, diag(var)); var > 0 is stored as a vector (no d x d matrix is ever formed)."""
        mean_t = as_float_tensor(mean, "mean", 1)
        var_t = as_float_tensor(var, "var", 1)
        require(var_t.shape == mean_t.shape,
                f"var must have the shape of mean [{mean_t.shape[0]}], got {tuple(var_t.shape)}")
        require(bool((var_t > 0).all()), f"var must be positive, got min {float(var_t.min()):.3e}")
        self = cls.__new__(cls)
        self._build(mean_t, var_t, None, None, schedule)
        return self

    @classmethod
    def low_rank(cls, mean: Any, U: Any, s: Any, tiny: float, schedule: Schedule) -> GaussianToy:
        """N(mean, U diag(s^2) U^T + tiny I) with tiny > 0.

        The eigenpairs are found structurally (no eigensolver on the ill-conditioned d x d matrix): with the
        complete QR U = Q R, Sigma = Q_r (R_r diag(s^2) R_r^T) Q_r^T + tiny I, so the eigenvalues are
        tiny (multiplicity d - r, eigenvectors Q[:, r:]) and mu_j + tiny where (mu_j, w_j) are the eigenpairs
        of the r x r matrix R_r diag(s^2) R_r^T (eigenvectors Q_r w_j).
        """
        mean_t = as_float_tensor(mean, "mean", 1)
        U_t = as_float_tensor(U, "U", 2)
        s_t = as_float_tensor(s, "s", 1)
        d = mean_t.shape[0]
        require(U_t.shape[0] == d, f"U must have shape [{d}, r] to match mean [{d}], got {tuple(U_t.shape)}")
        r = U_t.shape[1]
        require(r <= d, f"U must have rank r <= d = {d} columns, got {r}")
        require(s_t.shape[0] == r, f"s must have shape [{r}] to match U [{d}, {r}], got {tuple(s_t.shape)}")
        try:
            tiny_f = float(tiny)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"tiny must be a real number, got {tiny!r}") from exc
        require(math.isfinite(tiny_f) and tiny_f > 0, f"tiny must be a finite number > 0, got {tiny!r}")
        Q, R = torch.linalg.qr(U_t, mode="complete")
        Rr = R[:r]
        M = (Rr * s_t**2) @ Rr.T
        mu, W = torch.linalg.eigh(0.5 * (M + M.T))
        lam = torch.cat([torch.full((d - r,), tiny_f, dtype=DTYPE), mu.clamp_min(0.0) + tiny_f])
        vec = torch.cat([Q[:, r:], Q[:, :r] @ W], dim=1)
        cov = (U_t * s_t**2) @ U_t.T + tiny_f * torch.eye(d, dtype=DTYPE)
        self = cls.__new__(cls)
        self._build(mean_t, lam, vec, 0.5 * (cov + cov.T), schedule)
        return self

    def _build(self, mean: torch.Tensor, lam: torch.Tensor, vec: torch.Tensor | None, cov: torch.Tensor | None,
               schedule: Schedule) -> None:
        self.schedule = check_schedule(schedule)
        self.dim = int(mean.shape[0])
        self.mean = mean
        self.cov_eigvals = lam
        self.cov_eigvecs = vec
        self.is_diagonal = vec is None
        self._cov = cov
        self._n = schedule.num_train_steps
        self._p = DeviceCache(mean=mean, lam=lam, vec=vec, abar=abar_table(schedule))

    # ----- attributes ---------------------------------------------------------------------------
    @property
    def cov(self) -> torch.Tensor:
        """Dense Sigma [d, d] (for a diagonal model only when d <= 10000)."""
        if self._cov is not None:
            return self._cov
        require(self.dim <= DENSE_DIAGONAL_LIMIT,
                f"refusing to build a dense {self.dim} x {self.dim} covariance for a diagonal model "
                f"(limit d <= {DENSE_DIAGONAL_LIMIT}); use cov_eigvals (the variances)")
        return torch.diag(self.cov_eigvals)

    def __repr__(self) -> str:
        kind = "diagonal" if self.is_diagonal else "full"
        return f"GaussianToy(dim={self.dim}, {kind}, schedule={self.schedule.name!r})"

    # ----- internals ----------------------------------------------------------------------------
    def _abar(self, tt: torch.Tensor, p: dict, device: torch.device) -> torch.Tensor:
        return p["abar"][(tt + 1).to(device)].unsqueeze(-1)  # [B, 1]

    def _to_eig(self, r: torch.Tensor, p: dict) -> torch.Tensor:
        return r if p["vec"] is None else r @ p["vec"]

    def _from_eig(self, y: torch.Tensor, p: dict) -> torch.Tensor:
        return y if p["vec"] is None else y @ p["vec"].T

    @staticmethod
    def _gain(a: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """g_i = sqrt(1 - a) / (a s_i^2 + 1 - a), the eigenvalues of C_t."""
        return torch.sqrt(1.0 - a) / (a * lam + (1.0 - a))

    def _prep(self, x: Any, t: Any, allow_data_end: bool, name: str = "t"):
        x = check_x(x, self.dim)
        tt = time_index(t, x.shape[0], self._n, allow_data_end, name)
        p = self._p.on(x.device)
        return x, p, self._abar(tt, p, x.device)

    # ----- the model ----------------------------------------------------------------------------
    def eps(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Exact eps*(x, t) = sqrt(1 - a) (a Sigma + (1 - a) I)^{-1} (x - sqrt(a) mean), a = abar_t; [B, d]."""
        x, p, a = self._prep(x, t, False)
        y = self._to_eig(x - torch.sqrt(a) * p["mean"], p)
        return self._from_eig(y * self._gain(a, p["lam"]), p)

    __call__ = eps

    def affine(self, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(C [d,d], c [d]) with eps*(x, t) = x @ C.T + c: C = V diag(g) V^T (symmetric), c = -sqrt(a) C mean."""
        tt = single_time(t, self._n, False)
        a = self.schedule.abar(tt)
        g = self._gain(torch.tensor(a, dtype=DTYPE), self.cov_eigvals)
        if self.is_diagonal:
            require(self.dim <= DENSE_DIAGONAL_LIMIT,
                    f"refusing to build a dense {self.dim} x {self.dim} C_t for a diagonal model "
                    f"(limit d <= {DENSE_DIAGONAL_LIMIT}); use affine_eigvals")
            return torch.diag(g), -math.sqrt(a) * g * self.mean
        V = self.cov_eigvecs
        C = (V * g) @ V.T
        c = -math.sqrt(a) * (((self.mean @ V) * g) @ V.T)
        return 0.5 * (C + C.T), c

    def affine_eigvals(self, t: Any) -> torch.Tensor:
        """Eigenvalues of C_t in the basis cov_eigvecs (order of cov_eigvals): sqrt(1-a) / (a s_i^2 + 1 - a)."""
        tt = single_time(t, self._n, False)
        return self._gain(torch.tensor(self.schedule.abar(tt), dtype=DTYPE), self.cov_eigvals)

    def jacobian(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """d eps*/dx = C_t for each sample (independent of x): [B, d, d]."""
        x, p, a = self._prep(x, t, False)
        g = self._gain(a, p["lam"])  # [B, d]
        if p["vec"] is None:
            return torch.diag_embed(g)
        V = p["vec"]
        J = (V.unsqueeze(0) * g.unsqueeze(1)) @ V.T
        return 0.5 * (J + J.transpose(1, 2))

    def exact_flow(self, x: torch.Tensor, t_from: Any, t_to: Any) -> torch.Tensor:
        """Exact probability-flow ODE solution from t_from to t_to (either may be -1; either direction); [B, d].

        With xbar = x / sqrt(abar) and y = V^T (xbar - mean): y_i(t_to) = y_i(t_from) sqrt(s_i^2 + sigma_to^2) /
        sqrt(s_i^2 + sigma_from^2), then x_to = sqrt(abar_to) (mean + V y(t_to)).
        """
        x = check_x(x, self.dim)
        B = x.shape[0]
        tf = time_index(t_from, B, self._n, True, "t_from")
        tt = time_index(t_to, B, self._n, True, "t_to")
        p = self._p.on(x.device)
        af, at = self._abar(tf, p, x.device), self._abar(tt, p, x.device)
        s2f, s2t = (1.0 - af) / af, (1.0 - at) / at
        lam = p["lam"]
        y = self._to_eig(x / torch.sqrt(af) - p["mean"], p)
        y = y * torch.sqrt((lam + s2t) / (lam + s2f))
        return torch.sqrt(at) * (p["mean"] + self._from_eig(y, p))

    def marginal(self, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Law of x_t: (sqrt(a) mean [d], a Sigma + (1 - a) I [d,d]), or the variances [d] if diagonal; t may be -1."""
        a = self.schedule.abar(single_time(t, self._n, True))
        mean_t = math.sqrt(a) * self.mean
        if self.is_diagonal:
            return mean_t, a * self.cov_eigvals + (1.0 - a)
        return mean_t, a * self.cov + (1.0 - a) * torch.eye(self.dim, dtype=DTYPE)

    def log_prob(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """log N(x; sqrt(a) mean, a Sigma + (1 - a) I) per sample, [B]; t may be -1 (the data law)."""
        x, p, a = self._prep(x, t, True)
        lam_t = a * p["lam"] + (1.0 - a)  # [B, d]
        y = self._to_eig(x - torch.sqrt(a) * p["mean"], p)
        return -0.5 * ((y * y / lam_t).sum(-1) + torch.log(lam_t).sum(-1) + self.dim * LOG_2PI)

    def sample_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples from N(mean, Sigma): mean + V (sqrt(s^2) * z), z ~ N(0, I); [n, d]."""
        n = check_n(n)
        z = torch.randn((n, self.dim), generator=generator, dtype=DTYPE)
        return self.mean + self._from_eig(z * torch.sqrt(self.cov_eigvals), self._p.on(torch.device("cpu")))
