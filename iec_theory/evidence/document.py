"""Build the evidence.json document of `iec evidence` (issue 12): S1-S5 on toy_var100 and the real network.

Profiles: `quick` (toy exact at every step; each real setting analysed at 6 probe steps, S2 on real_w8a8, a
cheap per-step norm sweep on every real setting, the method comparison on real_w8a8; 131 s of 1-thread CPU
measured) and `full` (every real setting at every step; roughly 0.5 to 2 hours of 1-thread CPU, estimated,
not measured). Both use 1 image per setting unless `images` > 1 (then `spread` gives min / median / max).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..iec import IECConfig
from ..jsonsafe import json_safe
from ..provenance import provenance
from ..sampler import sample
from . import verdicts as V
from .compare import compare_methods, uniform_grid
from .perstep import LinalgPlan
from .prescribe import prescribe, prescribed_config
from .runner import SettingResult, run_setting
from .statements import HYPOTHESES, PAPER_VS_CODE, STATEMENTS
from .toy import (
    PAPER_PRODUCTS,
    closed_form_norms,
    official_quad_timesteps,
    product_along_direction,
    s2_orders,
    toy_var100,
)

__all__ = ["PROFILES", "EvidenceProfile", "build_evidence", "summary_line"]

LAMBDAS = tuple(round(0.1 * k, 1) for k in range(1, 11))
SETTINGS = ("toy_var100", "real_fp", "real_w8a8", "real_w4a8", "real_cache")


@dataclass(frozen=True)
class EvidenceProfile:
    name: str
    probe_steps: tuple[int, ...] | None     # None: every step
    s2_settings: tuple[str, ...]
    compare_settings: tuple[str, ...]        # item 8: prescription vs official / matched DDIM / Heun
    sweep_settings: tuple[str, ...]          # cheap per-step norm at every step (running product of S3)
    plan: LinalgPlan
    expected_time: str


PROFILES = {
    "quick": EvidenceProfile("quick", (0, 1, 10, 50, 90, 95), ("real_w8a8",), ("real_w8a8",),
                             ("real_fp", "real_w8a8", "real_w4a8", "real_cache"),
                             LinalgPlan(LAMBDAS, power_iter=8, power_tol=1e-2, lanczos_m=8, direct_lambdas=(0.5, 1.0),
                                        fd_scales=(0.01, 0.1, 1.0), sweep_lanczos_m=3),
                             "about 2.5 minutes of 1-thread CPU (measured 131 s CPU; 6.5 min wall on a loaded "
                             "2-core machine)"),
    "full": EvidenceProfile("full", None, ("real_w8a8", "real_w4a8", "real_cache"), ("real_w8a8", "real_w4a8"), (),
                            LinalgPlan(LAMBDAS, power_iter=30, power_tol=1e-3, lanczos_m=12,
                                       direct_lambdas=(0.1, 0.5, 0.7, 1.0), fd_scales=(0.01, 0.1, 1.0),
                                       sweep_lanczos_m=3),
                            "roughly 0.5 to 2 hours of 1-thread CPU (estimated from the quick profile's per-step "
                            "cost; not measured)"),
}

TOY_PLAN = LinalgPlan(LAMBDAS, power_iter=5000, power_tol=1e-12, lanczos_m=3, direct_lambdas=(0.5,))
TOY_MAGNITUDE = 0.05
TOY_SIZES = (0.005, 0.05, 0.5)


def _toy(seed: int, log: Callable[[str], None]) -> tuple[SettingResult, dict]:
    from ..perturbations import NonMonotoneNonlinear

    toy = toy_var100()
    ts = toy.schedule.timesteps(100)
    x_T = torch.randn((1, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def make(m: float = TOY_MAGNITUDE):
        return lambda: NonMonotoneNonlinear(toy, m, 1.0, seed=seed + 1)

    res = run_setting("toy_var100", toy, make(), toy.schedule, x_T, ts, range(len(ts)), TOY_PLAN,
                      IECConfig.relaxed(0.5, 1), s2=True, log=lambda s: None)
    exact = closed_form_norms(toy, ts, LAMBDAS)
    with torch.no_grad():
        from ..sampler import sample

        ref = sample(toy, toy.schedule, x_T, ts)
        pert = sample(make()(), toy.schedule, x_T, ts)
    res.s2.update(s2_orders(make()(), toy.schedule, ts, ref.xs, toy, pert.xs[-1] - ref.xs[-1]))
    sizes = {}
    for m in TOY_SIZES:
        r = run_setting("toy_size", toy, make(m), toy.schedule, x_T, ts, (), TOY_PLAN, None, s2=True)
        vals = V._vals(r.steps, "s1_residual")
        sizes[str(m)] = {"residual_median": float(sorted(vals)[len(vals) // 2]), "residual_max": max(vals),
                         "final_delta": r.delta_plain[-1]}
    presc = prescribe([r for r in res.steps if r.get("u_min") is not None])
    with torch.no_grad():
        exact_x0 = toy.exact_flow(x_T, ts[0], -1)
    comparison = compare_methods(make(), toy.schedule, x_T, ts, exact_x0, prescribed_config(presc))
    full_q, _ = official_quad_timesteps()
    products = {f"{k[0]}_T{k[1]}": {"paper": v, "computed": product_along_direction(
        toy.schedule, full_q if k[0] == "quad_official" else toy.schedule.timesteps(k[1]))[0]}
        for k, v in PAPER_PRODUCTS.items()}
    log(f"toy_var100 done in {res.seconds:.1f} s")
    return res, {"exact": exact, "sizes": sizes, "products": products, "comparison": comparison}


def _pad_real(res: SettingResult, key: Callable[[dict], Any], identity_value: Any) -> tuple[list, list[int], list]:
    """Arrays on the official 100-step sequence: identity steps (t -> t) get identity_value."""
    full, distinct = official_quad_timesteps()
    assert list(distinct) == list(res.timesteps)
    out, ident = [], []
    j = 0
    for i, t in enumerate(full):
        s = full[i + 1] if i + 1 < len(full) else -1
        if s == t:
            out.append(identity_value)
            ident.append(1)
        else:
            out.append(key(res.steps[j]) if j < len(res.steps) else None)
            ident.append(0)
            j += 1
    return out, ident, full


def _per_step_real(res: SettingResult) -> dict:
    nx, ident, full = _pad_real(res, lambda r: r.get("norm_x"), 1.0)
    nb, _, _ = _pad_real(res, lambda r: r.get("norm_xbar"), 1.0)
    res1, _, _ = _pad_real(res, lambda r: r.get("s1_residual"), 0.0)
    L = {}
    for lam in LAMBDAS:
        L[str(lam)], _, _ = _pad_real(res, lambda r, lam=lam: (r.get("contraction_L") or {}).get(str(lam)),
                                      1.0 - lam)
    mu, _, _ = _pad_real(res, lambda r: r.get("mu_min_sym"), None)
    resid, _, _ = _pad_real(res, lambda r: r.get("norm_rel_change"), None)
    fd, _, _ = _pad_real(res, lambda r: r.get("fd_over_jvp"), None)
    return {"timesteps": full, "identity_step": ident, "spectral_norm_x": nx, "spectral_norm_xbar": nb,
            "contraction_L": L, "linearization_residual": res1, "mu_min_sym": mu,
            "power_iteration_residual": resid, "finite_difference_over_jvp": fd,
            "norm_kind": _pad_real(res, lambda r: r.get("norm_kind", "power iteration") if r.get("norm_x") is not None
                                   else None, "exact (identity)")[0],
            "delta_plain": res.delta_plain, "delta_iec": res.delta_iec, "growth_curve_x": res.growth.get("curve_x"),
            "s5": res.s5}


def _per_step_toy(res: SettingResult, extra: dict) -> dict:
    ex = extra["exact"]
    return {"timesteps": res.timesteps, "spectral_norm_x": ex["spectral_norm_x"],
            "spectral_norm_xbar": ex["spectral_norm_xbar"], "contraction_L": ex["contraction_L"],
            "linearization_residual": [r.get("s1_residual") for r in res.steps],
            "spectral_norm_x_power_iteration_efficient": [r.get("norm_x") for r in res.steps],
            "mu_min_sym": [r.get("mu_min_sym") for r in res.steps],
            "delta_plain": res.delta_plain, "delta_iec": res.delta_iec, "growth_curve_x": res.growth.get("curve_x"),
            "s5": res.s5, "norm_kind": "closed form (exact model); power iteration on the efficient model alongside"}


def build_evidence(profile: str = "quick", model_dir: str | Path | None = None, seed: int = 0,
                   settings: tuple[str, ...] = SETTINGS, log: Callable[[str], None] = print,
                   images: int = 1) -> dict:
    """Run every setting and return the evidence document (JSON-serialisable).

    images: independent x_T per real setting; verdicts and per-step arrays use the first, `spread` gives
    min / median / max over all of them for the headline numbers (n = 1 by default: no spread).
    """
    prof = PROFILES[profile]
    t0 = time.perf_counter()
    results: dict[str, SettingResult] = {}
    per_step: dict[str, dict] = {}
    notes: dict[str, str] = {}
    toy_extra: dict = {}
    comparisons: dict[str, list] = {}
    spreads: dict[str, dict] = {}
    if "toy_var100" in settings:
        log("[toy_var100] exact Gaussian N(0, diag(100, 1, 0.01)), uniform T = 100")
        res, toy_extra = _toy(seed, log)
        results["toy_var100"], per_step["toy_var100"] = res, _per_step_toy(res, toy_extra)
        comparisons["toy_var100"] = toy_extra["comparison"]
        notes["toy_var100"] = (f"exact eps; efficient model eps + {TOY_MAGNITUDE} W^T sin(W x + phase) "
                               "(non-monotone, smooth); J exact (autograd, float64)")
    real = [s for s in settings if s.startswith("real_")]
    if real:
        from .real import build_real_models, real_x_T

        if model_dir is None:
            from real_models.pretrained import DEFAULT_MODEL_DIR as model_dir  # type: ignore[no-redef]
        log(f"[real] loading {model_dir}")
        rm = build_real_models(model_dir, tuple(real), seed=seed, log=log)
        _, ts = official_quad_timesteps()
        x_Ts = real_x_T(rm.shape, max(1, int(images)), seed)
        x_T = x_Ts[0]
        probes = range(len(ts)) if prof.probe_steps is None else prof.probe_steps
        fine_x0 = None
        for name in real:
            log(f"[{name}] {rm.notes[name]}")
            s2 = name in prof.s2_settings
            res = run_setting(name, rm.fp, rm.makers[name], rm.schedule, x_T, ts, probes, prof.plan,
                              IECConfig.relaxed(0.5, 1), s2=s2, sweep=name in prof.sweep_settings,
                              inject_step=1 if name == "real_cache" else 0, log=log)
            log(f"[{name}] done in {res.seconds:.1f} s")
            results[name], per_step[name] = res, _per_step_real(res)
            others = []
            for j, xj in enumerate(x_Ts[1:], start=1):   # further images: spread of the headline numbers
                log(f"[{name}] image {j + 1}/{len(x_Ts)}")
                others.append(run_setting(name, rm.fp, rm.makers[name], rm.schedule, xj, ts, probes, prof.plan,
                                          IECConfig.relaxed(0.5, 1), s2=False, sweep=False,
                                          inject_step=1 if name == "real_cache" else 0))
            spreads[name] = _spread([res, *others])
            if name in prof.compare_settings:
                if fine_x0 is None:
                    log(f"[compare] reference endpoint: FP DDIM, 500 uniform steps from t = {ts[0]}")
                    with torch.no_grad():
                        fine_x0 = sample(rm.fp, rm.schedule, x_T, uniform_grid(ts[0], 500)).x0
                cfg = prescribed_config(prescribe([r for r in res.steps if r.get("u_min") is not None]))
                comparisons[name] = compare_methods(rm.makers[name], rm.schedule, x_T, ts, fine_x0, cfg)
                log(f"[compare] {name}: " + ", ".join(f"{r['method'].split(' ')[0]} {r['error']:.3g}"
                                                      for r in comparisons[name]))
            notes[name] = rm.notes[name] + "; J: " + res.jacobian_meaning
    statements = _statements(results, per_step, toy_extra)
    lam_ranges = {k: V.lambda_range(v["contraction_L"])[1] for k, v in per_step.items()}
    presc = {k: prescribe([r for r in results[k].steps if r.get("u_min") is not None]) for k in results
             if k.startswith("real_")}
    presc_cfg = {k: (lambda c: None if c is None else {"K": c.K, "lambdas": list(c.lambdas),
                                                     "steps": list(c.select.indices)})(prescribed_config(p))
                 for k, p in presc.items()}
    doc = {
        "schema": "iec-evidence/1", "profile": prof.name, "expected_time": prof.expected_time,
        "seconds": time.perf_counter() - t0,
        "sampler": {"toy": "DDIM eta 0, linear betas, uniform T = 100",
                    "real": "DDIM eta 0, T = 100 official quadratic spacing (4 identity steps t -> t), batch 1"},
        "spread": spreads,
        "settings": {k: {"note": notes[k], "n_images": 1 if k == "toy_var100" else max(1, int(images)),
                         "seconds": results[k].seconds,
                         "analysed_steps": sum(1 for r in results[k].steps if r.get("contraction_L"))}
                     for k in results},
        "statements": statements,
        "hypotheses": {h.id: {"text": h.text, "check": h.check} for h in HYPOTHESES.values()},
        "per_step": per_step,
        "lambda_range": {"paper": [0.1, 0.7], **lam_ranges},
        "paper_vs_code": list(PAPER_VS_CODE),
        "toy_products": toy_extra.get("products"),
        "toy_residual_vs_size": toy_extra.get("sizes"),
        "prescription": {"per_setting": presc, "config": presc_cfg, "comparison": comparisons,
                         "note": "errors: ||x_0 - reference||, reference = exact flow (toy) or FP DDIM with 500 "
                                 "uniform steps from the same start time (network); one x_T, no spread"},
        "provenance": provenance(seed, profile=prof.name, threads=torch.get_num_threads()),
    }
    doc["summary_line"] = summary_line(doc)
    return _clean(doc)


def _spread(rs: list[SettingResult]) -> dict:
    """min / median / max over images of the headline per-image numbers."""
    import statistics

    def stats(vals: list) -> dict | None:
        v = [float(x) for x in vals if x is not None and math.isfinite(float(x))]
        return {"n": len(v), "min": min(v), "median": statistics.median(v), "max": max(v)} if v else None

    def mx(r: SettingResult, key: str) -> float | None:
        v = [float(x[key]) for x in r.steps if x.get(key) is not None]
        return max(v) if v else None

    return {"n_images": len(rs),
            "max_norm_x": stats([mx(r, "norm_x") for r in rs]),
            "max_L_0.5": stats([max((x.get("contraction_L") or {}).get("0.5", 0.0) for x in r.steps) for r in rs]),
            "min_mu_sym": stats([min((x["mu_min_sym"] for x in r.steps if x.get("mu_min_sym") is not None),
                                     default=None) for r in rs]),
            "s1_residual_max": stats([mx(r, "s1_residual") for r in rs]),
            "final_error_plain": stats([r.delta_plain[-1] for r in rs]),
            "final_error_iec": stats([r.delta_iec[-1] if r.delta_iec else None for r in rs]),
            "growth_x": stats([r.growth.get("growth_x") for r in rs]),
            "growth_xbar": stats([r.growth.get("growth_xbar") for r in rs]),
            "max_incoming_fraction": stats([max((x["incoming_fraction"] for x in r.s5 if x["delta_in"] > 0),
                                                default=None) for r in rs])}


def _statements(results: dict[str, SettingResult], per_step: dict[str, dict], toy_extra: dict) -> list[dict]:
    out = []
    per: dict[str, dict[str, dict]] = {s.id: {} for s in STATEMENTS}
    for name, res in results.items():
        ps = per_step[name]
        per["S1"][name] = V.s1(res)
        per["S2"][name] = V.s2(res)
        if name == "toy_var100":
            per["S3"][name] = V.s3(res, ps["spectral_norm_x"], ps["spectral_norm_xbar"])
        else:
            per["S3"][name] = V.s3(res, [r.get("norm_x") for r in res.steps], [r.get("norm_xbar") for r in res.steps])
        per["S4"][name] = V.s4(res, ps["contraction_L"])
        per["S5"][name] = V.s5(res)
    met_all: dict[str, dict[str, bool | None]] = {}
    for name in results:
        agg: dict[str, bool | None] = {}
        for sid in per:
            for hid, val in per[sid][name].get("met", {}).items():
                agg[hid] = val if hid not in agg or agg[hid] is None else agg[hid]
        met_all[name] = agg
    for st in STATEMENTS:
        hyps = []
        for hid in st.hypotheses:
            met = {}
            for name in results:
                m = met_all[name]
                met[name] = m[hid] if m.get(hid) is not None else _static_met(hid, name)
            hyps.append({"id": hid, "text": HYPOTHESES[hid].text, "check": HYPOTHESES[hid].check, "met": met})
        toy = per[st.id].get("toy_var100", {})
        numbers = {name: v.get("numbers", {}) for name, v in per[st.id].items()}
        if st.id == "S3" and toy_extra:
            numbers["toy_products_paper_5iv"] = toy_extra["products"]
        if st.id == "S1" and toy_extra:
            numbers["toy_residual_vs_size"] = toy_extra["sizes"]
        out.append({"id": st.id, "title": st.title, "statement": st.text, "typst": st.typst,
                    "theorems": st.theorems, "relation": st.relation, "hypotheses": hyps,
                    "verdict_toy": toy.get("verdict", "not run"),
                    "verdict_real": {k: v["verdict"] for k, v in per[st.id].items() if k.startswith("real_")},
                    "labels": {k: v.get("label", "") for k, v in per[st.id].items()},
                    "numbers": numbers})
    return out


def _static_met(hid: str, setting: str) -> bool | None:
    if hid == "H2":
        return False if setting in ("real_w8a8", "real_w4a8") else True
    if hid == "H4":
        return False
    return None


def summary_line(doc: dict) -> str:
    """One line for the report's first page: the paper's statements judged on the paper's own setting."""
    st = {s["id"]: s for s in doc.get("statements", [])}
    if not st:
        return "On the paper's own ground: no evidence computed."
    parts = []
    for sid in ("S1", "S2", "S3", "S4", "S5"):
        if sid not in st:
            continue
        labels = st[sid].get("labels", {})
        toy = labels.get("toy_var100", "not run")
        real = sorted({v for k, v in labels.items() if k.startswith("real_") and v not in ("n/a", "not computed",
                                                                                            "open")})
        parts.append(f"{sid} {toy} (toy), {' / '.join(real) if real else 'not decided'} (real)")
    fp = doc.get("lambda_range", {}).get("real_fp")
    lam = f"; found {fp} on the FP network (estimates at the analysed steps)" if fp else ""
    return "On the paper's own ground: " + "; ".join(parts) + f". Paper's lambda range [0.1, 0.7]{lam}."


def _clean(x: Any) -> Any:
    """JSON-safe copy: tensors become lists, NaN/inf become None."""
    return json_safe(x, "null")
