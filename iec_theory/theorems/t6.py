"""T6: lower bound, exponential growth is real (THEORY.md T6; proof docs/PROOFS.md#t6).

Along an eigen-direction v of an affine model the propagated error obeys, exactly (T2),
delta^v_{n+1} = F_n delta^v_n + r^v_n.  Two exact decompositions are used:
- efficient (preferred): F from the EFFICIENT model's Jacobian C~_t (affine eps~ sharing the exact model's
  eigenbasis) and r from the local errors at the REFERENCE iterates -- the forcing does not depend on the
  perturbed run, so |F| > 1 is exactly the stiffness that compounds the error;
- exact: F from the exact model's C_t and r from the errors at the perturbed iterates (any error model).
From every start m <= n:  |delta^v_n| >= prod_{m<=i<n} |F_i| |delta^v_m| - sum_{m<=i<n} |r^v_i| prod_{i<j<n} |F_j|;
the check takes the best start per n.  It is informative only where that bound is > 0 (it is <= 0 while the
error has no component along v yet): such instances are reported as "vacuous", never as "holds".
"""

from __future__ import annotations

import numpy as np
import torch

from ..linearization import common_eigenbasis, efficient_jacobians
from ..theory import amplification_factors
from ._common import eigenbasis, is_affine, is_deterministic
from .base import ROUND_REL, Hypothesis, PairedRun, PerStep, Theorem, eval_model

__all__ = ["T6", "direction_factors"]


def _eigs(run: PairedRun, st, V: torch.Tensor, Js: list[torch.Tensor] | None) -> np.ndarray:
    if Js is None:
        return torch.as_tensor(run.exact.affine_eigvals(st.k.t), dtype=torch.float64).numpy()
    return torch.diagonal(V.T @ Js[st.i].to(torch.float64) @ V).numpy()


def _decomposition(run: PairedRun) -> tuple[str, list[torch.Tensor] | None]:
    """('efficient', J~ list) when eps~ is affine in the exact model's eigenbasis, else ('exact', None)."""
    Js = efficient_jacobians(run) if is_deterministic(run.perturbed) else None   # forcing re-evaluated below
    if Js is not None and common_eigenbasis(eigenbasis(run.exact), Js):
        return "efficient", Js
    return "exact", None


def direction_factors(run: PairedRun, which: str | None = None) -> np.ndarray:
    """[T, d] per-step factor of every eigen-direction: g (plain step) or f_K (IEC, K applied corrections),
    from the efficient model's eigenvalues when `_decomposition` allows it (or `which` = 'exact')."""
    Js = None if which == "exact" else _decomposition(run)[1]
    V = eigenbasis(run.exact)
    rows = []
    for st in run.steps:
        mu = _eigs(run, st, V, Js)
        K = st.corr_pert if st.iec else 0
        lams = list(run.iec.lambdas[:K]) if K else []
        _, _, fK = amplification_factors(st.k.a, abs(st.k.b) * mu, K, lams)
        rows.append(np.broadcast_to(fK, mu.shape))
    return np.array(rows)


def _forcing(run: PairedRun, kind: str, Js, V: torch.Tensor, j: int) -> list[float]:
    """r^v_i along eigen-direction j (T2's r_K projected), per step."""
    v = V[:, j]
    out = []
    for st in run.steps:
        K = st.corr_pert if st.iec else 0
        u = abs(st.k.b) * float(_eigs(run, st, V, Js)[j])
        calls = st.calls_ref if kind == "efficient" else st.calls_pert
        model = run.perturbed if kind == "efficient" else None
        ev = []
        for x, y in calls[: K + 1]:
            e = (eval_model(model, x, st.k.t) if model is not None else y) - eval_model(run.exact, x, st.k.t)
            ev.append(float((e @ v).sum()))
        rv = st.k.b * ev[0]
        for lam, e in zip(run.iec.lambdas[:K] if K else [], ev[1:]):
            rv = (1 - lam * (1 + u)) * rv + lam * st.k.b * e
        out.append(rv)
    return out


class T6(Theorem):
    name = "T6"
    title = "lower bound: exponential growth is real"
    statement_text = (
        "For an affine model with symmetric Jacobian in a fixed eigenbasis and an eigen-direction v with per-step "
        "factor F_i = g_i (plain) or f_K,i (IEC) -- of the EFFICIENT model when eps~ is affine in that basis: "
        "delta^v_{i+1} = F_i delta^v_i + r^v_i exactly (T2), hence from any start m: |<delta_n, v>| >= "
        "prod_{m<=i<n} |F_i| |delta^v_m| - sum_{m<=i<n} |r^v_i| prod_{i<j<n} |F_j|.  Where |F| > 1 the component "
        "grows at least geometrically: no upper bound better than exponential exists.  Informative only where the "
        "bound is > 0.")
    statement_typst = (
        "abs(lr(chevron.l delta_n, v chevron.r)) >= max_(m <= n) (product_(m<=i<n) abs(F_i) abs(delta^v_m) - "
        "sum_(m<=i<n) abs(r^v_i) product_(i<j<n) abs(F_j))")
    hypotheses_text = ("the exact model is affine with symmetric C_t in a fixed eigenbasis (Gaussian toy)",
                       "both runs apply the same corrections; same noise",
                       "the chosen direction has |F_i| > 1 on at least one step (the hypothesis of growth)")
    measured_text = "|<delta_n, v>| along the most amplified eigen-direction v, n = 1..T"

    def check_hypotheses(self, run: PairedRun) -> list[Hypothesis]:
        ok = is_affine(run.exact) and callable(getattr(run.exact, "affine_eigvals", None))
        same = all(st.corr_ref == st.corr_pert for st in run.steps)
        hyps = [Hypothesis("exact model affine symmetric with eigenbasis", ok),
                Hypothesis("same corrections in both runs", same)]
        if ok:
            F = direction_factors(run)
            j = int(np.argmax(np.log(np.abs(F) + 1e-300).sum(0)))
            n_exp = int((np.abs(F[:, j]) > 1).sum())
            hyps.append(Hypothesis("|F| > 1 on some step along the most amplified direction", n_exp > 0,
                                   f"{n_exp} of {F.shape[0]} steps"))
        return hyps

    def per_step(self, run: PairedRun) -> PerStep:
        kind, Js = _decomposition(run)
        V = eigenbasis(run.exact)
        F = direction_factors(run)                          # [T, d]
        logamp = np.log(np.abs(F) + 1e-300).sum(0)
        j = int(np.argmax(logamp))
        r = np.abs(np.array(_forcing(run, kind, Js, V, j)))
        delta = run.delta()                                  # [T+1, B, d]
        comp = np.abs((delta @ V[:, j]).sum(-1).numpy())    # |<delta_n, v>|
        Fj = np.abs(F[:, j])
        scale = np.array([ROUND_REL * st.scale() for st in run.steps])
        T = len(run.steps)
        best = np.full(T, -np.inf)
        tol = np.zeros(T)
        for m in range(T):                                   # bound from start m, for n = m+1..T
            amp, err, acc = comp[m], 0.0, 0.0
            for i in range(m, T):
                amp, err, acc = amp * Fj[i], err * Fj[i] + r[i], acc * Fj[i] + scale[i]
                if amp - err > best[i]:
                    best[i], tol[i] = amp - err, acc
        informative = int((best > tol).sum())
        return PerStep(list(range(T)), comp[1:].copy(), best, tol, "lower",
                       {"direction": j, "decomposition": kind, "log_amplification": float(logamp[j]),
                        "max_factor": float(Fj.max()), "stiff_steps": int((Fj > 1).sum()),
                        "informative_steps": informative})
