"""Claim verdicts for the summary: iec_theory.claims evaluated on pinned toy instances.

The instances are `claims.canonical_instances()` when the claims module provides it; otherwise the
fixed instances that the claim tests (tests/test_bounds_claims.py) pin, listed below: one inside
each claim's hypotheses and the counterexamples outside them. The smallest counterexamples found by
the property-based search are printed by `pytest -k bounds -s`.
"""

from __future__ import annotations

from dataclasses import replace

from .. import typst_util as tu


def _cases(claims):
    if callable(getattr(claims, "canonical_instances", None)):
        return claims.canonical_instances(), "iec_theory.claims.canonical_instances()"
    from iec_theory.theorems.instances import ToyInstance

    stiff = ToyInstance(model="stiff", kappa=14.0, dim=8, T=20, perturbation="bias", magnitude=1e-3)
    gauss = ToyInstance(model="gaussian", dim=8, T=20, perturbation="bias", magnitude=1e-3)
    mixture = ToyInstance(model="mixture", dim=2, T=20, perturbation="bias", magnitude=1e-8, x_T="saddle",
                          iec="relaxed", K=2, lam=0.5, decades=1.0, separation=2.0)
    bias = ToyInstance(model="gaussian", dim=8, T=200, perturbation="bias", magnitude=1e-3, iec="relaxed", K=20,
                       lam=0.5)
    cases = {
        "C1": [("stiff affine model, plain DDIM (inside H1)", stiff),
               ("exact Gaussian score, plain DDIM (outside H1)", gauss)],
        "C2": [("stiff model, converging IEC (inside H2)", claims.converging_iec(stiff)),
               ("stiff model, official DDPM preset K=1, lambda=0.5 (outside H2)", replace(stiff, iec="official_ddpm")),
               ("expansive mixture region, relaxed IEC (outside H2)", mixture)],
        "bias": [("converged IEC, K=20, on the exact Gaussian toy", bias)],
    }
    return cases, "the fixed instances pinned by tests/test_bounds_claims.py"


def _short(inst) -> str:
    d = inst.describe()
    keys = ("model", "dim", "T", "perturbation", "magnitude", "iec", "K", "lam", "kappa", "separation")
    skip = {"K": 0, "kappa": 1.0, "separation": 1.0, "iec": "none"}
    return ", ".join(f"{k}={tu.num(d[k]) if isinstance(d[k], float) else d[k]}" for k in keys
                     if k in d and skip.get(k, object()) != d[k] and not (k == "lam" and d.get("iec") != "relaxed"))


def render(ctx, claims) -> str:
    cases, origin = _cases(claims)
    out = [tu.text(f"Claims evaluated with iec_theory.claims on {origin} (parameters in the appendix).") + "\n\n"]
    pinned = ctx.shared.setdefault("claim_instances", [])
    verdicts = {}
    for cname in ("C1", "C2"):
        claim = claims.CLAIMS[cname]
        out.append(tu.heading(f"{cname}: {claim.statement}", 2))
        out.append(f"*Hypotheses* (proven by {tu.text(', '.join(claim.proven_by))})*.*"
                   + "".join(f"\n- {tu.text(h)}" for h in claim.hypotheses_text) + "\n")
        rows, results = [], []
        for label, inst in cases.get(cname, []):
            v = claim.evaluate(inst)
            results.append((label, inst, v))
            ev = v.evidence
            if cname == "C1":
                evid = f"kappa {tu.num(ev.get('kappa'))}; final error {tu.num(ev.get('final_error'))}"
            else:
                evid = (f"plain {ev.get('label_plain')}; IEC/plain error {tu.num(ev.get('reduction'))}; "
                        f"NFE {ev.get('nfe')}")
            rows.append((label, "yes" if v.under_H else "no", v.label, v.status, evid))
            pinned.append((cname, label, _short(inst)))
        if rows:
            out.append(ctx.table(["Case", "H holds", "Growth", "Verdict", "Evidence"], rows,
                                 caption=f"{cname} on pinned toy instances",
                                 align="(left, left, left, left, left)"))
        verdicts[cname] = results
        under = [r for r in results if r[2].under_H]
        outside = [r for r in results if not r[2].under_H]
        bad = [r for r in results if r[2].status == "violated under H"]
        parts = []
        if under:
            parts.append("; ".join(f"{r[2].status} on {r[0]} (growth {r[2].label})" for r in under))
        if outside:
            parts.append("; ".join(f"{r[2].status} on {r[0]} (growth {r[2].label})" for r in outside))
        status = "fails" if bad else ("holds" if under and all(r[2].status == "holds under H" for r in under)
                                      else "open")
        out.append(ctx.verdict(status, f"{cname} verdict: " + "; ".join(parts) + "."))
    for label, inst in cases.get("bias", []):
        r = claims.bias_reduction(inst)
        pinned.append(("C2", label, _short(inst)))
        out.append(ctx.verdict("fails" if r >= 0.9 else "holds",
                               f"Constant bias error ({label}): final propagated error of IEC / plain DDIM = "
                               f"{tu.num(r)}: IEC leaves a constant bias error essentially unchanged."))
    ctx.shared["claim_verdicts"] = verdicts
    return "".join(out)
