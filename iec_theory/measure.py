"""Measurements over timesteps (THEORY.md section 3): propagated, deployment and total error, in x and xbar;
local errors eta_t; per-step amplification estimates.

Three distances, never mixed (all from the same x_T and the same keyed noise):
1. propagated: perturbed scheme vs the SAME scheme (IEC included) on the exact model;
2. deployment: perturbed scheme vs plain DDIM (no IEC) on the exact model;
3. total: perturbed scheme vs the exact probability-flow ODE from x_T (toys with `exact_flow`, eta = 0).

State n (n = 0..T) lives at time tau_n = timesteps[n] (tau_T = -1 for the final state), and
xbar = x / sqrt(abar_{tau_n}) (abar_{-1} = 1). A curve is the batch mean of the per-sample Euclidean
norms (the per-sample norms are kept too).

Local errors: `Recorder` wraps the efficient model and keeps every evaluation made during the run;
eta_t = ||eps~(x~, t) - eps(x~, t)|| at the step's first evaluation point x~ = x~_t (THEORY T1 form:
the error at the perturbed state), batch mean; `eta_max` is the largest over all of the step's
evaluations (IEC corrections included).

Local errors at the reference states, `eta_ref` (used for the growth classification's R series): a
fresh instance of the efficient model is run along the exact same-scheme trajectory (begin_step as
in sampling, one evaluation per step), eta_ref_t = ||eps~(x_t) - eps(x_t)||. This pairs with
delta_s = G~ delta_t + b e(x_t) (THEORY T2 written with the efficient model's Jacobian), so a large
error that grows with the perturbed state (e.g. a scale error) does not hide the geometric growth.

Amplification estimates per step i (state i -> i+1), in xbar:
- `amp_empirical` = E_{i+1} / E_i of the propagated error (includes the newly injected error);
- `amp_rayleigh`: plain-step factor a - |b| mu_R with mu_R = <eps(x~) - eps(x), delta> / ||delta||^2,
  the Rayleigh quotient of the exact model along the trajectory difference (divided by a: xbar units);
- for affine toys (`affine_eigvals`), `amp_plain` = max_i |g| / a and `amp_scheme` = max_i |f_K| / a over
  the eigen-directions (THEORY T3, iec_theory.theory.amplification_factors), using the exact model's C_t;
  `amp_plain_eff` / `amp_scheme_eff`: the same with the efficient model's Jacobian where
  iec_theory.constants.exact_jacobian certifies it (bias, scale, adversarial, nonlinear errors), taken at
  the first sample's perturbed state (exact for affine models, whose Jacobian is constant).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .ddim import step_coefficients
from .iec import IECConfig
from .sampler import NoiseSource, Trajectory, evaluate, resolve_timesteps, sample
from .schedules import Schedule

__all__ = ["Measurement", "Recorder", "error_curve", "measure", "state_abars", "local_errors"]


class Recorder:
    """Wraps an eps model; records (step index, t, x, output) of every evaluation; forwards begin_step."""

    def __init__(self, model: Any):
        self.model = model
        self.base = model
        self.step_index: int | None = None
        self.records: list[tuple[int | None, int, torch.Tensor, torch.Tensor]] = []

    @property
    def schedule(self):  # noqa: ANN201
        return getattr(self.model, "schedule", None)

    def begin_step(self, step_index: int, t: int) -> None:
        self.step_index = int(step_index)
        fn = getattr(self.model, "begin_step", None)
        if fn is not None:
            fn(step_index, t)

    def reset(self) -> None:
        self.records.clear()
        self.step_index = None
        fn = getattr(self.model, "reset", None)
        if fn is not None:
            fn()

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.model(x, t)
        tv = int(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else int(t)
        self.records.append((self.step_index, tv, x.detach().clone(), out.detach().clone()))
        return out


def state_abars(schedule: Schedule, timesteps: Sequence[int]) -> np.ndarray:
    """abar at the time of each state n = 0..T (the last is abar_{-1} = 1)."""
    return np.array([schedule.abar(t) for t in timesteps] + [1.0], dtype=np.float64)


def _norms(d: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norms [T+1, B] of a difference of trajectories [T+1, B, ...]."""
    return torch.linalg.vector_norm(d.reshape(d.shape[0], d.shape[1], -1), dim=-1)


def error_curve(xs_a: torch.Tensor, xs_b: torch.Tensor, abars: np.ndarray) -> dict[str, np.ndarray]:
    """Per-state error between two trajectories: {'x', 'xbar'} batch means and '*_per_sample' [T+1, B]."""
    n = _norms((xs_a - xs_b).double())
    nb = n / torch.as_tensor(np.sqrt(abars), dtype=n.dtype).unsqueeze(1)
    return {"x": n.mean(1).cpu().numpy(), "xbar": nb.mean(1).cpu().numpy(),
            "x_per_sample": n.cpu().numpy(), "xbar_per_sample": nb.cpu().numpy()}


def local_errors(recorder: Recorder, exact: Any, T: int) -> tuple[np.ndarray, np.ndarray]:
    """(eta [T], eta_max [T]) from a recorder's evaluations: ||eps~ - eps|| at the evaluated points."""
    eta = np.zeros(T)
    eta_max = np.zeros(T)
    seen: set[int] = set()
    for step, t, x, out in recorder.records:
        if step is None:
            continue
        ref = evaluate(exact, x, t, check_finite=False)
        e = float(torch.linalg.vector_norm((out - ref).reshape(out.shape[0], -1).double(), dim=1).mean())
        if step not in seen:
            eta[step] = e
            seen.add(step)
        eta_max[step] = max(eta_max[step], e)
    return eta, eta_max


@dataclass
class Measurement:
    """All curves of one paired run; arrays are numpy, per state n = 0..T unless said per step."""

    timesteps: list[int]
    abars: np.ndarray                  # [T+1]
    dsigmas: np.ndarray                # [T] sigma_t - sigma_s per step
    nfe: dict[str, int]                # per run: perturbed, reference_same, reference_plain
    propagated: dict[str, np.ndarray]
    deployment: dict[str, np.ndarray]
    total: dict[str, np.ndarray] | None
    scheme_vs_flow: dict[str, np.ndarray] | None
    eta: np.ndarray                    # [T] at the perturbed state
    eta_max: np.ndarray                # [T]
    eta_ref: np.ndarray                # [T] at the reference state (shadow run), used for growth
    amp_empirical: np.ndarray          # [T]
    amp_rayleigh: np.ndarray           # [T]
    amp_plain: np.ndarray | None       # [T]
    amp_scheme: np.ndarray | None      # [T]
    amp_plain_eff: np.ndarray | None   # [T] same with the efficient model's Jacobian (when certifiable)
    amp_scheme_eff: np.ndarray | None  # [T]
    iec_steps: list[int]
    early_stops: int
    growth: dict[str, Any] = field(default_factory=dict)
    trajectories: dict[str, Trajectory] = field(default_factory=dict, repr=False)

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Flat dict of arrays for an .npz file."""
        out: dict[str, np.ndarray] = {f"{prefix}timesteps": np.array(self.timesteps), f"{prefix}abars": self.abars,
                                      f"{prefix}dsigmas": self.dsigmas, f"{prefix}eta": self.eta,
                                      f"{prefix}eta_max": self.eta_max, f"{prefix}amp_empirical": self.amp_empirical,
                                      f"{prefix}amp_rayleigh": self.amp_rayleigh}
        for name, curve in (("propagated", self.propagated), ("deployment", self.deployment),
                            ("total", self.total), ("scheme_vs_flow", self.scheme_vs_flow)):
            if curve is None:
                continue
            out[f"{prefix}{name}_x"] = curve["x"]
            out[f"{prefix}{name}_xbar"] = curve["xbar"]
        out[f"{prefix}eta_ref"] = self.eta_ref
        for k in ("amp_plain", "amp_scheme", "amp_plain_eff", "amp_scheme_eff"):
            if getattr(self, k) is not None:
                out[f"{prefix}{k}"] = getattr(self, k)
        return out

    def summary(self) -> dict[str, Any]:
        """Final-state numbers and growth labels (JSON-serialisable)."""
        s: dict[str, Any] = {"nfe": self.nfe["perturbed"], "T": len(self.timesteps),
                             "propagated_x": float(self.propagated["x"][-1]),
                             "propagated_xbar": float(self.propagated["xbar"][-1]),
                             "deployment_x": float(self.deployment["x"][-1]),
                             "deployment_xbar": float(self.deployment["xbar"][-1]),
                             "eta_mean": float(self.eta.mean()), "iec_steps": len(self.iec_steps),
                             "early_stops": self.early_stops}
        if self.total is not None:
            s["total_x"] = float(self.total["x"][-1])
            s["total_xbar"] = float(self.total["xbar"][-1])
        s["eta_ref_mean"] = float(self.eta_ref.mean())
        for k in ("amp_plain", "amp_scheme", "amp_plain_eff", "amp_scheme_eff"):
            v = getattr(self, k)
            if v is not None:
                s[f"{k}_max"] = float(np.max(v))
        s.update({f"growth_{k}": v for k, v in self.growth.items()})
        return s


def _reset(model: Any) -> None:
    fn = getattr(model, "reset", None)
    if fn is not None:
        fn()


def _amplification(schedule: Schedule, ts: list[int], eta: float, iec: IECConfig | None, selected: frozenset[int],
                   name: str, eigs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per step: max over eigen-directions of |g| / a (plain step) and |factor| / a (the method's step),
    for a model whose Jacobian at step i has the symmetric eigenvalues eigs(i, t) (THEORY T3)."""
    from .theory import amplification_factors

    nT = len(ts)
    amp_plain = np.zeros(nT)
    amp_scheme = np.zeros(nT)
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < nT else -1
        k = step_coefficients(schedule, t, s, eta)
        mu = eigs(i, t)
        u = abs(k.b) * mu
        if i in selected:
            assert iec is not None
            _, _, fK = amplification_factors(k.a, u, iec.K, list(iec.lambdas))
        elif name == "heun" and s >= 0:
            mu_s = eigs(i, s)
            fK = k.a + 0.5 * k.b * (mu + mu_s * (k.a + k.b * mu))
        else:
            fK = k.a - u
        amp_plain[i] = float(np.max(np.abs(k.a - u))) / k.a
        amp_scheme[i] = float(np.max(np.abs(fK))) / k.a
    return amp_plain, amp_scheme


def _efficient_eigs(efficient: Any, traj: Trajectory) -> Any:
    """eigs(i, t): symmetric-part eigenvalues of the efficient model's Jacobian at the first sample's perturbed
    state x~_i (constant for affine models), when iec_theory.constants.exact_jacobian certifies it."""
    from .perturbations import Perturbation

    if not isinstance(efficient, Perturbation):
        return None
    try:
        from .constants import exact_jacobian
    except ImportError:  # pragma: no cover
        return None
    n_states = traj.xs.shape[0]

    def X(i: int) -> torch.Tensor:
        return traj.xs[min(i, n_states - 1)][:1].reshape(1, -1).double()

    if exact_jacobian(efficient, X(0), int(traj.timesteps[0])) is None:
        return None

    def eigs(i: int, t: int) -> np.ndarray:
        J = exact_jacobian(efficient, X(i), int(t))[0]
        return torch.linalg.eigvalsh(0.5 * (J + J.T)).numpy()

    return eigs


def _shadow_local_errors(exact: Any, efficient: Any, ref: Trajectory, nT: int) -> np.ndarray:
    """eta at the reference states: a fresh run of the efficient model fed the reference trajectory
    (one evaluation per step, begin_step called as in sampling): ||eps~(x_i) - eps(x_i)||, batch mean."""
    _reset(efficient)
    begin = getattr(efficient, "begin_step", None)
    out = np.zeros(nT)
    for i, t in enumerate(ref.timesteps[:nT]):
        if begin is not None:
            begin(i, t)
        x = ref.xs[i]
        e = evaluate(efficient, x, t, False) - evaluate(exact, x, t, False)
        out[i] = float(torch.linalg.vector_norm(e.reshape(e.shape[0], -1).double(), dim=1).mean())
    return out


def _growth(E: np.ndarray, eta: np.ndarray, ds: np.ndarray) -> dict[str, Any]:
    try:
        from .growth import classify
    except ImportError:  # pragma: no cover - growth is part of the package
        return {}
    if not np.all(np.isfinite(E)) or float(np.max(E)) <= 0.0:
        return {"label": "zero" if np.all(E == 0) else "nonfinite", "rho": float("nan"), "kappa": float("nan")}
    res = classify(E, eta, ds) if float(np.sum(eta)) > 0 else classify(E)
    return {"label": res.label, "rho": float(res.rho), "kappa": float(res.kappa), "series": res.series,
            "label_E": res.label_E, "label_R": res.label_R}


def measure(
    exact: Any,
    efficient: Any,
    schedule: Schedule,
    x_T: torch.Tensor,
    T: int | Sequence[int],
    eta: float = 0.0,
    iec: IECConfig | None = None,
    *,
    method: str = "iec",
    nfe_target: int | None = None,
    seed: int = 0,
    spacing: str = "uniform",
    total: bool = True,
    rayleigh: bool = True,
    keep_trajectories: bool = False,
) -> Measurement:
    """Paired runs from x_T with keyed noise `seed`: the method on the efficient model, the same method on
    the exact model, plain DDIM (T steps) on the exact model; plus the exact flow (total error) when
    `exact` has `exact_flow` and eta == 0.

    `method`: "iec" (sample with `iec`; plain when iec is None), "ddim" (plain, iec ignored),
    "ddim_matched", "heun", "repeat" (iec_theory.baselines). The deployment curve is kept at the states
    whose times the method's grid shares with the plain T-step grid (all of them except for ddim_matched,
    where the T-step grid is nested in the finer one when N/T is a multiple of N/nfe).
    """
    from .baselines import run_method

    ts_plain = resolve_timesteps(schedule, T, spacing)
    T_n = len(ts_plain)
    rec = Recorder(efficient)
    _reset(efficient)

    def noise() -> NoiseSource:
        return NoiseSource(seed=seed, keyed=True)

    name = "iec" if method == "iec" and iec is not None else ("ddim" if method in ("iec", "ddim") else method)
    run_iec = iec if name != "ddim" else None
    pert = run_method(name, rec, schedule, x_T, T_n, eta, run_iec, noise(), spacing, nfe_target)
    ref_same = run_method(name, exact, schedule, x_T, T_n, eta, run_iec, noise(), spacing, nfe_target)
    ref_plain = sample(exact, schedule, x_T, ts_plain, eta, None, noise=noise())
    ts = list(pert.timesteps)
    nT = len(ts)
    abars = state_abars(schedule, ts)
    prop = error_curve(pert.xs, ref_same.xs, abars)
    times_m = ts + [-1]
    pos = {tm: n for n, tm in enumerate(times_m)}
    common = [(pos[tp], n) for n, tp in enumerate(ts_plain + [-1]) if tp in pos]
    idx_m = [a for a, _ in common]
    idx_p = [b for _, b in common]
    dep = error_curve(pert.xs[idx_m], ref_plain.xs[idx_p], abars[idx_m])
    dep["states"] = np.array(idx_m)
    tot = svf = None
    flow_fn = getattr(exact, "exact_flow", None)
    if total and flow_fn is not None and eta == 0.0:
        flows = [x_T]
        for n in range(1, nT + 1):
            s = ts[n] if n < nT else -1
            flows.append(flow_fn(x_T, ts[0], s))
        xs_flow = torch.stack(flows).to(x_T.dtype)
        tot = error_curve(pert.xs, xs_flow, abars)
        svf = error_curve(ref_same.xs, xs_flow, abars)
    eta_t, eta_mx = local_errors(rec, exact, nT)
    ds = np.array([step_coefficients(schedule, ts[i], ts[i + 1] if i + 1 < nT else -1, eta).dsigma
                   for i in range(nT)])
    E = prop["xbar"]
    with np.errstate(divide="ignore", invalid="ignore"):
        amp_emp = np.where(E[:-1] > 0, E[1:] / E[:-1], np.nan)
    amp_ray = np.full(nT, np.nan)
    if rayleigh and name != "heun":
        for i, t in enumerate(ts):
            s = ts[i + 1] if i + 1 < nT else -1
            k = step_coefficients(schedule, t, s, eta)
            x_ref, x_p = ref_same.xs[i], pert.xs[i]
            delta = (x_p - x_ref).reshape(x_p.shape[0], -1).double()
            nrm2 = (delta * delta).sum(1)
            if float(nrm2.max()) == 0.0:
                continue
            de = (evaluate(exact, x_p, t, False) - evaluate(exact, x_ref, t, False)).reshape(delta.shape).double()
            mu = ((de * delta).sum(1) / nrm2.clamp_min(1e-300))[nrm2 > 0]
            amp_ray[i] = float((k.a + k.b * mu).abs().mean()) / k.a
    selected = iec.select.resolve(ts) if name == "iec" and iec is not None and iec.K > 0 else frozenset()
    amp_plain = amp_scheme = amp_plain_eff = amp_scheme_eff = None
    if hasattr(exact, "affine_eigvals"):
        amp_plain, amp_scheme = _amplification(schedule, ts, eta, iec, selected, name,
                                               lambda i, t: np.asarray(exact.affine_eigvals(t), dtype=np.float64))
    eff_eigs = _efficient_eigs(efficient, pert)
    if eff_eigs is not None:
        amp_plain_eff, amp_scheme_eff = _amplification(schedule, ts, eta, iec, selected, name, eff_eigs)
    eta_ref = _shadow_local_errors(exact, efficient, ref_same, nT)
    _reset(efficient)
    growth = _growth(E, eta_ref, ds)
    m = Measurement(timesteps=ts, abars=abars, dsigmas=ds,
                    nfe={"perturbed": pert.nfe, "reference_same": ref_same.nfe, "reference_plain": ref_plain.nfe},
                    propagated=prop, deployment=dep, total=tot, scheme_vs_flow=svf, eta=eta_t, eta_max=eta_mx,
                    eta_ref=eta_ref, amp_empirical=amp_emp, amp_rayleigh=amp_ray, amp_plain=amp_plain,
                    amp_scheme=amp_scheme, amp_plain_eff=amp_plain_eff, amp_scheme_eff=amp_scheme_eff,
                    iec_steps=sorted(selected), early_stops=sum(int(r.early_stop) for r in pert.steps),
                    growth=growth)
    if keep_trajectories:
        m.trajectories = {"perturbed": pert, "reference_same": ref_same, "reference_plain": ref_plain}
    return m
