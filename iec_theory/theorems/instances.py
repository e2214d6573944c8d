"""Toy instances for the theorem checks: a data law, an exact model, a perturbation, a scheme.

`ToyInstance` is a frozen, printable description (what hypothesis shrinks and what `iec verify` lists);
`build()` makes the models and `run()` the paired run.  Exact models:

- "gaussian": diagonal Gaussian toy, variances log-spaced over `decades` decades (1 down to 10^-decades);
- "gaussian_full": the same spectrum in a seeded random rotation (full covariance);
- "stiff": `StiffGaussian`, kappa times the exact Gaussian eps (a miscalibrated affine denoiser).  Needed
  because the EXACT Gaussian score is never stiff: along an eigen-direction the plain step's xbar factor
  is 1 - (sigma_t - sigma_s) sigma_t / (s^2 + sigma_t^2) in (0, 1) for every step (eta = 0; eta = 1:
  1 - (sigma_t^2 - sigma_s^2)/(s^2 + sigma_t^2)), see docs/PROOFS.md "the exact Gaussian score is never stiff";
- "mixture": two symmetric Gaussian modes at +-`separation` e_1 with diagonal covariances (the same
  log-spaced spectrum scaled by `mode_var`); `x_T="saddle"` puts x_T on the symmetric plane x_1 = 0, where
  the flow is expansive (negative Jacobian eigenvalue along e_1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..iec import IECConfig, StepSelection
from ..perturbations import make_perturbation
from ..schedules import Schedule
from .base import PairedRun, paired_run

__all__ = ["PERTURBATION_KINDS", "StiffGaussian", "ToyInstance", "perturbation_spec", "spectrum"]

PERTURBATION_KINDS = ("none", "bias", "scale", "quant", "iid_noise", "monotone", "nonmonotone", "affine_quant",
                      "cache", "adversarial")


class StiffGaussian:
    """eps(x, t) = kappa * eps*(x, t) of a Gaussian toy: affine, C_t -> kappa C_t (symmetric, same eigenbasis).

    Provides the Gaussian toy interface used by the theorems and perturbations: eps / __call__, affine,
    affine_eigvals, jacobian, cov_eigvecs, cov_eigvals, dim, mean, schedule.
    """

    def __init__(self, toy: Any, kappa: float):
        self.toy = toy
        self.kappa = float(kappa)
        self.dim = toy.dim
        self.mean = toy.mean
        self.schedule = toy.schedule
        self.cov_eigvecs = toy.cov_eigvecs
        self.cov_eigvals = toy.cov_eigvals
        self.is_diagonal = toy.is_diagonal

    def eps(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        return self.kappa * self.toy.eps(x, t)

    __call__ = eps

    def affine(self, t: Any) -> tuple[torch.Tensor, torch.Tensor]:
        C, c = self.toy.affine(t)
        return self.kappa * C, self.kappa * c

    def affine_eigvals(self, t: Any) -> torch.Tensor:
        return self.kappa * self.toy.affine_eigvals(t)

    def jacobian(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        return self.kappa * self.toy.jacobian(x, t)

    def __repr__(self) -> str:
        return f"StiffGaussian(kappa={self.kappa}, {self.toy!r})"


def spectrum(dim: int, decades: float) -> torch.Tensor:
    """Variances 10^(-decades * j/(dim-1)), j = 0..dim-1 (1 down to 10^-decades; [1.0] when dim = 1)."""
    if dim == 1:
        return torch.ones(1, dtype=torch.float64)
    return torch.tensor(10.0 ** (-decades * np.arange(dim) / (dim - 1)), dtype=torch.float64)


def perturbation_spec(kind: str, magnitude: float, seed: int, T: int) -> dict[str, Any] | None:
    """The make_perturbation table of a perturbation kind at a magnitude (units of eps)."""
    if kind == "none":
        return None
    table = {
        "bias": {"kind": "bias", "magnitude": magnitude, "direction": "random"},
        "scale": {"kind": "scale", "scale": magnitude},
        "quant": {"kind": "output_quant", "bits": int(max(2, min(16, round(math.log2(8.0 / max(magnitude, 1e-9)))))),
                  "range": 4.0},
        "iid_noise": {"kind": "iid_noise", "std": magnitude},
        "monotone": {"kind": "monotone", "magnitude": magnitude, "length": 0.5},
        "nonmonotone": {"kind": "nonmonotone", "magnitude": magnitude, "length": 0.5},
        "affine_quant": {"kind": "affine_wa_quant", "w_bits": 8, "a_bits": None},
        "cache": {"kind": "cache", "every": 2},
        "adversarial": {"kind": "adversarial", "magnitude": magnitude, "target": "top_eig"},
    }
    if kind not in table:
        raise ValueError(f"unknown perturbation kind {kind!r}; choose one of {PERTURBATION_KINDS}")
    spec = dict(table[kind])
    spec["seed"] = int(seed)
    return spec


@dataclass(frozen=True)
class ToyInstance:
    """A printable toy instance (see the module docstring)."""

    model: str = "gaussian"          # gaussian | gaussian_full | stiff | mixture
    dim: int = 4
    decades: float = 4.0
    seed: int = 0
    T: int = 20
    eta: float = 0.0
    spacing: str = "uniform"
    perturbation: str = "bias"
    magnitude: float = 1e-2
    iec: str = "none"                # none | official_ddpm | official_ldm | relaxed
    K: int = 0                       # relaxed: corrections
    lam: float = 0.5                 # relaxed: constant lambda
    noise: str = "shared"            # relaxed: IEC noise mode
    every: int = 1                   # IEC on steps i % every == 0
    kappa: float = 1.0               # stiff: Jacobian multiplier
    separation: float = 1.0          # mixture: modes at +-separation e_1
    mode_var: float = 0.01           # mixture: largest mode variance
    x_T: str = "random"              # random | saddle (mixture)
    delta_T: float = 0.0             # initial perturbation size (random direction) of the perturbed run

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    # ----- construction -------------------------------------------------------------------------
    def schedule(self) -> Schedule:
        return Schedule.linear()

    def exact_model(self) -> Any:
        from toy_models import GaussianMixtureToy, GaussianToy

        sch = self.schedule()
        g = torch.Generator().manual_seed(1000 + self.seed)
        var = spectrum(self.dim, self.decades)
        if self.model in ("gaussian", "gaussian_full", "stiff"):
            mean = 0.5 * torch.randn(self.dim, generator=g, dtype=torch.float64)
            if self.model == "gaussian_full":
                q, r = torch.linalg.qr(torch.randn(self.dim, self.dim, generator=g, dtype=torch.float64))
                q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
                cov = (q * var) @ q.T
                toy = GaussianToy(mean, 0.5 * (cov + cov.T), sch)
            else:
                toy = GaussianToy.diagonal(mean, var, sch)
            return StiffGaussian(toy, self.kappa) if self.model == "stiff" else toy
        if self.model == "mixture":
            m = torch.zeros(2, self.dim, dtype=torch.float64)
            m[0, 0], m[1, 0] = self.separation, -self.separation
            covs = torch.stack([torch.diag(self.mode_var * var)] * 2)
            return GaussianMixtureToy(torch.tensor([0.5, 0.5], dtype=torch.float64), m, covs, sch)
        raise ValueError(f"unknown model {self.model!r}")

    def iec_config(self) -> IECConfig | None:
        sel = StepSelection.all() if self.every <= 1 else StepSelection.every(self.every)
        if self.iec == "none":
            return None
        if self.iec == "official_ddpm":
            return IECConfig.official_ddpm(sel)
        if self.iec == "official_ldm":
            return IECConfig.official_ldm(sel)
        if self.iec == "relaxed":
            return IECConfig.relaxed(self.lam, self.K, 0.0, self.noise, sel)
        raise ValueError(f"unknown iec {self.iec!r}")

    def x_T_tensor(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(2000 + self.seed)
        x = torch.randn(1, self.dim, generator=g, dtype=torch.float64)
        if self.x_T == "saddle":
            x[0, 0] = 0.0
        return x

    def delta_T_tensor(self) -> torch.Tensor | None:
        if self.delta_T == 0.0:
            return None
        g = torch.Generator().manual_seed(3000 + self.seed)
        v = torch.randn(1, self.dim, generator=g, dtype=torch.float64)
        return self.delta_T * v / torch.linalg.vector_norm(v)

    def build(self) -> tuple[Any, Any]:
        exact = self.exact_model()
        spec = perturbation_spec(self.perturbation, self.magnitude, self.seed, self.T)
        return exact, make_perturbation(spec, exact)

    def run(self) -> PairedRun:
        exact, pert = self.build()
        return paired_run(exact, pert, exact.schedule, self.x_T_tensor(), self.T, self.eta, self.iec_config(),
                          seed=self.seed, spacing=self.spacing, delta_T=self.delta_T_tensor())
