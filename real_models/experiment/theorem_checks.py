"""Stage 5, Jacobian estimates and theorem checks (estimates): a differentiable copy of the FP UNet,
L / m / spectral-radius estimates along the FP DDIM trajectory, T1 / T1m / T4-form checks per sample."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from .configurations import _Models
from .runs import _per_sample_norm, _Run
from .spec import RealSpec


def differentiable_eps(unet: torch.nn.Module):
    """(x, t) -> eps of a private copy of `unet` that torch.func can differentiate (forward and reverse).

    diffusers' CPU flash attention has no forward-mode AD, so the math SDPA kernel is forced; GroupNorm
    inputs are made contiguous (group_norm's forward AD views its tangent, which fails for the transposed
    tangents that leave an attention block).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    net = copy.deepcopy(unet).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    for mod in net.modules():
        if isinstance(mod, torch.nn.GroupNorm):
            mod.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(SDPBackend.MATH):
            return net(x, t, return_dict=False)[0]

    return eps


def spectral_radius(model: Any, x: torch.Tensor, t: int, n_iter: int = 10, n_starts: int = 1,
                    generator: torch.Generator | None = None):
    """|lambda|_max of J = d model / dx per sample by power iteration on J (one JVP per iteration).

    Converges to the modulus of the dominant eigenvalue when it is real and simple (the authors' estimate);
    with a complex dominant pair it oscillates: the value is the last ||J v||. Returns a constants.Estimate.
    """
    from iec_theory.constants import Estimate

    tt = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
    xd = x.detach()
    out = np.empty((n_starts, x.shape[0]))
    for r in range(n_starts):
        v = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        v = v / torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1).reshape(-1, 1, 1, 1)
        lam = torch.zeros(x.shape[0])
        for _ in range(n_iter):
            w = torch.func.jvp(lambda y: model(y, tt), (xd,), (v,))[1].detach()
            lam = torch.linalg.vector_norm(w.reshape(w.shape[0], -1), dim=1)
            v = w / lam.clamp_min(1e-30).reshape(-1, 1, 1, 1)
        out[r] = lam.double().cpu().numpy()
    return Estimate(out.max(0), out.max(0) - out.min(0), out.std(0), out, "power iteration on J (jvp)",
                    {"n_iter": n_iter})


def _stats(v: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}


def _jacobian_estimates(spec: RealSpec, models: _Models, ref_plain: _Run) -> tuple[dict[str, Any], dict]:
    from iec_theory.constants import estimate_lipschitz, estimate_monotonicity
    from iec_theory.ddim import step_coefficients
    from iec_theory.theorems.t1m import rho_t1m

    jc = spec.jacobian
    f = differentiable_eps(models.unet)
    ts = ref_plain.traj.timesteps
    S = jc["samples"]
    per_step, arrays = [], {k: [] for k in ("L", "L_spread", "m", "m_spread", "radius")}
    for i in jc["steps"]:
        t = ts[i]
        s = ts[i + 1] if i + 1 < len(ts) else -1
        k = step_coefficients(models.schedule, t, s, spec.eta)
        x = ref_plain.traj.xs[i][:S].detach().clone()
        g = torch.Generator().manual_seed(spec.seed * 101 + i)
        L = estimate_lipschitz(f, x, t, n_iter=jc["n_iter"], n_starts=jc["n_starts"], generator=g)
        m = estimate_monotonicity(f, x, t, n_iter=jc["n_iter"], n_starts=jc["n_starts"], generator=g)
        r = spectral_radius(f, x, t, n_iter=jc["n_iter"], n_starts=1, generator=g)
        sq = math.sqrt(k.abar_t)
        h = abs(k.b) / math.sqrt(k.abar_s)
        Lbar, mbar = sq * L.value, sq * m.value
        rho = np.array([rho_t1m(h, float(mb), float(lb)) for mb, lb in zip(mbar, Lbar)])
        per_step.append({"step": i, "t": t, "s": s, "abar": k.abar_t, "dsigma": k.dsigma, "h": h, "a": k.a,
                         "b": k.b, "L": {**_stats(L.value), "spread_max": float(L.spread.max())},
                         "m": {**_stats(m.value), "spread_max": float(m.spread.max())},
                         "radius": {**_stats(r.value)}, "Lbar_mean": float(Lbar.mean()),
                         "mbar_mean": float(mbar.mean()), "rho_T1m": _stats(rho),
                         "explicit_stable_fraction": float(np.mean(rho <= 1.0)),
                         "stability_threshold_2mbar_over_Lbar2": _stats(2 * mbar / np.maximum(Lbar, 1e-30) ** 2)})
        arrays["L"].append(L.value)
        arrays["L_spread"].append(L.spread)
        arrays["m"].append(m.value)
        arrays["m_spread"].append(m.spread)
        arrays["radius"].append(r.value)
    out = {"steps": jc["steps"], "t": [ts[i] for i in jc["steps"]], "samples": S, "n_iter": jc["n_iter"],
           "n_starts": jc["n_starts"], "model": "FP (exact model of the theory)", "per_step": per_step,
           "method": {"L": "power iteration on J^T J (iec_theory.constants.estimate_lipschitz)",
                      "m": "Lanczos on (J+J^T)/2 (iec_theory.constants.estimate_monotonicity)",
                      "radius": "power iteration on J (JVP)"},
           "note": "estimates at the FP DDIM states (x coordinates; Lbar = sqrt(abar) L, mbar = sqrt(abar) m); "
                   "L is approached from below and m from above; not worst cases over segments"}
    npz = {f"jacobian/{k}": np.array(v) for k, v in arrays.items()}
    npz["jacobian/steps"] = np.array(jc["steps"])
    npz["jacobian/t"] = np.array(out["t"])
    return out, npz


def _theorem_checks(label: str, scheme: str, pert: _Run, ref: _Run, eta_ps: np.ndarray, jac: dict[str, Any],
                    jac_arrays: dict, S: int) -> list[dict[str, Any]]:
    """T1 and T1m at plain steps, the T4 form at IEC steps, with the estimated FP constants at the probed
    steps (per sample). Estimates only: the constants are point estimates, not suprema over segments.
    An IEC step that stopped before its first correction is a plain step; a step where only one of the two
    runs stopped early is skipped."""
    from iec_theory.theorems.t1m import rho_t1m

    if scheme not in ("ddim", "iec"):
        return []
    out = []
    steps_by_i = {ps["step"]: (j, ps) for j, ps in enumerate(jac["per_step"])}
    xs_p, xs_r = pert.traj.xs, ref.traj.xs
    for i, (j, ps) in steps_by_i.items():
        rec, rec_ref = pert.traj.steps[i], ref.traj.steps[i]
        if rec.corrections != rec_ref.corrections:
            continue            # early stop in one run only: the two runs took different step maps
        d_t = _per_sample_norm(xs_p[i][:S] - xs_r[i][:S]).numpy()
        d_s = _per_sample_norm(xs_p[i + 1][:S] - xs_r[i + 1][:S]).numpy()
        # rounding allowance of the measured distance: a few ulps of the states' size in their dtype
        # (at step 0 both runs start from the same x_T and the bound is met with equality)
        ulp = 8 * torch.finfo(xs_p.dtype).eps
        tol = ulp * (_per_sample_norm(xs_p[i + 1][:S]) + _per_sample_norm(xs_r[i + 1][:S])).numpy()
        sq_t, sq_s = math.sqrt(ps["abar"]), math.sqrt(ps["abar"] * ps["a"] ** 2)
        a, b, h = ps["a"], abs(ps["b"]), ps["h"]
        L = jac_arrays["jacobian/L"][j]
        m = jac_arrays["jacobian/m"][j]
        for bi in range(S):
            eta = float(eta_ps[i, bi])
            if rec.corrections == 0:      # plain step (also an IEC step that stopped before correcting)
                bound1 = (a + b * L[bi]) * d_t[bi] + b * eta
                out.append({"row": label, "theorem": "T1", "step": i, "sample": bi, "measured": float(d_s[bi]),
                            "bound": float(bound1), "holds": bool(d_s[bi] <= bound1 + tol[bi]), "estimate": True})
                rho = rho_t1m(h, sq_t * float(m[bi]), sq_t * float(L[bi]))
                meas = d_s[bi] / sq_s
                bound = rho * d_t[bi] / sq_t + h * eta
                out.append({"row": label, "theorem": "T1m", "step": i, "sample": bi, "measured": float(meas),
                            "bound": float(bound), "holds": bool(meas <= bound + tol[bi] / sq_s), "rho": rho,
                            "estimate": True})
            else:
                den = 1.0 + b * float(m[bi])
                meas = d_s[bi] / sq_s
                bound = (d_t[bi] / sq_t + h * eta) / den if den > 0 else float("inf")
                out.append({"row": label, "theorem": "T4-form", "step": i, "sample": bi, "measured": float(meas),
                            "bound": float(bound), "holds": bool(meas <= bound + tol[bi] / sq_s), "m": float(m[bi]),
                            "corrections": rec.corrections, "estimate": True, "implied_by_a_theorem": False,
                            "caveat": "diagnostic only, implied by no theorem: T4 holds at the fixed point and "
                                      "T4+T5 needs certified contraction constants, while this is K corrections "
                                      "with point estimates of m; eta at the plain-step evaluation"})
    return out
