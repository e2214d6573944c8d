"""The theory's prescription for IEC from per-step constants (THEORY.md T3-T5; issue 12, item 8).

Per step, with u = |B_t| mu over the spectrum of the symmetric part of J_t in [u_min, u_max] (Lanczos
estimates), the relaxed iteration multiplies the distance to the fixed point by r = 1 - lambda (1 + u) in
the linear symmetric case (T3). If 1 + u_min > 0 the lambda that minimises max |r| over the interval is

    lambda*_t = 2 / (2 + u_min + u_max),     q_t = (u_max - u_min) / (2 + u_min + u_max) < 1,

and K_t = ceil(log(target) / log q_t) corrections bring the iterate within `target` of the fixed point
(relative to its start). If 1 + u_min <= 0 (B_t mu >= 1 for an eigenvalue of the symmetric part) no lambda
contracts and the step is not corrected. The fixed point itself helps only where the plain step expands in
xbar coordinates (T3: its xbar factor 1/(1+u) <= 1 for u >= 0 versus 1 - u/A for the plain step), so the
prescription corrects the steps whose estimated plain xbar norm exceeds 1 (stiff or expansive steps).

The sampler takes one lambda schedule for all corrected steps (`IECConfig`), so `prescribed_config` uses the
smallest lambda*_t of the selected steps (every selected step then has |r| < 1) and the largest K_t.
These are estimates from network Jacobians; the comparison with the official preset, DDIM at equal NFE and
Heun is not part of this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..iec import IECConfig, StepSelection

__all__ = ["prescribe", "prescribed_config"]


def prescribe(steps: Sequence[dict], target: float = 0.1, K_max: int = 4) -> dict:
    """Per-step lambda*_t, q_t, K_t and whether to correct, from records with index, u_min, u_max, norm_xbar."""
    rows = []
    for r in steps:
        if r.get("u_min") is None or r.get("u_max") is None:
            continue
        u0, u1 = float(r["u_min"]), float(r["u_max"])
        ok = 1.0 + u0 > 0.0
        lam = 2.0 / (2.0 + u0 + u1) if ok else None
        q = (u1 - u0) / (2.0 + u0 + u1) if ok else None
        if q is None:
            K = None
        elif q <= 0.0:
            K = 1
        else:
            K = min(K_max, max(1, math.ceil(math.log(target) / math.log(q)))) if q < 1 else None
        nb = r.get("norm_xbar")
        correct = bool(ok and nb is not None and float(nb) > 1.0)
        rows.append({"index": int(r["index"]), "t": r.get("t"), "u_min": u0, "u_max": u1, "lambda_star": lam,
                     "q": q, "K": K, "contracts": ok, "correct": correct})
    return {"steps": rows, "target": target, "K_max": K_max}


def prescribed_config(presc: dict) -> IECConfig | None:
    """One IECConfig from a prescription: min lambda*_t and max K_t over the selected steps (None if none)."""
    sel = [r for r in presc["steps"] if r["correct"] and r["lambda_star"] is not None and r["K"] is not None]
    if not sel:
        return None
    lam = min(1.0, min(r["lambda_star"] for r in sel))
    K = max(r["K"] for r in sel)
    cfg = IECConfig(K, (lam,) * K, 0.0, "shared", StepSelection.explicit(sorted(r["index"] for r in sel)),
                    f"prescribed(lam={lam:.3g},K={K})")
    return cfg
