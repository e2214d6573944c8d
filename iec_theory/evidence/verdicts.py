"""Verdicts on S1-S5 per setting, and which implicit hypotheses H1-H6 are met (PAPER.md sections 2, 5).

Inputs are `runner.SettingResult`s; outputs are plain dicts (JSON). Thresholds are stated here and in the
hypotheses' `check` text: H1 residual < 0.1; H3 L(0.5) < 1 at every analysed step and secant < 1; H5 incoming
part < half of C at every S5 step with an incoming error; H6 measured growth >= half the running product.
Real-network numbers are estimates (power iteration / Lanczos on JVP/VJP; n images).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from .runner import SettingResult

__all__ = ["H1_RESIDUAL", "lambda_range", "s1", "s2", "s3", "s4", "s5"]

H1_RESIDUAL = 0.1
PAPER_LAMBDA = (0.1, 0.7)


def _vals(steps: Sequence[dict], key: str) -> list[float]:
    return [float(r[key]) for r in steps if r.get(key) is not None and math.isfinite(float(r[key]))]


def _fmt(v: float | None, d: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{d}g}"


def s1(res: SettingResult) -> dict:
    """S1: linearisation residual statistics; H1 met if every measured residual < 0.1."""
    r = _vals(res.steps, "s1_residual")
    r0 = _vals(res.steps, "s1_zeroth_order_residual")
    fd: dict[str, list[float]] = {}
    for row in res.steps:
        for h, v in (row.get("fd_over_jvp") or {}).items():
            fd.setdefault(h, []).append(float(v))
    fd_med = {h: statistics.median(v) for h, v in fd.items()}
    if not r:
        return {"verdict": "not applicable: no perturbation reaches the state (delta_t = 0 at every step)",
                "label": "n/a", "met": {"H1": None}, "numbers": {"n_steps": 0, "fd_over_jvp_median": fd_med}}
    mx, med = max(r), statistics.median(r)
    ok = mx < H1_RESIDUAL
    verdict = (f"{'holds' if ok else 'fails at some steps'} to first order: residual median {_fmt(med)}, max "
               f"{_fmt(mx)} over {len(r)} steps (without the J term: median {_fmt(statistics.median(r0))})")
    if r0 and med >= statistics.median(r0):
        verdict += "; the J term does not improve on dropping it (J does not describe this network's response)"
    if fd_med:
        verdict += ("; finite differences / J v along the top direction (median over analysed steps) at scales "
                    + ", ".join(f"h={h}: {_fmt(v)}" for h, v in sorted(fd_med.items(), key=lambda kv: float(kv[0]))))
    return {"verdict": verdict, "label": "holds" if ok else "fails at some steps", "met": {"H1": ok},
            "numbers": {"n_steps": len(r), "residual_median": med, "residual_max": mx,
                        "residual_without_J_median": statistics.median(r0) if r0 else None,
                        "fd_over_jvp_median": fd_med}}


def s2(res: SettingResult) -> dict:
    """S2: predicted vs measured delta_0 (correct product range; transcribed range where computed)."""
    d = res.s2
    if not d:
        return {"verdict": "not computed in this profile (needs one JVP per step)", "label": "not computed",
                "numbers": {}}
    txt = (f"with the factors of the steps AFTER step i: predicted ||delta_0|| {_fmt(d['predicted_norm'])} vs "
           f"measured {_fmt(d['measured_norm'])} (relative error {_fmt(d['rel_error_correct_order'])})")
    if "rel_error_transcribed_order" in d:
        txt += (f"; with the transcribed range (steps before i) the relative error is "
                f"{_fmt(d['rel_error_transcribed_order'])}")
    ok = d["rel_error_correct_order"] < 0.25
    label = "holds (corrected range)" if ok else "inaccurate"
    return {"verdict": ("holds (correct order) " if ok else "first-order sum inaccurate ") + txt, "label": label,
            "numbers": dict(d)}


def s3(res: SettingResult, norms_x: Sequence[float | None], norms_xbar: Sequence[float | None]) -> dict:
    """S3: per-step norms > 1 vs the measured growth of one injected error; H6 and a verdict."""
    nx = [v for v in norms_x if v is not None]
    nb = [v for v in norms_xbar if v is not None]
    g = res.growth
    j = int(g.get("inject_step", 0)) + 1
    after = list(norms_x[j:])
    after_b = list(norms_xbar[j:])
    complete = bool(after) and all(v is not None for v in after)
    prod_x = math.prod(after) if complete else None
    prod_b = math.prod(after_b) if complete and all(v is not None for v in after_b) else None
    numbers = {"n_steps_with_norm": len(nx), "n_steps": len(norms_x),
               "frac_norm_x_above_1": sum(v > 1 for v in nx) / len(nx) if nx else None,
               "frac_norm_xbar_above_1": sum(v > 1 for v in nb) / len(nb) if nb else None,
               "max_norm_x": max(nx) if nx else None, "max_norm_xbar": max(nb) if nb else None,
               "running_product_x": prod_x, "running_product_xbar": prod_b,
               "measured_growth_x": g.get("growth_x"), "measured_growth_xbar": g.get("growth_xbar"),
               "injected_error": g.get("injected_error")}
    if g.get("inject_step") == -1:
        tail_note = "error injected at x_T (1e-3 per coordinate); "
    else:
        tail_note = ""
    if not g.get("injected_error"):
        met6 = None
        tail = "no error injected: growth not measurable"
    elif prod_x is None:
        met6 = None
        tail = tail_note + (f"running product not available (norms at {len(nx)}/{len(norms_x)} steps); "
                            f"measured growth of one injected error: x {_fmt(g['growth_x'])}, "
                            f"xbar {_fmt(g['growth_xbar'])}")
    else:
        met6 = g["growth_x"] >= 0.5 * prod_x
        tail = tail_note + (f"running product of norms {_fmt(prod_x)} (x) / {_fmt(prod_b)} (xbar) vs measured "
                            f"growth of one injected error {_fmt(g['growth_x'])} (x) / {_fmt(g['growth_xbar'])} (xbar)")
    frac = numbers["frac_norm_x_above_1"]
    head = (f"norm > 1 at {_fmt(100 * frac, 3)}% of {len(nx)} analysed steps (x), "
            f"{_fmt(100 * numbers['frac_norm_xbar_above_1'], 3)}% in xbar; " if nx else "")
    numbers["flow_stretch_x"] = g.get("flow_stretch_x")
    gb = g.get("growth_xbar")
    shrinks = bool(g.get("injected_error")) and gb is not None and gb <= 1.0
    stretch = (f"; the flow's own stretch 1/sqrt(abar) over the same steps is {_fmt(g.get('flow_stretch_x'))}"
               if g.get("flow_stretch_x") else "")
    if shrinks:
        why = ("H6 not met: the running product overstates the growth" if met6 is False else
               "growth follows the product in x (H6 met)" if met6 else "product not available")
        verdict = (f"refuted (no exponential accumulation: the injected error shrinks by {_fmt(gb)} in xbar; {why}): "
                   + head + tail + stretch)
        label = "refuted"
    elif met6 is False:
        verdict, label = "refuted as an inference (H6 not met): " + head + tail + stretch, "refuted"
    elif met6:
        verdict, label = "consistent (growth follows the product, grows in xbar): " + head + tail + stretch, \
            "consistent"
    else:
        verdict, label = "open: " + head + tail + stretch, "open"
    return {"verdict": verdict, "label": label, "met": {"H6": met6}, "numbers": numbers}


def lambda_range(L: dict[str, Sequence[float | None]]) -> tuple[list[float], list[float] | None]:
    """(lambdas with L < 1 at every analysed step, [min, max] of them if contiguous in the grid else None)."""
    ok = []
    for lam, vals in L.items():
        v = [x for x in vals if x is not None]
        if v and max(v) < 1.0:
            ok.append(float(lam))
    ok.sort()
    grid = sorted(float(k) for k in L)
    if not ok:
        return ok, None
    idx = [grid.index(x) for x in ok]
    contiguous = idx == list(range(idx[0], idx[-1] + 1))
    return ok, [ok[0], ok[-1]] if contiguous else None


def s4(res: SettingResult, L: dict[str, Sequence[float | None]]) -> dict:
    """S4: lambda range with L < 1 at every analysed step vs [0.1, 0.7]; sign structure; point vs segment."""
    ok, rng = lambda_range(L)
    recs = [r for r in res.steps if r.get("mu_min_sym") is not None and r.get("contraction_L")]
    mu_min = [r["mu_min_sym"] for r in recs]
    blocked = [r["index"] for r in recs if r["B"] * r["mu_min_sym"] >= 1.0]
    neg = [r["index"] for r in recs if r["mu_min_sym"] < 0]
    sec = [r["secant_L"] for r in res.s5 if r.get("secant_L") is not None and r.get("delta0", 0) > 0]
    pts = [r["L_point"] for r in res.s5 if r.get("L_point") is not None]
    l05 = [x for x in L.get("0.5", []) if x is not None]
    met3 = bool(l05) and max(l05) < 1 and (not sec or max(sec) < 1)
    numbers = {"lambdas_contracting": ok, "lambda_range": rng, "paper_range": list(PAPER_LAMBDA),
               "n_steps_analysed": len(recs), "min_mu_sym": min(mu_min) if mu_min else None,
               "steps_with_negative_mu_sym": neg, "steps_where_no_lambda_contracts": blocked,
               "max_L_point_0.5": max(l05) if l05 else None, "max_secant_L": max(sec) if sec else None,
               "max_L_point_at_S5_steps": max(pts) if pts else None}
    covers = rng is not None and rng[0] <= PAPER_LAMBDA[0] + 1e-9 and rng[1] >= PAPER_LAMBDA[1] - 1e-9
    verdict = (f"{'holds' if covers else 'fails on part of the paper range'}: L < 1 at every analysed step for "
               f"lambda in {rng if rng else ok} (paper: [0.1, 0.7]); symmetric part of J has negative "
               f"eigenvalues at {len(neg)}/{len(recs)} steps (min {_fmt(numbers['min_mu_sym'])}), "
               f"B mu >= 1 (no lambda contracts) at {len(blocked)} steps; secant L over the segment travelled "
               f"max {_fmt(numbers['max_secant_L'])} vs point L(0.5) max {_fmt(numbers['max_L_point_0.5'])}")
    label = (f"holds for lambda in [{rng[0]:g}, {rng[1]:g}]" if rng else
             "fails" if not ok else "holds for some lambda")
    return {"verdict": verdict, "label": label, "met": {"H3": met3}, "numbers": numbers}


def s5(res: SettingResult) -> dict:
    """S5: per-step bound, C split into incoming and rest; H4 never met (K = 1); H5 per setting."""
    rows = [r for r in res.s5 if r.get("bound") is not None]
    if not rows:
        return {"verdict": "not computed (no analysed IEC step)", "label": "not computed",
                "met": {"H4": False, "H5": None}, "numbers": {}}
    holds = sum(bool(r["bound_holds"]) for r in rows)
    inc = [r["incoming_fraction"] for r in rows if r["delta_in"] > 0]
    met5 = (max(inc) < 0.5) if inc else None
    fin_plain = res.delta_plain[-1] if res.delta_plain else None
    fin_iec = res.delta_iec[-1] if res.delta_iec else None
    numbers = {"n_steps": len(rows), "bound_holds": holds, "max_incoming_fraction": max(inc) if inc else None,
               "median_incoming_fraction": statistics.median(inc) if inc else None,
               "final_error_plain": fin_plain, "final_error_iec": fin_iec,
               "K": rows[0]["K"], "lambda": rows[0]["lambda"]}
    word = "per-step bound holds" if holds == len(rows) else "per-step bound VIOLATED at some steps"
    tail = (f"; the incoming part lambda A ||delta_t|| is {_fmt(100 * numbers['median_incoming_fraction'], 3)}% of C "
            f"(median over {len(inc)} steps with incoming error): the incoming error still propagates, 'linear' "
            "total not established (H5 not met)" if met5 is False else
            "; incoming part below half of C" if met5 else "; no incoming error at the analysed steps")
    verdict = (f"{word} at {holds}/{len(rows)} analysed IEC steps (K = {numbers['K']}, lambda = {numbers['lambda']})"
               f"{tail}; final ||delta_0||: plain {_fmt(fin_plain)}, IEC {_fmt(fin_iec)}")
    label = ("bound holds" if holds == len(rows) else "bound violated") + (
        ", C dominated by incoming error" if met5 is False else "")
    return {"verdict": verdict, "label": label, "met": {"H4": False, "H5": met5}, "numbers": numbers}
