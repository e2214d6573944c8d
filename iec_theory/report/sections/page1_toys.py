"""Page 1 on toy models: the claim and theorem verdicts (verdicts.json of this build), and what IEC buys at
equal compute (the compute-matched and few-step toy runs, exact output laws)."""

from __future__ import annotations

from .. import typst_util as tu
from ..experiments import collect, value
from . import claims_adapter, page1_real

BASELINES = {"ddim_matched": "DDIM with 2T steps", "heun": "Heun", "repeat": "naive repetition"}


def toys_answer(ctx, vfile: str) -> str:
    """Claim verdicts (words from the ClaimVerdict objects) and theorem checks, with their source line."""
    out = []
    verdicts = ctx.shared.get("claim_verdicts") or {}
    items = []
    for cname in ("C1", "C2"):
        results = verdicts.get(cname) or []
        if results:
            items.append(tu.text(claims_adapter.claim_sentence(cname, results)))
    for k, (label, _inst, r) in enumerate(ctx.shared.get("bias_results", [])):
        items.append(tu.text(f"Constant bias error ({label}): IEC / plain DDIM final propagated error ")
                     + ctx.fact(r, vfile, ("bias", k, "ratio"))
                     + tu.text(": IEC leaves a constant bias essentially unchanged." if r >= 0.9 else "."))
    stats = ctx.shared.get("theorem_stats") or {}
    if stats:
        names = list(stats)
        bad = [n for n in names if stats[n]["violated"]]
        checked = sum(stats[n]["holds"] + stats[n]["violated"] for n in names)
        line = (tu.text(f"Theorems {', '.join(names)}: ")
                + (tu.text("VIOLATED: " + ", ".join(bad)) if bad else tu.text("no violation"))
                + tu.text(" in ") + ctx.fact(checked, vfile, note="sum over theorems of holds + violated")
                + tu.text(" theorem checks on ") + ctx.fact(stats[names[0]]["instances"], vfile,
                                                            ("theorems", names[0], "instances"))
                + tu.text(" suite instances."))
        vac = {n: s.get("vacuous_share") for n, s in stats.items() if s.get("vacuous_share") is not None}
        for n, share in vac.items():
            line += (tu.text(f" {n} is a lower bound that is vacuous (non-positive bound) on ")
                     + ctx.fact(100 * share, vfile, note=f"100 * theorems.{n}.vacuous_share", digits=2)
                     + tu.text(" % of its checked steps: there it holds trivially and says nothing."))
        items.append(line)
    else:
        items.append(tu.text("Theorem checks: the theorem section did not run in this build."))
    statuses = [v.status for results in verdicts.values() for _, _, v in results]
    if statuses and all(st in ("holds under H", "fails outside H") for st in statuses) and \
            "holds under H" in statuses and "fails outside H" in statuses:
        items.append(tu.text("So on toys each claim holds under its hypothesis and fails outside it; whether a "
                             "real efficient model meets the hypotheses is what the next answer is about."))
    out.append(tu.bullet_list(items))
    from .summary import source_line

    out.append(source_line([vfile]))
    return "".join(out)


def _kind(row: dict) -> str:
    return str(row.get("kind") or "")


def _equal_compute(ctx, res) -> str:
    f = res.summary_file
    rows = res.rows
    base = [(i, r) for i, r in enumerate(rows) if _kind(r) in ("ddim_matched", "heun")
            and isinstance(value(r, "W2"), (int, float))]
    iecs = [(i, r) for i, r in enumerate(rows) if _kind(r) == "iec" and isinstance(value(r, "W2"), (int, float))]
    if not base or not iecs:
        return ""
    nfe = max(r.get("NFE") or 0 for _, r in base)
    same = [(i, r) for i, r in iecs if r.get("NFE") == nfe] or iecs
    bi, best = min(same, key=lambda ir: value(ir[1], "W2"))
    s = (tu.text(f"Toy ({res.name}, exact output laws, no sampling noise): IEC ({best.get('method')}, NFE ")
         + ctx.fact(best.get("NFE"), f, ("rows", bi, "NFE")) + tu.text(") reaches W2 ")
         + ctx.fact(value(best, "W2"), f, ("rows", bi, "W2")) + tu.text(" to the data law; "))
    parts, beat = [], 0
    for i, r in base:
        w = value(r, "W2")
        beat += w < value(best, "W2")
        parts.append(tu.text(f"{BASELINES[_kind(r)]} ({r.get('method')}, NFE ")
                     + ctx.fact(r.get("NFE"), f, ("rows", i, "NFE")) + tu.text(") ")
                     + ctx.fact(w, f, ("rows", i, "W2")))
    s += "; ".join(parts) + tu.text(". ")
    s += (ctx.fact(beat, f, note="baselines with W2 below IEC's") + tu.text(" of ")
          + ctx.fact(len(base), f, note="equal-compute baselines in the run")
          + tu.text(" equal-compute baselines beat IEC."))
    return s


def _few_step(ctx, res) -> str:
    if "sampler.T" in res.sweep_keys and res.sweep_rows:
        rows, f, key = res.sweep_rows, res.sweep_file, "sampler.T"
        T = min(r.get(key) for r in rows)
        idx = [i for i, r in enumerate(rows) if r.get(key) == T]
    else:
        rows, f, key = res.rows, res.summary_file, None
        T = int(res.raw.get("sampler", {}).get("T", 0)) or None
        idx = list(range(len(rows)))
    plain = next((i for i in idx if _kind(rows[i]) == "ddim"), None)
    iecs = [i for i in idx if _kind(rows[i]) == "iec"]
    if plain is None or not iecs:
        return ""
    j = next((i for i in iecs if "official" in str(rows[i].get("method"))), iecs[0])
    p, q = rows[plain], rows[j]
    need = ("KL", "W2", "propagated_xbar")
    if not all(isinstance(value(r, k), (int, float)) for r in (p, q) for k in need):
        return ""
    worse = value(q, "KL") > value(p, "KL") and value(q, "W2") > value(p, "W2")
    better = value(q, "KL") < value(p, "KL") and value(q, "W2") < value(p, "W2")
    verb = "worsens" if worse else ("improves" if better else "changes")
    favours = "favours" if value(q, "propagated_xbar") < value(p, "propagated_xbar") else "does not favour"
    t_txt = (ctx.fact(T, f, ("rows", plain, key)) if key else
             ctx.fact(T, res.summary_file, note=f"sampler.T of experiments/{res.path}"))
    s = (tu.text(f"Few steps ({res.name}, exact output laws, T = ") + t_txt
         + tu.text(f"): IEC ({q.get('method')}, NFE ") + ctx.fact(q.get("NFE"), f, ("rows", j, "NFE"))
         + tu.text(f") {verb} the output law: KL ") + ctx.fact(value(q, "KL"), f, ("rows", j, "KL"))
         + tu.text(" against ") + ctx.fact(value(p, "KL"), f, ("rows", plain, "KL"))
         + tu.text(" for plain DDIM, W2 ") + ctx.fact(value(q, "W2"), f, ("rows", j, "W2"))
         + tu.text(" against ") + ctx.fact(value(p, "W2"), f, ("rows", plain, "W2"))
         + tu.text(f"; the propagated-error metric {favours} IEC (")
         + ctx.fact(value(q, "propagated_xbar"), f, ("rows", j, "propagated_xbar")) + tu.text(" against ")
         + ctx.fact(value(p, "propagated_xbar"), f, ("rows", plain, "propagated_xbar"))
         + tu.text("), because it compares each scheme with itself on the exact model, not with the data law."))
    return s


def compute_answer(ctx) -> str:
    """Equal NFE (toy and real) and few steps, each number with its results file."""
    from .summary import source_line

    try:
        coll = collect(ctx)
    except Exception as exc:
        if type(exc).__name__ != "NotAvailable":
            raise
        coll = None
    items, files = [], []
    results = coll.results if coll is not None else []
    matched = [r for r in results if any(_kind(row) in ("ddim_matched", "heun") for row in r.rows)]
    few = next((r for r in results if "sampler.T" in r.sweep_keys), None)
    if few is None:
        small = [r for r in matched if any(_kind(row) == "iec" for row in r.rows)]
        few = min(small, key=lambda r: int(r.raw.get("sampler", {}).get("T", 10 ** 6)), default=None)
    eq = max((r for r in matched if r is not few),
             key=lambda r: len({_kind(row) for row in r.rows if _kind(row) in BASELINES}), default=None)
    if eq is not None:
        s = _equal_compute(ctx, eq)
        if s:
            items.append(s)
            files.append(eq.summary_file)
    real = page1_real.real_equal_compute(ctx)
    if real:
        items.append(real.strip())
        found = page1_real.find_real_results(ctx)
        files.append(str(found[0]))
    if few is not None:
        s = _few_step(ctx, few)
        if s:
            items.append(s)
            files.append(few.sweep_file if "sampler.T" in few.sweep_keys and few.sweep_rows else few.summary_file)
    if not items:
        return tu.text("No compute-matched experiment ran in this build (experiments/compute_matched.toml and "
                       "few_step.toml are skipped or absent).") + "\n\n"
    return tu.bullet_list(items) + source_line(files)
