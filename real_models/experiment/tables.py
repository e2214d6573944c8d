"""Output formatting: JSON-safe values, markdown tables and their column sets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from iec_theory.jsonsafe import json_safe

QUALITY_COLUMNS = ("row", "NFE", "wall_s", "cpu_s", "FD_cifarnet", "FD_cifarnet_ci", "KID_cifarnet", "KID_cifarnet_ci",
                   "out_of_range", "PSNR", "SSIM", "propagated_xbar", "deployment_xbar", "growth_propagated",
                   "growth_share_batches", "growth_deployment")
GROWTH_COLUMNS = ("row", "NFE", "eta_mean", "eta_ref_mean", "early_stops", "propagated_xbar", "growth (R)", "E",
                  "R_max", "kappa", "share over batches", "deployment_xbar", "growth deployment",
                  "deployment share over batches")
JACOBIAN_COLUMNS = ("step", "t", "dsigma", "L mean [min, max]", "L spread", "m mean [min, max]", "m spread",
                    "radius mean", "rho_T1m mean", "2 mbar / Lbar^2")



def _jsonable(v: Any) -> Any:
    """Real-experiment results convention: non-finite floats as null."""
    return json_safe(v, "null")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return f"[{_fmt(float(v[0]))}, {_fmt(float(v[1]))}]"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:.4g}" if (abs(v) >= 1e-3 or v == 0) else f"{v:.2e}"
    return str(v)


def _markdown(columns: Sequence[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)



def _growth_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for r in rows:
        g, d = r["growth_propagated"], r["growth_deployment"]
        gb = r.get("growth_batches") or {}
        out.append([r["label"], r["NFE"], r["eta_mean"], r["eta_ref_mean"], r["early_stops"], r["propagated_xbar"],
                    g["label"], g.get("label_E"), g.get("R_max"), g.get("kappa"),
                    _share((gb.get("propagated") or {}).get("share")), r["deployment_xbar"], d["label"],
                    _share((gb.get("deployment") or {}).get("share"))])
    return out


def _jacobian_rows(jac: dict[str, Any]) -> list[list[Any]]:
    def mmm(d: dict[str, float]) -> str:
        return f"{_fmt(d['mean'])} [{_fmt(d['min'])}, {_fmt(d['max'])}]"

    return [[p["step"], p["t"], p["dsigma"], mmm(p["L"]), p["L"]["spread_max"], mmm(p["m"]), p["m"]["spread_max"],
             p["radius"]["mean"], p["rho_T1m"]["mean"], p["stability_threshold_2mbar_over_Lbar2"]["mean"]]
            for p in jac["per_step"]]


def _share(share: dict[str, float] | None) -> str | None:
    """{"linear": 0.75, "exponential": 0.25} -> "linear 3/4, exponential 1/4" style text (fractions as %)."""
    if not share:
        return None
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(share.items(), key=lambda kv: -kv[1]))


def _quality_row(r: dict[str, Any]) -> list[Any]:
    """One row of the quality table (QUALITY_COLUMNS order); rows without a field give None."""
    q = r.get("quality") or {}
    gb = ((r.get("growth_batches") or {}).get("propagated") or {}).get("share")
    return [r["label"], r.get("NFE"), r.get("wall_s"), r.get("cpu_s"), q.get("FD_cifarnet"), q.get("FD_cifarnet_ci"),
            q.get("KID_cifarnet"), q.get("KID_cifarnet_ci"), q.get("out_of_range"), q.get("PSNR"), q.get("SSIM"),
            r.get("propagated_xbar"), r.get("deployment_xbar"), (r.get("growth_propagated") or {}).get("label"),
            _share(gb), (r.get("growth_deployment") or {}).get("label")]


def _fd_text(q: dict[str, Any]) -> str:
    """", FD 12.3 [11.0, 13.9], KID ..." for log lines ('' without FD)."""
    if q.get("FD_cifarnet") is None:
        return ""
    return (f", FD_cifarnet {_fmt(q['FD_cifarnet'])} {_fmt(q.get('FD_cifarnet_ci'))}, KID_cifarnet "
            f"{_fmt(q.get('KID_cifarnet'))} {_fmt(q.get('KID_cifarnet_ci'))}")


def _distinguishability_text(comparisons: dict[str, Any], n: int) -> str:
    """Plain-text verdict: which rows are not distinguishable at this n (per metric)."""
    lines = []
    for metric in ("FD_cifarnet", "KID_cifarnet"):
        pairs = (comparisons.get(metric) or {}).get("not_distinguishable")
        if pairs is None:
            continue
        if pairs:
            lines.append(f"{metric}: not distinguishable at n={n} (overlapping {100 * comparisons['level']:g}% "
                         f"intervals; not ranked): " + "; ".join(f"{a} ~ {b}" for a, b in pairs) + ".")
        else:
            lines.append(f"{metric}: every pair of rows is distinguishable at n={n} (disjoint intervals).")
    return "\n".join(lines) or "No FD/KID intervals (metrics.fd_kid off or images not 3x32x32)."
