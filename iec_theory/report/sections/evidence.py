"""The paper's own argument (PAPER.md S1-S5) on toy_var100 and the real network, from `iec evidence`.

Reads `evidence.json` from a results folder (`<results>/evidence/evidence.json` or `<results>/evidence.json`,
written by `iec evidence --out DIR`). Without one, the quick and full report profiles compute the toy part
(about 10 s) and say that the real-network part is not available; the ci profile computes nothing.
Renders: the verdict table (statement x setting), the hypotheses H1-H6 met per setting, the per-step norm
figure with the running product against the measured growth, the L(lambda) heatmap, the S5
decomposition of C, the lambda ranges and the paper-versus-official-code table. `page_one_line(ctx)` gives
the one-line "On the paper's own ground: ..." summary for the report's first page.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import typst_util as tu
from ..builder import NotAvailable

__all__ = ["find_evidence", "load_evidence", "page_one_line", "section"]

COLUMNS = (("toy_var100", "Toy"), ("real_fp", "Real FP"), ("real_w8a8", "W8A8"), ("real_w4a8", "W4A8"),
           ("real_cache", "Cache"))


def find_evidence(results_dirs) -> Path | None:
    """The newest evidence.json under the results folders (direct, evidence/ or one level down)."""
    found = []
    for d in results_dirs:
        d = Path(d)
        if not d.is_dir():
            continue
        found += [p for p in [d / "evidence.json", d / "evidence" / "evidence.json"] if p.is_file()]
        found += list(d.glob("*/evidence.json"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def load_evidence(ctx) -> dict:
    """The evidence document (cached in ctx.shared), or NotAvailable."""
    if "evidence" in ctx.shared:
        return ctx.shared["evidence"]  # type: ignore[return-value]
    p = find_evidence(ctx.results_dirs)
    if p is not None:
        doc = json.loads(p.read_text())
        doc["_source"] = str(p)
    elif ctx.profile.name == "ci":
        raise NotAvailable("no evidence.json in the results folders (run iec evidence --out results/evidence)")
    else:
        from ...evidence.document import build_evidence

        ctx.log("  evidence: no evidence.json found; computing the toy part (about 10 s)")
        doc = build_evidence("quick", None, ctx.seed, ("toy_var100",), log=lambda s: None)
    ctx.shared["evidence"] = doc
    return doc


def page_one_line(ctx) -> str:
    """'On the paper's own ground: ...' (one line), or a line saying the evidence is not available."""
    try:
        doc = load_evidence(ctx)
    except NotAvailable as exc:
        return f"On the paper's own ground: not available ({exc})."
    return str(doc.get("summary_line", "On the paper's own ground: no summary in evidence.json."))


def _verdict_table(ctx, doc: dict) -> str:
    cols = [c for c in COLUMNS if c[0] in doc.get("per_step", {})]
    rows = []
    for s in doc["statements"]:
        labels = s.get("labels", {})
        rows.append([f"{s['id']} {s.get('title', '')}"] + [labels.get(k, "-") for k, _ in cols])
    return ctx.table(["Statement"] + [c[1] for c in cols], rows,
                     caption="Verdicts on the paper's statements per setting (real numbers are estimates on "
                             f"{max([v.get('n_images', 1) for v in doc.get('settings', {}).values()] or [1])} "
                             "image(s); details below)", align="(" + ", ".join(["left"] * (len(cols) + 1)) + ")")


def _hyp_table(ctx, doc: dict) -> str:
    cols = [c for c in COLUMNS if c[0] in doc.get("per_step", {})]
    met: dict[str, dict] = {}
    for s in doc["statements"]:
        for h in s["hypotheses"]:
            met.setdefault(h["id"], {}).update({k: v for k, v in h["met"].items() if v is not None})
    word = {True: "met", False: "NOT met", None: "-"}
    rows = [[hid + " " + doc["hypotheses"][hid]["text"][:70] + "..."] + [word[met[hid].get(k)] for k, _ in cols]
            for hid in sorted(met)]
    return ctx.table(["Hypothesis (PAPER.md section 5)"] + [c[1] for c in cols], rows,
                     caption="Implicit hypotheses of the paper, checked per setting (criteria in evidence.json)",
                     align="(" + ", ".join(["left"] * (len(cols) + 1)) + ")")


def _norm_figure(ctx, doc: dict) -> str:
    ps = doc["per_step"]
    series = {}
    for key, _ in COLUMNS:
        if key not in ps:
            continue
        nx = [np.nan if v is None else float(v) for v in ps[key]["spectral_norm_x"]]
        nb = [np.nan if v is None else float(v) for v in ps[key]["spectral_norm_xbar"]]
        series[key] = (np.array(nx), np.array(nb), ps[key].get("growth_curve_x"))
    if not series:
        return ctx.not_available("no per-step norms in evidence.json")
    data = {}
    for key, (nx, nb, _g) in series.items():
        ok = np.isfinite(nx)
        if ok.any():
            data[f"{key}_x"] = nx[ok]
            data[f"{key}_xbar"] = nb[np.isfinite(nb)]

    def draw(fig, _d):
        ax1, ax2 = fig.subplots(1, 2)
        for key, (nx, nb, g) in series.items():
            i = np.arange(nx.size)
            ok = np.isfinite(nx)
            ax1.plot(i[ok], nx[ok], ".-", ms=2, lw=0.7, label=f"{key} x")
            okb = np.isfinite(nb)
            ax1.plot(i[okb], nb[okb], ":", lw=0.7, label=f"{key} xbar")
            if ok.all():
                ax2.semilogy(np.arange(1, nx.size + 1), np.cumprod(nx), lw=1, label=f"{key}: product of norms")
            if g:
                ga = np.array(g, dtype=float)
                j = int(np.argmax(ga > 0)) if (ga > 0).any() else 0
                if ga[j] > 0:
                    ax2.semilogy(np.arange(j, ga.size), ga[j:] / ga[j], "--", lw=1, label=f"{key}: measured growth")
        ax1.axhline(1.0, color="k", lw=0.5)
        ax1.set_xlabel("step")
        ax1.set_ylabel("||A + B J||_2 (x) and / A (xbar)")
        ax1.legend(fontsize=5)
        ax2.set_xlabel("step")
        ax2.set_ylabel("amplification (x)")
        ax2.legend(fontsize=5)

    return ctx.figure("evidence_norms", data, draw,
                      "S3: per-step spectral norms (left; x solid, xbar dotted; estimates for the network) and, "
                      "right, the running product of the x norms (the paper's implied worst case, where every step "
                      "was analysed) against the measured growth of one injected error.", size=(6.8, 3.0))


def _heatmap(ctx, doc: dict) -> str:
    ps = doc["per_step"]
    key = next((k for k, _ in COLUMNS[1:] if k in ps), "toy_var100" if "toy_var100" in ps else None)
    if key is None:
        return ctx.not_available("no contraction data")
    L = ps[key]["contraction_L"]
    lams = sorted(L, key=float)
    ident = ps[key].get("identity_step") or [0] * len(L[lams[0]])
    cols = [i for i in range(len(L[lams[0]])) if not ident[i] and all(L[lam][i] is not None for lam in lams)]
    mat = np.array([[float(L[lam][i]) for i in cols] for lam in lams])
    data = {"L": mat.reshape(-1)}

    def draw(fig, _d):
        ax = fig.subplots()
        im = ax.imshow(mat, aspect="auto", cmap="RdYlGn_r", vmin=0, vmax=max(1.2, float(mat.max())))
        ax.set_yticks(range(len(lams)), lams)
        step = max(1, len(cols) // 12)
        ax.set_xticks(range(0, len(cols), step), [str(ps[key]["timesteps"][c]) for c in cols][::step], fontsize=6)
        ax.set_xlabel("timestep t of the analysed step")
        ax.set_ylabel("lambda")
        fig.colorbar(im, ax=ax, label="L(lambda)")

    return ctx.figure("evidence_contraction", data, draw,
                      f"S4: L(lambda) = ||(1 - lambda) I + lambda B J||_2 per analysed step ({key}; estimates; the "
                      "identity steps t -> t of the official schedule, where L = 1 - lambda, are left out); red >= 1 "
                      "(no contraction).", size=(6.2, 2.8))


def _s5_figure(ctx, doc: dict) -> str:
    rows = [(k, r) for k, _ in COLUMNS for r in doc["per_step"].get(k, {}).get("s5", []) or []
            if r.get("bound") is not None]
    if not rows:
        return ctx.not_available("no S5 rows")
    labels = [f"{k.replace('real_', '')} t={r['t']}" for k, r in rows]
    c_in = np.array([r["C_incoming"] for _, r in rows], dtype=float)
    c_rest = np.array([r["C_rest"] for _, r in rows], dtype=float)
    dk = np.array([r["deltaK"] for _, r in rows], dtype=float)
    bd = np.array([r["bound"] for _, r in rows], dtype=float)
    keep = np.arange(len(rows)) if len(rows) <= 40 else np.linspace(0, len(rows) - 1, 40).astype(int)
    data = {"C_incoming": c_in[keep], "C_rest": c_rest[keep], "deltaK": dk[keep], "bound": bd[keep]}

    def draw(fig, d):
        ax1, ax2 = fig.subplots(1, 2)
        y = np.arange(keep.size)
        ax1.barh(y, d["C_incoming"], color="#c62828", label="lambda A ||delta_t|| (incoming)")
        ax1.barh(y, d["C_rest"], left=d["C_incoming"], color="#1565c0", label="rest of C")
        ax1.set_yticks(y, [labels[i] for i in keep], fontsize=5)
        ax1.invert_yaxis()
        ax1.legend(fontsize=5)
        ax1.set_xlabel("C (paper's constant)")
        ax2.scatter(d["bound"], d["deltaK"], s=6)
        m = float(max(d["bound"].max(), d["deltaK"].max()))
        ax2.plot([0, m], [0, m], "k", lw=0.5)
        ax2.set_xlabel("L^K ||delta^(0)|| + C (1 - L^K)/(1 - L)")
        ax2.set_ylabel("measured ||delta^(K)||")

    return ctx.figure("evidence_s5", data, draw,
                      "S5: the paper's constant C split into the incoming error lambda A ||delta_t|| (red) and the "
                      "rest (left); measured error after K corrections against the per-step bound (right, on or "
                      "below the diagonal = bound holds).", size=(6.8, 3.2))


def section(ctx) -> str:
    doc = load_evidence(ctx)
    out = [tu.text("The paper has no numbered theorems; its argument is the chain S1-S5 (PAPER.md), with implicit "
                   "hypotheses H1-H6. Each statement is checked here where the paper makes it: the exact toy "
                   "N(0, diag(100, 1, 0.01)) and the committed CIFAR-10 DDPM sampled as the official code samples "
                   "(DDIM, eta 0, T = 100, quadratic spacing), full precision, W8A8, W4A8 and cached. Network "
                   "numbers are estimates (Lanczos and power iteration on autograd JVP/VJP; quantized networks "
                   "through a straight-through estimator, as they are piecewise constant).") + "\n\n"]
    src = doc.get("_source", "computed during this build (toy only)")
    out.append(tu.text(f"Source: {src}; profile {doc.get('profile')}, {tu.num(doc.get('seconds'))} s.") + "\n\n")
    out.append(ctx.verdict("open", doc.get("summary_line", "")))
    out.append(_verdict_table(ctx, doc))
    out.append(_hyp_table(ctx, doc))
    out.append(tu.heading("Statements and verdicts", 2))
    for s in doc["statements"]:
        out.append(tu.heading(f"{s['id']}: {s.get('title', '')}", 3))
        out.append(tu.text(s["statement"]) + "\n\n")
        if s.get("typst"):
            out.append(tu.display_math(s["typst"], s["id"]))
        out.append(tu.text(f"Settled by {s.get('theorems', '')}: {s.get('relation', '')}.") + "\n\n")
        items = [f"toy: {s['verdict_toy']}"] + [f"{k}: {v}" for k, v in s["verdict_real"].items()]
        out.append(tu.bullet_list(tu.text(i) for i in items))
    out.append(tu.heading("Figures", 2))
    for part in (_norm_figure, _heatmap, _s5_figure):
        try:
            out.append(part(ctx, doc))
        except ValueError as exc:  # FigureDataError and friends: say so, never invent data
            out.append(ctx.not_available(f"{part.__name__}: {exc}"))
    spread = doc.get("spread") or {}
    srows = [(k, q, v["n"], v["min"], v["median"], v["max"]) for k, sp in spread.items() for q, v in sp.items()
             if isinstance(v, dict) and sp.get("n_images", 1) > 1]
    if srows:
        out.append(ctx.table(["Setting", "Quantity", "Images", "Min", "Median", "Max"], srows,
                             caption="Spread of the headline network numbers over independent x_T (estimates)",
                             align="(left, left, right, right, right, right)"))
    rng = doc.get("lambda_range", {})
    out.append(ctx.table(["Setting", "lambda with L < 1 at every analysed step"],
                         [(k, str(v)) for k, v in rng.items()],
                         caption="S4: contraction range found against the paper's [0.1, 0.7]", align="(left, left)"))
    comp = (doc.get("prescription") or {}).get("comparison") or {}
    rows = [(k, r["method"], r["nfe"], r["error"]) for k, v in comp.items() for r in v]
    if rows:
        out.append(tu.heading("Beyond the paper: the theory's prescription", 2))
        out.append(tu.text("lambda_t = 2/(2 + u_min + u_max) from the estimated spectrum of the symmetric part of "
                           "J_t (T3), K from the contraction factor, corrections only at steps whose estimated xbar "
                           "norm exceeds 1. " + str(doc["prescription"].get("note", ""))) + "\n\n")
        out.append(ctx.table(["Setting", "Method", "NFE", "Error of x_0"], rows,
                             caption="Prescription vs the official preset, the paper's form, DDIM at equal NFE "
                                     "and Heun (one x_T; estimates)", align="(left, left, right, right)"))
    pvc = doc.get("paper_vs_code") or []
    if pvc:
        out.append(ctx.table(["Item", "Paper", "Official code", "Changes a verdict?"],
                             [(r["item"], r["paper"], r["code"], r["verdict_effect"]) for r in pvc],
                             caption="Paper versus the official CIFAR-10 code", align="(left, left, left, left)"))
    return "".join(out)
