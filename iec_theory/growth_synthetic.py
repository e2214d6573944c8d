"""Synthetic growth curves with known labels and the measured error rates of `growth.classify` (docs/GROWTH.md).

Used by the tests, `scripts/growth_detectability.py` and the report; re-exported by `iec_theory.growth`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["GEOMETRIC_KINDS", "LINEAR_KINDS", "SUPERLINEAR_KINDS", "measure_error_rates", "synthetic_curve"]

LINEAR_KINDS = ("linear", "linear_from_zero", "constant", "decaying", "saturating", "sqrt", "cumulative")
SUPERLINEAR_KINDS = ("power_1.5", "power_2", "power_2_shifted", "power_3")
GEOMETRIC_KINDS = ("geometric", "accumulated", "geometric_plus_linear", "random_factors", "geometric_then_damped",
                   "fast_geometric", "overflow")


def synthetic_curve(kind: str, T: int, rng: np.random.Generator, noise: float,
                    kappa_range: tuple[float, float] = (4.0, 20.0)) -> np.ndarray:
    """One synthetic E_n, n = 0..T, times log-normal noise exp(noise * xi), xi ~ N(0, 1) iid.

    At most linear (LINEAR_KINDS): alpha n + beta; alpha n (E_0 = 0); constant; decaying beta e^{-n/tau} + c;
    saturating 1 - e^{-(n+1)/tau}; sqrt(n + 1); cumulative sums of positive random increments with a decaying
    trend (the shape of sum dsig_m eta_m under DDIM's shrinking steps).
    Superlinear (SUPERLINEAR_KINDS): n^1.5, n^2, (n + 1)^2, n^3 (E_0 = 0 for the unshifted ones).
    Geometric (GEOMETRIC_KINDS, kappa = T log rho uniform in kappa_range): rho^n; the accumulated form
    (rho^n - 1)/(rho - 1) (E_0 = 0); the same plus a linear part as large as the geometric one at mid-run;
    products of random per-step factors rho exp(0.3 xi), xi uniform in [-1, 1] (cumulated like a propagated
    error); kappa over the first 60 % of the steps followed by decay (x0.8 per step); very fast rho^n with
    log10 rho uniform in [1, 10] (kappa_range ignored; T shortened so that it stays below 1e300); and a
    geometric curve that overflows (rho^n reaches inf at about 70 % of the run).
    """
    n = np.arange(T + 1, dtype=np.float64)
    kappa = rng.uniform(*kappa_range)
    lr = kappa / T
    if kind == "linear":
        y = rng.uniform(0.01, 1) * n + rng.uniform(0.01, 1) * T * rng.uniform(0.01, 1)
    elif kind == "linear_from_zero":
        y = rng.uniform(0.01, 1) * n
    elif kind == "constant":
        y = np.full(n.shape, rng.uniform(0.1, 10))
    elif kind == "decaying":
        y = rng.uniform(0.5, 5) * np.exp(-n / rng.uniform(1, T)) + rng.uniform(0.01, 0.5)
    elif kind == "saturating":
        y = 1 - np.exp(-(n + 1) / rng.uniform(1, T))
    elif kind == "sqrt":
        y = np.sqrt(n + 1)
    elif kind == "cumulative":
        inc = rng.uniform(0.2, 1.0, T + 1) * np.exp(-n / rng.uniform(T / 3, 3 * T))
        y = np.cumsum(inc)
    elif kind == "power_1.5":
        y = n**1.5
    elif kind == "power_2":
        y = n**2
    elif kind == "power_2_shifted":
        y = (n + 1) ** 2
    elif kind == "power_3":
        y = n**3
    elif kind == "geometric":
        y = np.exp(n * lr)
    elif kind in ("accumulated", "geometric_plus_linear"):
        y = np.expm1(n * lr) / np.expm1(lr)
        if kind == "geometric_plus_linear":
            y = y + n * y[T // 2] / max(T // 2, 1)
    elif kind == "geometric_then_damped":
        n_up = max(int(0.6 * T), 4)
        lr_up = kappa / n_up
        y = np.where(n <= n_up, np.expm1(n * lr_up) / np.expm1(lr_up), 0.0)
        y[n > n_up] = y[n_up] * 0.8 ** (n[n > n_up] - n_up)
    elif kind == "random_factors":
        fac = np.exp(lr + 0.3 * rng.uniform(-1, 1, T + 1))
        y = np.empty(T + 1)
        acc = 0.0
        for i in range(T + 1):
            acc = acc * fac[i] + 1.0
            y[i] = acc
    elif kind == "fast_geometric":
        lr = np.log(10.0) * rng.uniform(1, 10)
        from .growth import MIN_POINTS  # growth imports this module at its end: a lazy import

        T = max(min(T, int(690 / lr)), MIN_POINTS)
        n = np.arange(T + 1, dtype=np.float64)
        y = np.exp(n * lr)
    elif kind == "overflow":
        lr = 760.0 / max(0.7 * T, 1.0)
        with np.errstate(over="ignore"):
            y = np.exp(n * lr)
    else:
        raise ValueError(f"unknown synthetic curve kind {kind!r}")
    with np.errstate(over="ignore", invalid="ignore"):
        return y * np.exp(noise * rng.standard_normal(y.size))


def measure_error_rates(n_curves: int = 600, seed: int = 0, T_range: tuple[int, int] = (5, 200),
                        T_range_geometric: tuple[int, int] = (10, 200), noise_max: float = 0.2,
                        noise: float | None = None, kappa_range: tuple[float, float] = (4.0, 20.0),
                        superlinear: bool = True) -> dict[str, Any]:
    """Measured label rates of `classify` on synthetic noisy curves (kinds: `synthetic_curve`).

    Null family (at most linear): LINEAR_KINDS in turn, T uniform in T_range; noise sigma = `noise`, or uniform
    in [0, noise_max] when `noise` is None.  FP = fraction labelled "exponential".
    Alternative (geometric, kappa uniform in kappa_range): GEOMETRIC_KINDS in turn, T uniform in
    T_range_geometric.  FN = fraction NOT labelled "exponential" (inconclusive and superlinear count as misses).
    Superlinear (SUPERLINEAR_KINDS, T in T_range_geometric): detection = fraction labelled "superlinear".
    Per-kind label counts in `per_kind`.
    """
    from .growth import classify  # growth imports this module at its end: a lazy import

    rng = np.random.default_rng(seed)
    empty = {"linear": 0, "superlinear": 0, "exponential": 0, "inconclusive": 0}
    per_kind: dict[str, dict[str, int]] = {}
    worst_fp: list[tuple[str, int, float]] = []

    def run(kinds: tuple[str, ...], t_range: tuple[int, int]) -> dict[str, int]:
        tot = dict(empty)
        for i in range(n_curves):
            kind = kinds[i % len(kinds)]
            T = int(rng.integers(t_range[0], t_range[1] + 1))
            sig = float(rng.uniform(0, noise_max)) if noise is None else float(noise)
            lab = classify(synthetic_curve(kind, T, rng, sig, kappa_range)).label
            tot[lab] += 1
            per_kind.setdefault(kind, dict(empty))[lab] += 1
            if kinds is LINEAR_KINDS and lab == "exponential":
                worst_fp.append((kind, T, sig))
        return tot

    lab_null = run(LINEAR_KINDS, T_range)
    lab_alt = run(GEOMETRIC_KINDS, T_range_geometric)
    out: dict[str, Any] = {
        "n_curves": n_curves, "seed": seed, "noise": noise, "noise_max": noise_max, "kappa_range": list(kappa_range),
        "fp_rate": lab_null["exponential"] / n_curves,
        "null_superlinear_rate": lab_null["superlinear"] / n_curves,
        "null_inconclusive_rate": lab_null["inconclusive"] / n_curves,
        "fn_rate": (n_curves - lab_alt["exponential"]) / n_curves,
        "alt_inconclusive_rate": lab_alt["inconclusive"] / n_curves,
        "null_labels": lab_null, "alt_labels": lab_alt, "false_positives": worst_fp,
    }
    if superlinear:
        lab_sup = run(SUPERLINEAR_KINDS, T_range_geometric)
        out.update(superlinear_labels=lab_sup, superlinear_rate=lab_sup["superlinear"] / n_curves,
                   superlinear_exponential_rate=lab_sup["exponential"] / n_curves)
    out["per_kind"] = per_kind
    return out
