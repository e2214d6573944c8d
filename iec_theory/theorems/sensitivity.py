"""Planted sampler defects and which theorem checks catch them (THEORY.md section 4, last paragraph).

Every theorem check must be able to fail.  `planted(defect)` is a context manager that plants one defect in
the SAMPLER only (the theorem code keeps the declared coefficients and relaxations), `sensitivity_table`
runs every theorem on a fixed set of instances under every defect and reports which checks report
"violated".  The defects:

- ``correction_at_s``: the IEC correction evaluates the network at the next time s instead of t;
- ``one_minus_lambda``: the relaxation lambda_k is replaced by 1 - lambda_k;
- ``b_plus_5pct`` / ``b_minus_5pct``: the eps coefficient b of every step off by +5 % / -5 %;
- ``a_plus_5pct``: the state coefficient a of every step off by +5 %.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

from .instances import ToyInstance

__all__ = ["DEFECTS", "SENSITIVITY_INSTANCES", "planted", "sensitivity_table"]

DEFECTS = ("correction_at_s", "one_minus_lambda", "b_plus_5pct", "b_minus_5pct", "a_plus_5pct")

# plain and IEC steps, mild and stiff efficient models, eta 0 and 1, converged and one-step corrections
SENSITIVITY_INSTANCES = (
    ToyInstance(model="gaussian", dim=4, T=20, perturbation="bias", magnitude=1e-2, iec="relaxed", K=8, lam=0.5,
                every=2, delta_T=1e-2),
    ToyInstance(model="gaussian", dim=4, T=20, perturbation="scale", magnitude=9.0, delta_T=1e-3),
    ToyInstance(model="gaussian", dim=4, T=20, perturbation="scale", magnitude=9.0, iec="relaxed", K=6, lam=0.06),
    ToyInstance(model="gaussian_full", dim=6, T=15, eta=1.0, perturbation="monotone", magnitude=1e-2, iec="relaxed",
                K=3, lam=0.8, every=2, delta_T=1e-3),
    ToyInstance(model="gaussian", dim=3, T=10, perturbation="scale", magnitude=0.5, iec="official_ldm", delta_T=1e-2),
)


@contextlib.contextmanager
def planted(defect: str) -> Iterator[None]:
    """Plant one defect in iec_theory.sampler for the duration of the block (module docstring)."""
    from .. import sampler as S

    if defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; choose one of {DEFECTS}")
    saved = {"step_coefficients": S.step_coefficients, "iec_step": S.iec_step, "evaluate": S.evaluate}
    try:
        if defect in ("b_plus_5pct", "b_minus_5pct", "a_plus_5pct"):
            field, f = {"b_plus_5pct": ("b", 1.05), "b_minus_5pct": ("b", 0.95), "a_plus_5pct": ("a", 1.05)}[defect]
            orig = saved["step_coefficients"]

            def coeffs(schedule: Any, t: int, s: int, eta: float = 0.0):
                k = orig(schedule, t, s, eta)
                return dataclasses.replace(k, **{field: getattr(k, field) * f})

            S.step_coefficients = coeffs
        elif defect == "correction_at_s":
            orig_step = saved["iec_step"]

            def iec_step(eps_model, k, x_t, eps_t, z, iec, noise, step_index, record, clip_x0=None,
                         check_finite=True):
                inner = S.evaluate

                def at_s(model, x, t, cf=True):
                    return inner(model, x, max(k.s, 0) if t == k.t and x is not x_t else t, cf)

                S.evaluate = at_s
                try:
                    return orig_step(eps_model, k, x_t, eps_t, z, iec, noise, step_index, record, clip_x0,
                                     check_finite)
                finally:
                    S.evaluate = inner

            S.iec_step = iec_step
        elif defect == "one_minus_lambda":
            orig_step = saved["iec_step"]

            def iec_step(eps_model, k, x_t, eps_t, z, iec, noise, step_index, record, clip_x0=None,
                         check_finite=True):
                bad = copy.copy(iec)   # bypass validation: 1 - lambda may be 0 (that is the defect)
                object.__setattr__(bad, "lambdas", tuple(1.0 - v for v in iec.lambdas))
                return orig_step(eps_model, k, x_t, eps_t, z, bad, noise, step_index, record, clip_x0, check_finite)

            S.iec_step = iec_step
        yield
    finally:
        for name, fn in saved.items():
            setattr(S, name, fn)


def sensitivity_table(instances: tuple[ToyInstance, ...] = SENSITIVITY_INSTANCES,
                      defects: tuple[str, ...] = DEFECTS) -> dict[str, Any]:
    """{defect: {theorem: number of instances reporting 'violated'}} plus the clean baseline (must be all 0)."""
    from . import THEOREMS

    table: dict[str, dict[str, int]] = {}
    for defect in ("none",) + tuple(defects):
        row = {name: 0 for name in THEOREMS}
        ctx = planted(defect) if defect != "none" else contextlib.nullcontext()
        with ctx:   # T3 re-runs the sampler's own step code: the checks run with the defect planted too
            for inst in instances:
                run = inst.run()
                for name, th in THEOREMS.items():
                    row[name] += th.check(run).status == "violated"
        table[defect] = row
    return {"instances": [i.describe() for i in instances], "table": table}
