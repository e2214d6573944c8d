"""Common machinery of the executable theorems: paired runs, hypothesis checks, results.

A `PairedRun` samples the SAME scheme twice from the same x_T (plus an optional initial perturbation)
with the same keyed noise: once on the exact model eps (the reference) and once on the efficient model
eps~ = eps + e (the perturbed run).  Both models are wrapped in a `Recorder` that keeps every call
(step index, input, output), so the local errors e(x) = eps~(x) - eps(x) at the points the sampler
actually evaluated are known exactly, even for stateful wrappers (cache, iid noise).
delta_i = x~_i - x_i is the propagated error (THEORY.md section 3, distance 1).

Every theorem is an object with `statement_text`, `statement_typst`, `hypotheses_text`,
`check_hypotheses(run)`, `per_step(run)` (measured quantity and bound per checked step) and
`check(run) -> TheoremResult`.  Proofs: docs/PROOFS.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..ddim import StepCoefficients, step_coefficients
from ..iec import IECConfig
from ..sampler import NoiseSource, resolve_timesteps, sample

__all__ = ["Hypothesis", "PairedRun", "Recorder", "StepData", "Theorem", "TheoremResult", "paired_run",
           "reference_error", "reference_local_errors"]

STATUSES = ("holds", "violated", "hypotheses not met", "vacuous")   # vacuous: a lower bound <= 0 on every step
ROUND_REL = 1e-11   # rounding allowance, relative to the size of the states combined in a step


class Recorder:
    """Wraps an eps model; records (step index, input, output) of every call; forwards begin_step."""

    def __init__(self, model: Any):
        self.model = model
        self.step = -1
        self.calls: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def begin_step(self, step_index: int, t: int) -> None:
        self.step = int(step_index)
        fn = getattr(self.model, "begin_step", None)
        if fn is not None:
            fn(step_index, t)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.model(x, t)
        self.calls.append((self.step, x.detach().clone(), out.detach().clone()))
        return out

    def by_step(self, T: int) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        out: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(T)]
        for i, x, y in self.calls:
            out[i].append((x, y))
        return out


@dataclass
class StepData:
    """Everything about step i (t -> s) of a paired run."""

    i: int
    k: StepCoefficients
    x_t: torch.Tensor          # reference state before the step [B, d]
    xp_t: torch.Tensor         # perturbed state before the step
    x_s: torch.Tensor          # reference state after
    xp_s: torch.Tensor         # perturbed state after
    z: torch.Tensor            # the step's noise z (zeros when c = 0)
    iec: bool                  # IEC applied (in the perturbed run)
    corr_ref: int              # corrections applied in each run
    corr_pert: int
    calls_ref: list[tuple[torch.Tensor, torch.Tensor]]
    calls_pert: list[tuple[torch.Tensor, torch.Tensor]]
    early_stop_pert: bool = False   # the perturbed run's correction loop stopped on its tolerance

    @property
    def h(self) -> float:
        """|b| / sqrt(abar_s): the xbar step length (= dsig when eta = 0)."""
        return abs(self.k.b) / math.sqrt(self.k.abar_s)

    def scale(self) -> float:
        """Size of the states the step combines (for the rounding allowance)."""
        n = [float(torch.linalg.vector_norm(v)) for v in (self.x_t, self.xp_t, self.x_s, self.xp_s)]
        return 1.0 + self.k.a * (n[0] + n[1]) + n[2] + n[3]


@dataclass
class PairedRun:
    """Reference and perturbed trajectories of one scheme (see the module docstring)."""

    exact: Any
    perturbed: Any
    schedule: Any
    timesteps: list[int]
    eta: float
    iec: IECConfig | None
    xs_ref: torch.Tensor       # [T+1, B, d]
    xs_pert: torch.Tensor
    steps: list[StepData]
    nfe: tuple[int, int]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def T(self) -> int:
        return len(self.timesteps)

    def delta(self) -> torch.Tensor:
        return self.xs_pert - self.xs_ref

    def abars(self) -> np.ndarray:
        """abar of the state after n steps, n = 0..T (abar_{tau_T}, ..., abar_{-1} = 1)."""
        ts = list(self.timesteps) + [-1]
        return np.array([self.schedule.abar(t) for t in ts])

    def delta_bar_norms(self) -> np.ndarray:
        """||deltabar_n||, n = 0..T (xbar coordinates, whole batch)."""
        d = self.delta().reshape(self.T + 1, -1).double()
        return torch.linalg.vector_norm(d, dim=1).numpy() / np.sqrt(self.abars())

    def local_errors(self) -> np.ndarray:
        """eta_i at the REFERENCE states (THEORY.md section 3): ||eps~(x_i, t_i) - eps(x_i, t_i)|| (whole batch),
        and at an IEC step also at the reference's state after its corrections, x_{i+1}, evaluated at t_i (the
        point the reference's implicit step converges to).  A property of the efficient model along the
        reference path, independent of the perturbed run: the only form used for verdicts."""
        if "eta_ref" not in self.info:
            self.info["eta_ref"] = reference_local_errors(self)
        return self.info["eta_ref"]

    def perturbed_local_errors(self) -> np.ndarray:
        """eta_i = max ||e|| over the evaluations the PERTURBED run made at step i (||e(x~_i)|| for a plain step;
        at an IEC step also e(y~_0) .. e(y~_{K-1})).  Only T1's statement uses this form (with the exact
        model's Lipschitz constant); it grows with the propagated error and must never decide a verdict."""
        out = np.zeros(self.T)
        for st in self.steps:
            used = st.calls_pert[: (st.corr_pert + 1) if st.iec else 1]
            for xin, yout in used:
                e = float(torch.linalg.vector_norm(yout - eval_model(self.exact, xin, st.k.t)))
                out[st.i] = max(out[st.i], e)
        return out

    def dsigmas(self) -> np.ndarray:
        return np.array([st.h for st in self.steps])


def reference_local_errors(run: PairedRun) -> np.ndarray:
    """Teacher-forced pass of the efficient model along the reference trajectory (begin_step called in order,
    so cached or step-quantized wrappers see the schedule they see in sampling): eta_i as in
    PairedRun.local_errors.  Resets the efficient model before and after (when it has `reset`)."""
    model = run.perturbed
    reset = getattr(model, "reset", None)
    begin = getattr(model, "begin_step", None)
    if reset is not None:
        reset()
    out = np.zeros(run.T)
    for st in run.steps:
        if begin is not None:
            begin(st.i, st.k.t)
        points = [st.x_t] + ([st.x_s] if st.iec else [])
        for x in points:
            e = eval_model(model, x, st.k.t) - eval_model(run.exact, x, st.k.t)
            out[st.i] = max(out[st.i], float(torch.linalg.vector_norm(e)))
    if reset is not None:
        reset()
    return out


def reference_error(run: PairedRun, st: StepData) -> torch.Tensor:
    """e(x_t) = eps~(x_t, t) - eps(x_t, t) at the step's REFERENCE state.  Deterministic efficient models are
    evaluated directly; for stateful ones (cache, iid noise) the recorded perturbed evaluation is used."""
    from ._common import is_deterministic

    if is_deterministic(run.perturbed):
        return eval_model(run.perturbed, st.x_t, st.k.t) - eval_model(run.exact, st.x_t, st.k.t)
    xin, yout = st.calls_pert[0]
    return yout - eval_model(run.exact, xin, st.k.t)


def eval_model(model: Any, x: torch.Tensor, t: int) -> torch.Tensor:
    """model(x, t) without touching a recorder (exact models are stateless)."""
    return model(x, torch.full((x.shape[0],), int(t), dtype=torch.long))


def paired_run(exact: Any, perturbed: Any, schedule: Any, x_T: torch.Tensor, T: int | list[int], eta: float = 0.0,
               iec: IECConfig | None = None, seed: int = 0, spacing: str = "uniform",
               delta_T: torch.Tensor | None = None) -> PairedRun:
    """Run the scheme on `exact` (reference) and `perturbed` from x_T (perturbed: x_T + delta_T)."""
    reset = getattr(perturbed, "reset", None)
    if reset is not None:
        reset()
    rec_ref, rec_pert = Recorder(exact), Recorder(perturbed)
    xT = x_T.to(torch.float64)
    xpT = xT if delta_T is None else xT + delta_T.to(torch.float64)
    tr = sample(rec_ref, schedule, xT, T, eta, iec, noise=NoiseSource(seed=seed, keyed=True), spacing=spacing)
    tp = sample(rec_pert, schedule, xpT, T, eta, iec, noise=NoiseSource(seed=seed, keyed=True), spacing=spacing)
    ts = resolve_timesteps(schedule, T, spacing)
    noise = NoiseSource(seed=seed, keyed=True)
    by_ref, by_pert = rec_ref.by_step(len(ts)), rec_pert.by_step(len(ts))
    steps = []
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        k = step_coefficients(schedule, t, s, eta)
        z = noise.draw(xT, i, 0) if k.c != 0.0 else torch.zeros_like(xT)
        steps.append(StepData(i, k, tr.xs[i], tp.xs[i], tr.xs[i + 1], tp.xs[i + 1], z, tp.steps[i].iec_applied,
                              tr.steps[i].corrections, tp.steps[i].corrections, by_ref[i], by_pert[i],
                              tp.steps[i].early_stop))
    return PairedRun(exact, perturbed, schedule, ts, float(eta), iec, tr.xs, tp.xs, steps, (tr.nfe, tp.nfe))


@dataclass
class Hypothesis:
    """One hypothesis of a theorem and whether it holds on an instance."""

    name: str
    holds: bool
    detail: str = ""


@dataclass
class TheoremResult:
    """Outcome of Theorem.check on one instance."""

    theorem: str
    status: str                       # "holds" | "violated" | "hypotheses not met" | "vacuous" (lower bound
    #                                   <= its allowance on every step: no evidence either way, never counted as holds)
    worst_margin: float               # min over steps of the relative margin, rounding allowance included
    #                                   (upper: (bound - measured + allowance)/bound; lower: (measured - bound +
    #                                   allowance)/measured; identity: (allowance - deviation)/allowance; < 0: violated)
    tightness: np.ndarray             # per checked step: measured / bound (lower bounds: bound / measured)
    measured: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bound: np.ndarray = field(default_factory=lambda: np.zeros(0))
    steps: list[int] = field(default_factory=list)
    hypotheses: list[Hypothesis] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def median_tightness(self) -> float:
        t = self.tightness[np.isfinite(self.tightness)]
        return float(np.median(t)) if t.size else float("nan")

    @property
    def max_tightness(self) -> float:
        t = self.tightness[np.isfinite(self.tightness)]
        return float(np.max(t)) if t.size else float("nan")

    def summary(self) -> dict[str, Any]:
        return {"theorem": self.theorem, "status": self.status, "worst_margin": self.worst_margin,
                "certified": bool(self.detail.get("certified", True)),
                "median_tightness": self.median_tightness, "max_tightness": self.max_tightness,
                "steps_checked": len(self.steps),
                "hypotheses": {h.name: h.holds for h in self.hypotheses}}


@dataclass
class PerStep:
    """Measured quantity and bound on each checked step; `kind` 'upper', 'lower' or 'identity'."""

    steps: list[int]
    measured: np.ndarray
    bound: np.ndarray
    allowance: np.ndarray          # rounding allowance (absolute) per step
    kind: str = "upper"
    detail: dict[str, Any] = field(default_factory=dict)
    deviation: np.ndarray | None = None   # identity kind: |measured - predicted| (vector norm) per step


class Theorem:
    """Base class: subclasses set the texts and implement check_hypotheses and per_step."""

    name = "T?"
    title = ""
    statement_text = ""
    statement_typst = ""
    hypotheses_text: tuple[str, ...] = ()
    measured_text = ""
    proof = "docs/PROOFS.md"

    def check_hypotheses(self, run: PairedRun) -> list[Hypothesis]:  # pragma: no cover - abstract
        raise NotImplementedError

    def per_step(self, run: PairedRun) -> PerStep:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def hypotheses(self) -> tuple[str, ...]:
        return self.hypotheses_text

    def bound(self, run: Any) -> np.ndarray:
        """The per-step bound (prediction for the identities T2/T3) on the checked steps."""
        return self.per_step(_as_run(run)).bound

    def measured(self, run: Any) -> np.ndarray:
        """The measured quantity on the checked steps."""
        return self.per_step(_as_run(run)).measured

    def check(self, run: Any) -> TheoremResult:
        """Check on a PairedRun (or on anything with .run(), e.g. a ToyInstance)."""
        run = _as_run(run)
        hyps = self.check_hypotheses(run)
        if not all(h.holds for h in hyps):
            return TheoremResult(self.name, "hypotheses not met", float("nan"), np.zeros(0), hypotheses=hyps)
        ps = self.per_step(run)
        m, b, tol = ps.measured, ps.bound, ps.allowance
        arrays = [m, b, tol] + ([ps.deviation] if ps.deviation is not None else [])
        if not all(bool(np.all(np.isfinite(np.asarray(v, dtype=np.float64)))) for v in arrays):
            hyps = hyps + [Hypothesis("finite arithmetic (no overflow in the measured or bound values)", False)]
            return TheoremResult(self.name, "hypotheses not met", float("nan"), np.zeros(0), hypotheses=hyps)
        if ps.kind == "upper":
            gap = b - m
            tight = np.where(b > 0, m / np.where(b > 0, b, 1.0), np.where(m > tol, np.inf, 0.0))
            rel = np.where(b > 0, (gap + tol) / np.where(b > 0, b, 1.0), np.where(gap >= -tol, 0.0, -np.inf))
        elif ps.kind == "lower":
            gap = m - b
            bp = np.maximum(b, 0.0)   # a negative lower bound is vacuous: tightness 0
            tight = np.where(m > 0, bp / np.where(m > 0, m, 1.0), 0.0)
            rel = np.where(m > 0, (m - bp + tol) / np.where(m > 0, m, 1.0), np.where(gap >= -tol, 0.0, -np.inf))
        else:  # identity: the measured vector equals the predicted one (norms m, b) to rounding
            dev = ps.deviation if ps.deviation is not None else np.abs(m - b)
            gap = tol - dev
            ok = np.abs(b) > 1e3 * tol          # ratios of rounding-level vectors are not informative
            tight = np.where(ok, np.abs(m) / np.where(ok, np.abs(b), 1.0), np.nan)
            rel = gap / np.where(tol > 0, tol, 1.0)
        violated = bool(np.any(gap < -tol)) if ps.kind != "identity" else bool(np.any(gap < 0))
        worst = float(np.min(rel)) if rel.size else float("nan")
        status = "violated" if violated else "holds"
        if status == "holds" and ps.kind == "lower" and not bool(np.any(b > tol)):
            status = "vacuous"
        if not ps.steps:
            status = "hypotheses not met"
            hyps = hyps + [Hypothesis("at least one step to check", False)]
        return TheoremResult(self.name, status, worst, tight, m, b, ps.steps, hyps, ps.detail)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "statement": self.statement_text,
                "typst": self.statement_typst, "hypotheses": list(self.hypotheses_text),
                "measured": self.measured_text, "proof": self.proof}


def _as_run(obj: Any) -> PairedRun:
    return obj if isinstance(obj, PairedRun) else obj.run()


def norm(v: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(v))
