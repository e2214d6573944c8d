"""Gaussian-mixture data law: exact eps*, analytic Jacobian, reference probability flow (THEORY.md section 7).

Data law sum_k pi_k N(m_k, S_k). With a = abar_t the marginal of x_t (THEORY.md section 1) is

    p_t(x) = sum_k pi_k N(x; sqrt(a) m_k, a S_k + (1 - a) I),

and the exact noise prediction is eps*(x, t) = E[noise | x_t = x] = -sqrt(1 - a) grad_x log p_t(x):

    eps*(x, t) = sqrt(1 - a) sum_k w_k(x) P_k r_k,   P_k = (a S_k + (1 - a) I)^{-1},  r_k = x - sqrt(a) m_k,

with posterior weights w_k(x) = pi_k N_k(x) / p_t(x). Differentiating (grad w_k = -w_k (P_k r_k - sum_l w_l P_l r_l))
gives the symmetric Jacobian

    d eps*/dx = sqrt(1 - a) (E_w[P_k] - Cov_w[P_k r_k]),

whose covariance term makes it indefinite between well-separated modes (negative eigenvalues along the
line joining them), while at a mode it is close to the positive definite sqrt(1 - a) P_k.

Each S_k is eigendecomposed once at construction, S_k = V_k diag(lam_k) V_k^T, so P_k r_k = V_k (V_k^T r_k /
(a lam_k + 1 - a)) needs no solves.

The probability flow has no closed form; `exact_flow` integrates d xbar / d sigma = eps* (THEORY.md section 1)
with scipy's solve_ivp (DOP853, rtol = flow_rtol = 1e-10, atol = flow_atol = 1e-12) in the scale-free
coordinates xbar = x / sqrt(a), sigma = sqrt((1 - a) / a), where the velocity is
sigma sum_k wbar_k (S_k + sigma^2 I)^{-1} (xbar - m_k), wbar_k proportional to pi_k N(xbar; m_k, S_k + sigma^2 I)
(the same posterior weights, since the rescaling x = sqrt(a) xbar does not change them).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp

from iec_theory.errors import require
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


class GaussianMixtureToy:
    """Data law sum_k weights[k] N(means[k], covs[k]) with exact eps*, analytic Jacobian and reference flow.

    `GaussianMixtureToy(weights[K], means[K,d], covs[K,d,d], schedule)`: weights positive and summing to 1
    (tolerance 1e-9), each covariance symmetric positive definite (checked).

    Attributes: `dim`, `num_components` (K), `schedule`, `weights`, `means`, `covs`, `cov_eigvals` [K,d]
    (ascending per component), `cov_eigvecs` [K,d,d], `mean` and `cov` (the mixture's overall moments),
    `flow_rtol` = 1e-10, `flow_atol` = 1e-12.

    Use as an eps_model: `model(x, t)` with x [B, d] and t an int or a LongTensor [B] in [0, N-1].
    """

    flow_rtol: float = 1e-10
    flow_atol: float = 1e-12

    def __init__(self, weights: Any, means: Any, covs: Any, schedule: Schedule):
        self.schedule = check_schedule(schedule)
        w = as_float_tensor(weights, "weights", 1)
        m = as_float_tensor(means, "means", 2)
        S = as_float_tensor(covs, "covs", 3)
        K, d = m.shape
        require(w.shape[0] == K, f"weights has {w.shape[0]} entries but means has K = {K} rows [K, d]")
        require(tuple(S.shape) == (K, d, d),
                f"covs must have shape [{K}, {d}, {d}] to match means [{K}, {d}], got {tuple(S.shape)}")
        require(bool((w > 0).all()), f"mixture weights must be positive, got min {float(w.min()):.3e}")
        total = float(w.sum())
        require(abs(total - 1.0) <= 1e-9, f"mixture weights must sum to 1 (tolerance 1e-9), got sum {total!r}")
        lams, vecs = [], []
        for k in range(K):
            lam, vec = eigh_spd(S[k], f"covs[{k}]")
            lams.append(lam)
            vecs.append(vec)
        self.dim = int(d)
        self.num_components = int(K)
        self.weights = w
        self.means = m
        self.covs = 0.5 * (S + S.transpose(1, 2))
        self.cov_eigvals = torch.stack(lams)
        self.cov_eigvecs = torch.stack(vecs)
        self.mean = w @ m
        second = torch.einsum("k,kde->de", w, self.covs + m.unsqueeze(2) * m.unsqueeze(1))
        self.cov = second - torch.outer(self.mean, self.mean)
        self._n = schedule.num_train_steps
        self._logw = torch.log(w)
        self._p = DeviceCache(logw=self._logw, m=m, lam=self.cov_eigvals, vec=self.cov_eigvecs,
                              abar=abar_table(schedule))

    def __repr__(self) -> str:
        return f"GaussianMixtureToy(K={self.num_components}, dim={self.dim}, schedule={self.schedule.name!r})"

    # ----- internals ----------------------------------------------------------------------------
    def _prep(self, x: Any, t: Any, allow_data_end: bool):
        x = check_x(x, self.dim)
        tt = time_index(t, x.shape[0], self._n, allow_data_end)
        p = self._p.on(x.device)
        a = p["abar"][(tt + 1).to(x.device)].unsqueeze(-1)  # [B, 1]
        return x, p, a

    @staticmethod
    def _components(xs: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, add: torch.Tensor, p: dict):
        """Per-component quantities for N(xs; shift * m_k, scale * S_k + add I).

        xs [B, d]; shift, scale, add broadcastable to [B, 1]. Returns (log pi_k N_k [B,K], eigen-coordinates
        divided by the variances, y/lam_t [B,K,d], lam_t [B,K,d]).
        """
        r = xs.unsqueeze(1) - shift.unsqueeze(-1) * p["m"].unsqueeze(0)  # [B, K, d]
        y = torch.einsum("bkd,kde->bke", r, p["vec"])
        lam_t = scale.unsqueeze(-1) * p["lam"].unsqueeze(0) + add.unsqueeze(-1)  # [B, K, d]
        d = xs.shape[-1]
        logn = -0.5 * ((y * y / lam_t).sum(-1) + torch.log(lam_t).sum(-1) + d * LOG_2PI)
        return p["logw"] + logn, y / lam_t, lam_t

    def _stats(self, x: torch.Tensor, a: torch.Tensor, p: dict):
        """(log p_t [B], posterior weights w [B,K], u_k = P_k r_k [B,K,d], z = V_k^T u_k [B,K,d], lam_t)."""
        logj, z, lam_t = self._components(x, torch.sqrt(a), a, 1.0 - a, p)
        logp = torch.logsumexp(logj, dim=-1)
        w = torch.softmax(logj, dim=-1)
        u = torch.einsum("bke,kde->bkd", z, p["vec"])
        return logp, w, u, z, lam_t

    # ----- the model ----------------------------------------------------------------------------
    def eps(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Exact eps*(x, t) = sqrt(1 - a) sum_k w_k(x) P_k (x - sqrt(a) m_k), a = abar_t; [B, d]."""
        x, p, a = self._prep(x, t, False)
        _, w, u, _, _ = self._stats(x, a, p)
        return torch.sqrt(1.0 - a) * torch.einsum("bk,bkd->bd", w, u)

    __call__ = eps

    def jacobian(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Analytic d eps*/dx = sqrt(1 - a) (E_w[P_k] - Cov_w[P_k r_k]) per sample: [B, d, d] (symmetric)."""
        x, p, a = self._prep(x, t, False)
        _, w, u, _, lam_t = self._stats(x, a, p)
        V = p["vec"]
        EP = torch.einsum("bk,kde,bke,kfe->bdf", w, V, 1.0 / lam_t, V)
        dev = u - torch.einsum("bk,bkd->bd", w, u).unsqueeze(1)
        cov = torch.einsum("bk,bkd,bkf->bdf", w, dev, dev)
        J = torch.sqrt(1.0 - a).unsqueeze(-1) * (EP - cov)
        return 0.5 * (J + J.transpose(1, 2))

    def posterior_weights(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """w_k(x) = pi_k N(x; sqrt(a) m_k, a S_k + (1 - a) I) / p_t(x): [B, K] (t may be -1)."""
        x, p, a = self._prep(x, t, True)
        logj, _, _ = self._components(x, torch.sqrt(a), a, 1.0 - a, p)
        return torch.softmax(logj, dim=-1)

    def log_prob(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Marginal log density log p_t(x) (logsumexp over components), [B]; t may be -1 (the data law)."""
        x, p, a = self._prep(x, t, True)
        logj, _, _ = self._components(x, torch.sqrt(a), a, 1.0 - a, p)
        return torch.logsumexp(logj, dim=-1)

    marginal_log_prob = log_prob

    def marginal(self, t: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Law of x_t as a mixture: (weights [K], sqrt(a) means [K,d], a covs + (1 - a) I [K,d,d]); t may be -1."""
        a = self.schedule.abar(single_time(t, self._n, True))
        eye = torch.eye(self.dim, dtype=DTYPE)
        return self.weights, math.sqrt(a) * self.means, a * self.covs + (1.0 - a) * eye

    def sample_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples: component k ~ Categorical(weights), then m_k + V_k (sqrt(lam_k) * z), z ~ N(0, I); [n, d]."""
        n = check_n(n)
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn((n, self.dim), generator=generator, dtype=DTYPE)
        out = torch.empty((n, self.dim), dtype=DTYPE)
        for k in range(self.num_components):
            idx = comp == k
            out[idx] = self.means[k] + (z[idx] * torch.sqrt(self.cov_eigvals[k])) @ self.cov_eigvecs[k].T
        return out

    # ----- probability flow ---------------------------------------------------------------------
    def xbar_velocity(self, xbar: torch.Tensor, sigma: float) -> torch.Tensor:
        """d xbar / d sigma = sigma sum_k wbar_k (S_k + sigma^2 I)^{-1} (xbar - m_k) at a continuous sigma >= 0."""
        p = self._p.on(xbar.device)
        one = torch.ones((), dtype=DTYPE, device=xbar.device)
        logj, z, _ = self._components(xbar, one, one, one * sigma**2, p)
        w = torch.softmax(logj, dim=-1)
        u = torch.einsum("bke,kde->bkd", z, p["vec"])
        return sigma * torch.einsum("bk,bkd->bd", w, u)

    def exact_flow(self, x: torch.Tensor, t_from: Any, t_to: Any) -> torch.Tensor:
        """Reference probability-flow solution from t_from to t_to (either may be -1; either direction); [B, d].

        Integrates d xbar / d sigma = eps* from sigma_from to sigma_to with scipy.integrate.solve_ivp, method
        DOP853, rtol = flow_rtol (1e-10), atol = flow_atol (1e-12), then x_to = sqrt(abar_to) xbar. Samples with
        the same (t_from, t_to) are integrated together. Not differentiable (the solve runs in numpy).
        """
        x = check_x(x, self.dim)
        B = x.shape[0]
        tf = time_index(t_from, B, self._n, True, "t_from")
        tt = time_index(t_to, B, self._n, True, "t_to")
        out = torch.empty((B, self.dim), dtype=DTYPE)
        xc = x.detach().to("cpu")
        pairs, inverse = torch.unique(torch.stack([tf, tt], dim=1), dim=0, return_inverse=True)
        for j, (f, g) in enumerate(pairs.tolist()):
            idx = inverse == j
            a_f, a_t = self.schedule.abar(f), self.schedule.abar(g)
            xbar0 = xc[idx] / math.sqrt(a_f)
            if f == g:
                out[idx] = xc[idx]
                continue
            s_f, s_t = self.schedule.sigma(f), self.schedule.sigma(g)
            shape = xbar0.shape

            def rhs(s: float, yflat: np.ndarray, shape: torch.Size = shape) -> np.ndarray:
                xb = torch.from_numpy(yflat).reshape(shape)
                return self.xbar_velocity(xb, s).reshape(-1).numpy()

            sol = solve_ivp(rhs, (s_f, s_t), xbar0.reshape(-1).numpy(), method="DOP853",
                            rtol=self.flow_rtol, atol=self.flow_atol)
            if not sol.success:
                raise RuntimeError(f"probability-flow solve {f} -> {g} failed: {sol.message}")
            out[idx] = math.sqrt(a_t) * torch.from_numpy(sol.y[:, -1]).reshape(shape)
        return out.to(x.device)
