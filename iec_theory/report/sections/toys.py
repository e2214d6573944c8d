"""Toy experiments with exact answers (experiments/*.toml through iec_theory.harness): error curves
per method on log scales and the exact output law's W2 (Bures) and KL distances to the data law."""

from __future__ import annotations

import numpy as np

from .. import typst_util as tu
from ..experiments import collect, value
from ..figures import positive

COLORS = ("#000000", "#c62828", "#1565c0", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037")


def curves_figure(ctx, res, key: str = "propagated_xbar", prefix: str = "toy") -> str:
    """Per-method error curves of one experiment on a log axis ('' if none was recorded)."""
    data, labels = {}, []
    for j, m in enumerate(res.methods()):
        y = res.curve(m, key)
        if y is None or y.size == 0 or not np.all(np.isfinite(y)) or not np.any(y > 0):
            continue
        data[f"y{j}"] = y
        labels.append((f"y{j}", m))
    if not data:
        return ""
    log = tuple(k for k, _ in labels)
    what = key.replace("_xbar", "").replace("_", " ")

    def draw(fig, d):
        ax = fig.subplots()
        for i, (k, m) in enumerate(labels):
            y = positive(d[k])
            ax.semilogy(np.arange(y.size), y, color=COLORS[i % len(COLORS)], lw=1.1,
                        ls=("-", "--", "-.", ":")[i % 4], label=m)
        ax.set_xlabel("steps taken n")
        ax.set_ylabel(f"{what} error (xbar)")
        ax.legend(loc="best", fontsize=7)

    cap = (f"{res.name}: {what} error ||deltabar_n|| per step, log scale, one curve per method "
           f"({'reduced ci spec, ' if res.reduced else ''}{res.source}).")
    return ctx.figure(f"{prefix}_{res.name}_{key}", data, draw, cap, size=(6.0, 2.6), log=log, width="85%")


TABLE = ("Method", "NFE", "Propagated", "Deployment", "Total", "Growth", "W2 (exact law)", "W2 exact model",
         "KL (exact law)")


def experiment_table(ctx, res) -> str:
    rows = []
    for r in res.rows:
        rows.append((r.get("method"), r.get("NFE"), value(r, "propagated_xbar"), value(r, "deployment_xbar"),
                     value(r, "total_xbar"), r.get("growth"), value(r, "W2"), value(r, "W2_exact_model"),
                     value(r, "KL")))
    return ctx.table(TABLE, rows, caption=f"{res.name}: final errors in xbar (propagated vs the same scheme on the "
                     "exact model; deployment vs plain DDIM on the exact model; total vs the exact flow), growth "
                     "label, and the exact output law's distances to the data law",
                     align="(left, right, right, right, right, left, right, right, right)")


def section(ctx) -> str:
    coll = collect(ctx)
    out = [tu.text("Each experiment is a TOML spec in experiments/ run by the harness (iec run). On affine "
                   "Gaussian toys the sampler's output law is Gaussian and is propagated exactly, so W2 (Bures) "
                   "and KL to the data law are closed-form: an exact FID, no Monte Carlo. 'W2 exact model' is the "
                   "same scheme on the exact (unperturbed) model, i.e. the discretisation floor. Missing entries "
                   "(n/a) mean the metric does not apply (e.g. no exact law for a nonlinear error).") + "\n\n"]
    if ctx.profile.name == "ci":
        out.append(tu.text("ci profile: specs reduced to batch <= 16 and at most the cheapest few specs; "
                           "numbers are smoke-test sized.") + "\n\n")
    for res in coll.results:
        out.append(tu.heading(res.name, 2))
        if res.description:
            out.append(tu.text(res.description) + "\n\n")
        out.append(experiment_table(ctx, res))
        fig = curves_figure(ctx, res)
        out.append(fig or ctx.not_available(f"{res.name}: no per-step error curves were recorded"))
        if res.sweep_rows:
            keys = list(res.sweep_keys)
            rows = [[r.get(k) for k in keys] + [r.get("method"), r.get("NFE"), value(r, "propagated_xbar"),
                                                 value(r, "deployment_xbar"), r.get("growth"), value(r, "W2")]
                    for r in res.sweep_rows]
            out.append(ctx.table(keys + ["Method", "NFE", "Propagated", "Deployment", "Growth", "W2 (exact law)"],
                                 rows, caption=f"{res.name}: the spec's sweep grid (iec sweep), one row per cell "
                                               "and method",
                                 align="(" + ", ".join(["right"] * len(keys) + ["left"] + ["right"] * 3
                                                       + ["left", "right"]) + ")"))
    if coll.skipped:
        out.append(tu.heading("Specs not shown here", 2))
        out.append(ctx.table(["Spec", "Reason"], coll.skipped, caption="Experiment specs skipped by this section",
                             align="(left, left)"))
    if not coll.results:
        out.append(ctx.not_available("no toy experiment spec could be run"))
    return "".join(out)
