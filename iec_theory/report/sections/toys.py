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

    lengths = {d.size for d in data.values()}
    normalised = len(lengths) > 1        # runs with different T: plot against the fraction of the run

    def draw(fig, d):
        ax = fig.subplots()
        for i, (k, m) in enumerate(labels):
            y = positive(d[k])
            x = np.linspace(0.0, 1.0, y.size) if normalised else np.arange(y.size)
            ax.semilogy(x, y, color=COLORS[i % len(COLORS)], lw=1.1, ls=("-", "--", "-.", ":")[i % 4], label=m)
        ax.set_xlabel("fraction of the sampling run n / T" if normalised else "steps taken n")
        ax.set_ylabel(f"{what} error (xbar)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=7)

    axis = ("against the fraction n / T of each method's own run (the methods take different numbers of steps)"
            if normalised else "against the steps taken n")
    cap = (f"{res.name}: {what} error ||deltabar_n|| per step, log scale, one curve per method, {axis} "
           f"({'reduced ci spec, ' if res.reduced else ''}{res.source}). A falling curve is labelled 'linear' "
           "(at most linear: see the growth section).")
    return ctx.figure(f"{prefix}_{res.name}_{key}", data, draw, cap, size=(6.5, 2.6), log=log, width="90%")


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


def kl_note(res) -> str:
    """A sentence for huge exact KL values ('' when none is huge): they come from an exponentially grown mean."""
    kls = [(value(r, "KL"), r.get("method"), value(r, "propagated_xbar")) for r in res.rows]
    big = [(k, m, e) for k, m, e in kls if isinstance(k, (int, float)) and np.isfinite(k) and k > 1e6]
    if not big:
        return ""
    k, m, e = max(big, key=lambda t: t[0])
    return tu.text(f"The KL values up to {tu.num(k)} ({m}) are exact, not an overflow: KL between Gaussians grows "
                   f"with the square of the mean error measured in data standard deviations, and the final error "
                   f"here is {tu.num(e)} in xbar, grown exponentially; such a law has nothing in common with the "
                   "data law.") + "\n\n"


def _bits(p: dict | None) -> str | None:
    if not isinstance(p, dict) or "w_bits" not in p:
        return None
    a = p.get("a_bits", "none")
    return f"W{p['w_bits']}" + ("" if a in (None, "none") else f"A{a}")


def sweep_rows(res) -> tuple[list[list], int]:
    """The sweep table's rows with each method's label naming the bits it actually ran at, duplicates dropped.

    A method without its own [perturbation] takes the spec's, to which the sweep's perturbation.* overrides
    apply: its static label (e.g. ddim-W8A8) is rewritten for the cell (ddim-W4A8 at w_bits = 4); a row equal to
    another of the same cell in every shown column is dropped (returned count)."""
    import re

    keys = list(res.sweep_keys)
    own = {str(m.get("label", m.get("name"))): m.get("perturbation") for m in res.raw.get("methods", [])
           if isinstance(m, dict)}
    base = dict(res.raw.get("perturbation") or {})
    out, seen, dropped = [], set(), 0
    for r in res.sweep_rows:
        label = str(r.get("method"))
        pert = own.get(label)
        if pert is None:
            pert = dict(base)
            for k in keys:
                if k.startswith("perturbation."):
                    pert[k.split(".", 1)[1]] = r.get(k)
        eff = _bits(pert)
        if eff is not None:
            label = re.sub(r"W\d+(A\d+)?", eff, label, count=1)
        row = [r.get(k) for k in keys] + [label, r.get("NFE"), value(r, "propagated_xbar"),
                                          value(r, "deployment_xbar"), r.get("growth"), value(r, "W2")]
        key = tuple(str(v) for v in row)
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        out.append(row)
    return out, dropped


def _signature(row: dict) -> tuple:
    return tuple(str(value(row, k)) for k in ("NFE", "propagated_xbar", "deployment_xbar", "total_xbar", "W2", "KL"))


def repeated_in(res, earlier) -> tuple[str, list[str]] | None:
    """(name of an earlier experiment, its methods) when every row of `res` repeats one of its rows exactly."""
    mine = [_signature(r) for r in res.rows]
    for other in earlier:
        theirs = {_signature(r): str(r.get("method")) for r in other.rows}
        if mine and all(sig in theirs for sig in mine):
            return other.name, [theirs[sig] for sig in mine]
    return None


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
    done = []
    for res in coll.results:
        out.append(tu.heading(res.name, 2))
        if res.description:
            out.append(tu.text(res.description) + "\n\n")
        same = repeated_in(res, done)
        done.append(res)
        if same is not None:
            out.append(tu.text(f"Every row of {res.name} repeats a row of {same[0]} exactly (its methods "
                               f"{', '.join(same[1])}): the table and figure are not repeated here.") + "\n\n")
        else:
            out.append(experiment_table(ctx, res))
            out.append(kl_note(res))
            fig = curves_figure(ctx, res)
            out.append(fig or tu.text(f"{res.name}: no per-step error curves were recorded.") + "\n\n")
        if res.sweep_rows:
            keys = list(res.sweep_keys)
            rows, dropped = sweep_rows(res)
            note = (f"; {dropped} rows identical to another row of the same cell are left out (methods that set "
                    "their own bits do not change with a bits sweep)") if dropped else ""
            out.append(ctx.table(keys + ["Method", "NFE", "Propagated", "Deployment", "Growth", "W2 (exact law)"],
                                 rows, caption=f"{res.name}: the spec's sweep grid (iec sweep), one row per cell and "
                                               "method, each method named by the bits it ran at" + note,
                                 align="(" + ", ".join(["right"] * len(keys) + ["left"] + ["right"] * 3
                                                       + ["left", "right"]) + ")"))
    if coll.skipped:
        out.append(tu.heading("Specs not shown here", 2))
        out.append(ctx.table(["Spec", "Reason"], coll.skipped, caption="Experiment specs skipped by this section",
                             align="(left, left)"))
    if not coll.results:
        out.append(ctx.not_available("no toy experiment spec could be run"))
    return "".join(out)
