"""Claim verdicts: iec_theory.claims evaluated on pinned toy instances (claims section and page 1).

The instances are `claims.canonical_instances()` when the claims module provides it; otherwise the
fixed instances that the claim tests (tests/test_bounds_claims.py) pin, listed below: one inside
each claim's hypotheses and the counterexamples outside them. The smallest counterexamples found by
the property-based search are printed by `pytest -k bounds -s`.
"""

from __future__ import annotations

from dataclasses import replace

from .. import typst_util as tu


def _cases(claims):
    """The pinned cases: claims.canonical_instances() when provided, else the instances below (as pinned by
    tests/test_bounds_claims.py and scripts/pinned_claims.py). Labels say what an instance is, never whether
    it meets H: that is the verdict object's `under_H`, added when the verdict is shown."""
    if callable(getattr(claims, "canonical_instances", None)):
        return claims.canonical_instances(), "iec_theory.claims.canonical_instances()"
    from iec_theory.theorems.instances import ToyInstance

    scale = ToyInstance(model="gaussian", dim=4, T=20, perturbation="scale", magnitude=9.0)   # eps~ = 10 eps*
    stiff = ToyInstance(model="stiff", kappa=14.0, dim=8, T=20, perturbation="bias", magnitude=1e-3)
    gauss = ToyInstance(model="gaussian", dim=8, T=20, perturbation="bias", magnitude=1e-3)
    mixture = ToyInstance(model="mixture", dim=2, T=20, perturbation="bias", magnitude=1e-8, x_T="saddle",
                          iec="relaxed", K=2, lam=0.5, decades=1.0, separation=2.0)
    bias = ToyInstance(model="gaussian", dim=8, T=200, perturbation="bias", magnitude=1e-3, iec="relaxed", K=20,
                       lam=0.5)
    cases = {
        "C1": [("stiff efficient model (scale error eps~ = s eps), plain DDIM", scale),
               ("stiff affine reference model, plain DDIM", stiff),
               ("exact Gaussian score with a bias error, plain DDIM", gauss)],
        "C2": [("stiff efficient model, converging IEC", claims.converging_iec(scale)),
               ("stiff efficient model, official DDPM preset", replace(scale, iec="official_ddpm")),
               ("stiff affine reference model, official DDPM preset", replace(stiff, iec="official_ddpm")),
               ("expansive mixture region, relaxed IEC", mixture)],
        "bias": [("converged IEC on the exact Gaussian toy", bias)],
    }
    return cases, "the fixed instances pinned by tests/test_bounds_claims.py"


HYPOTHESIS = {"C1": "H1", "C2": "H2"}


def case_label(cname: str, label: str, verdict) -> str:
    """The case with where it lies, from the verdict object: "... (inside H1)" or "... (outside H1)"."""
    return f"{label} ({'inside' if verdict.under_H else 'outside'} {HYPOTHESIS.get(cname, 'H')})"


def _short(inst) -> str:
    d = inst.describe()
    keys = ("model", "dim", "T", "perturbation", "magnitude", "iec", "K", "lam", "kappa", "separation")
    names = {"kappa": "eps scale (stiff model)"}
    skip = {"K": 0, "kappa": 1.0, "separation": 1.0, "iec": "none"}
    return ", ".join(f"{names.get(k, k)}={tu.num(d[k]) if isinstance(d[k], float) else d[k]}" for k in keys
                     if k in d and skip.get(k, object()) != d[k] and not (k == "lam" and d.get("iec") != "relaxed"))


def compute(ctx, claims) -> None:
    """Evaluate every pinned case once; the verdict objects go to ctx.shared (claim_verdicts, bias_results)."""
    if "claim_verdicts" in ctx.shared:
        return
    cases, origin = _cases(claims)
    pinned = ctx.shared.setdefault("claim_instances", [])
    verdicts = {}
    for cname in ("C1", "C2"):
        results = []
        for label, inst in cases.get(cname, []):
            results.append((label, inst, claims.CLAIMS[cname].evaluate(inst)))
            pinned.append((cname, label, _short(inst)))
        verdicts[cname] = results
    bias = []
    for label, inst in cases.get("bias", []):
        bias.append((label, inst, claims.bias_reduction(inst)))
        pinned.append(("C2", label, _short(inst)))
    ctx.shared["claim_verdicts"] = verdicts
    ctx.shared["bias_results"] = bias
    ctx.shared["claims_origin"] = origin


def claim_status(results) -> str:
    """holds / fails / open for the verdict box of one claim, from its verdict objects."""
    under = [v for _, _, v in results if v.under_H]
    if any(v.status == "violated under H" for _, _, v in results):
        return "fails"
    return "holds" if under and all(v.status == "holds under H" for v in under) else "open"


def claim_sentence(cname: str, results) -> str:
    """One sentence per claim built from the verdict objects' own status and growth words."""
    parts = [f"{v.status} on {case_label(cname, label, v)} (growth {v.label})" for label, _, v in results
             if v.under_H]
    parts += [f"{v.status} on {case_label(cname, label, v)} (growth {v.label})" for label, _, v in results
              if not v.under_H]
    return f"{cname} verdict: " + "; ".join(parts) + "."


def render(ctx, claims) -> str:
    compute(ctx, claims)
    out = [tu.text(f"Claims evaluated with iec_theory.claims on {ctx.shared['claims_origin']} (parameters in the "
                   "appendix). The stiffness in H1 belongs to the model the sampler runs on, i.e. the efficient "
                   "model: the exact score of a Gaussian data law is never stiff for DDIM steps (docs/PROOFS.md), "
                   "so the stiff toy multiplies the exact eps by a factor (eps~ = s eps, a miscalibrated affine "
                   "denoiser) and the claim code analyses that affine model. Growth labels and the growth "
                   "exponent kappa = T log rho (the fitted per-step ratio rho of a geometric model over the T "
                   "steps of the growth phase; exponential needs kappa >= KAPPA_EXP) are defined in the growth "
                   "classification section.") + "\n\n"]
    for cname in ("C1", "C2"):
        claim = claims.CLAIMS[cname]
        results = ctx.shared["claim_verdicts"].get(cname, [])
        out.append(tu.heading(f"{cname}: {claim.statement}", 2))
        out.append(f"*Hypotheses* (proven by {tu.text(', '.join(claim.proven_by))})*.*"
                   + "".join(f"\n- {tu.text(h)}" for h in claim.hypotheses_text) + "\n")
        rows = []
        for label, _inst, v in results:
            ev = v.evidence
            if cname == "C1":
                evid = f"growth exponent kappa {tu.num(ev.get('kappa'))}; final error {tu.num(ev.get('final_error'))}"
            else:
                evid = (f"plain DDIM {ev.get('label_plain')}; IEC/plain final error {tu.num(ev.get('reduction'))}; "
                        f"NFE {tu.num(ev.get('nfe'))}")
            rows.append((case_label(cname, label, v), "yes" if v.under_H else "no", v.label, v.status, evid))
        if rows:
            out.append(ctx.table(["Case", "H holds", "Growth", "Verdict", "Evidence"], rows,
                                 caption=f"{cname} on pinned toy instances",
                                 align="(left, left, left, left, left)"))
        out.append(ctx.verdict(claim_status(results), claim_sentence(cname, results)))
    for label, _inst, r in ctx.shared.get("bias_results", []):
        out.append(ctx.verdict("fails" if r >= 0.9 else "holds",
                               f"Constant bias error ({label}): final propagated error of IEC / plain DDIM = "
                               f"{tu.num(r)}: IEC leaves a constant bias error essentially unchanged."
                               if r >= 0.9 else
                               f"Constant bias error ({label}): final propagated error of IEC / plain DDIM = "
                               f"{tu.num(r)}."))
    return "".join(out)
