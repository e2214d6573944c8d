"""The paper's claims C1 and C2 made precise (THEORY.md section 5), with hypotheses and verdicts.

C1  "without correction, approximation errors can accumulate exponentially across timesteps".
    Proven (T6 lower bound; T1m: rho_t > 1 exactly when the explicit step is too long) under
    H1: the exact model is affine and symmetric and some eigen-direction v is STIFF over the run:
        sum_i log |g_i / a_i| >= C1_MIN_LOG_AMPLIFICATION = 3 KAPPA_EXP (xbar factor of the plain step,
        g = a - u; stiff means u > a + 1; the margin over the classifier's KAPPA_EXP keeps the observed label
        robust), the direction is stiff at EVERY step (|g_i / a_i| > 1; T6 alone needs only the product,
        the sustained form makes the geometric growth visible to the classifier rather than a late burst),
        and the local errors have a component along v.
    Conclusion tested: the plain scheme's propagated error is classified "exponential".
    Outside H1: the exact Gaussian score is never stiff (docs/PROOFS.md), and plain DDIM accumulates
    errors at most linearly there -- C1 fails as an unconditional statement.

C2  "IEC reduces that growth to linear, without retraining".
    Proven (T3 + T4 + T5) under
    H2 (affine exact model): every step is corrected and after the corrections actually applied every
        eigen-direction's xbar factor is non-expansive, |f_K| / a <= 1 (true when lambda_k <= 1,
        lambda < 2/(1 + u) on every step and K large enough: T3, T5); then T2 gives
        ||deltabar_s|| <= ||deltabar_t|| + h_t eta_t-type accumulation;
    H2 (general exact model): every step corrected, m_t >= 0 on every segment (T4), 0 < lambda_k <= 1.
    Conclusion tested: the IEC scheme's propagated error is classified "linear".
    Counterexamples outside H2 (tests/test_bounds_claims.py): the official DDPM preset (K = 1,
    lambda = 0.5) in the stiff regime (|r| = |1 - (1 + u)/2| > 1 once u > 3); a constant bias error,
    which IEC leaves (almost) unchanged -- `bias_reduction` -> 1 as the steps refine; an expansive mixture
    region (m < 0), where neither scheme is linear.

Verdicts: "holds under H", "violated under H" (would contradict a theorem: a bug), "fails outside H"
(a counterexample to the unconditional claim), "holds outside H" (the conclusion happens to hold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .growth import KAPPA_EXP, GrowthResult, classify
from .theorems.base import Hypothesis, PairedRun
from .theorems.instances import ToyInstance
from .theorems.t6 import direction_factors

__all__ = ["C1", "C2", "CLAIMS", "Claim", "ClaimVerdict", "bias_reduction", "converging_iec", "growth_of",
           "stiffness_profile"]

NONEXPANSIVE_SLACK = 1e-12
C1_MIN_LOG_AMPLIFICATION = 3 * KAPPA_EXP   # H1: the stiff direction amplifies by >= e^9 over the run


@dataclass
class ClaimVerdict:
    claim: str
    status: str
    hypotheses: list[Hypothesis]
    label: str                       # growth label of the scheme the claim is about
    evidence: dict[str, Any] = field(default_factory=dict)
    instance: dict[str, Any] | None = None

    @property
    def under_H(self) -> bool:
        return all(h.holds for h in self.hypotheses)


def growth_of(run: PairedRun) -> GrowthResult:
    """Growth label of a run's propagated error in xbar, with the local errors (ratio R_n)."""
    return classify(run.delta_bar_norms(), run.local_errors(), run.dsigmas())


def _verdict(holds_H: bool, conclusion: bool) -> str:
    if holds_H:
        return "holds under H" if conclusion else "violated under H"
    return "holds outside H" if conclusion else "fails outside H"


class Claim:
    name = "C?"
    statement = ""
    hypotheses_text: tuple[str, ...] = ()
    proven_by: tuple[str, ...] = ()

    def evaluate(self, inst: ToyInstance) -> ClaimVerdict:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "statement": self.statement, "hypotheses": list(self.hypotheses_text),
                "proven_by": list(self.proven_by)}


class _C1(Claim):
    name = "C1"
    statement = "without correction, approximation errors can accumulate exponentially across timesteps"
    hypotheses_text = ("H1: affine symmetric exact model with an eigen-direction v that is stiff over the run: "
                       f"sum_i log|g_i / a_i| >= C1_MIN_LOG_AMPLIFICATION = {C1_MIN_LOG_AMPLIFICATION}",
                       "... and stiff at every step (|g_i / a_i| > 1), so that the growth is visible in the curve",
                       "the local errors have a nonzero component along v")
    proven_by = ("T6", "T1m")

    def hypotheses(self, run: PairedRun) -> tuple[list[Hypothesis], dict[str, Any]]:
        if not callable(getattr(run.exact, "affine_eigvals", None)):
            return [Hypothesis("affine symmetric exact model", False)], {}
        F = direction_factors(run)                                   # [T, d] plain factors
        a = np.array([st.k.a for st in run.steps])[:, None]
        logf = np.log(np.abs(F / a) + 1e-300)
        logamp = logf.sum(0)
        j = int(np.argmax(logamp))
        sustained = bool(np.all(logf[:, j] > 0))
        from .theorems._common import eigenbasis
        from .theorems.base import eval_model

        v = eigenbasis(run.exact)[:, j]
        comp = max(abs(float(((y - eval_model(run.exact, x, st.k.t)) @ v).sum()))
                   for st in run.steps for x, y in st.calls_pert[:1])
        return ([Hypothesis("stiff direction (xbar log-amplification >= 3 KAPPA_EXP)",
                            bool(logamp[j] >= C1_MIN_LOG_AMPLIFICATION),
                            f"log-amplification {logamp[j]:.3g} along eigen-direction {j}"),
                 Hypothesis("stiff at every step (|g_i/a_i| > 1 along it)", sustained),
                 Hypothesis("error component along it", comp > 0, f"max |<e, v>| = {comp:.3g}")],
                {"direction": j, "log_amplification": float(logamp[j])})

    def evaluate(self, inst: ToyInstance) -> ClaimVerdict:
        run = replace(inst, iec="none").run()
        hyps, info = self.hypotheses(run)
        g = growth_of(run)
        holds = all(h.holds for h in hyps)
        ev = {"label": g.label, "label_E": g.label_E, "kappa": g.kappa, "R_max": g.fit.get("R_max"),
              "final_error": float(run.delta_bar_norms()[-1]), **info}
        return ClaimVerdict(self.name, _verdict(holds, g.label == "exponential"), hyps, g.label, ev, inst.describe())


class _C2(Claim):
    name = "C2"
    statement = "IEC reduces that growth to linear, without retraining"
    hypotheses_text = ("H2 (affine exact model): every step corrected and the applied corrections make every "
                       "eigen-direction non-expansive in xbar, |f_K| / a <= 1 (lambda < 2/(1+u), enough K: T3/T5)",
                       "H2 (general exact model): every step corrected, 0 < lambda_k <= 1 and the exact model "
                       "monotone (m_t >= 0) on every segment between the two runs (T4)")
    proven_by = ("T2", "T3", "T4", "T5")

    def hypotheses(self, run: PairedRun) -> list[Hypothesis]:
        every = all(st.iec for st in run.steps)
        hyps = [Hypothesis("every step corrected", every)]
        if callable(getattr(run.exact, "affine_eigvals", None)):
            F = direction_factors(run)
            a = np.array([st.k.a for st in run.steps])[:, None]
            worst = float(np.max(np.abs(F) / a))
            hyps.append(Hypothesis("non-expansive xbar factors |f_K|/a <= 1", worst <= 1 + NONEXPANSIVE_SLACK,
                                   f"max |f_K|/a = {worst:.4g}"))
            return hyps
        from .theorems._common import batch_segment_constants

        lams_ok = run.iec is not None and all(0 < v <= 1 for v in run.iec.lambdas)
        m_min = math.inf
        for st in run.steps:
            c = batch_segment_constants(run.exact, st.x_s, st.xp_s, st.k.t)
            m_min = min(m_min, c.m if c is not None else -math.inf)
        hyps += [Hypothesis("0 < lambda_k <= 1", lams_ok),
                 Hypothesis("exact model monotone on every segment (m >= 0)", m_min >= 0, f"min m = {m_min:.3g}")]
        return hyps

    def evaluate(self, inst: ToyInstance) -> ClaimVerdict:
        require_iec = inst.iec != "none"
        run = inst.run() if require_iec else replace(inst, iec="relaxed", K=1, lam=0.5).run()
        plain = replace(inst, iec="none").run()
        hyps = self.hypotheses(run)
        g = growth_of(run)
        gp = growth_of(plain)
        holds = all(h.holds for h in hyps)
        e_iec, e_plain = float(run.delta_bar_norms()[-1]), float(plain.delta_bar_norms()[-1])
        ev = {"label": g.label, "label_plain": gp.label, "kappa": g.kappa, "R_max": g.fit.get("R_max"),
              "final_error_iec": e_iec, "final_error_plain": e_plain,
              "reduction": e_iec / e_plain if e_plain > 0 else float("nan"), "nfe": run.nfe[1]}
        return ClaimVerdict(self.name, _verdict(holds, g.label == "linear"), hyps, g.label, ev, inst.describe())


def bias_reduction(inst: ToyInstance) -> float:
    """Final propagated error (xbar) of the instance's IEC scheme divided by plain DDIM's, same error.

    For a constant bias beta on the exact Gaussian toy, along an eigen-direction with u_i = |b_i| mu per step,
    plain: sum_i h_i beta prod_{j>i} (1 - u_j/a_j), converged IEC: sum_i h_i beta/(1+u_i) prod_{j>i} 1/(1+u_j):
    both are sum_i h_i beta (1 - O(u)), so the ratio -> 1 as the steps refine (u -> 0): IEC leaves the bias.
    """
    e_iec = float(inst.run().delta_bar_norms()[-1])
    e_plain = float(replace(inst, iec="none").run().delta_bar_norms()[-1])
    return e_iec / e_plain


C1 = _C1()
C2 = _C2()
CLAIMS = {"C1": C1, "C2": C2}


def stiffness_profile(inst: ToyInstance) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step: a_t, |b_t| and the eigenvalues mu of C_t [T, d] of an affine exact model (no run needed)."""
    from .ddim import step_coefficients

    exact = inst.exact_model()
    sch = exact.schedule
    ts = sch.timesteps(inst.T, inst.spacing)
    a, b, mu = [], [], []
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        k = step_coefficients(sch, t, s, inst.eta)
        a.append(k.a)
        b.append(abs(k.b))
        mu.append(np.asarray(exact.affine_eigvals(t), dtype=np.float64))
    return np.array(a), np.array(b), np.array(mu)


def converging_iec(inst: ToyInstance, K_max: int = 60) -> ToyInstance:
    """The instance with relaxed IEC on every step, lambda = 1/(1 + u_max) (< 2/(1 + u) everywhere) and the
    smallest K <= K_max that makes every eigen-direction non-expansive in xbar (|f_K|/a <= 1): H2 of C2."""
    from .theory import amplification_factors

    a, b, mu = stiffness_profile(inst)
    u = b[:, None] * mu
    lam = 1.0 / (1.0 + float(u.max()))
    for K in range(1, K_max + 1):
        _, _, fK = amplification_factors(a[:, None], u, K, lam)
        if float(np.max(np.abs(fK) / a[:, None])) <= 1.0:
            break
    return replace(inst, iec="relaxed", K=K, lam=lam, every=1, noise="shared")
