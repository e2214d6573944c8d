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
IDENTITIES = ("T2", "T3")        # exact identities: a deviation within rounding, no "margin" to speak of
LOWER_BOUNDS = ("T6",)


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
    keys = ("model", "dim", "T", "eta", "noise", "perturbation", "magnitude", "iec", "K", "lam", "kappa")
    names = {"kappa": "eps scale", "noise": "IEC noise"}
    skip = {"kappa": 1.0}
    return ", ".join(f"{names.get(k, k)}={tu.num(d[k]) if isinstance(d[k], float) else d[k]}" for k in keys
                     if k in d and skip.get(k, object()) != d[k]
                     and not (k == "noise" and (d.get("iec") != "relaxed" or not d.get("eta"))))


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


def _kind(name: str) -> str:
    return "identity" if name in IDENTITIES else ("lower" if name in LOWER_BOUNDS else "upper")


def _ratios(r, kind: str) -> np.ndarray:
    """Per checked step: tightness (measured/bound; lower bound: bound/measured, <= 0 where vacuous), or for an
    identity the relative deviation |measured - predicted| / |predicted| (floored at 1e-17 for a log axis)."""
    if kind == "identity":
        m = np.abs(np.asarray(r.measured, dtype=float)).reshape(-1)
        b = np.abs(np.asarray(r.bound, dtype=float)).reshape(-1)
        n = min(m.size, b.size)
        dev = np.abs(m[:n] - b[:n]) / np.maximum(b[:n], 1e-300)
        return np.maximum(dev, 1e-17)
    if kind == "lower":
        m = np.asarray(r.measured, dtype=float).reshape(-1)
        b = np.asarray(r.bound, dtype=float).reshape(-1)
        n = min(m.size, b.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(b[:n] > 0, b[:n] / m[:n], 0.0)
        return t
    return np.asarray(r.tightness, dtype=float).reshape(-1)


def _representative(name: str, checked):
    """The example instance: most checked steps, preferring eta = 0 (T5 needs the same noise at every
    iteration, which eta = 0 gives without further explanation), first in suite order."""
    def key(ir):
        d = ir[0].describe() if hasattr(ir[0], "describe") else {}
        return (float(d.get("eta", 0.0)) == 0.0, len(ir[1].steps))
    return max(checked, key=key)


def _theorem_figure(ctx, name, th, res_list) -> str:
    checked = [(i, r) for i, r in res_list if r.status in ("holds", "violated") and len(r.steps)]
    if not checked:
        return tu.text(f"No instance of the suite met the hypotheses of {name}: nothing to plot.") + "\n\n"
    kind = _kind(name)
    allr = np.concatenate([_ratios(r, kind) for _, r in checked])
    n_all = int(allr.size)
    allr = allr[np.isfinite(allr)]
    inst, rep = _representative(name, checked)
    rr = _ratios(rep, kind)
    rs = np.asarray(rep.steps, dtype=float)[: rr.size]
    ok = np.isfinite(rr)
    data = {"ratio": allr, "rep_step": rs[ok], "rep_ratio": rr[ok]}
    xlabel = {"identity": "relative deviation |measured - identity| / |identity|",
              "lower": "tightness bound / measured (1 = attained)",
              "upper": "tightness measured / bound (1 = attained)"}[kind]
    vac = float(np.mean(allr <= 0)) if kind == "lower" and allr.size else 0.0

    def draw(fig, d):
        ax1, ax2 = fig.subplots(1, 2)
        if kind == "identity":
            bins = np.logspace(-17, max(-1.0, float(np.log10(d["ratio"].max())) + 0.5), 40)
            ax1.hist(d["ratio"], bins=bins, color="#1565c0")
            ax1.set_xscale("log")
        else:
            pos = d["ratio"][d["ratio"] > 0]
            top = max(1.05, float(pos.max()) if pos.size else 1.0)
            ax1.hist(pos, bins=np.linspace(0.0, top, 41), color="#1565c0")
            if kind == "lower" and vac > 0:
                ax1.bar([0.0], [int(np.sum(d["ratio"] <= 0))], width=top / 40, color="#9e9e9e", align="edge",
                        label=f"vacuous (bound <= 0): {100 * vac:.0f} %")
                ax1.legend(loc="upper center", frameon=True, framealpha=0.9)
            ax1.axvline(1.0, color="k", lw=0.8, ls="--")
        ax1.set_xlabel(xlabel)
        ax1.set_ylabel("checked steps")
        ax1.set_title(f"{name}: all {d['ratio'].size} checked steps")
        if kind == "identity":
            ax2.semilogy(d["rep_step"], d["rep_ratio"], color="#c62828", marker=".", ms=3, lw=0.8)
            ax2.set_ylabel("relative deviation")
        else:
            ax2.plot(d["rep_step"], d["rep_ratio"], color="#c62828", marker=".", ms=3, lw=0.8)
            ax2.axhline(1.0, color="k", lw=0.8, ls="--")
            ax2.set_ylim(bottom=min(0.0, float(d["rep_ratio"].min())) - 0.02)
            ax2.set_ylabel("bound / measured" if kind == "lower" else "measured / bound")
        ax2.set_xlabel("step index i")
        ax2.set_title("one instance, per step")

    where = {"upper": "at most 1 (measured below the bound; 1 = the bound is attained)",
             "lower": "at most 1 (the measured value above the lower bound); 0 where the bound is vacuous",
             "identity": "at the level of float64 rounding (the identity holds exactly up to rounding)"}[kind]
    omitted = n_all - int(allr.size)
    what = "relative deviation from the identity" if kind == "identity" else "tightness"
    cap = (f"{name}: {what} per step. Left: histogram over all {allr.size} checked "
           f"steps of every instance whose hypotheses hold{f' ({omitted} undefined ratios omitted)' if omitted else ''}"
           f"; the theorem holds when every value is {where}. Right: the same ratio per step on one instance "
           f"({_instance_label(inst)}).")
    return ctx.figure(f"theorem_{name}", data, draw, cap, size=(7.0, 2.7))


def _stats(res_list, lower: bool = False):
    """Counts, margins and tightness of one theorem over the suite; for a lower bound (T6) also the share of
    checked steps where the bound is <= 0 (vacuous: it holds trivially there)."""
    st = [r.status for _, r in res_list]
    holds, viol, nmet = st.count("holds"), st.count("violated"), st.count("hypotheses not met")
    checked = [r for _, r in res_list if r.status in ("holds", "violated")]
    vac_inst = [r for _, r in res_list if r.status == "vacuous"]   # whole-run vacuous lower bound (if reported)
    with_steps = [r for r in checked + vac_inst if np.asarray(r.bound).size]
    margins = [r.worst_margin for r in checked if np.isfinite(r.worst_margin)]
    tight = np.concatenate([np.asarray(r.tightness, dtype=float) for r in checked]) if checked else np.zeros(0)
    tight = tight[np.isfinite(tight)]
    return {
        "instances": len(res_list), "holds": holds, "violated": viol, "not_met": nmet, "vacuous": len(vac_inst),
        "worst_margin": min(margins) if margins else float("nan"),
        "median_tight": float(np.median(tight)) if tight.size else float("nan"),
        "p90_tight": float(np.quantile(tight, 0.9)) if tight.size else float("nan"),
        "max_tight": float(np.max(tight)) if tight.size else float("nan"),
        "steps": int(sum(len(r.steps) for r in checked)),
        "n_tight": int(tight.size),
        "vacuous_share": (float(np.mean(np.concatenate([np.asarray(r.bound, dtype=float).reshape(-1) <= 0
                                                        for r in with_steps]))) if lower and with_steps else None),
    }


def verdict_line(name: str, s: dict) -> tuple[str, str]:
    """(holds / fails / open, the verdict sentence) of one theorem over the suite."""
    if s["holds"] + s["violated"] == 0:
        if s.get("vacuous"):
            return "open", (f"{name} verdict: vacuous: on all {s['vacuous']} instances that meet its hypotheses the "
                            "lower bound is <= 0 at every step, so it holds trivially and is no evidence.")
        return "open", (f"{name} verdict: not checked: none of the {s['instances']} instances met its hypotheses.")
    status = "fails" if s["violated"] else "holds"
    word = "VIOLATED" if s["violated"] else "holds"
    vac = f", {s['vacuous']} vacuous on every step (no evidence, not counted)" if s.get("vacuous") else ""
    head = (f"{name} verdict: {word} on {s['holds']} of {s['holds'] + s['violated']} instances whose hypotheses "
            f"hold ({s['violated']} violated, {s['not_met']} with hypotheses not met{vac}, {s['steps']} steps "
            "checked)")
    if name in IDENTITIES:
        used = 1.0 - s["worst_margin"] if np.isfinite(s["worst_margin"]) else float("nan")
        return status, (f"{head}; an identity: the largest deviation used {tu.num(used)} of the float64 rounding "
                        "allowance (no bound, so no margin or tightness to speak of).")
    tail = f"; worst relative margin {tu.num(s['worst_margin'])}, median tightness {tu.num(s['median_tight'])}"
    if s.get("vacuous_share") is not None:
        tail += (f"; the lower bound is vacuous (<= 0) on {tu.num(100 * s['vacuous_share'], 2)} % of the checked "
                 "steps, where 'holds' is trivially true and says nothing")
    return status, head + tail + "."


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
                   "Margins are relative, (bound - measured)/bound per step, the worst over steps and instances; "
                   "tightness is measured/bound per step (bound/measured for the lower bound T6), so 1 means the "
                   "bound is attained. T2 and T3 are identities, checked to float64 rounding.") + "\n\n"]
    out.append(_suite_mix(instances))
    rows = []
    stats = {}
    for name in thm.THEOREMS:
        stats[name] = s = _stats(results[name], lower=name in LOWER_BOUNDS)
        ident = name in IDENTITIES
        rows.append([name, s["instances"], s["holds"], s["violated"], s["not_met"],
                     "identity" if ident else s["worst_margin"], "identity" if ident else s["median_tight"],
                     100 * s["vacuous_share"] if s.get("vacuous_share") is not None else "n/a"])
    ctx.shared["theorem_stats"] = stats
    out.append(ctx.table(["Theorem", "Instances", "Holds", "Violated", "Hypotheses not met", "Worst margin",
                          "Median tightness", "Vacuous steps %"], rows,
                         caption="Theorem checks on the toy suite (as iec verify). T2 and T3 are identities (checked "
                                 "to rounding: no margin); vacuous steps: a lower bound <= 0 that holds trivially"))
    for name, th in thm.THEOREMS.items():
        s = stats[name]
        out.append(tu.heading(f"{name}: {getattr(th, 'title', '')}", 2, label=f"thm-{name}"))
        typeset = bool(getattr(th, "statement_typst", "")) and tu.math_error(th.statement_typst) is None
        if typeset:     # the typeset statement only: an ASCII copy beside it would say the same thing worse
            out.append(f"$ {th.statement_typst} $\n\n")
        else:
            out.append(tu.text(th.statement_text) + "\n\n")
        out.append("*Hypotheses.* " + "".join(f"\n- {tu.text(h)}" for h in th.hypotheses_text) + "\n\n")
        if getattr(th, "measured_text", ""):
            out.append("*Measured.* " + tu.text(th.measured_text) + "\n\n")
        out.append("*Proof sketch.* " + _proof_sketch(th) + "\n")
        status, line = verdict_line(name, s)
        out.append(ctx.verdict(status, line))
        out.append(_theorem_figure(ctx, name, th, results[name]))
        if name not in IDENTITIES:
            out.append(tu.text(f"Tightness over the {s['n_tight']} checked steps with a defined ratio (of "
                               f"{s['steps']}): median {tu.num(s['median_tight'])}, 90th percentile "
                               f"{tu.num(s['p90_tight'])}, maximum {tu.num(s['max_tight'])}.") + "\n\n")
        fails = [(i, r) for i, r in results[name] if r.status == "violated"]
        if fails:
            i, r = min(fails, key=lambda ir: ir[1].worst_margin)
            out.append(tu.text(f"Worst violation: margin {tu.num(r.worst_margin)} on {_instance_label(i)}.") + "\n\n")
    return "".join(out)
