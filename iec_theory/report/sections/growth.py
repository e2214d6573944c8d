"""Growth classification (THEORY section 6; iec_theory.growth): the published rule and thresholds,
its measured false-positive / false-negative rates on synthetic curves, and the label of every
method of every toy experiment (and of the theorem suite's curves when available)."""

from __future__ import annotations

import numpy as np

from .. import typst_util as tu
from ..experiments import collect, value


def _thresholds(growth) -> list[tuple[str, object, str]]:
    rows = []
    for name, meaning in (("KAPPA_EXP", "growth exponent kappa = T log rho needed for exponential"),
                          ("KAPPA_LIN", "kappa at or below which a curve is at most linear"),
                          ("FIT_RATIO", "exponential needs rms_geo <= FIT_RATIO * rms_lin ..."),
                          ("BAD_LINEAR_RMS", "... or a linear fit with relative RMS at least this"),
                          ("LIN_RATIO", "linear when rms_geo >= LIN_RATIO * rms_lin"),
                          ("GROWTH_FLAT", "bounded: max(second half) <= GROWTH_FLAT * max(first half)"),
                          ("PERFECT_FIT", "a linear fit with relative RMS at most this is exact: linear"),
                          ("WINDOW_MIN", "fewest points of a trailing window fitted on its own (late bursts)"),
                          ("R_LINEAR", "with local errors: linear when max_n R_n is at most this"),
                          ("KAPPA_MAX", "largest growth exponent fitted")):
        if hasattr(growth, name):
            rows.append((name, float(getattr(growth, name)), meaning))
    return rows


def section(ctx) -> str:
    growth = ctx.module("iec_theory.growth", "classify")
    doc = (growth.__doc__ or "").split("\n\n")
    out = [tu.text("A per-step propagated error curve E_n (xbar coordinates, n = steps taken) is fitted by a "
                   "linear and a geometric model; when the local errors are known the decision is made on the "
                   "ratio R_n = E_n / (E_0 + sum_m dsig_m eta_m), which removes the very uneven DDIM step sizes. "
                   "'linear' means at most linear (bounded and decaying curves included).") + "\n\n"]
    rule = [p for p in doc if p.strip().startswith("The rule")]
    if rule:
        i = doc.index(rule[0])
        out.append("#block(inset: (left: 8pt))[#set text(9pt)\n" + tu.markdown("\n\n".join(doc[i:i + 2]), 4)
                   + "]\n")
    rows = _thresholds(growth)
    if rows:
        out.append(ctx.table(["Threshold", "Value", "Meaning"], rows,
                             caption="Published thresholds of iec_theory.growth.classify",
                             align="(left, right, left)"))
    if hasattr(growth, "measure_error_rates"):
        n = ctx.pick(40, 600, 2000)
        rates = growth.measure_error_rates(n_curves=n, seed=ctx.seed)
        out.append(ctx.table(
            ["Family", "Curves", "Called exponential", "Called linear", "Inconclusive", "Error rate"],
            [("at most linear (null)", n, rates["null_labels"]["exponential"], rates["null_labels"]["linear"],
              rates["null_labels"]["inconclusive"], f"FP {tu.num(100 * rates['fp_rate'])} %"),
             ("geometric, kappa in [4, 20]", n, rates["alt_labels"]["exponential"], rates["alt_labels"]["linear"],
              rates["alt_labels"]["inconclusive"], f"FN {tu.num(100 * rates['fn_rate'])} %")],
            caption=f"Measured error rates of the classifier on synthetic noisy curves "
                    f"(iec_theory.growth.measure_error_rates, {n} curves per family, seed {ctx.seed})"))
    else:
        out.append(ctx.not_available("iec_theory.growth.measure_error_rates is absent: no measured error rates"))

    out.append(tu.heading("Labels of the toy experiments", 2))
    try:
        coll = collect(ctx)
    except Exception as exc:
        if type(exc).__name__ != "NotAvailable":
            raise
        out.append(ctx.not_available(f"toy experiments: {exc}"))
        return "".join(out)
    rows, kap, names, labels = [], [], [], []
    for res in coll.results:
        for r in res.rows:
            g = r.get("growth")
            if g is None:
                continue
            k = value(r, "kappa")
            rows.append((res.name, r.get("method"), r.get("NFE"), g, value(r, "rho"), k, r.get("growth_series", "")))
            if isinstance(k, (int, float)) and np.isfinite(k):
                kap.append(float(k))
                names.append(f"{res.name}: {r.get('method')}")
                labels.append(g)
    if not rows:
        out.append(ctx.not_available("no toy experiment reported a growth label (monte_carlo metrics off?)"))
        return "".join(out)
    out.append(ctx.table(["Experiment", "Method", "NFE", "Growth label", "rho", "kappa", "Series"], rows,
                         caption="Growth classification of the propagated error of every toy experiment method",
                         align="(left, left, right, left, right, right, left)"))
    if kap:
        kexp = float(getattr(growth, "KAPPA_EXP", 3.0))
        klin = float(getattr(growth, "KAPPA_LIN", 1.0))
        colors = {"linear": "#2e7d32", "exponential": "#c62828", "inconclusive": "#9e9e9e"}
        nz = [k for k, v in enumerate(kap) if v > 0]
        n_zero = len(kap) - len(nz)
        out.append(tu.text(f"{n_zero} of {len(kap)} methods have a fitted growth exponent kappa = 0: their error "
                           "curve is at most linear (decaying and bounded curves included, which is why curves "
                           "that fall are labelled 'linear'). The figure shows only the methods with kappa > 0.")
                   + "\n\n")
        if nz:
            data = {"kappa": np.array([kap[k] for k in nz])}
            nz_names = [names[k] for k in nz]
            nz_labels = [labels[k] for k in nz]

            def draw(fig, d):
                ax = fig.subplots()
                y = np.arange(d["kappa"].size)
                ax.barh(y, d["kappa"], color=[colors.get(lab, "#9e9e9e") for lab in nz_labels])
                ax.axvline(kexp, color="#c62828", ls="--", lw=0.8, label=f"KAPPA_EXP = {kexp:g}")
                ax.axvline(klin, color="#2e7d32", ls="--", lw=0.8, label=f"KAPPA_LIN = {klin:g}")
                ax.set_yticks(y, nz_names, fontsize=7)
                ax.invert_yaxis()
                ax.set_xlabel("fitted growth exponent kappa = T log rho")
                ax.set_ylabel("experiment: method")
                ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)

            h = max(1.6, 0.25 * len(nz) + 0.9)
            out.append(ctx.figure("growth_kappa", data, draw,
                                  f"Fitted growth exponent of the {len(nz)} methods with kappa > 0 (green: linear, "
                                  "red: exponential, grey: inconclusive) with the two thresholds; the other "
                                  f"{n_zero} methods have kappa = 0.", size=(6.5, h)))
    return "".join(out)
