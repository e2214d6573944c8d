"""Growth classifier (THEORY.md section 6): published thresholds and measured error rates."""

from __future__ import annotations

import numpy as np
import pytest

from iec_theory import growth
from iec_theory.growth import classify, measure_error_rates, ratio_series


def test_classifier_error_rates_on_synthetic_curves() -> None:
    """FP <= 2 % on at-most-linear curves, FN <= 5 % on geometric curves (kappa in [4, 20]), noise <= 20 %."""
    r = measure_error_rates(n_curves=300, seed=0)
    print(f"\nclassifier: FP {r['fp_rate']:.3f}, FN {r['fn_rate']:.3f}, null labels {r['null_labels']}, "
          f"alt labels {r['alt_labels']}")
    assert r["fp_rate"] <= 0.02, r["false_positives"]
    assert r["fn_rate"] <= 0.05


@pytest.mark.parametrize("curve", [
    np.zeros(30), np.ones(30), np.arange(30.0), 5 * np.exp(-np.arange(30) / 4.0) + 0.1, np.sqrt(np.arange(30.0) + 1),
    1 - np.exp(-(np.arange(50) + 1) / 10.0)])
def test_at_most_linear_curves_are_linear(curve: np.ndarray) -> None:
    assert classify(curve).label == "linear"


@pytest.mark.parametrize("rho", [1.2, 1.5, 3.0])
def test_geometric_curves_are_exponential(rho: float) -> None:
    n = np.arange(40)
    res = classify((rho**n - 1) / (rho - 1) + 0.01)
    assert res.label == "exponential"
    assert abs(res.rho - rho) / rho < 0.05


def test_threshold_constants_are_published() -> None:
    for name in ("KAPPA_EXP", "KAPPA_LIN", "FIT_RATIO", "LIN_RATIO", "R_LINEAR", "BAD_LINEAR_RMS", "GROWTH_FLAT"):
        assert name in growth.__doc__ or name in (growth.classify.__doc__ or "")
        assert isinstance(getattr(growth, name), float)


def test_ratio_series_and_local_error_rule() -> None:
    E = np.array([0.0, 1.0, 2.0, 3.0])
    R = ratio_series(E, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert np.allclose(R, [0.0, 1.0, 1.0, 1.0])
    res = classify(E, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert res.label == "linear" and res.series == "R"
    # amplified far beyond the injected error but not geometric in n: never linear
    E2 = np.concatenate([np.full(20, 1e-6), [1e-3, 1.0]])
    res2 = classify(E2, np.full(21, 1e-6), np.ones(21))
    assert res2.label != "linear"


def test_bad_input_rejected() -> None:
    from iec_theory.errors import ConfigError

    with pytest.raises(ConfigError):
        classify([1.0])
    with pytest.raises(ConfigError):
        classify([1.0, -1.0, 2.0])
    with pytest.raises(ConfigError):
        classify([0.0, 1.0, 2.0], [1.0], [1.0])
