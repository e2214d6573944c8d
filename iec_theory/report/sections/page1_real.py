"""Page 1, the paper's own ground: what the real network's results folder says (growth of every
configuration, FD/KID with and without IEC beside their noise, equal-NFE baselines).

Reads the results.json of a real-model spec (experiments/*.toml with kind = "real") from the report's
results folders; with several, the one with the most images in full and every other real spec's results in
one sentence (growth, the direction of IEC's FD where intervals separate, propagated error). Every number
goes through ctx.fact with its JSON pointer into that file or a note saying how it is derived.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .. import typst_util as tu
from ..builder import NotAvailable

_LOWER_NOTE = "pairs with propagated_xbar of X+IEC below X (X with a nonzero one)"
_PROP_NOTE = "pairs whose X row has a nonzero propagated_xbar"
BASELINE_WORDS = {"ddim_matched": "DDIM with as many steps as IEC's NFE", "heun": "Heun"}


def find_real_results(ctx) -> tuple[Path, dict[str, Any]] | None:
    """(results.json path, its content) of the real-model run page 1 reports, or None."""
    if "page1_real" in ctx.shared:
        return ctx.shared["page1_real"]
    from ..experiments import EXPERIMENTS

    found = []
    try:
        exp = ctx.module("real_models.experiment", "load_real_spec", "is_real_spec")
    except NotAvailable:
        exp = None
    hashes = set()
    for f in sorted(EXPERIMENTS.glob("*.toml")) if (exp is not None and EXPERIMENTS.is_dir()) else []:
        try:
            if exp.is_real_spec(f):
                hashes.add(exp.load_real_spec(f).hash)
        except Exception:  # a rejected spec is reported by the real-model section
            continue
    for root in ctx.results_dirs:
        root = Path(root)
        for rj in sorted(root.glob("*/results.json")) if root.is_dir() else []:
            try:
                doc = json.loads(rj.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if doc.get("kind") == "real" and doc.get("spec_hash") in hashes:
                found.append((rj, doc))
    best = max(found, key=lambda fd: int((fd[1].get("settings") or {}).get("batch") or 0)) if found else None
    ctx.shared["page1_real"] = best
    others: dict[str, tuple[Path, dict[str, Any]]] = {}
    for rj, doc in found:       # one per other spec: the first found (results_dirs order)
        if best is not None and doc.get("spec_hash") != best[1].get("spec_hash"):
            others.setdefault(doc["spec_hash"], (rj, doc))
    ctx.shared["page1_real_others"] = list(others.values())
    return best


def other_real_lines(ctx) -> tuple[str, list[str]]:
    """One compact traced sentence per other real spec with results (e.g. real_full beside real_quick), so
    page 1 shows every real run's IEC direction, not only the one it describes in full; ('', []) if none."""
    find_real_results(ctx)
    out, files = [], []
    for path, doc in ctx.shared.get("page1_real_others") or []:
        f, rows, st = str(path), doc.get("rows") or [], doc.get("settings") or {}
        grown = [r for r in rows if (r.get("growth_propagated") or {}).get("label") not in (None, "zero")]
        n_lin = sum(1 for r in grown if r["growth_propagated"]["label"] == "linear")
        s = (tu.text(f"Also {doc.get('name')} (") + _steps(ctx, st, f) + tu.text(", ")
             + ctx.fact(st.get("batch"), f, ("settings", "batch")) + tu.text(" images): ")
             + ctx.fact(n_lin, f, note="rows whose growth_propagated.label is linear") + tu.text(" of ")
             + ctx.fact(len(grown), f, note="rows with a nonzero propagated error")
             + tu.text(" configurations with a propagated error grow at most linearly"))
        pairs = [(i, j) for i, j in _pairs(rows)
                 if _quality(rows[i], "FD_cifarnet_ci") is not None and _quality(rows[j], "FD_cifarnet_ci") is not None]
        n = _pair_counts(rows, pairs)
        if pairs:
            note = "X / X+IEC pairs with FD intervals; overlap = not distinguishable, else the sign of the difference"
            s += (tu.text("; FD of X+IEC vs X not distinguishable in ") + ctx.fact(n["indist"], f, note=note)
                  + tu.text(" of ") + ctx.fact(len(pairs), f, note=note) + tu.text(" pairs (IEC worse in ")
                  + ctx.fact(n["worse"], f, note=note) + tu.text(", better in ") + ctx.fact(n["better"], f, note=note)
                  + tu.text(")"))
        if n["prop"]:
            s += (tu.text("; IEC lowers the propagated error in ")
                  + ctx.fact(n["prop_lower"], f, note=_LOWER_NOTE)
                  + tu.text(" of ") + ctx.fact(n["prop"], f, note=_PROP_NOTE))
        out.append(s + tu.text(".") + " ")
        files.append(f)
    return "".join(out), files


def _quality(row: dict, key: str):
    return (row.get("quality") or {}).get(key)


def _pair_counts(rows: list[dict], pairs: list[tuple[int, int]]) -> dict[str, int]:
    """What page 1 counts over (X, X+IEC) pairs: FD intervals overlapping (``indist``) or not (``sep``, split
    into IEC ``worse`` / ``better``), and pairs with a nonzero X propagated error (``prop``) where IEC's is lower
    (``prop_lower``)."""
    indist = [(i, j) for i, j in pairs
              if str(rows[j].get("label")) in (_quality(rows[i], "FD_cifarnet_not_distinguishable_from") or [])]
    sep = [(i, j) for i, j in pairs if (i, j) not in indist]
    worse = sum(1 for i, j in sep if _quality(rows[j], "FD_cifarnet") > _quality(rows[i], "FD_cifarnet"))
    dprop = [(rows[j].get("propagated_xbar"), rows[i].get("propagated_xbar")) for i, j in _pairs(rows)]
    dprop = [(a, b) for a, b in dprop if a is not None and b is not None and b > 0]
    return {"indist": len(indist), "sep": len(sep), "worse": worse, "better": len(sep) - worse,
            "prop": len(dprop), "prop_lower": sum(1 for a, b in dprop if a < b)}


_SCHEME_SUFFIX = re.compile(r"\+(IEC|DDIM\d+|Heun)$")


def _steps(ctx, st: dict, f: str, lead: bool = True) -> str:
    """'T = 100 quad steps, 96 distinct' when the spacing repeats timesteps (quad at T = 100), else 'T = 8 DDIM
    steps'; every number traced to settings."""
    t, req = st.get("T"), st.get("T_requested")
    head = tu.text("T = ") if lead else ""
    if req is not None and req != t:
        return (head + ctx.fact(req, f, ("settings", "T_requested")) + tu.text(f" {st.get('spacing', '')} steps, ")
                + ctx.fact(t, f, ("settings", "T")) + tu.text(" distinct"))
    return head + ctx.fact(t, f, ("settings", "T")) + tu.text(" DDIM steps")


def _config_of(row: dict) -> str:
    """The efficient-model configuration a row ran on: its ``config`` field, else its label without the
    scheme suffix (+IEC, +DDIM<nfe>, +Heun). The ``model`` field alone is not enough: it omits the cache
    correction, so "cache10" and "cache10+affine" share it."""
    return str(row.get("config") or _SCHEME_SUFFIX.sub("", str(row.get("label", ""))))


def _pairs(rows: list[dict]) -> list[tuple[int, int]]:
    """(index of plain DDIM row, index of its IEC row) for every model configuration that has both."""
    out = []
    for j, r in enumerate(rows):
        if not r.get("iec"):
            continue
        for i, p in enumerate(rows):
            if p.get("scheme") == "ddim" and not p.get("iec") and _config_of(p) == _config_of(r):
                out.append((i, j))
                break
    return out


def real_answer(ctx, evidence: str | None) -> str:
    """The growth and quality answer on the real network (plus the evidence chapter's line when present)."""
    found = find_real_results(ctx)
    ev = tu.text("Evidence chapter. ") + evidence + "\n\n" if evidence else ""
    if found is None:
        return (tu.text("No real-network results folder was found in this run (iec real-eval "
                        "experiments/real_quick.toml writes one; iec report runs it by default at the quick and "
                        "full profiles). Nothing on this page therefore speaks for the paper's own ground.")
                + "\n\n" + ev)
    path, doc = found
    f = str(path)
    rows = doc.get("rows") or []
    st = doc.get("settings") or {}
    out = []
    head = (tu.text(f"Real network ({doc.get('name')}: the committed small CIFAR-10 DDPM, T = ")
            + _steps(ctx, st, f, lead=False) + tu.text(", ")
            + ctx.fact(st.get("batch"), f, ("settings", "batch")) + tu.text(" images, IEC preset ")
            + tu.text(str(st.get("iec_preset"))) + tu.text(").") + " ")
    grown = [(i, r) for i, r in enumerate(rows)
             if (r.get("growth_propagated") or {}).get("label") not in (None, "zero")]
    labels: dict[str, list[str]] = {}
    for _, r in grown:
        labels.setdefault(r["growth_propagated"]["label"], []).append(str(r.get("label")))
    n_lin = len(labels.get("linear", []))
    growth = (tu.text("Growth: ") + ctx.fact(n_lin, f, note="rows whose growth_propagated.label is linear")
              + tu.text(" of ") + ctx.fact(len(grown), f, note="rows with a nonzero propagated error")
              + tu.text(" configurations with a propagated error grow at most linearly"))
    plain_exp = [str(r.get("label")) for _, r in grown if not r.get("iec")
                 and r["growth_propagated"]["label"] == "exponential"]
    w4 = next(((i, r) for i, r in grown if r.get("label") == "W4A8"), None)
    if w4 is not None:
        g4 = w4[1]["growth_propagated"]
        growth += (tu.text(f", W4A8 without IEC included (label {g4['label']}; growth exponent kappa = T log rho of "
                           "the fitted per-step ratio rho: ")
                   + ctx.fact(g4.get("kappa"), f, ("rows", w4[0], "growth_propagated", "kappa")) + tu.text(")"))
    others = {k: v for k, v in labels.items() if k != "linear"}
    if others:
        growth += tu.text("; " + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(others.items())))
    growth += tu.text(". " + ("C1's exponential accumulation is NOT seen on the real network: nothing here needs "
                              "the correction C2 is about." if not plain_exp else
                              f"Exponential without IEC: {', '.join(plain_exp)}.")) + "\n\n"
    out.append(head + growth)
    pairs = _pairs(rows)
    if pairs:
        dfd = [(_quality(rows[j], "FD_cifarnet"), _quality(rows[i], "FD_cifarnet")) for i, j in pairs]
        dkid = [(_quality(rows[j], "KID_cifarnet"), _quality(rows[i], "KID_cifarnet")) for i, j in pairs]
        if all(a is not None and b is not None for a, b in dfd + dkid):
            d_fd = [a - b for a, b in dfd]
            d_kid = [a - b for a, b in dkid]
            stds = [s for i, j in pairs for s in (_quality(rows[i], "KID_cifarnet_std"),
                                                  _quality(rows[j], "KID_cifarnet_std")) if s is not None]
            worse = sum(1 for d in d_fd if d > 0)
            note = "FD/KID of the X+IEC row minus the X row, over the configurations with both"
            q = (tu.text("Quality (FD / KID in the project classifier's features, not Inception FID): IEC "
                         "changes FD by ")
                 + ctx.fact(min(d_fd), f, note=note) + tu.text(" to ") + ctx.fact(max(d_fd), f, note=note)
                 + tu.text(" (higher, i.e. worse, in ") + ctx.fact(worse, f, note=note) + tu.text(" of ")
                 + ctx.fact(len(pairs), f, note=note) + tu.text(" configurations) and KID by ")
                 + ctx.fact(min(d_kid), f, note=note) + tu.text(" to ") + ctx.fact(max(d_kid), f, note=note))
            n = _pair_counts(rows, pairs)
            has_ci = all(_quality(rows[k], "FD_cifarnet_ci") is not None for ij in pairs for k in ij)
            if has_ci:
                cnote = ("pairs whose 95 % bootstrap FD intervals overlap (FD_cifarnet_not_distinguishable_from), "
                         "over the compared pairs")
                q += (tu.text(". With bootstrap intervals (level in the results file) at ")
                      + ctx.fact(st.get("batch"), f, ("settings", "batch"))
                      + tu.text(" images the FD of X and X+IEC is not distinguishable in ")
                      + ctx.fact(n["indist"], f, note=cnote) + tu.text(" of ") + ctx.fact(len(pairs), f, note=cnote)
                      + tu.text(" pairs (not ranked)"))
                if n["sep"]:
                    snote = ("pairs with disjoint FD intervals whose X+IEC FD is above (worse) / below (better) "
                             "the X row's")
                    q += (tu.text("; of the ") + ctx.fact(n["sep"], f, note=cnote)
                          + tu.text(" distinguishable pairs, IEC's FD is higher (worse) in ")
                          + ctx.fact(n["worse"], f, note=snote) + tu.text(" and lower (better) in ")
                          + ctx.fact(n["better"], f, note=snote))
                q += tu.text(". ")
            elif stds:
                smin = min(stds)
                within = all(abs(d) < smin for d in d_kid)
                q += (tu.text(", against a KID standard deviation over subsets of at least ")
                      + ctx.fact(smin, f, note="smallest KID_cifarnet_std of the compared rows")
                      + tu.text(". " + ("Within noise: " if within else "Partly beyond the KID noise: ")))
            else:
                q += tu.text(". No interval was recorded: ")
            if not has_ci:
                q += (tu.text("at ") + ctx.fact(st.get("batch"), f, ("settings", "batch"))
                      + tu.text(" images FD and KID are strongly biased and noisy, so these differences are no "
                                "evidence for IEC, and the direction leans against it.") + " ")
            q += (tu.text("IEC lowers the final propagated error in ")
                  + ctx.fact(n["prop_lower"], f, note=_LOWER_NOTE)
                  + tu.text(" of ") + ctx.fact(n["prop"], f, note=_PROP_NOTE)
                  + tu.text(" configurations with a propagated error"))
            if w4 is not None:
                j = next((jj for ii, jj in pairs if ii == w4[0]), None)
                if j is not None:
                    q += (tu.text(" (W4A8: ") + ctx.fact(rows[w4[0]].get("propagated_xbar"), f,
                                                         ("rows", w4[0], "propagated_xbar"))
                          + tu.text(" without, ") + ctx.fact(rows[j].get("propagated_xbar"), f,
                                                              ("rows", j, "propagated_xbar"))
                          + tu.text(" with IEC)"))
            out.append(q + tu.text(".") + "\n\n")
    others, other_files = other_real_lines(ctx)
    if others:
        out.append(others + "\n\n")
    out.append(ev)
    from .summary import source_line

    return "".join(out) + source_line([f, *other_files])


def real_equal_compute(ctx) -> str:
    """IEC against the equal-NFE baselines of the real run ('' when the run has none)."""
    found = find_real_results(ctx)
    if found is None:
        return ""
    path, doc = found
    f = str(path)
    rows = doc.get("rows") or []
    base = [(i, r) for i, r in enumerate(rows) if r.get("scheme") in BASELINE_WORDS]
    if not base:
        return ""
    config = _config_of(base[0][1])
    base = [(i, r) for i, r in base if _config_of(r) == config]
    iec = next(((i, r) for i, r in enumerate(rows) if r.get("iec") and _config_of(r) == config), None)
    if iec is None:
        return ""
    parts = []
    with_ci = all(_quality(r, "FD_cifarnet_ci") is not None for _, r in [iec] + base)
    for i, r in [iec] + base:
        name = "IEC" if r is iec[1] else BASELINE_WORDS[r["scheme"]]
        part = (tu.text(f"{name} ({r.get('label')}, NFE ") + ctx.fact(r.get("NFE"), f, ("rows", i, "NFE"))
                + tu.text(") FD ") + ctx.fact(_quality(r, "FD_cifarnet"), f, ("rows", i, "quality", "FD_cifarnet")))
        if with_ci:
            part += (tu.text(" [") + ctx.fact(_quality(r, "FD_cifarnet_ci")[0], f,
                                              ("rows", i, "quality", "FD_cifarnet_ci", 0))
                     + tu.text(", ") + ctx.fact(_quality(r, "FD_cifarnet_ci")[1], f,
                                                ("rows", i, "quality", "FD_cifarnet_ci", 1)) + tu.text("]"))
        else:
            part += (tu.text(", KID ") + ctx.fact(_quality(r, "KID_cifarnet"), f,
                                                  ("rows", i, "quality", "KID_cifarnet"))
                     + tu.text(" ± ") + ctx.fact(_quality(r, "KID_cifarnet_std"), f,
                                                 ("rows", i, "quality", "KID_cifarnet_std")))
        parts.append(part)
    if with_ci:
        nd = _quality(iec[1], "FD_cifarnet_not_distinguishable_from") or []
        same = [BASELINE_WORDS[r["scheme"]] for _, r in base if str(r.get("label")) in nd]
        verdict = (("FD bootstrap intervals of IEC and " + ", ".join(same) + " overlap: not distinguishable "
                    "at this sample size, not ranked") if same else
                   "the FD bootstrap intervals do not overlap: compare the values above")
        return (tu.text(f"Real network at equal NFE ({config} model): ") + "; ".join(parts)
                + tu.text(f"; {verdict}.") + "\n\n")
    kids = [(_quality(r, "KID_cifarnet"), _quality(r, "KID_cifarnet_std")) for _, r in [iec] + base]
    spread = max(k for k, _ in kids) - min(k for k, _ in kids)
    noise = min(s for _, s in kids if s is not None) if any(s is not None for _, s in kids) else None
    verdict = ("the KID differences are within one standard deviation: no ranking at this sample size"
               if noise is not None and spread < noise else "compare with care: a small sample")
    return (tu.text(f"Real network at equal NFE ({config} model): ") + "; ".join(parts)
            + tu.text(f"; {verdict}.") + "\n\n")
