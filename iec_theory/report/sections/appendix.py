"""Reproducibility appendix: versions, seeds, git commit, exact commands, machine, results used."""

from __future__ import annotations

import os
import platform

from ...provenance import provenance
from .. import typst_util as tu
from ..builder import PROFILES

# packages provenance() records that the report does not use (test extras): not listed, so that a report built
# before `pip install -e ".[test]"` does not record "not installed" for something it never needed
TEST_ONLY = ("hypothesis", "pytest", "pypdf")


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def section(ctx) -> str:
    import torch

    rec = {k: v for k, v in provenance(seed=ctx.seed).items() if k not in TEST_ONLY}
    rec["matplotlib"] = _version("matplotlib")
    rec["torch threads"] = torch.get_num_threads()
    rec["cpu count"] = os.cpu_count()
    rec["python implementation"] = platform.python_implementation()
    out = [tu.text("Every number in this report is computed by the code at the git commit below, from the "
                   "seed below; the same inputs give the same numbers (all random draws come from seeded "
                   "generators, figures are written without timestamps and with a fixed SVG hash salt, and "
                   "the PDF carries no creation date). Wall-clock times appear only in tables that are "
                   "explicitly about timing.") + "\n\n"]
    out.append(ctx.table(["Item", "Value"], [(k, str(v)) for k, v in rec.items()],
                         caption="Provenance of this build (packages the report uses; the test extras are not "
                                 "needed to build it)", align="(left, left)"))
    out.append(tu.heading("Exact commands", 2))
    cmds = [
        "pip install -e .",
        ctx.command,
        'pip install -e ".[test]" && python -m pytest tests/test_report.py',
    ]
    cmds += list(ctx.shared.get("commands", []))
    out.append("".join(f"#raw({tu.string(tu.relativize_paths(c))}, block: true, lang: \"bash\")\n" for c in cmds))
    out.append(tu.heading("Profiles", 2))
    out.append(ctx.table(["Profile", "Contents", "Expected time"],
                         [(p.name, p.description, p.expected_time) for p in PROFILES.values()],
                         caption="Report profiles (iec report --profile NAME)", align="(left, left, left)"))
    pinned = ctx.shared.get("claim_instances", [])
    if pinned:
        out.append(tu.heading("Pinned claim instances", 2))
        out.append(ctx.table(["Claim", "Case", "ToyInstance parameters"], pinned,
                             caption="The toy instances of the summary's claim tables "
                                     "(iec_theory.theorems.instances.ToyInstance; other fields at their defaults)",
                             align="(left, left, left)"))
    used = [(tu.display_path(f), *rest) for f, *rest in ctx.shared.get("results_used", [])]
    out.append(tu.heading("Results folders read", 2))
    if used:
        out.append(ctx.table(["Folder", "Source", "Seed", "Git commit"], used,
                             caption="Results folders this report read", align="(left, left, left, left)"))
    else:
        out.append(tu.text("No precomputed results folder was read: every number above was computed during "
                           "this build.") + "\n")
    return "".join(out)
