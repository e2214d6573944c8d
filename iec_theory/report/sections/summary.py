"""One-page summary: the verdicts on claims C1 and C2 with their hypotheses (iec_theory.claims), and
the verdict of every theorem check (from the theorem section of this same build)."""

from __future__ import annotations

from .. import typst_util as tu
from ..builder import NotAvailable

INTRO = ("IEC (test-time Iterative Error Correction, ICLR 2026) refines each sampling step of an efficient "
         "(quantized, cached) diffusion model by a relaxed fixed-point iteration of the semi-implicit step. For "
         "each of the paper's claims this report states the hypotheses H under which it is proven here, the "
         "evidence, and the counterexamples outside H: a verdict is 'holds under H' or 'fails outside H'.")


def _claims(ctx) -> str:
    try:
        claims = ctx.module("iec_theory.claims")
    except NotAvailable as exc:
        return ctx.not_available(f"claim verdicts: {exc}")
    from . import claims_adapter

    return claims_adapter.render(ctx, claims)


def _theorem_table(ctx) -> str:
    stats = ctx.shared.get("theorem_stats")
    if not stats:
        return ctx.not_available("theorem verdicts: the theorem section did not run in this build")
    from .theorems import verdict_line

    names = list(stats)
    word = {"holds": "holds", "fails": "VIOLATED", "open": "not checked"}
    rows = [["Verdict"] + [word[verdict_line(n, stats[n])[0]] for n in names],
            ["Checked instances"] + [stats[n]["holds"] + stats[n]["violated"] for n in names],
            ["Violations"] + [stats[n]["violated"] for n in names],
            ["Median tightness"] + [stats[n]["median_tight"] for n in names]]
    return ctx.table(["Theorem"] + names, rows,
                     caption="Theorem checks on the iec verify toy suite (details in the theorem section)",
                     align="(" + ", ".join(["left"] + ["right"] * len(names)) + ")")


def section(ctx) -> str:
    out = [tu.text(INTRO) + "\n\n"]
    out.append(_claims(ctx))
    out.append(_theorem_table(ctx))
    out.append(tu.text(f"Profile {ctx.profile.name}, seed {ctx.seed}; versions, git commit and exact commands in "
                       "the appendix.") + "\n")
    # compact type so the summary stays close to one page
    return "#[\n#set text(9pt)\n#show table: set text(7.5pt)\n" + "".join(out) + "]\n"
