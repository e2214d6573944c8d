"""Semantic mutation testing of the verdict code (claims, growth classification, theorem checks).

    python scripts/mutants.py [--jobs 2] [--only NAME ...] [--out benchmarks/results/mutants.json]

Each mutant is a one-line semantic change (file, exact original text, replacement, what it means). For each
mutant, a private copy of the repository's tracked files gets the change and runs the verdict tests
(`TEST_FILES`, stopping at the first failure); the mutant is KILLED when a test fails and SURVIVES when all
pass. A mutant whose original text is not found (the code moved on) is reported STALE, never counted as
killed. Not run in CI (minutes per surviving mutant); results with provenance go to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TEST_FILES = ("tests/test_theory_verdicts.py", "tests/test_bounds_claims.py", "tests/test_theory_growth.py",
              "tests/test_bounds_theorems.py", "tests/test_bounds_t3_factors.py", "tests/test_theory_constants.py",
              "tests/test_theory_verify.py")


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    meaning: str


M = Mutant
MUTANTS: tuple[Mutant, ...] = (
    # ---- claims: what decides a verdict -------------------------------------------------------------
    M("c1_decided_on_R", "iec_theory/claims.py", '_verdict(holds, g.label_E == "exponential")',
      '_verdict(holds, g.label_R == "exponential")', "C1 judged on the R diagnostic instead of E"),
    M("c2_inconclusive_is_linear", "iec_theory/claims.py", '_verdict(holds, g.label_E == "linear")',
      '_verdict(holds, g.label_E != "exponential")', "C2 counts 'inconclusive' (and superlinear) as linear"),
    M("c1_no_amplification_threshold", "iec_theory/claims.py", "bool(amp >= C1_MIN_LOG_AMPLIFICATION)",
      "bool(amp >= 0.0)", "H1 stiffness threshold dropped"),
    M("c1_sustained_any", "iec_theory/claims.py", "sustained = bool(np.all(logf[:, j] > 0))",
      "sustained = bool(np.any(logf[:, j] > 0))", "H1 'stiff at every step' weakened to 'some step'"),
    M("c1_data_scale_ignored", "iec_theory/claims.py",
      'Hypothesis("reference samples the data law (outputs at data scale)", data_ok, detail)',
      'Hypothesis("reference samples the data law (outputs at data scale)", True, detail)',
      "H1a (reference at data scale) forced to met"),
    M("c2_nonexpansive_slack", "iec_theory/claims.py", "worst <= 1 + NONEXPANSIVE_SLACK", "worst <= 1.5",
      "H2 accepts expansive corrected factors up to 1.5"),
    M("c2_factor_ignores_corrections", "iec_theory/claims.py", "P = step_factor_xbar(st.k, J, lams)",
      "P = step_factor_xbar(st.k, J, ())", "H2 checks the plain factor instead of the corrected one"),
    M("c2_every_step_any", "iec_theory/claims.py", "every = all(st.iec for st in run.steps)",
      "every = any(st.iec for st in run.steps)", "H2 'every step corrected' weakened"),
    M("c2_general_monotone_exact", "iec_theory/claims.py",
      "c = batch_segment_constants(run.perturbed, st.x_s, st.xp_s, st.k.t)",
      "c = batch_segment_constants(run.exact, st.x_s, st.xp_s, st.k.t)",
      "general H2 checks the EXACT model's monotonicity"),
    M("converging_lambda_fixed", "iec_theory/claims.py", "lam = 1.0 / (1.0 + max(float(u.max()), 0.0))",
      "lam = 0.5", "converging_iec ignores the stiffness when choosing lambda"),
    M("stiffness_profile_exact", "iec_theory/claims.py",
      "efficient = _constant_jacobian(pert) is True and exact_jacobian(pert, x, ts[0]) is not None",
      "efficient = False", "stiffness profile from the exact model instead of the efficient one"),
    # ---- linearisation of the efficient model --------------------------------------------------------
    M("factor_iteration_drops_P", "iec_theory/linearization.py",
      "P = (1.0 - lam) * P + lam * (k.a * eye + k.b * (J @ P))",
      "P = (1.0 - lam) * P + lam * (k.a * eye + k.b * J)", "IEC propagation matrix recursion wrong"),
    M("factor_not_xbar", "iec_theory/linearization.py", "    return P / k.a\n", "    return P\n",
      "factors in x instead of xbar coordinates"),
    M("data_scale_factor", "iec_theory/linearization.py", "DATA_SCALE_FACTOR = 10.0", "DATA_SCALE_FACTOR = 1e12",
      "a diverging reference passes the data-scale check"),
    # ---- local errors ---------------------------------------------------------------------------------
    M("local_errors_at_perturbed", "iec_theory/theorems/base.py",
      "points = [st.x_t] + ([st.x_s] if st.iec else [])", "points = [st.xp_t] + ([st.xp_s] if st.iec else [])",
      "local errors measured at the perturbed states"),
    M("reference_error_at_perturbed", "iec_theory/theorems/base.py",
      "return eval_model(run.perturbed, st.x_t, st.k.t) - eval_model(run.exact, st.x_t, st.k.t)",
      "return eval_model(run.perturbed, st.xp_t, st.k.t) - eval_model(run.exact, st.xp_t, st.k.t)",
      "H1d error component taken at the perturbed state"),
    # ---- generic check logic ----------------------------------------------------------------------------
    M("upper_never_violated", "iec_theory/theorems/base.py",
      'violated = bool(np.any(gap < -tol)) if ps.kind != "identity" else bool(np.any(gap < 0))',
      'violated = bool(np.any(gap < -tol - np.abs(b))) if ps.kind != "identity" else bool(np.any(gap < 0))',
      "inequality checks with an allowance as large as the bound"),
    M("vacuous_counted_as_holds", "iec_theory/theorems/base.py",
      'if status == "holds" and ps.kind == "lower" and not bool(np.any(b > tol)):',
      'if False:', "a vacuous lower bound reported as 'holds'"),
    M("suite_vacuous_as_holds", "iec_theory/theorems/suite.py",
      'if res.status == "vacuous":', 'if res.status == "never":', "iec verify counts vacuous T6 as checked"),
    # ---- theorems -------------------------------------------------------------------------------------------
    M("t1_drops_error_term", "iec_theory/theorems/t1.py",
      "bound.append((st.k.a + abs(st.k.b) * c.L) * dt + abs(st.k.b) * eta)",
      "bound.append((st.k.a + abs(st.k.b) * c.L) * dt)", "T1 bound without the local-error term"),
    M("t1m_rho_sign", "iec_theory/theorems/t1m.py", "1.0 - 2.0 * h * mbar + h * h * Lbar * Lbar",
      "1.0 + 2.0 * h * mbar + h * h * Lbar * Lbar", "T1m contraction factor with the wrong sign of m"),
    M("t2_drops_relaxation", "iec_theory/theorems/t2.py", "P = (1 - lam) * P + lam * (a * eye + b * (C @ P))",
      "P = lam * (a * eye + b * (C @ P))", "T2 prediction without the (1 - lambda) memory"),
    M("t3_uses_declared_coefficients", "iec_theory/theorems/t3.py",
      "ks = S.step_coefficients(run.schedule, k.t, k.s, run.eta)", "ks = k",
      "T3 measures with the declared instead of the sampler's coefficients"),
    M("theory_r_factor", "iec_theory/theory.py", "1.0 - np.asarray(lam, dtype=np.float64) * (1.0 + u)",
      "1.0 - np.asarray(lam, dtype=np.float64) * u", "T3 relaxation factor r = 1 - lambda u"),
    M("t4_abs_m", "iec_theory/theorems/t4.py", "denom = 1.0 + abs(k.b) * c.m", "denom = 1.0 + abs(k.b) * abs(c.m)",
      "T4 treats an expansive model as monotone"),
    M("t4_drops_factor", "iec_theory/theorems/t4.py",
      '"fp_measured": norm(ytil - ystar), "fp_bound": (k.a * dt + abs(k.b) * eta_star) / denom if denom > 0',
      '"fp_measured": norm(ytil - ystar), "fp_bound": (k.a * dt + abs(k.b) * eta_star) if denom > 0',
      "T4 bound without its 1/(1 + |b| m) factor"),
    M("t4_guard_forced", "iec_theory/theorems/t4.py", 'elif q["denom"] <= 0:', "elif False:",
      "T4 hypothesis 1 + |b| m > 0 forced to met"),
    M("t4_eta_at_perturbed_fp", "iec_theory/theorems/t4.py",
      "eta_star = norm(eval_model(run.perturbed, ystar, k.t) - eval_model(run.exact, ystar, k.t))",
      "eta_star = norm(eval_model(run.perturbed, ytil, k.t) - eval_model(run.exact, ytil, k.t))",
      "T4 local error at the perturbed fixed point"),
    M("t4_no_contraction", "iec_theory/theorems/t4.py", "prod *= qc[0]", "prod *= 1.0",
      "T4+T5 finite-K bound without the contraction factors"),
    M("t5_silent_drop", "iec_theory/theorems/t5.py",
      'hyps.append(Hypothesis("the fixed point y~* found (Newton) at every IEC step", not missing,',
      'hyps.append(Hypothesis("the fixed point y~* found (Newton) at every IEC step", True,',
      "T5 drops steps whose fixed point was not found"),
    M("t5_certified_ignored", "iec_theory/theorems/t5.py", "certified = certified and bool(c.certified)",
      "certified = True", "sampled mixture constants reported as certified"),
    M("t6_start_zero_only", "iec_theory/theorems/t6.py", "for m in range(T):", "for m in range(1):",
      "T6 lower bound only from the start (vacuous whenever delta_T = 0)"),
    M("t6_hypothesis_forced", "iec_theory/theorems/t6.py",
      'hyps.append(Hypothesis("|F| > 1 on some step along the most amplified direction", n_exp > 0,',
      'hyps.append(Hypothesis("|F| > 1 on some step along the most amplified direction", True,',
      "T6 hypothesis |F| > 1 not checked"),
    M("t6_forcing_sign", "iec_theory/theorems/t6.py", "rv = (1 - lam * (1 + u)) * rv + lam * st.k.b * e",
      "rv = (1 - lam * (1 + u)) * rv - lam * st.k.b * e", "T6 forcing recursion with the wrong sign"),
    M("constants_m_is_max", "iec_theory/constants.py", "m = float(ev[..., 0].min())", "m = float(ev[..., -1].max())",
      "monotonicity constant = largest eigenvalue of the symmetric part"),
    # ---- growth classification ----------------------------------------------------------------------------
    M("ratio_without_dsigma", "iec_theory/growth.py", "inc = np.cumsum(ds * eta)", "inc = np.cumsum(eta)",
      "R_n without the dsigma weights"),
    M("growth_label_from_R", "iec_theory/growth.py",
      'return GrowthResult(label_E, float(fit_E["rho"]), float(fit_E["kappa"]), "E", label_E, label_R,',
      'return GrowthResult(label_R or label_E, float(fit_E["rho"]), float(fit_E["kappa"]), "E", label_E, label_R,',
      "the label decided on R when local errors are given"),
    M("growth_kappa_threshold", "iec_theory/growth.py", "KAPPA_EXP = 3.0 ", "KAPPA_EXP = 0.5 ",
      "exponential threshold kappa lowered to 0.5"),
    M("growth_no_loo", "iec_theory/growth.py", "    sensitive = n[labels[1:] != label]\n",
      "    sensitive = n[:0]\n", "leave-one-out consistency dropped (one point can flip the label)"),
    M("growth_no_jump_flag", "iec_theory/growth.py", "    if jumps:\n        label = \"inconclusive\"\n",
      "    if False:\n        label = \"inconclusive\"\n", "isolated single-point jumps no longer inconclusive"),
    M("growth_superlinear_never", "iec_theory/growth.py",
      'sup = ~expo & (f["p"] >= superlinear_p) & (F >= crit)', 'sup = ~expo & (f["p"] >= 1e9) & (F >= crit)',
      "polynomial growth called linear"),
    M("growth_geo_needs_cap", "iec_theory/growth.py", "(kappa >= kappa_exp) & ((f[\"rss_g\"] <= f[\"rss_p\"] + floor)",
      "(kappa >= kappa_exp) & (kappa <= 60.0) & ((f[\"rss_g\"] <= f[\"rss_p\"] + floor)",
      "an exponent cap: very fast curves fall through to linear"),
    M("growth_flattens_matrices", "iec_theory/growth.py", "require(sum(d > 1 for d in a.shape) <= 1,",
      "require(True or sum(d > 1 for d in a.shape) <= 1,", "a matrix is flattened into one error curve"),
    M("growth_negative_local_errors", "iec_theory/growth.py", "require(bool(np.all(eta >= 0)),",
      "require(True or bool(np.all(eta >= 0)),", "negative local errors accepted into R"),
)


def _copy_repo(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout.split(b"\0")
    for f in files:
        if not f:
            continue
        rel = f.decode()
        src = ROOT / rel
        if not src.is_file():
            continue
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out)


def run_mutant(m: Mutant, repo: Path, timeout: float) -> dict:
    target = repo / m.path
    text = target.read_text()
    n = text.count(m.old)
    if n != 1:
        return {**asdict(m), "result": "stale", "detail": f"original text found {n} times"}
    target.write_text(text.replace(m.old, m.new))
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TEST_FILES],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
        failed = proc.returncode != 0
        tail = proc.stdout.strip().splitlines()[-3:]
        killer = next((ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")), "")
        result = "killed" if failed else "survived"
    except subprocess.TimeoutExpired:
        result, tail, killer = "killed", ["timeout"], "timeout"
    finally:
        target.write_text(text)
    return {**asdict(m), "result": result, "seconds": round(time.time() - t0, 1), "killed_by": killer,
            "tail": tail}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help="mutant names to run")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per mutant (a timeout counts as killed)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mutants.json"))
    args = ap.parse_args(argv)
    mutants = [m for m in MUTANTS if args.only is None or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        print(f"mutants.py: error: unknown mutants {sorted(unknown)}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="iec_mutants_"))
    repos = []
    for j in range(max(1, args.jobs)):
        r = tmp / f"repo{j}"
        _copy_repo(r)
        repos.append(r)
    results: list[dict] = []
    try:
        with ThreadPoolExecutor(max_workers=len(repos)) as ex:
            # one repository copy per worker: mutants are applied in place, so a copy runs one mutant at a time
            chunks = [mutants[j::len(repos)] for j in range(len(repos))]
            def run_chunk(ms: list[Mutant], r: Path) -> list[dict]:
                out = []
                for m in ms:
                    res = run_mutant(m, r, args.timeout)
                    print(f"  {res['result']:<9} {m.name} ({res.get('seconds', 0)} s)", flush=True)
                    out.append(res)
                return out

            futs = [ex.submit(run_chunk, ch, r) for ch, r in zip(chunks, repos)]
            for f in futs:
                results.extend(f.result())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    order = {m.name: i for i, m in enumerate(MUTANTS)}
    results.sort(key=lambda r: order[r["name"]])
    for r in results:
        print(f"{r['result']:<9} {r['name']:<32} {r['meaning']}  [{r.get('killed_by', '')[:80]}]")
    counted = [r for r in results if r["result"] != "stale"]
    killed = sum(r["result"] == "killed" for r in counted)
    score = killed / len(counted) if counted else float("nan")
    print(f"{killed}/{len(counted)} killed ({100 * score:.1f} %), {len(results) - len(counted)} stale")
    sys.path.insert(0, str(ROOT))
    from iec_theory.provenance import provenance

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"score": score, "killed": killed, "counted": len(counted),
                                          "tests": list(TEST_FILES), "results": results,
                                          "provenance": provenance(seed=0)}, indent=1))
    return 0 if not any(r["result"] == "stale" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
