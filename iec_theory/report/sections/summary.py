"""Page 1: the three answers a reviewer asks for first, each number read from a results file of this run.

1. What holds on toys: the claim verdicts (the `ClaimVerdict` objects of iec_theory.claims, computed by
   the claims section) and the theorem checks (theorem section); exact models, no sampling noise.
2. What holds on the paper's own ground: the real network's results folder (the growth label of every
   configuration, FD/KID with and without IEC beside their noise), and, once `iec evidence` has written
   its evidence.json, the evidence chapter's one-line summary (hook: `evidence_line`).
3. What IEC buys at equal compute: the compute-matched toy (exact W2 of IEC against DDIM with 2T steps and
   Heun), the real network's equal-NFE rows, and the few-step toy (output-law KL / W2 against the
   propagated error).

Every number is printed through `ctx.fact(value, file, pointer)`, which records the results file and
the JSON pointer of the value; each answer ends with a "source:" line naming its files, and
tests/test_report.py reads every file back. Verdict words are the statuses of the verdict objects and
comparison words are computed from the numbers, so page 1 follows the code it reports on.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...jsonsafe import json_safe
from .. import typst_util as tu
from ..builder import NotAvailable
from ..facts import NUMBER, Fact, display
from . import page1_real, page1_toys

INTRO = ("IEC (test-time Iterative Error Correction, Zhong, Qi and Zhang, ICLR) refines each sampling step of "
         "an efficient (quantized, cached) diffusion model by a relaxed fixed-point iteration. The paper claims that "
         "without it errors accumulate exponentially (C1) and that IEC makes the growth linear (C2). This page answers "
         "three questions, with what cuts against IEC beside what supports it; every number is read from a "
         "results file of this run, named in the source line under each answer.")

VERDICTS_FILE = "verdicts.json"


def evidence_line(ctx) -> str | None:
    """HOOK for the `iec evidence` chapter: its one-line "On the paper's own ground" summary as markup, or None.

    1. When iec_theory.report.sections.evidence provides `page1_line(ctx) -> str | None`, its return value:
       typst markup whose numbers are printed with ctx.fact(value, file, pointer) (traced like the rest).
    2. Else, when an evidence.json lies in a results folder (or one level below), its "page1_line" (or, as
       `iec evidence` writes it, "summary_line") string
       (plain text; each number in it is recorded as read from that file).
    3. Else None: page 1 says nothing about the evidence chapter.
    """
    try:
        mod = ctx.module("iec_theory.report.sections.evidence")
    except NotAvailable:
        mod = None
    fn = getattr(mod, "page1_line", None) if mod is not None else None
    if callable(fn):
        return fn(ctx)
    for root in ctx.results_dirs:
        root = Path(root)
        paths = sorted(list(root.glob("evidence.json")) + list(root.glob("*/evidence.json"))) if root.is_dir() else []
        for path in paths:
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                line = doc.get("page1_line") or doc.get("summary_line")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(line, str) and line.strip():
                f = str(path)
                for m in NUMBER.finditer(line):
                    ctx.facts.append(Fact(text=m.group(0), file=f, note="from page1_line of evidence.json",
                                          section=ctx.section))
                return tu.text(line.strip()) + " " + source_line([f])
    return None


def _write_verdicts(ctx) -> str:
    """verdicts.json in the build folder: the claim verdicts and theorem statistics page 1 cites."""
    claims = {}
    for cname, results in (ctx.shared.get("claim_verdicts") or {}).items():
        claims[cname] = [{"case": label, "status": v.status, "under_H": v.under_H, "growth": v.label,
                          "evidence": v.evidence} for label, _inst, v in results]
    bias = [{"case": label, "ratio": r} for label, _inst, r in ctx.shared.get("bias_results", [])]
    doc = {"profile": ctx.profile.name, "seed": ctx.seed, "claims": claims, "bias": bias,
           "theorems": ctx.shared.get("theorem_stats") or {}}
    (ctx.build_dir / VERDICTS_FILE).write_text(json.dumps(json_safe(doc), indent=1), encoding="utf-8")
    return "build:" + VERDICTS_FILE


def source_line(files) -> str:
    """A small grey "source:" line naming each results file once, in order."""
    seen = []
    for f in files:
        if f and f not in seen:
            seen.append(f)
    shown = [display(f) for f in seen]
    return f"#srcline[{tu.text('source: ' + '; '.join(shown))}]\n\n"


def section(ctx) -> str:
    if "claim_verdicts" not in ctx.shared:        # the claims section was not selected: evaluate here
        from . import claims as claims_section

        claims_section.compute(ctx)
    vfile = _write_verdicts(ctx)
    out = [tu.text(INTRO) + "\n\n"]
    out.append(tu.heading("What holds on toy models (exact answers)", 2))
    out.append(page1_toys.toys_answer(ctx, vfile))
    out.append(tu.heading("What holds on the paper's own ground (the real network)", 2))
    out.append(page1_real.real_answer(ctx, evidence_line(ctx)))
    out.append(tu.heading("What IEC buys at equal compute", 2))
    out.append(page1_toys.compute_answer(ctx))
    out.append(tu.text(f"Profile {ctx.profile.name}, seed ") + ctx.fact(ctx.seed, vfile, ("seed",))
               + tu.text("; detailed tables in the sections below; versions, git commit and exact commands in "
                         "the appendix.") + "\n")
    # compact type so that the summary stays on one page
    return "#[\n#set text(9pt)\n#show table: set text(7.5pt)\n" + "".join(out) + "]\n"
