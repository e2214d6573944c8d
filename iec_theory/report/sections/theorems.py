"""Theorems T1..T6 (iec_theory.theorems): statement, hypotheses, proof sketch, instances checked,
bound versus measured on log scales, tightness, and a verdict line per theorem.

The instances are the toy suite of `iec verify` when that command provides one (so the report and
`iec verify` agree), sized by the profile; the proof sketches come from docs/PROOFS.md (the section
whose heading names the theorem), else from the theorem's docstring.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np

from .. import typst_util as tu
from ..builder import NotAvailable

PROOFS = Path(__file__).resolve().parents[3] / "docs" / "PROOFS.md"


def _suite(ctx):
    """The instances to check: `iec verify`'s default toy suite (the same list at the quick profile)."""
    suite = ctx.module("iec_theory.theorems.suite", "default_suite")
    default = int(getattr(suite, "DEFAULT_INSTANCES", 160))
    n = ctx.pick(ci=8, quick=default, full=3 * default)
    return suite.default_suite(n, ctx.seed), f"iec_theory.theorems.suite.default_suite({n}, seed={ctx.seed})"


def _proof_sketch(th) -> str:
    """The theorem's section of docs/PROOFS.md as typst, else its class docstring."""
    if PROOFS.exists():
        md = PROOFS.read_text(encoding="utf-8")
        blocks = re.split(r"(?m)^(?=#{1,3} )", md)
        pat = re.compile(rf"^#{{1,3}}\s+{re.escape(th.name)}\b")   # the heading that starts with the name
        hits = [b for b in blocks if pat.match(b)]
        if hits:
            body = hits[0].split("\n", 1)[1] if "\n" in hits[0] else ""
            src = tu.text(f"(Source: docs/PROOFS.md, section on {th.name}.)")
            return tu.markdown(body, heading_offset=3) + src + "\n"
    own = type(th).__dict__.get("__doc__")   # not the inherited base-class docstring
    doc = inspect.cleandoc(own) if own else (inspect.getdoc(inspect.getmodule(type(th))) or "")
    if doc:
        return tu.paragraphs(doc) + "\n\n"
    return tu.text("No proof sketch found (docs/PROOFS.md is absent and the class has no docstring).") + "\n"


def _suite_mix(instances) -> str:
    """One paragraph: what the suite contains (models, perturbations, schemes, T, d, eta)."""
    ds = [i.describe() for i in instances if hasattr(i, "describe")]
    if not ds:
        return ""

    def counts(key):
        c = {}
        for d in ds:
            c[str(d.get(key))] = c.get(str(d.get(key)), 0) + 1
        return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))

    Ts = [d["T"] for d in ds if "T" in d]
    dims = [d["dim"] for d in ds if "dim" in d]
    return tu.text(f"Suite composition: models ({counts('model')}); perturbations ({counts('perturbation')}); "
                   f"IEC ({counts('iec')}); eta ({counts('eta')}); T from {min(Ts)} to {max(Ts)}; dimension from "
                   f"{min(dims)} to {max(dims)}.") + "\n\n"


def _instance_label(inst) -> str:
    d = inst.describe() if hasattr(inst, "describe") else {}
    if not d:
        return str(inst)
    keys = ("model", "dim", "T", "eta", "perturbation", "magnitude", "iec", "K", "lam", "kappa")
    return ", ".join(f"{k}={tu.num(d[k]) if isinstance(d[k], float) else d[k]}" for k in keys if k in d)


def _check_all(theorems, instances, log):
    """results[name] = list of (instance, TheoremResult); runs each instance once for all theorems."""
    results = {name: [] for name in theorems}
    for j, inst in enumerate(instances):
        run = inst.run()
        for name, th in theorems.items():
            results[name].append((inst, th.check(run)))
        if (j + 1) % 40 == 0:
            log(f"    {j + 1}/{len(instances)} instances checked")
    return results


def _positive_pairs(res_list, kind):
    meas, bound = [], []
    for _, r in res_list:
        if r.status != "holds" and r.status != "violated":
            continue
        m = np.abs(np.asarray(r.measured, dtype=float)) if kind == "identity" else np.asarray(r.measured, dtype=float)
        b = np.abs(np.asarray(r.bound, dtype=float)) if kind == "identity" else np.asarray(r.bound, dtype=float)
        ok = (m > 0) & (b > 0) & np.isfinite(m) & np.isfinite(b)
        meas.append(m[ok])
        bound.append(b[ok])
    if not meas:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(meas), np.concatenate(bound)


def _theorem_figure(ctx, name, th, res_list) -> str:
    checked = [(i, r) for i, r in res_list if r.status in ("holds", "violated") and len(r.steps)]
    if not checked:
        return ctx.not_available(f"no instance of the suite met the hypotheses of {name}, so there is nothing to plot")
    kind = {"T2": "identity", "T3": "identity", "T6": "lower"}.get(name, "upper")
    meas, bound = _positive_pairs(checked, kind)
    if meas.size == 0:
        return ctx.not_available(f"{name}: every checked step has a zero measured value or bound (nothing to put "
                                 "on a log scale)")
    # one representative instance: the one with the most checked steps, first in suite order
    inst, rep = max(checked, key=lambda ir: len(ir[1].steps))
    rs = np.asarray(rep.steps, dtype=float)
    rm = np.asarray(rep.measured, dtype=float)
    rb = np.asarray(rep.bound, dtype=float)
    if kind == "identity":
        rm, rb = np.abs(rm), np.abs(rb)
    keep = (rm > 0) & (rb > 0)
    if not np.any(keep):
        rs, rm, rb = np.arange(meas.size, dtype=float)[:50], meas[:50], bound[:50]
        keep = np.ones(rs.size, dtype=bool)
    data = {"measured": meas, "bound": bound, "rep_step": rs[keep], "rep_measured": rm[keep], "rep_bound": rb[keep]}
    xlabel = {"identity": "predicted by the identity (abs.)", "lower": "lower bound", "upper": "bound"}[kind]

    def draw(fig, d):
        ax1, ax2 = fig.subplots(1, 2)
        ax1.scatter(d["bound"], d["measured"], s=5, alpha=0.5, color="#1565c0", lw=0, rasterized=True)
        lo = float(min(d["bound"].min(), d["measured"].min()))
        hi = float(max(d["bound"].max(), d["measured"].max()))
        ax1.plot([lo, hi], [lo, hi], color="k", lw=0.8, label="measured = bound")
        ax1.set_xscale("log")
        ax1.set_yscale("log")
        ax1.set_xlabel(xlabel)
        ax1.set_ylabel("measured")
        ax1.set_title(f"{name}: all checked steps ({d['bound'].size})")
        ax1.legend(loc="upper left")
        ax2.semilogy(d["rep_step"], d["rep_bound"], color="k", marker=".", ms=3, label=xlabel)
        ax2.semilogy(d["rep_step"], d["rep_measured"], color="#c62828", ls="--", marker="x", ms=3, label="measured")
        ax2.set_xlabel("step index i")
        ax2.set_title("one instance, per step")
        ax2.legend(loc="best")

    side = {"upper": "below", "lower": "above", "identity": "on"}[kind]
    cap = (f"{name}, bound versus measured on log scales. Left: every checked step of every instance whose "
           f"hypotheses hold (the theorem holds when points lie {side} the diagonal; zero values omitted). Right: "
           f"one instance ({_instance_label(inst)}).")
    return ctx.figure(f"theorem_{name}", data, draw, cap, size=(7.0, 2.9), log=("measured", "bound"))


def _stats(res_list):
    st = [r.status for _, r in res_list]
    holds, viol, nmet = st.count("holds"), st.count("violated"), st.count("hypotheses not met")
    checked = [r for _, r in res_list if r.status in ("holds", "violated")]
    margins = [r.worst_margin for r in checked if np.isfinite(r.worst_margin)]
    tight = np.concatenate([np.asarray(r.tightness, dtype=float) for r in checked]) if checked else np.zeros(0)
    tight = tight[np.isfinite(tight)]
    return {
        "instances": len(res_list), "holds": holds, "violated": viol, "not_met": nmet,
        "worst_margin": min(margins) if margins else float("nan"),
        "median_tight": float(np.median(tight)) if tight.size else float("nan"),
        "p90_tight": float(np.quantile(tight, 0.9)) if tight.size else float("nan"),
        "max_tight": float(np.max(tight)) if tight.size else float("nan"),
        "steps": int(sum(len(r.steps) for r in checked)),
    }


def verdict_line(name: str, s: dict) -> tuple[str, str]:
    if s["holds"] + s["violated"] == 0:
        return "open", (f"{name} verdict: not checked: none of the {s['instances']} instances met its hypotheses.")
    status = "fails" if s["violated"] else "holds"
    word = "VIOLATED" if s["violated"] else "holds"
    return status, (f"{name} verdict: {word} on {s['holds']} of {s['holds'] + s['violated']} instances whose "
                    f"hypotheses hold ({s['violated']} violated, {s['not_met']} with hypotheses not met, "
                    f"{s['steps']} steps checked); worst relative margin {tu.num(s['worst_margin'])}, median "
                    f"tightness {tu.num(s['median_tight'])}.")


def section(ctx) -> str:
    thm = ctx.module("iec_theory.theorems", "THEOREMS")
    instances, fn_name = _suite(ctx)
    instances = list(instances)
    if not instances:
        raise NotAvailable("the verify suite returned no instance")
    ctx.log(f"    checking {len(thm.THEOREMS)} theorems on {len(instances)} instances")
    results = _check_all(thm.THEOREMS, instances, ctx.log)
    ctx.shared["theorem_results"] = results
    ctx.shared.setdefault("commands", []).append(f"iec verify --instances {len(instances)} --seed {ctx.seed}")
    out = [tu.text(f"Each theorem is an executable check (iec_theory.theorems). The {len(instances)} toy instances "
                   f"come from {fn_name}, the suite of iec verify (the quick profile checks exactly the instances "
                   f"of iec verify --seed {ctx.seed}); each instance is one paired run (reference and "
                   "perturbed trajectory of the same scheme with the same noise) checked against every theorem. "
                   "Margins are relative (bound - measured)/bound per step, the worst over steps and instances; "
                   "tightness is measured/bound per step (bound/measured for the lower bound T6).") + "\n\n"]
    out.append(_suite_mix(instances))
    rows = []
    stats = {}
    for name in thm.THEOREMS:
        stats[name] = s = _stats(results[name])
        rows.append([name, s["instances"], s["holds"], s["violated"], s["not_met"], s["worst_margin"],
                     s["median_tight"], s["max_tight"]])
    ctx.shared["theorem_stats"] = stats
    out.append(ctx.table(["Theorem", "Instances", "Holds", "Violated", "Hypotheses not met", "Worst margin",
                          "Median tightness", "Max tightness"], rows,
                         caption="Theorem checks on the toy suite (as iec verify)"))
    for name, th in thm.THEOREMS.items():
        s = stats[name]
        out.append(tu.heading(f"{name}: {getattr(th, 'title', '')}", 2, label=f"thm-{name}"))
        if getattr(th, "statement_typst", ""):
            out.append(tu.display_math(th.statement_typst, f"{name} statement"))
        out.append(tu.text(th.statement_text) + "\n\n")
        out.append("*Hypotheses.* " + "".join(f"\n- {tu.text(h)}" for h in th.hypotheses_text) + "\n\n")
        if getattr(th, "measured_text", ""):
            out.append("*Measured.* " + tu.text(th.measured_text) + "\n\n")
        out.append("*Proof sketch.* " + _proof_sketch(th) + "\n")
        status, line = verdict_line(name, s)
        out.append(ctx.verdict(status, line))
        out.append(_theorem_figure(ctx, name, th, results[name]))
        out.append(tu.text(f"Tightness over the {s['steps']} checked steps: median {tu.num(s['median_tight'])}, "
                           f"90th percentile {tu.num(s['p90_tight'])}, maximum {tu.num(s['max_tight'])}.") + "\n\n")
        fails = [(i, r) for i, r in results[name] if r.status == "violated"]
        if fails:
            i, r = min(fails, key=lambda ir: ir[1].worst_margin)
            out.append(tu.text(f"Worst violation: margin {tu.num(r.worst_margin)} on {_instance_label(i)}.") + "\n\n")
    return "".join(out)
