"""Growth classification of a per-step propagated error curve (THEORY.md section 6).

Input: E_n, n = 0..T (n = steps taken, xbar coordinates).  The label is ALWAYS decided on E
(`series == "E"`).  Optionally the local errors eta_m and step sizes dsig_m give the ratio
R_n = E_n / (E_0 + sum_m dsig_m eta_m) (the sum runs over the steps already taken, m < n, when the local errors
have length T; over m <= n when they have the length of E).  R is a DIAGNOSTIC only (`label_R`, `fit["R_max"]`):
bounded R is the linear regime of T4, geometric R the exponential regime of T1m / T6, but a bounded R never
turns an exponential E into "linear".

The rule (every threshold: `thresholds_table()`; derivation, tables and limits: docs/GROWTH.md):

Labels: "linear" (AT MOST linear: bounded, decaying, saturating, sqrt and linear curves), "superlinear"
(polynomial growth, fitted power p >= SUPERLINEAR_P and p <= 1 rejected by an F test; `power` = p),
"exponential" (geometric growth at any speed), "inconclusive" (the label depends on a single point, an isolated
jump, or too few points).  `flags` say why.

1. Log space.  y_n = log E_n: log-normal noise is additive there and least squares on y is its maximum-likelihood
   fit; no value can overflow a fit.  NaN is an error (ConfigError), so are negative values.  +inf is an
   overflow: the curve is cut at its first inf, kept as the censored value LOG_MAX = log(DBL_MAX) (the true value
   is larger), flag "overflow".  Exact zeros (E_n = 0, e.g. E_0 before any error is injected) are left out; all
   zero is "linear" (flag "all zero").  A first point that rises to the next by >= JUMP_LOG more than the next
   step does (a rounding-level E_0 before the first injected error) is left out, flag "start-up jump".
2. Growth phase.  s = running median of 3 of y (Tukey's end-point rule), so no single point moves it.
   End: if the curve decays after the peak of s by TAIL_DROP or more, only n <= peak is fitted (growth that is
   damped afterwards did happen).  Start ("onset"): the last point before the peak within ONSET_LOG of the
   minimum of s, when the prefix before it grows (log-slope) at most ONSET_SLOPE times as fast as the rest: a
   flat or decaying prefix is not growth.  T_phase = steps spanned.  Fewer than MIN_POINTS positive points:
   "linear" if the curve peaked early and decays (flag "no growth phase (early peak)"), else "inconclusive"
   (flag "too few points").
3. Models, least squares on the growth phase (m points), each with a free intercept c:
     geometric  y_n = c + n log rho  (free straight line: no cap on rho, any speed), or the accumulated form
                y_n = c + log(expm1(g (n + n1)))  (E_n ~ rho^(n + n1) - 1: the sum of a geometric series; kappa on
                a log grid KAPPA_GRID x KAPPA_GRID_N, n1 on N1_GRID offsets), whichever fits best;
                kappa = T_phase log rho (= T_phase g);
     power law  y_n = c + p log(n + n0)  (p free; n0 on N0_GRID log-spaced offsets with n + n0 > 0 on the phase
                and n0 <= N0_CAP T_phase, plus the origins n = 0 and n = -1).
   A power law is concave in log space, a geometric curve straight (convex in the accumulated form); the offset
   cap keeps a power law from imitating a straight line (beyond it the two are not distinguishable).
4. "exponential" iff kappa >= KAPPA_EXP (growth by >= e^KAPPA_EXP at a constant log-rate) AND
   (RSS_geo <= RSS_pow, the geometric fit at least as good as the best power law, OR the best power law needs
   p >= P_EXP: a power that high is not distinguished from geometric growth).
   Else "superlinear" iff p >= SUPERLINEAR_P AND the power law restricted to p <= 1 is rejected by the F test
   F = (RSS_{p<=1} - RSS_pow) / (RSS_pow / (m - 3)) >= F_{1-F_ALPHA}(1, m - 3).
   Else "linear".
5. No single point decides.  Rule 4 is applied to the phase and to each of its leave-one-out subsets (exact
   deletion formulas for every grid shape); unless all agree: "inconclusive", flag "single-point sensitive
   (n=...)".  Hence perturbing one point of a curve whose leave-one-out labels are all "linear" cannot give
   "exponential", and conversely (up to the growth phase moving, which the median smoothing prevents for single
   points).  An isolated jump by >= e^JUMP_LOG (up then down again, or down then up, or a last step rising
   JUMP_LOG more than the step before) makes the label "inconclusive", flag "single-point jump (n=...)".
6. Flag "not detectable at this T": not "exponential", but the geometric model fits best with
   KAPPA_FLAG <= kappa < KAPPA_EXP (slow geometric growth below the detectability threshold of the table).

R diagnostic: `label_R` = "linear" when max_n R_n <= R_LINEAR (T4's linear regime gives R_n <= 1 exactly at
converged fixed points; the factor 2 absorbs unconverged residuals), else the rule above applied to R.

Detectability (scripts/growth_detectability.py -> benchmarks/results/growth_detectability.json, docs/GROWTH.md):
smallest rho (kappa = T log rho) called "exponential" in >= 95 % of pure geometric curves rho^n, n = 0..T, with
log-normal noise sigma (seeded, bisection over rho; 200 curves per cell, 100 at T = 1000); cell = rho (kappa):

    T     sigma=0             sigma=0.1           sigma=0.2           sigma=0.5
    5     1.829 (3.02)        3.008 (5.51)        3.54 (6.32)         8.679 (10.8)
    10    1.352 (3.02)        1.562 (4.46)        1.921 (6.53)        2.665 (9.8)
    20    1.163 (3.02)        1.191 (3.49)        1.323 (5.6)         1.468 (7.68)
    50    1.062 (3.02)        1.067 (3.22)        1.095 (4.53)        1.144 (6.75)
    100   1.031 (3.02)        1.031 (3.09)        1.041 (3.98)        1.067 (6.48)
    200   1.015 (3.02)        1.015 (3.07)        1.02 (3.95)         1.028 (5.46)
    1000  1.003 (3.02)        1.003 (3.04)        1.004 (3.85)        1.004 (4.32)

At sigma = 0 the threshold is the rule's own KAPPA_EXP at every T; noise raises it most at small T.

Measured rates (700 curves per group and noise level; families in `synthetic_curve`; at most linear T in
[5, 200], geometric and polynomial T in [10, 200]; FN counts inconclusive and superlinear as misses):

    sigma 0.0: FP 0.0 %, FN 0.6 % (kappa 8-20) / 11.1 % (kappa 4-8), polynomial -> superlinear 100.0 %
    sigma 0.1: FP 0.0 %, FN 0.6 % (kappa 8-20) / 11.6 % (kappa 4-8), polynomial -> superlinear 99.7 %
    sigma 0.2: FP 0.0 %, FN 0.6 % (kappa 8-20) / 13.4 % (kappa 4-8), polynomial -> superlinear 99.0 %
    sigma 0.5: FP 0.0 %, FN 1.0 % (kappa 8-20) / 20.1 % (kappa 4-8), polynomial -> superlinear 92.0 %
    sigma 1.0: FP 0.0 %, FN 3.0 % (kappa 8-20) / 31.9 % (kappa 4-8), polynomial -> superlinear 71.1 %

Asserted in tests/test_theory_growth.py: FP <= 5 % at sigma 0.5 (350 curves), FN <= 5 % (kappa in [8, 20],
noise <= 0.2), polynomial families >= 90 % superlinear; every adversarial curve of issue 10.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from .errors import ConfigError, require

__all__ = [
    "F_ALPHA",
    "GEOMETRIC_KINDS",
    "GrowthResult",
    "JUMP_LOG",
    "KAPPA_EXP",
    "KAPPA_FLAG",
    "KAPPA_GRID",
    "KAPPA_GRID_N",
    "LINEAR_KINDS",
    "LOG_MAX",
    "MIN_POINTS",
    "N0_CAP",
    "N0_GRID",
    "N0_MIN",
    "N1_GRID",
    "ONSET_LOG",
    "ONSET_SLOPE",
    "P_EXP",
    "RSS_FLOOR",
    "R_LINEAR",
    "SUPERLINEAR_KINDS",
    "SUPERLINEAR_P",
    "TAIL_DROP",
    "classify",
    "measure_error_rates",
    "ratio_series",
    "synthetic_curve",
    "thresholds_table",
]

KAPPA_EXP = 3.0          # growth exponent kappa = T_phase log rho needed to call a curve exponential
SUPERLINEAR_P = 1.25     # fitted power at or above which (with the F test) a curve is superlinear
F_ALPHA = 0.01           # level of the F test rejecting "power <= 1" against the free power law
P_EXP = 8.0              # a power law that needs p >= P_EXP is not distinguished from geometric growth
N0_CAP = 1.0             # power-law offset n0 at most N0_CAP * T_phase
N0_GRID = 48             # log-spaced offsets n0 tried by the power-law fit (plus the origins n = 0, n = -1)
N1_GRID = 24             # log-spaced offsets n1 tried by the accumulated geometric fit (plus the same origins)
KAPPA_GRID = (0.05, 300.0)  # kappa range of the accumulated geometric grid (a free straight line covers any speed)
KAPPA_GRID_N = 40        # log-spaced kappa values on that grid
KAPPA_FLAG = 0.25        # "not detectable at this T" flag from this kappa up to KAPPA_EXP (geometric fit best)
JUMP_LOG = float(np.log(100.0))   # isolated one-point jump of the log error (factor 100)
TAIL_DROP = float(np.log(2.0))    # the growth phase ends at the peak only if the curve then decays by this (log)
ONSET_LOG = float(np.log(2.0))    # the growth phase starts at the last point within this (log) of the minimum ...
ONSET_SLOPE = 0.5        # ... when the prefix before it grows (log-slope) at most ONSET_SLOPE times as fast as after
MIN_POINTS = 5           # positive points needed in the growth phase
R_LINEAR = 2.0           # diagnostic: max_n R_n <= R_LINEAR is the linear regime of T4 (R_n <= 1 there)
LOG_MAX = float(np.log(np.finfo(np.float64).max))   # censored log value of an overflowed (inf) error
RSS_FLOOR = 1e-18        # per point: log-space rounding level (an RSS below m * RSS_FLOOR is an exact fit)
N0_MIN = 1e-3            # smallest n + n0 (n + n1) at the first point of the phase on the offset grids

_MEANINGS = {
    "KAPPA_EXP": "exponential needs kappa = T_phase log rho >= KAPPA_EXP and the geometric fit at least as good "
                 "as the best power law",
    "SUPERLINEAR_P": "superlinear needs the fitted power p >= SUPERLINEAR_P (and the F test)",
    "F_ALPHA": "level of the F test rejecting a power law with p <= 1 (superlinear)",
    "P_EXP": "exponential also when kappa >= KAPPA_EXP and the best power law needs p >= P_EXP",
    "N0_CAP": "power-law offset n0 <= N0_CAP * T_phase (beyond it a power law imitates a geometric curve)",
    "N0_GRID": "number of log-spaced offsets n0 tried by the power-law fit",
    "JUMP_LOG": "isolated one-point jump of log E (spike, last step, start-up) flagged: log 100",
    "TAIL_DROP": "growth phase ends at the (median-of-3) peak only if the curve decays after it by this (log 2)",
    "ONSET_LOG": "growth phase starts at the last (median-of-3) point within this (log 2) of the minimum before "
                 "the peak: a flat or decaying prefix is not part of the growth",
    "ONSET_SLOPE": "... and only if that prefix's log-slope is <= ONSET_SLOPE times the log-slope after it",
    "MIN_POINTS": "positive points needed in the growth phase (else inconclusive, or linear if the peak is early)",
    "KAPPA_GRID": "kappa range of the accumulated geometric grid (plus a free straight line: any speed)",
    "N1_GRID": "number of log-spaced offsets n1 tried by the accumulated geometric fit",
    "KAPPA_GRID_N": "number of log-spaced kappa values on that grid",
    "KAPPA_FLAG": "flag 'not detectable at this T' when the geometric fit is best with KAPPA_FLAG <= kappa < KAPPA_EXP",
    "R_LINEAR": "diagnostic label_R: max R_n <= R_LINEAR is T4's linear regime",
    "RSS_FLOOR": "per-point residual floor (log-space rounding): RSS <= m RSS_FLOOR is an exact fit (ties, F test)",
    "N0_MIN": "smallest n + n0 (n + n1) at the first point of the phase on the offset grids",
    "LOG_MAX": "censored log value of an inf (overflowed) error: log(DBL_MAX)",
}


def thresholds_table() -> list[dict[str, Any]]:
    """Every constant the rule uses: [{name, value, meaning}] (for the report)."""
    def value(v: Any) -> Any:
        return [float(x) for x in v] if isinstance(v, tuple) else (v if isinstance(v, int) else float(v))

    return [{"name": k, "value": value(globals()[k]), "meaning": v} for k, v in _MEANINGS.items()]


@dataclass
class GrowthResult:
    """Outcome of `classify`; `label` is decided on E (series "E"); `label_R` is a diagnostic."""

    label: str                       # "linear" | "superlinear" | "exponential" | "inconclusive"
    rho: float                       # fitted geometric ratio per step over the growth phase (any value > 0)
    kappa: float                     # T_phase log rho
    series: str                      # always "E" (the verdict series)
    label_E: str
    label_R: str | None
    fit: dict[str, Any] = field(default_factory=dict)   # fit of E plus the R diagnostics (R_max, fit_R)
    fit_E: dict[str, Any] = field(default_factory=dict)
    R: np.ndarray | None = None
    power: float = float("nan")      # fitted power p of the power law (n + n0)^p
    flags: list[str] = field(default_factory=list)


def _series(x: Any, name: str) -> np.ndarray:
    """x as a 1-D float64 array: a sequence of real numbers (a row or column vector is accepted); anything else
    (a matrix, strings, complex numbers, None, booleans, a mapping) is a ConfigError naming `name`."""
    if isinstance(x, (str, bytes, dict)) or hasattr(x, "keys"):
        raise ConfigError(f"{name} must be a 1-D sequence of real numbers, got {type(x).__name__}")
    try:
        a = np.asarray(x)
    except (TypeError, ValueError, RuntimeError) as exc:     # ragged nesting; a tensor that needs grad
        raise ConfigError(f"{name} must be a 1-D sequence of real numbers ({exc})") from exc
    require(sum(d > 1 for d in a.shape) <= 1, f"{name} must be 1-D (a row or column vector), got shape {a.shape}")
    if a.dtype.kind == "O":
        flat = a.reshape(-1)
        bad = next((i for i, v in enumerate(flat)
                    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))), None)
        if bad is not None:
            raise ConfigError(f"{name} must hold real numbers; element {bad} is {flat[bad]!r}")
    else:
        require(a.dtype.kind in "iuf", f"{name} must hold real numbers, got dtype {a.dtype} "
                                      f"({'complex' if a.dtype.kind == 'c' else 'not numeric'})")
    return a.astype(np.float64).reshape(-1)


def ratio_series(errors, local_errors, dsigmas) -> np.ndarray:
    """R_n = E_n / (E_0 + sum dsig_m eta_m) (see the module docstring for the summation range).

    The local errors are norms: NaN or a negative value is a ConfigError (+inf, an overflow, is kept);
    the step sizes must be finite."""
    E = _series(errors, "errors")
    eta = _series(local_errors, "local_errors")
    ds = _series(dsigmas, "dsigmas")
    require(not bool(np.any(np.isnan(eta))), "local_errors contain NaN")
    require(bool(np.all(eta >= 0)), "local_errors must be >= 0 (they are norms)")
    require(bool(np.all(np.isfinite(ds))), "dsigmas must be finite")
    require(eta.size == ds.size, f"local_errors ({eta.size}) and dsigmas ({ds.size}) must have the same length")
    require(eta.size in (E.size, E.size - 1), f"local errors must have length T or T+1 for {E.size} errors")
    inc = np.cumsum(ds * eta)
    acc = np.concatenate([[0.0], inc]) if eta.size == E.size - 1 else inc
    den = E[0] + acc
    with np.errstate(divide="ignore", invalid="ignore"):
        R = np.where(den > 0, E / np.where(den > 0, den, 1.0), np.where(E > 0, np.inf, 0.0))
    return R


# ------------------------------------------------------------------------------------------------
# fits (least squares in log space, with closed-form leave-one-out)
# ------------------------------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def _f_crit(dof: int) -> float:
    from scipy.stats import f as f_dist

    return float(f_dist.ppf(1.0 - F_ALPHA, 1, dof)) if dof >= 1 else float("inf")


def _ols_loo(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Row-wise simple regression y ~ c + b x (x: [K, m], y: [m]) and its leave-one-out versions.

    Returns b [K], rss [K], b_loo [K, m], rss_loo [K, m] (deletion formulas with leverages h_i)."""
    m = y.size
    xc = x - x.mean(axis=-1, keepdims=True)
    sxx = np.maximum((xc * xc).sum(-1), 1e-300)
    yc = y - y.mean()
    b = (xc * yc).sum(-1) / sxx
    e = yc - b[..., None] * xc
    rss = (e * e).sum(-1)
    h = 1.0 / m + xc * xc / sxx[..., None]
    d = e / np.maximum(1.0 - h, 1e-12)
    b_loo = b[..., None] - xc / sxx[..., None] * d
    rss_loo = np.maximum(rss[..., None] - e * d, 0.0)
    return b, rss, b_loo, rss_loo


def _geo_shapes(n: np.ndarray, t_phase: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shapes log(expm1(g (n + n1))) of the accumulated geometric model on the (kappa, n1) grid: [J, m]."""
    if n.size == int(n[-1] - n[0]) + 1:          # contiguous steps: shared (cached, read-only) grid
        return _geo_shapes_contiguous(int(n[0]), n.size, float(t_phase))
    return _geo_shapes_any(n, t_phase)


@lru_cache(maxsize=64)
def _geo_shapes_contiguous(first: int, size: int, t_phase: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = _geo_shapes_any(np.arange(first, first + size, dtype=np.float64), t_phase)
    for a in out:
        a.flags.writeable = False
    return out


def _geo_shapes_any(n: np.ndarray, t_phase: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kap = np.geomspace(KAPPA_GRID[0], KAPPA_GRID[1], KAPPA_GRID_N)
    n1 = _offsets(n, t_phase, N1_GRID)
    g = kap / max(t_phase, 1.0)
    x = g[:, None, None] * (n[None, None, :] + n1[None, :, None])          # [Kk, Kn, m] > 0
    shape = np.where(x > 30, x, np.log(np.expm1(np.minimum(x, 30)) + 1e-300))
    return shape.reshape(-1, n.size), np.repeat(kap, n1.size), np.tile(n1, kap.size)


def _offsets(n: np.ndarray, t_phase: float, size: int = 0) -> np.ndarray:
    """Offsets n0 with n[0] + n0 log-spaced in [N0_MIN, N0_CAP T_phase], plus the origins n = 0 and n = -1."""
    lo = N0_MIN
    hi = max(N0_CAP * t_phase, 2 * lo)
    v = np.geomspace(lo, hi, size or N0_GRID)
    v = np.unique(np.concatenate([v, [x for x in (n[0], n[0] + 1.0) if lo <= x <= hi]]))
    return v - n[0]


def _intercept_only(shape: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RSS of y ~ c + shape (c free) per row, and its leave-one-out RSS [J, m]."""
    m = y.size
    r = y[None, :] - shape
    rc = r - r.mean(-1, keepdims=True)
    rss = (rc * rc).sum(-1)
    return rss, np.maximum(rss[:, None] - rc * rc * m / (m - 1), 0.0)


def _fit_models(n: np.ndarray, y: np.ndarray, t_phase: float) -> dict[str, np.ndarray]:
    """Geometric and power-law fits of y on n, full (index 0) and leave-one-out (index 1 + i)."""
    m = y.size
    cols = np.arange(m)
    # geometric: free straight line (any rate) or accumulated geometric log(expm1(g (n + n1))) on the grid
    g_line, rss_line, g_line_loo, rss_line_loo = _ols_loo(n[None, :], y)
    shapes, kap, n1 = _geo_shapes(n, t_phase)
    rss_s, rss_s_loo = _intercept_only(shapes, y)
    js, js_loo = int(np.argmin(rss_s)), np.argmin(rss_s_loo, axis=0)
    tp = max(t_phase, 1.0)
    k_full = float(g_line[0] * tp) if rss_line[0] <= rss_s[js] else float(kap[js])
    rss_g = min(float(rss_line[0]), float(rss_s[js]))
    use_line = rss_line_loo[0] <= rss_s_loo[js_loo, cols]
    k_loo = np.where(use_line, g_line_loo[0] * tp, kap[js_loo])
    rss_g_loo = np.where(use_line, rss_line_loo[0], rss_s_loo[js_loo, cols])
    # power law (n + n0)^p on the n0 grid, free p and p <= 1
    n0 = _offsets(n, t_phase)
    X = np.log(n[None, :] + n0[:, None])                        # [K, m]
    p, rss_p, p_loo, rss_p_loo = _ols_loo(X, y)
    rss1, rss1_loo = _intercept_only(X, y)                      # p fixed at 1
    rss_c = np.where(p <= 1.0, rss_p, rss1)
    rss_c_loo = np.where(p_loo <= 1.0, rss_p_loo, rss1_loo)
    kb = int(np.argmin(rss_p))
    kb_loo = np.argmin(rss_p_loo, axis=0)
    return {
        "kappa": np.concatenate([[k_full], k_loo]),
        "rss_g": np.concatenate([[rss_g], rss_g_loo]),
        "line": np.concatenate([[rss_line[0] <= rss_s[js]], use_line]),
        "n1": np.concatenate([[n1[js]], n1[js_loo]]),
        "p": np.concatenate([[p[kb]], p_loo[kb_loo, cols]]),
        "rss_p": np.concatenate([[rss_p[kb]], rss_p_loo[kb_loo, cols]]),
        "rss_c": np.concatenate([[rss_c.min()], rss_c_loo.min(0)]),
        "m": np.concatenate([[m], np.full(m, m - 1)]),
        "n0": np.concatenate([[n0[kb]], n0[kb_loo]]),
    }


def _decide(f: dict[str, np.ndarray], t_phase: float, kappa_exp: float, superlinear_p: float) -> np.ndarray:
    """Rule 4 of the module docstring, vectorised over the full fit and its leave-one-out fits."""
    kappa = f["kappa"]
    floor = RSS_FLOOR * f["m"]
    expo = (kappa >= kappa_exp) & ((f["rss_g"] <= f["rss_p"] + floor) | (f["p"] >= P_EXP))
    dof = f["m"] - 3
    F = (f["rss_c"] - f["rss_p"]) / np.maximum(f["rss_p"], floor) * np.maximum(dof, 1)
    crit = np.array([_f_crit(int(d)) for d in dof])
    sup = ~expo & (f["p"] >= superlinear_p) & (F >= crit)
    return np.where(expo, "exponential", np.where(sup, "superlinear", "linear"))


def _running_median3(y: np.ndarray) -> np.ndarray:
    """Running median of 3 with Tukey's end-point rule (no single point, end points included, sets the peak)."""
    s = y.copy()
    if y.size >= 3:
        s[1:-1] = np.median(np.stack([y[:-2], y[1:-1], y[2:]]), axis=0)
    if y.size >= 4:
        s[0] = np.median([y[0], s[1], 3 * s[1] - 2 * s[2]])
        s[-1] = np.median([y[-1], s[-2], 3 * s[-2] - 2 * s[-3]])
    return s


def _jumps(n: np.ndarray, y: np.ndarray) -> list[int]:
    """Isolated one-point jumps of log E by >= JUMP_LOG: spikes (up then down, or down then up) and a last step
    that rises JUMP_LOG more than the step before."""
    out: list[int] = []
    if y.size < 3:
        return out
    d = np.diff(y)
    for i in range(1, d.size):
        if (d[i - 1] >= JUMP_LOG and d[i] <= -JUMP_LOG) or (d[i - 1] <= -JUMP_LOG and d[i] >= JUMP_LOG):
            out.append(int(n[i]))
    if d[-1] >= JUMP_LOG and d[-1] - max(float(d[-2]), 0.0) >= JUMP_LOG:
        out.append(int(n[-1]))
    return out


def _classify_series(E: np.ndarray, kappa_exp: float, superlinear_p: float) -> tuple[str, dict[str, Any]]:
    """The rule (module docstring) on one non-negative series (inf allowed); returns label and fit details."""
    flags: list[str] = []
    fit: dict[str, Any] = {"flags": flags, "kappa": 0.0, "rho": 1.0, "power": float("nan"), "length": int(E.size)}
    inf = np.isinf(E)
    if inf.any():
        flags.append("overflow")
        cut = int(np.argmax(inf))
        E = E[: cut + 1]
        fit["overflow_at"] = cut
    finite = E[np.isfinite(E)]
    top = float(finite.max()) if finite.size else float("inf")
    if top <= 0.0 and not inf.any():
        flags.append("all zero")
        return "linear", fit
    with np.errstate(divide="ignore"):
        y_all = np.where(np.isinf(E), LOG_MAX, np.log(np.where(E > 0, E, 1.0)))
    keep = E > 0
    n = np.arange(E.size, dtype=np.float64)[keep]
    y = y_all[keep]
    if y.size >= 3 and (y[1] - y[0]) - max(float(y[2] - y[1]), 0.0) >= JUMP_LOG:
        flags.append("start-up jump")
        n, y = n[1:], y[1:]
    jumps = _jumps(n, y)
    if jumps:
        flags.append("single-point jump (n=" + ",".join(map(str, jumps)) + ")")
    s = _running_median3(y)
    peak = int(np.argmax(s)) if y.size else 0
    truncated = y.size > 0 and s[-1] <= s[peak] - TAIL_DROP
    if truncated:
        n, y, s = n[: peak + 1], y[: peak + 1], s[: peak + 1]
    if y.size:
        top = int(np.argmax(s))
        onset = int(np.nonzero(s[: top + 1] <= float(np.min(s[: top + 1])) + ONSET_LOG)[0][-1])
        if 0 < onset < top:   # a flat (or decaying) prefix: its log-slope is at most ONSET_SLOPE x that after it
            before = (s[onset] - s[0]) / (n[onset] - n[0])
            after = (s[top] - s[onset]) / (n[top] - n[onset])
            onset = onset if before <= ONSET_SLOPE * after else 0
        if 0 < onset < top:
            flags.append(f"onset at n={int(n[onset])}")
            n, y = n[onset:], y[onset:]
    fit.update(points=int(y.size), phase=(int(n[0]), int(n[-1])) if y.size else None, truncated=bool(truncated))
    if y.size < MIN_POINTS:
        if truncated:
            flags.append("no growth phase (early peak)")
            return ("inconclusive" if jumps else "linear"), fit
        flags.append("too few points")
        return "inconclusive", fit
    t_phase = float(n[-1] - n[0])
    f = _fit_models(n, y, t_phase)
    labels = _decide(f, t_phase, kappa_exp, superlinear_p)
    label = str(labels[0])
    kappa = float(f["kappa"][0])
    fit.update(kappa=kappa, rho=float(np.exp(min(kappa / max(t_phase, 1.0), LOG_MAX))), n1=float(f["n1"][0]),
               geo_model="straight" if bool(f["line"][0]) else "accumulated", power=float(f["p"][0]),
               n0=float(f["n0"][0]),
               T_phase=t_phase, rss_geo=float(f["rss_g"][0]), rss_pow=float(f["rss_p"][0]),
               rss_pow_le1=float(f["rss_c"][0]), label_full=label)
    sensitive = n[labels[1:] != label]
    if sensitive.size:
        flags.append("single-point sensitive (n=" + ",".join(str(int(v)) for v in sensitive[:10])
                     + (",..." if sensitive.size > 10 else "") + ")")
        label = "inconclusive"
    if jumps:
        label = "inconclusive"
    if label != "exponential" and KAPPA_FLAG <= kappa < kappa_exp and fit["rss_geo"] <= fit["rss_pow"]:
        flags.append("not detectable at this T")
    return label, fit


def classify(errors, local_errors=None, dsigmas=None, *, kappa_exp: float = KAPPA_EXP,
             superlinear_p: float = SUPERLINEAR_P, r_linear: float = R_LINEAR) -> GrowthResult:
    """Classify the per-step propagated error E_n (1-D, index = steps taken): the rule of the module docstring.

    The label is decided on E.  `local_errors` (eta_m) with `dsigmas` (dsig_m) add the diagnostic ratio
    R_n (`label_R`, `fit["R_max"]`, `R`); they never change `label`.
    """
    E = _series(errors, "errors")
    require(E.size >= 2, f"need at least 2 error values, got {E.size}")
    require(not bool(np.any(np.isnan(E))), "errors contain NaN: cannot classify (a NaN is not an overflow)")
    require(bool(np.all(E >= 0)), "errors must be >= 0")
    label_E, fit_E = _classify_series(E, kappa_exp, superlinear_p)
    fit = dict(fit_E)
    label_R: str | None = None
    R = None
    if local_errors is not None:
        require(dsigmas is not None, "local_errors needs dsigmas")
        R = ratio_series(E, local_errors, dsigmas)
        Rc = np.where(np.isnan(R), 0.0, R)
        r_max = float(np.max(Rc))
        if r_max <= r_linear:
            label_R, fit_R = "linear", {}
        else:
            label_R, fit_R = _classify_series(Rc, kappa_exp, superlinear_p)
        fit.update(R_max=r_max, label_R=label_R, fit_R=fit_R)
    return GrowthResult(label_E, float(fit_E["rho"]), float(fit_E["kappa"]), "E", label_E, label_R, fit, fit_E, R,
                        float(fit_E["power"]), list(fit_E["flags"]))


# synthetic curves and measured error rates live in growth_synthetic (re-exported for the public API)
from .growth_synthetic import (  # noqa: E402
    GEOMETRIC_KINDS,
    LINEAR_KINDS,
    SUPERLINEAR_KINDS,
    measure_error_rates,
    synthetic_curve,
)
