"""The paper's claims C1 and C2 made precise (THEORY.md section 5), with hypotheses and verdicts.

Both claims are judged on the propagated error E_n itself (xbar, growth.classify's E label); the ratio R_n
with local errors at the REFERENCE states is reported as a diagnostic and never changes a verdict
(THEORY.md sections 3 and 6).  Stiffness and non-expansiveness are properties of the EFFICIENT model eps~
(its Jacobian C~_t), not of the exact one (linearization.py).

C1  "without correction, approximation errors can accumulate exponentially across timesteps".
    Proven by T6 (lower bound; T1m only explains it: its rho_t > 1 is an upper bound, not a rate) under
    H1: (a) the reference is the exact model of the data law (its samples lie at data scale: evidence for
        C1 must not come from a reference that itself diverges); (b) eps~ is affine with a certified
        Jacobian and STIFF: the plain step's xbar factors G~_i / a_i = I + (b_i / a_i) C~_i amplify some
        direction v by log >= C1_MIN_LOG_AMPLIFICATION = 3 KAPPA_EXP over the run; (c) by a factor > 1 at every
        step; (d) the local errors at the reference states have a component along v.
    Conclusion tested: the plain scheme's E_n is classified "exponential".
    Outside H1: with the exact Gaussian score as the efficient model's Jacobian (bias, small scale errors)
    plain DDIM is non-expansive in xbar (docs/PROOFS.md) and accumulates at most linearly -- C1 fails as an
    unconditional statement.

C2  "IEC reduces that growth to linear, without retraining".
    Proven (T2 + T3 + T5; T4 for general models) under
    H2 (affine efficient model): every step corrected and the corrections actually applied make every
        step non-expansive in xbar, ||P~_K|| / a <= 1, with P~_K the IEC propagation matrix built from C~_t
        (true when lambda < 2/(1 + u~) on every step and K large enough: T3, T5);
    H2 (general efficient model): every step corrected, 0 < lambda_k <= 1, eps~ certified monotone
        (m~ >= 0) on every segment between the runs (T4) and every correction loop converged.
    Conclusion tested: the IEC scheme's E_n is classified "linear" (at most linear).
    Counterexamples outside H2 (tests/test_bounds_claims.py): the official DDPM preset (K = 1,
    lambda = 0.5) with a stiff efficient model (|1 - (1 + u~)/2| > 1 once u~ > 3); a constant bias error,
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
import torch

from .growth import KAPPA_EXP, GrowthResult, classify
from .linearization import common_eigenbasis, efficient_jacobians, reference_at_data_scale, step_factor_xbar
from .theorems._common import eigenbasis
from .theorems.base import Hypothesis, PairedRun, reference_error
from .theorems.instances import ToyInstance

__all__ = ["C1", "C2", "CLAIMS", "Claim", "ClaimVerdict", "bias_reduction", "converging_iec", "growth_of",
           "stiffness_profile"]

NONEXPANSIVE_SLACK = 1e-12
C1_MIN_LOG_AMPLIFICATION = 3 * KAPPA_EXP   # H1: the stiff direction amplifies by >= e^9 over the run
CONVERGED_TOL = 1e-6                        # general H2: correction loops that early-stop at this tol converged


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
    """Growth of a run's propagated error E_n in xbar; the label is decided on E_n (label_E); the ratio R_n with
    the local errors at the REFERENCE states is a diagnostic only (THEORY.md section 6)."""
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


def _stiffness(run: PairedRun) -> tuple[list[Hypothesis], dict[str, Any], torch.Tensor | None]:
    """H1's stiffness hypotheses on the EFFICIENT model's plain-step xbar factors G~_i / a_i (linearization.py)."""
    Js = efficient_jacobians(run)
    if Js is None:
        return ([Hypothesis("efficient model affine with a certified Jacobian (stiffness checkable)", False,
                            "eps~ is not affine or its Jacobian is not certified")], {}, None)
    F = [step_factor_xbar(st.k, J, ()) for st, J in zip(run.steps, Js)]
    V = eigenbasis(run.exact)
    if common_eigenbasis(V, F):
        g = np.array([torch.diagonal(V.T @ Fi @ V).numpy() for Fi in F])      # [T, d] per-direction factors
        logf = np.log(np.abs(g) + 1e-300)
        logamp = logf.sum(0)
        j = int(np.argmax(logamp))
        v = V[:, j]
        sustained = bool(np.all(logf[:, j] > 0))
        where = f"eigen-direction {j}"
        amp = float(logamp[j])
    else:
        M = torch.eye(F[0].shape[0], dtype=torch.float64)
        for Fi in F:
            M = Fi @ M
        U, S, Vh = torch.linalg.svd(M)
        v = Vh[0]
        amp = float(torch.log(S[0] + 1e-300))
        sustained = all(float(torch.linalg.matrix_norm(Fi, ord=2)) > 1.0 for Fi in F)
        where = "top singular direction of the product"
    hyps = [Hypothesis("efficient model affine with a certified Jacobian (stiffness checkable)", True),
            Hypothesis("stiff efficient model: xbar log-amplification of the plain step >= "
                       f"{C1_MIN_LOG_AMPLIFICATION:g}",
                       bool(amp >= C1_MIN_LOG_AMPLIFICATION), f"log-amplification {amp:.3g} along {where}"),
            Hypothesis("stiff at every step along it (per-step factor > 1)", sustained)]
    return hyps, {"log_amplification": amp, "direction": where}, v


class _C1(Claim):
    name = "C1"
    statement = "without correction, approximation errors can accumulate exponentially across timesteps"
    hypotheses_text = ("H1a: the reference is the exact model of the data law: its samples lie at data scale",
                       "H1b: the EFFICIENT model eps~ is affine (certified Jacobian C~_t) and stiff over the run: the "
                       "xbar factors G~_i / a_i = I + (b_i / a_i) C~_i of the plain step amplify some direction by "
                       f"log >= C1_MIN_LOG_AMPLIFICATION = {C1_MIN_LOG_AMPLIFICATION:g} in total",
                       "H1c: ... with a factor > 1 at every step, so the growth is visible in the curve",
                       "H1d: the local errors at the reference states have a nonzero component along that direction")
    proven_by = ("T6",)
    explained_by = ("T1m",)   # T1m's rho > 1 is an upper bound, not a growth rate (docs/PROOFS.md)

    def hypotheses(self, run: PairedRun) -> tuple[list[Hypothesis], dict[str, Any]]:
        data_ok, detail = reference_at_data_scale(run)
        hyps = [Hypothesis("reference samples the data law (outputs at data scale)", data_ok, detail)]
        stiff, info, v = _stiffness(run)
        hyps += stiff
        if v is not None:
            comp = 0.0
            for st in run.steps:
                e = reference_error(run, st)
                comp = max(comp, abs(float((e @ v).sum())))
            hyps.append(Hypothesis("error component along it (at the reference states)", comp > 0,
                                   f"max |<e, v>| = {comp:.3g}"))
        return hyps, info

    def evaluate(self, inst: ToyInstance) -> ClaimVerdict:
        run = replace(inst, iec="none").run()
        hyps, info = self.hypotheses(run)
        g = growth_of(run)
        holds = all(h.holds for h in hyps)
        E = run.delta_bar_norms()
        ev = {"label": g.label_E, "label_E": g.label_E, "label_R_diagnostic": g.label_R, "kappa": g.fit_E.get("kappa"),
              "R_max": g.fit.get("R_max"), "final_error": float(E[-1]), "growth_factor": _growth_factor(E),
              "reference_final_norm": float(run.xs_ref[-1].norm()), **info}
        return ClaimVerdict(self.name, _verdict(holds, g.label_E == "exponential"), hyps, g.label_E, ev,
                            inst.describe())


class _C2(Claim):
    name = "C2"
    statement = "IEC reduces that growth to linear, without retraining"
    hypotheses_text = ("H2 (affine efficient model, certified Jacobian C~_t): every step corrected and the corrections "
                       "actually applied make every step non-expansive in xbar: ||P~_K|| / a <= 1 with P~_K built from "
                       "C~_t (lambda < 2/(1+u~), enough K: T3, T5)",
                       "H2 (general efficient model): every step corrected, 0 < lambda_k <= 1, eps~ monotone "
                       "(m~ >= 0, certified) on every segment between the two runs, and every correction loop "
                       f"converged (early stop with tol <= {CONVERGED_TOL:g}): T4")
    proven_by = ("T2", "T3", "T4", "T5")

    def hypotheses(self, run: PairedRun) -> list[Hypothesis]:
        every = all(st.iec for st in run.steps)
        hyps = [Hypothesis("every step corrected", every)]
        Js = efficient_jacobians(run)
        if Js is not None:
            worst = 0.0
            for st, J in zip(run.steps, Js):
                K = st.corr_pert if st.iec else 0
                lams = list(run.iec.lambdas[:K]) if (K and run.iec is not None) else []
                P = step_factor_xbar(st.k, J, lams)
                worst = max(worst, float(torch.linalg.matrix_norm(P, ord=2)))
            hyps.append(Hypothesis("efficient model's corrected xbar factors non-expansive ||P~_K||/a <= 1",
                                   worst <= 1 + NONEXPANSIVE_SLACK, f"max ||P~_K||/a = {worst:.4g}"))
            return hyps
        from .theorems._common import batch_segment_constants

        lams_ok = run.iec is not None and all(0 < v <= 1 for v in run.iec.lambdas)
        m_min = math.inf
        for st in run.steps:
            c = batch_segment_constants(run.perturbed, st.x_s, st.xp_s, st.k.t)
            m_min = min(m_min, c.m if c is not None else -math.inf)
        converged = (run.iec is not None and run.iec.tol <= CONVERGED_TOL
                     and all(st.early_stop_pert for st in run.steps if st.iec))
        hyps += [Hypothesis("0 < lambda_k <= 1", lams_ok),
                 Hypothesis("efficient model monotone on every segment (m~ >= 0, certified)", m_min >= 0,
                            f"min m~ = {m_min:.3g}" if np.isfinite(m_min) else "not certifiable"),
                 Hypothesis("every correction loop converged", converged)]
        return hyps

    def evaluate(self, inst: ToyInstance) -> ClaimVerdict:
        require_iec = inst.iec != "none"
        run = inst.run() if require_iec else replace(inst, iec="relaxed", K=1, lam=0.5).run()
        plain = replace(inst, iec="none").run()
        hyps = self.hypotheses(run)
        g = growth_of(run)
        gp = growth_of(plain)
        holds = all(h.holds for h in hyps)
        E, Ep = run.delta_bar_norms(), plain.delta_bar_norms()
        e_iec, e_plain = float(E[-1]), float(Ep[-1])
        ev = {"label": g.label_E, "label_plain": gp.label_E, "label_R_diagnostic": g.label_R,
              "kappa": g.fit_E.get("kappa"), "R_max": g.fit.get("R_max"),
              "final_error_iec": e_iec, "final_error_plain": e_plain, "growth_factor": _growth_factor(E),
              "reduction": e_iec / e_plain if e_plain > 0 else float("nan"), "nfe": run.nfe[1]}
        return ClaimVerdict(self.name, _verdict(holds, g.label_E == "linear"), hyps, g.label_E, ev, inst.describe())


def _growth_factor(E: np.ndarray) -> float:
    """max_n E_n / (first nonzero E_n): how much the propagated error grew over the run."""
    nz = E[E > 0]
    return float(np.max(E) / nz[0]) if nz.size else 0.0


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
    """Per step: a_t, |b_t| and the eigenvalues [T, d] of the EFFICIENT model's (symmetrised) Jacobian C~_t when
    it is affine and certified, else of the exact model's C_t (no run needed)."""
    from .constants import _constant_jacobian, exact_jacobian
    from .ddim import step_coefficients

    exact, pert = inst.build()
    sch = exact.schedule
    ts = sch.timesteps(inst.T, inst.spacing)
    x = inst.x_T_tensor()
    efficient = _constant_jacobian(pert) is True and exact_jacobian(pert, x, ts[0]) is not None
    a, b, mu = [], [], []
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        k = step_coefficients(sch, t, s, inst.eta)
        a.append(k.a)
        b.append(abs(k.b))
        if efficient:
            J = exact_jacobian(pert, x, t)[0]
            mu.append(torch.linalg.eigvalsh(0.5 * (J + J.T)).numpy())
        else:
            mu.append(np.asarray(exact.affine_eigvals(t), dtype=np.float64))
    return np.array(a), np.array(b), np.array(mu)


def converging_iec(inst: ToyInstance, K_max: int = 60) -> ToyInstance:
    """The instance with relaxed IEC on every step, lambda = 1/(1 + u~_max) (< 2/(1 + u~) everywhere, u~ from the
    efficient model) and the smallest K <= K_max making every eigen-direction non-expansive in xbar (H2 of C2)."""
    from .theory import amplification_factors

    a, b, mu = stiffness_profile(inst)
    u = b[:, None] * mu
    lam = 1.0 / (1.0 + max(float(u.max()), 0.0))
    for K in range(1, K_max + 1):
        _, _, fK = amplification_factors(a[:, None], u, K, lam)
        if float(np.max(np.abs(fK) / a[:, None])) <= 1.0:
            break
    return replace(inst, iec="relaxed", K=K, lam=lam, every=1, noise="shared")
