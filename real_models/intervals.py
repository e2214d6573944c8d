"""Bootstrap confidence intervals for FD and KID, the same-n real-data floor, and the no-ranking rule.

Bootstrap over the generated images (the reference statistics are held fixed: the CIFAR-10 test
mean/covariance for FD, the committed fixed set of test features for KID). Each of ``B`` replicates draws
n indices with replacement (``numpy.random.default_rng(seed)``) and recomputes the statistic ``s*``. The
interval is the *centred percentile* interval ``s + [q_lo, q_hi]`` with ``q`` the ``(1 - level)/2`` and
``(1 + level)/2`` empirical quantiles (``numpy.quantile``, linear interpolation) of ``s* - mean(s*)``: the
bootstrap supplies the spread and shape, the estimate the location. Reason: FD is biased upwards at
finite n and a resample (with duplicated images) is more biased still, so plain percentile intervals of FD
sit above the estimate (measured: at n = 64 the floor's FD was 4.4 with a plain percentile interval
[5.2, 9.0]). The interval is for the statistic *at this n* (the quantity the same-n floor is compared
with), not for the n -> infinity FD.

* FD: ``|mu_b - mu_r|^2 + tr C_b + tr C_r - 2 tr (S_r C_b S_r)^{1/2}``, ``S_r = C_r^{1/2}`` (computed once;
  same value as ``metrics.frechet_distance``), ``C_b`` the unbiased covariance of the resampled rows.
* KID: the unbiased MMD^2 with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3`` between ALL n
  generated rows and ALL m reference rows (no subsets: the point estimate is a single U-statistic).
  In a replicate with source multiplicities ``c``, the generated-generated term averages ``k`` over pairs
  of positions whose *source* rows differ (``(c^T K c - sum_k c_k^2 K_kk) / (n^2 - sum_k c_k^2)``), so
  duplicated rows do not add the ``k(x, x)`` bias; the cross term is ``c^T (K_xy 1/m) / n``.

The same-n floor: the same statistics and intervals for n real CIFAR-10 images (training set, when the
data is available, else a random n-subset of the committed test features: part of the reference set, so a
slightly optimistic floor; ``source`` says which). Two configurations whose intervals overlap are
``not distinguishable at n``: ``distinguishable`` is False and a report must not rank them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from iec_theory.errors import ConfigError

__all__ = ["BOOTSTRAP_METHOD", "bootstrap_fd_kid", "centred_interval", "distinguishable", "fd_from_moments",
           "indistinguishable_pairs", "percentile_interval", "poly_kernel"]

BOOTSTRAP_METHOD = ("centred percentile bootstrap over the generated images (estimate + quantiles of s* - mean s*; "
                    "B replicates, resampling with replacement, numpy default_rng(seed)); reference statistics held "
                    "fixed; KID replicates exclude pairs of copies of the same image")


def poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(x y^T / d + 1)^3`` (float64)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The empirical ``(1 - level)/2`` and ``(1 + level)/2`` quantiles (linear interpolation)."""
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    lo, hi = np.quantile(np.asarray(values, dtype=np.float64), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def centred_interval(estimate: float, replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """``estimate + percentile_interval(replicates - mean(replicates))`` (see the module doc)."""
    r = np.asarray(replicates, dtype=np.float64)
    lo, hi = percentile_interval(r - r.mean(), level)
    return float(estimate + lo), float(estimate + hi)


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _fd_with_root(mu: np.ndarray, cov: np.ndarray, mu_r: np.ndarray, tr_r: float, s_r: np.ndarray) -> float:
    inner = s_r @ cov @ s_r
    w = np.linalg.eigvalsh((inner + inner.T) / 2)
    d = mu - mu_r
    return max(float(d @ d + np.trace(cov) + tr_r - 2.0 * np.sqrt(np.clip(w, 0.0, None)).sum()), 0.0)


def fd_from_moments(mu: Any, cov: Any, ref_mean: Any, ref_cov: Any) -> float:
    """FD of N(mu, cov) to the reference, computed exactly as `bootstrap_fd_kid`'s point estimate (the square root
    taken of the reference covariance), so FD from merged moments and FD from the features agree to rounding."""
    c_r = np.asarray(ref_cov, dtype=np.float64)
    return _fd_with_root(np.asarray(mu, dtype=np.float64), np.asarray(cov, dtype=np.float64),
                         np.asarray(ref_mean, dtype=np.float64), float(np.trace(c_r)), _sqrt_psd(c_r))


def bootstrap_fd_kid(feats: Any, ref_mean: Any, ref_cov: Any, ref_kid_features: Any | None = None,
                     B: int = 200, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """FD (and KID when ``ref_kid_features`` is given) of ``feats`` [n, D] with percentile-bootstrap intervals.

    Returns ``{"n", "B", "level", "seed", "method", "FD", "FD_ci": [lo, hi], "FD_boot_std", "KID", "KID_ci",
    "KID_boot_std"}`` (KID keys only with reference KID features).
    """
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 3 or not np.isfinite(f).all():
        raise ConfigError(f"feats must be a finite [n >= 3, D] array, got shape {list(f.shape)}")
    mu_r, c_r = np.asarray(ref_mean, dtype=np.float64), np.asarray(ref_cov, dtype=np.float64)
    if mu_r.shape != (f.shape[1],) or c_r.shape != (f.shape[1], f.shape[1]):
        raise ConfigError(f"reference mean/cov must be [{f.shape[1]}] and [{f.shape[1]}, {f.shape[1]}], got "
                          f"{list(mu_r.shape)} and {list(c_r.shape)}")
    B = int(B)
    if B < 10:
        raise ConfigError(f"B must be >= 10 bootstrap replicates, got {B}")
    n = f.shape[0]
    s_r, tr_r = _sqrt_psd(c_r), float(np.trace(c_r))
    fd = _fd_with_root(f.mean(0), np.cov(f, rowvar=False), mu_r, tr_r, s_r)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(B, n))
    fd_b = np.array([_fd_with_root(f[i].mean(0), np.cov(f[i], rowvar=False), mu_r, tr_r, s_r) for i in idx])
    out: dict[str, Any] = {"n": n, "B": B, "level": level, "seed": seed, "method": BOOTSTRAP_METHOD, "FD": fd,
                           "FD_ci": list(centred_interval(fd, fd_b, level)), "FD_boot_std": float(fd_b.std(ddof=1))}
    if ref_kid_features is not None:
        r = np.asarray(ref_kid_features, dtype=np.float64)
        if r.ndim != 2 or r.shape[1] != f.shape[1] or r.shape[0] < 2:
            raise ConfigError(f"reference KID features must be [m >= 2, {f.shape[1]}], got {list(r.shape)}")
        m = r.shape[0]
        kxx = poly_kernel(f, f)
        kxy_rows = poly_kernel(f, r).mean(1)
        krr = poly_kernel(r, r)
        syy = (krr.sum() - np.trace(krr)) / (m * (m - 1))
        diag = np.diag(kxx)

        def mmd(c: np.ndarray) -> float:
            sq = float((c * c).sum())
            sxx = (float(c @ kxx @ c) - float((c * c) @ diag)) / (float(c.sum()) ** 2 - sq)
            return sxx + syy - 2.0 * float(c @ kxy_rows) / float(c.sum())

        kid_pt = mmd(np.ones(n))
        kid_b = np.array([mmd(np.bincount(i, minlength=n).astype(np.float64)) for i in idx])
        out.update(KID=kid_pt, KID_ci=list(centred_interval(kid_pt, kid_b, level)),
                   KID_boot_std=float(kid_b.std(ddof=1)), KID_reference_n=m)
    return out


def distinguishable(ci_a: Any, ci_b: Any) -> bool | None:
    """False when the intervals [lo, hi] overlap (not distinguishable: never rank), True when disjoint,
    None when either is missing."""
    if ci_a is None or ci_b is None or any(v is None for v in (*ci_a, *ci_b)):
        return None
    return bool(ci_a[1] < ci_b[0] or ci_b[1] < ci_a[0])


def indistinguishable_pairs(cis: dict[str, Any]) -> list[list[str]]:
    """Every pair of labels whose intervals overlap (label order as given)."""
    labels = list(cis)
    return [[a, b] for k, a in enumerate(labels) for b in labels[k + 1:]
            if distinguishable(cis[a], cis[b]) is False]
