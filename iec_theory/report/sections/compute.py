"""Compute-matched comparisons: every toy experiment that lists a baseline at equal NFE (plain DDIM
with the same number of evaluations, Heun, naive repetition) beside IEC, with an NFE column."""

from __future__ import annotations

import numpy as np

from .. import typst_util as tu
from ..experiments import collect, value

BASELINES = ("ddim_matched", "heun", "repeat")


def section(ctx) -> str:
    coll = collect(ctx)
    matched = [r for r in coll.results if any(row.get("kind") in BASELINES for row in r.rows)]
    out = [tu.text("Is IEC better than spending the same compute otherwise? IEC with K = 1 on all T steps costs "
                   "2T network evaluations (NFE). Beside it: plain DDIM with the same NFE (2T steps), a Heun "
                   "(second-order) step at 2 NFE per step, and naive repetition (IEC's loop re-evaluating at "
                   "x_t). Every row states its NFE.") + "\n\n"]
    if not matched:
        out.append(ctx.not_available("no toy experiment spec in experiments/ lists a compute-matched baseline "
                                     "(methods ddim_matched, heun or repeat)"))
        return "".join(out)
    points = {"nfe": [], "w2": []}
    for res in matched:
        out.append(tu.heading(res.name, 2))
        rows = []
        for r in res.rows:
            rows.append((r.get("method"), r.get("kind"), r.get("NFE"), value(r, "deployment_xbar"),
                         value(r, "total_xbar"), value(r, "W2"), value(r, "KL"), value(r, "W2_exact_model")))
            w2, nfe = value(r, "W2"), r.get("NFE")
            if isinstance(w2, (int, float)) and isinstance(nfe, (int, float)) and np.isfinite(w2) and w2 > 0:
                points["nfe"].append(float(nfe))
                points["w2"].append(float(w2))
        out.append(ctx.table(["Method", "Kind", "NFE", "Deployment", "Total", "W2 (exact law)", "KL (exact law)",
                              "W2 exact model"], rows,
                             caption=f"{res.name}: compute-matched comparison (errors in xbar; exact-law distances "
                                     "to the data law)",
                             align="(left, left, right, right, right, right, right, right)"))
        lab = [(r.get("method"), r.get("NFE")) for r in res.rows
               if isinstance(value(r, "W2"), (int, float)) and np.isfinite(value(r, "W2")) and value(r, "W2") > 0]
        if len(lab) >= 2:
            data = {"nfe": np.array([float(n) for _, n in lab]),
                    "w2": np.array([float(value(r, "W2")) for r in res.rows
                                    if isinstance(value(r, "W2"), (int, float)) and np.isfinite(value(r, "W2"))
                                    and value(r, "W2") > 0])}

            def draw(fig, d, lab=lab):
                ax = fig.subplots()
                markers = ("o", "s", "^", "D", "v", "P", "X", "*")
                for i, ((m, _), x, y) in enumerate(zip(lab, d["nfe"], d["w2"])):
                    ax.scatter([x], [y], s=22, marker=markers[i % len(markers)], color=f"C{i % 10}", label=str(m),
                               zorder=3)
                ax.set_yscale("log")
                ax.margins(x=0.12, y=0.15)
                ax.set_xlabel("NFE (network evaluations)")
                ax.set_ylabel("W2 of the exact output law to the data law")
                ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=7)

            out.append(ctx.figure(f"compute_{res.name}", data, draw,
                                  f"{res.name}: exact W2 of the output law versus NFE, one marker per method "
                                  "(log scale; lower is better).", size=(6.0, 2.6), log=("w2",), width="85%"))
    return "".join(out)
