"""Detectability table and measured error rates of the growth classifier (iec_theory.growth.classify).

For T in {5, 10, 20, 50, 100, 200, 1000} and log-normal noise sigma in {0, 0.1, 0.2, 0.5}: the smallest
rho = exp(kappa / T) such that >= 95 % of the noisy pure geometric curves E_n = rho^n exp(sigma xi_n),
n = 0..T, xi iid N(0, 1), are labelled "exponential".  Bisection over log kappa; the same seeded noise draws are
used for every rho of a cell (common random numbers), so the detection rate is a smooth function of rho.

Also: false-positive rates per at-most-linear family, false-negative rates per geometric family, and the
superlinear detection rate per polynomial family, at several noise levels (iec_theory.growth.measure_error_rates).

Writes benchmarks/results/growth_detectability.json and .md.
Single-threaded run time: about 10 minutes (T = 1000 dominates).

    python scripts/growth_detectability.py [--curves 200] [--curves-large 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from iec_theory import growth

TS = (5, 10, 20, 50, 100, 200, 1000)
SIGMAS = (0.0, 0.1, 0.2, 0.5)
RATE_SIGMAS = (0.0, 0.1, 0.2, 0.5, 1.0)
TARGET = 0.95
KAPPA_BRACKET = (1.0, 64.0)     # initial bracket of the bisection over log kappa
KAPPA_LIMIT = 1024.0            # largest kappa tried
BISECTION_STEPS = 9             # final bracket width: factor exp(log(64) / 2^9) = 1.008 in kappa


def detection_rate(T: int, kappa: float, xi: np.ndarray, sigma: float) -> float:
    """Fraction of the curves rho^n exp(sigma xi) (rows of xi) labelled exponential."""
    n = np.arange(T + 1, dtype=np.float64)
    base = n * (kappa / T)
    hits = sum(growth.classify(np.exp(base + sigma * row)).label == "exponential" for row in xi)
    return hits / xi.shape[0]


def smallest_kappa(T: int, sigma: float, n_curves: int, seed: int) -> dict:
    """Bisection over log kappa in KAPPA_BRACKET (the upper end doubled while the target is not reached)."""
    xi = np.random.default_rng([seed, T, int(round(1000 * sigma))]).standard_normal((n_curves, T + 1))
    rates: dict[float, float] = {}

    def rate(log_k: float) -> float:
        if log_k not in rates:
            rates[log_k] = detection_rate(T, float(np.exp(log_k)), xi, sigma)
        return rates[log_k]

    lo, hi = np.log(KAPPA_BRACKET[0]), np.log(KAPPA_BRACKET[1])
    if rate(lo) >= TARGET:
        k = float(np.exp(lo))
        return {"kappa": k, "rho": float(np.exp(k / T)), "rate": rates[lo], "note": "at the lower bracket"}
    while rate(hi) < TARGET:
        if hi >= np.log(KAPPA_LIMIT):
            return {"kappa": None, "rho": None, "rate": rates[hi], "note": f"not reached up to kappa {KAPPA_LIMIT}"}
        lo, hi = hi, hi + np.log(2.0)
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if rate(mid) >= TARGET:
            hi = mid
        else:
            lo = mid
    k = float(np.exp(hi))
    return {"kappa": k, "rho": float(np.exp(k / T)), "rate": rates[hi], "kappa_bracket": [float(np.exp(lo)), k],
            "evaluations": len(rates)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--curves", type=int, default=200, help="curves per cell for T <= 200")
    ap.add_argument("--curves-large", type=int, default=100, help="curves per cell for T = 1000")
    ap.add_argument("--rate-curves", type=int, default=700, help="curves per family group in the rate tables")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/growth_detectability")
    args = ap.parse_args()
    t0 = time.time()
    table = []
    for T in TS:
        for sigma in SIGMAS:
            nc = args.curves_large if T >= 1000 else args.curves
            cell = {"T": T, "sigma": sigma, "curves": nc, **smallest_kappa(T, sigma, nc, args.seed)}
            table.append(cell)
            print(f"T={T:5d} sigma={sigma:.1f}: kappa {cell['kappa']}, rho {cell['rho']} ({time.time() - t0:.0f}s)",
                  flush=True)
    rates = {}
    for sigma in RATE_SIGMAS:
        r = growth.measure_error_rates(n_curves=args.rate_curves, seed=args.seed, noise=sigma, kappa_range=(8.0, 20.0))
        r4 = growth.measure_error_rates(n_curves=args.rate_curves, seed=args.seed + 1, noise=sigma,
                                        kappa_range=(4.0, 8.0), superlinear=False)
        rates[str(sigma)] = {
            "fp_rate": r["fp_rate"], "null_superlinear_rate": r["null_superlinear_rate"],
            "null_inconclusive_rate": r["null_inconclusive_rate"],
            "fn_rate_kappa_8_20": r["fn_rate"], "fn_rate_kappa_4_8": r4["fn_rate"],
            "superlinear_rate": r["superlinear_rate"],
            "superlinear_exponential_rate": r["superlinear_exponential_rate"],
            "per_kind_kappa_8_20": r["per_kind"],
            "per_kind_geometric_kappa_4_8": {k: v for k, v in r4["per_kind"].items() if k in growth.GEOMETRIC_KINDS},
        }
        print(f"rates sigma={sigma}: FP {r['fp_rate']:.3f} FN(8-20) {r['fn_rate']:.3f} FN(4-8) {r4['fn_rate']:.3f} "
              f"superlinear {r['superlinear_rate']:.3f} ({time.time() - t0:.0f}s)", flush=True)
    out = {"description": __doc__.split("\n\n")[0], "target_rate": TARGET, "seed": args.seed,
           "curves_per_cell": {"T<=200": args.curves, "T=1000": args.curves_large},
           "rate_curves_per_group": args.rate_curves, "rate_T_range": {"null": [5, 200], "geometric": [10, 200]},
           "thresholds": growth.thresholds_table(), "detectability": table, "rates": rates,
           "seconds": round(time.time() - t0, 1)}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown(out))
    print(f"wrote {path}.json/.md in {out['seconds']} s")


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(out: dict) -> str:
    lines = ["# Growth classifier: detectability and error rates", "",
             f"Smallest rho (kappa = T log rho) labelled exponential in >= {out['target_rate']:.0%} of noisy pure "
             f"geometric curves rho^n exp(sigma xi) (seed {out['seed']}; {out['curves_per_cell']['T<=200']} curves "
             f"per cell for T <= 200, {out['curves_per_cell']['T=1000']} for T = 1000).", "",
             "| T | " + " | ".join(f"sigma {s}" for s in SIGMAS) + " |", "|---" * (len(SIGMAS) + 1) + "|"]
    for T in TS:
        cells = [c for c in out["detectability"] if c["T"] == T]
        lines.append(f"| {T} | " + " | ".join(f"rho {fmt(c['rho'], '.4g')} (kappa {fmt(c['kappa'], '.3g')})"
                                             for c in cells) + " |")
    lines += ["", f"Error rates ({out['rate_curves_per_group']} curves per group; null T in [5, 200], geometric and "
              "polynomial T in [10, 200]; FN counts inconclusive and superlinear as misses):", "",
              "| sigma | FP (linear -> exponential) | linear -> superlinear | linear -> inconclusive | "
              "FN kappa in [8, 20] | FN kappa in [4, 8] | polynomial -> superlinear | polynomial -> exponential |",
              "|---|---|---|---|---|---|---|---|"]
    for s, r in out["rates"].items():
        lines.append(f"| {s} | {r['fp_rate']:.3f} | {r['null_superlinear_rate']:.3f} | "
                     f"{r['null_inconclusive_rate']:.3f} | {r['fn_rate_kappa_8_20']:.3f} | "
                     f"{r['fn_rate_kappa_4_8']:.3f} | "
                     f"{r['superlinear_rate']:.3f} | "
                     f"{r['superlinear_exponential_rate']:.3f} |")
    lines += ["", "Per family (label counts), kappa in [8, 20]:", ""]
    for s, r in out["rates"].items():
        lines.append(f"- sigma {s}: " + "; ".join(
            f"{k}: " + ", ".join(f"{lab} {v}" for lab, v in c.items() if v)
            for k, c in r["per_kind_kappa_8_20"].items()))
    lines += ["", "Geometric families, kappa in [4, 8]:", ""]
    for s, r in out["rates"].items():
        lines.append(f"- sigma {s}: " + "; ".join(
            f"{k}: " + ", ".join(f"{lab} {v}" for lab, v in c.items() if v)
            for k, c in r["per_kind_geometric_kappa_4_8"].items()))
    lines += ["", f"Run time {out['seconds']} s single-threaded.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
