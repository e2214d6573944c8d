"""Stability regions of the IEC step (THEORY T3), computed with iec_theory.theory.amplification_factors.

Per eigen-direction of a symmetric C_t (u = |b_t| mu): plain step g = a - u, IEC fixed point
f* = a / (1 + u), after K corrections with relaxations lambda_k: f_K. The heatmaps show |f_K| over
(u, lambda) for constant lambda_k = lambda and K in {1, 2, 4}, with the plain step |g| beside.
"""

from __future__ import annotations

import numpy as np

from .. import typst_util as tu

KS = (1, 2, 4)


def _heatmaps(ctx, theory, a: float, n_u: int, n_l: int) -> str:
    us = np.logspace(-3, 2, n_u)
    lams = np.linspace(0.02, 2.0, n_l)
    reg = theory.stability_region(us, lams, KS, a=a)      # the theory module's grid function
    data = {"u": reg["u"], "lambda": reg["lambda"], "converges": np.asarray(reg["converges"], dtype=float),
            "g": reg["abs_g"], "f_star": reg["abs_fstar"]}
    for i, K in enumerate(KS):
        data[f"fK{K}"] = reg["abs_fK"][i]

    def draw(fig, d):
        from matplotlib.colors import LogNorm

        axes = fig.subplots(2, 2).ravel()
        vmin, vmax = 1e-2, 1e2
        norm = LogNorm(vmin=vmin, vmax=vmax)
        U, L = np.meshgrid(d["u"], d["lambda"])
        G = np.broadcast_to(d["g"][None, :], U.shape)
        panels = [(f"|f_K|, K = {K}", d[f"fK{K}"]) for K in KS] + [("plain step |g| = |a - u|", G)]
        im = None
        for j, (ax, (title, z)) in enumerate(zip(axes, panels)):
            im = ax.pcolormesh(U, L, np.clip(z, vmin, vmax), norm=norm, cmap="RdBu_r", shading="auto",
                               rasterized=True)
            ax.contour(U, L, z, levels=[1.0], colors="k", linewidths=0.8)
            if j < len(KS):
                ax.contour(U, L, z - G, levels=[0.0], colors="#2e7d32", linewidths=0.9, linestyles="--")
                ax.contour(U, L, d["converges"], levels=[0.5], colors="#ffb300", linewidths=1.0, linestyles=":")
                ax.axhline(0.5, color="0.25", lw=0.6, ls="-.")
            ax.set_xscale("log")
            ax.set_ylim(d["lambda"][0], d["lambda"][-1])
            ax.set_title(title)
            ax.grid(False)
            ax.set_xlabel("u = |b| mu")
            ax.set_ylabel("lambda (constant in k)")
        fig.colorbar(im, ax=list(axes), fraction=0.03, pad=0.02, label="amplification (clipped to [1e-2, 1e2])")

    def draw_lines(fig, d):
        ax = fig.subplots()
        ax.plot(d["u"], d["g"], color="k", label="|g| plain step")
        ax.plot(d["u"], d["f_star"], color="#1565c0", ls="--", label="|f*| IEC fixed point")
        ax.plot(d["u"], d["f_ddpm"], color="#c62828", label="|f_1| official DDPM (K=1, lambda=0.5)")
        ax.plot(d["u"], d["f_ldm"], color="#6a1b9a", ls="-.", label="|f_2| official LDM (lambdas 1, 0.5)")
        ax.axhline(1.0, color="0.5", lw=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("u = |b| mu")
        ax.set_ylabel("amplification per step")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=7)

    g1, _, f1 = theory.amplification_factors(a, us, 1, [0.5])
    _, _, f2 = theory.amplification_factors(a, us, 2, [1.0, 0.5])
    line_data = {"u": us, "g": np.abs(g1), "f_star": data["f_star"], "f_ddpm": np.abs(f1), "f_ldm": np.abs(f2)}
    from ..figures import positive

    line_fig = ctx.figure(f"amplification_presets_a{str(a).replace('.', 'p')}", line_data,
                          lambda fig, d: draw_lines(fig, {**d, "g": positive(d["g"])}),
                          f"Amplification per eigen-direction versus u at a = {tu.num(a)} (log scales): the plain "
                          "step, the IEC fixed point and the two official presets. The official DDPM curve never "
                          "drops below the plain one (T3, AM-GM).",
                          size=(7.0, 2.8), log=("u", "f_star", "f_ddpm", "f_ldm"), width="95%")
    cap = (f"|f_K| over u and constant lambda (a = {tu.num(a)}) for K = 1, 2, 4, and the plain step |g| = |a - u| "
           "(bottom right, constant in lambda). Black contour: |f_K| = 1 (blue side: the corrected step "
           "contracts); green dashed: |f_K| = |g|, the boundary between IEC damping more and less than the "
           "plain step (the shares are tabulated below); orange dotted: edge of the region where the iteration "
           "converges (|1 - lambda(1+u)| < 1, i.e. lambda < 2/(1+u)); grey dash-dot: the official DDPM lambda = 0.5.")
    name = f"stability_a{str(a).replace('.', 'p')}"
    return ctx.figure(name, data, draw, cap, size=(7.0, 5.6), width="92%") + line_fig


def section(ctx) -> str:
    theory = ctx.module("iec_theory.theory", "amplification_factors", "stability_region")
    n_u, n_l = ctx.pick((48, 30), (200, 120), (400, 240))
    out = [tu.text("Per eigen-direction of a symmetric Jacobian C_t with eigenvalue mu, write u = |b_t| mu. The "
                   "plain DDIM step multiplies that component of the error by g, the IEC fixed point by f*, and K "
                   "relaxed corrections with relaxations lambda_k by f_K (Theorem T3):") + "\n\n"]
    out.append("$ g = a - u, quad f^* = a / (1 + u), quad f_K = f^* + (product_(k=1)^K r_k)(g - f^*), "
               "quad r_k = 1 - lambda_k (1 + u) $\n\n")
    out.append(tu.text("Values come from iec_theory.theory (stability_region for the heatmaps, amplification_factors "
                       "for the tables).") + "\n\n")
    out.append(_heatmaps(ctx, theory, 1.0, n_u, n_l))
    # a table of the named presets at representative u
    us = np.array([1e-3, 0.1, 0.5, 1.0, 2.0, 3.0, 10.0, 100.0])
    presets = [("official DDPM (K=1, 0.5)", 1, [0.5]), ("official LDM (K=2, 1, 0.5)", 2, [1.0, 0.5]),
               ("relaxed K=4, lambda=0.5", 4, [0.5] * 4), ("relaxed K=1, lambda=1", 1, [1.0])]
    rows = []
    cols = {}
    g = fs = None
    for name, K, lams in presets:
        g, fs, f = theory.amplification_factors(1.0, us, K, lams)
        cols[name] = np.abs(np.asarray(f, dtype=float))
    g, fs = np.abs(np.asarray(g, dtype=float)), np.abs(np.asarray(fs, dtype=float))
    for j, u in enumerate(us):
        rows.append([u, g[j], fs[j]] + [cols[name][j] for name, _, _ in presets])
    out.append(ctx.table(["u", "|g| plain", "|f*|"] + [name for name, _, _ in presets], rows,
                         caption="Amplification factors at a = 1 for the named presets (|f_K| < |g| means IEC "
                                 "damps that direction more than the plain step)"))
    # AM-GM consequence of T3: official DDPM preset never below |g| in the linear regime
    u_dense = np.logspace(-3, 2, 2001)
    g1, _, f1 = theory.amplification_factors(1.0, u_dense, 1, [0.5])
    gap = np.abs(np.asarray(f1, dtype=float)) - np.abs(np.asarray(g1, dtype=float))
    worst = float(gap.min())
    status = "holds" if worst >= -1e-12 else "fails"
    line = (f"T3 consequence (a = 1, K = 1, lambda = 0.5): min over {u_dense.size} u in [1e-3, 1e2] of "
            f"|f_1| - |g| = {tu.num(worst)}; the official DDPM preset never damps an eigen-direction more than "
            f"the plain step ({'confirmed' if status == 'holds' else 'contradicted'} on this grid).")
    out.append(ctx.verdict(status, line))
    frac = {}
    for K in KS:
        reg = theory.stability_region(np.logspace(-3, 2, 200), np.linspace(0.02, 2.0, 100), [K], a=1.0)
        fk = reg["abs_fK"][0]
        frac[K] = (float(np.mean(fk < 1.0)), float(np.mean(fk < reg["abs_g"][None, :])))
    out.append(ctx.table(["K", "share of grid with |f_K| < 1", "share with |f_K| < |g|"],
                         [[K, frac[K][0], frac[K][1]] for K in KS],
                         caption="Share of the (u in [1e-3, 1e2] log-spaced, lambda in [0.02, 2]) grid, a = 1"))
    return "".join(out)
