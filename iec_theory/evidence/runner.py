"""Run one setting (reference model, efficient model, schedule) through the sampler and collect S1-S5 per step.

Three runs of `iec_theory.sampler.sample` from the same x_T, all plain DDIM at eta = 0 except the third:
(1) the reference (exact / FP model) gives x_t; (2) the efficient model, wrapped in a `Probe`, gives the
perturbed states and, at the first evaluation of each step, the per-step analysis (`perstep.analyse_step`)
with the model in exactly the sampler's state; (3) the efficient model with IEC (paper form, tol = 0) gives
the S5 quantities at its corrected steps (`perstep.s5_step`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..ddim import step_coefficients
from ..iec import IECConfig
from ..sampler import sample
from ..schedules import Schedule
from .models import Probe, pure_fn
from .perstep import LinalgPlan, StepInputs, analyse_step, s5_step

__all__ = ["SettingResult", "run_setting"]


@dataclass
class SettingResult:
    """Per-step records of one setting and its trajectories' summary numbers."""

    name: str
    timesteps: list[int]
    steps: list[dict]                      # one dict per step (analysis), index-aligned with timesteps
    s5: list[dict]
    delta_plain: list[float]               # ||delta|| after each step, plain efficient run (x coordinates)
    delta_plain_xbar: list[float]
    delta_iec: list[float]
    s2: dict = field(default_factory=dict)
    growth: dict = field(default_factory=dict)
    jacobian_meaning: str = ""
    seconds: float = 0.0


def _norm(v: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(v.double()))


def run_setting(name: str, ref_model: Any, make_eff: Callable[[], Any], schedule: Schedule, x_T: torch.Tensor,
                timesteps: Sequence[int], probe_steps: Sequence[int], plan: LinalgPlan, iec: IECConfig | None,
                s2: bool, linearize: Callable | None = None, log: Callable[[str], None] = lambda s: None,
                sweep: bool = False, inject_step: int = 0) -> SettingResult:
    """Analyse one setting; make_eff() returns a fresh efficient model (stateful caches need a new one per run).

    probe_steps get the full linear algebra (S3, S4); with s2 every step runs the S2 recursion (and S1); with
    sweep every step gets a cheap Ritz estimate of ||A + B J||. inject_step: the last step at which the
    growth run uses eps~ (0; 1 for a cache whose step 0 is a refresh and injects nothing).
    """
    import time

    t0 = time.perf_counter()
    ts = list(timesteps)
    n = len(ts)
    probe = set(int(i) for i in probe_steps)
    with torch.no_grad():
        ref = sample(ref_model, schedule, x_T, ts, eta=0.0)
    xs = ref.xs
    steps: list[dict] = [dict() for _ in range(n)]
    dhat = [torch.zeros_like(x_T)] if s2 else None
    meaning: list[str] = []
    extra = {} if linearize is None else {"linearize": linearize}

    def hook(i: int, t: int, x: torch.Tensor, model: Any) -> None:
        s = ts[i + 1] if i + 1 < n else -1
        k = step_coefficients(schedule, t, s, 0.0)
        f_eff, what = pure_fn(model, i, t)
        f_ref, _ = pure_fn(ref_model, i, t)
        meaning.append(what)
        inp = StepInputs(i, k, xs[i], xs[i + 1], x.detach(), f_ref, f_eff, **extra)
        full = i in probe
        if full or s2 or sweep:
            rec = analyse_step(inp, full, plan, dhat[-1] if dhat is not None else None, sweep=sweep)
        else:
            rec = {"index": i, "t": t}
        if dhat is not None:
            dhat.append(rec.pop("dhat_next"))
        rec["jacobian"] = what
        steps[i] = rec
        if full:
            log(f"  {name}: step {i} (t={t}) ||A+BJ||={rec.get('norm_x', float('nan')):.4f} "
                f"L(0.5)={rec['contraction_L'].get('0.5', float('nan')):.4f}")

    eff = make_eff()
    with torch.no_grad():
        pert = sample(Probe(eff, hook), schedule, x_T, ts, eta=0.0)
        # measured growth of one real injected error: eps~ at the first step only, the reference model after
        first = sample(_FirstStepOnly(make_eff(), ref_model, inject_step), schedule, x_T, ts, eta=0.0)
    d_first = [_norm(first.xs[i] - xs[i]) for i in range(n + 1)]
    abar = [schedule.abar(t) for t in ts + [-1]]
    j = inject_step + 1
    if d_first[j] == 0.0:
        # nothing injected (the efficient model is the reference): perturb x_T by 1e-3 per coordinate instead
        g = torch.Generator().manual_seed(4242)
        with torch.no_grad():
            first = sample(ref_model, schedule, x_T + 1e-3 * torch.randn(x_T.shape, generator=g, dtype=x_T.dtype),
                           ts, eta=0.0)
        d_first = [_norm(first.xs[i] - xs[i]) for i in range(n + 1)]
        inject_step, j = -1, 0
        abar = [schedule.abar(ts[0])] + abar[1:]
    growth = {"inject_step": inject_step, "injected_error": d_first[j], "final_error": d_first[-1],
              "flow_stretch_x": math.sqrt(abar[-1] / abar[j]),
              "growth_x": d_first[-1] / max(d_first[j], 1e-300),
              "growth_xbar": (d_first[-1] / math.sqrt(abar[-1])) / max(d_first[j] / math.sqrt(abar[j]), 1e-300),
              "curve_x": d_first}
    delta = [_norm(pert.xs[i] - xs[i]) for i in range(n + 1)]
    delta_xbar = [d / math.sqrt(schedule.abar(t)) for d, t in zip(delta, ts + [-1])]
    s2_out: dict = {}
    if dhat is not None:
        d0 = pert.xs[-1] - xs[-1]
        s2_out = {"predicted_norm": _norm(dhat[-1]), "measured_norm": _norm(d0),
                  "rel_error_correct_order": _norm(dhat[-1] - d0) / max(_norm(d0), 1e-300)}
    s5: list[dict] = []
    delta_iec: list[float] = []
    if iec is not None:
        eff2 = make_eff()
        sel_fn = getattr(eff2, "refresh_selection", None)
        cfg = IECConfig(iec.K, iec.lambdas, 0.0, "shared", sel_fn() if sel_fn is not None else iec.select,
                        iec.name)
        selected = cfg.select.resolve(ts)

        def hook5(i: int, t: int, x: torch.Tensor, model: Any) -> None:
            if i not in selected or i not in probe:
                return
            s = ts[i + 1] if i + 1 < n else -1
            k = step_coefficients(schedule, t, s, 0.0)
            f_eff, _ = pure_fn(model, i, t)
            f_ref, _ = pure_fn(ref_model, i, t)
            L = steps[i].get("contraction_L", {}).get(str(cfg.lambdas[0]))
            with torch.no_grad():
                s5.append(s5_step(StepInputs(i, k, xs[i], xs[i + 1], x.detach(), f_ref, f_eff), cfg, L))

        run = sample(Probe(eff2, hook5), schedule, x_T, ts, eta=0.0, iec=cfg)
        delta_iec = [_norm(run.xs[i] - xs[i]) for i in range(n + 1)]
    return SettingResult(name, ts, steps, s5, delta, delta_xbar, delta_iec, s2_out, growth,
                         "; ".join(sorted(set(meaning))), time.perf_counter() - t0)


class _FirstStepOnly:
    """eps~ up to step `last` only, the reference model afterwards (propagation of one injected error)."""

    def __init__(self, eff: Any, ref: Any, last: int = 0):
        self.eff, self.ref, self.last, self.use_eff = eff, ref, int(last), True

    def begin_step(self, step_index: int, t: int) -> None:
        fn = getattr(self.eff, "begin_step", None)
        if fn is not None:
            fn(step_index, t)
        self.use_eff = int(step_index) <= self.last

    def __call__(self, x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return self.eff(x, tt) if self.use_eff else self.ref(x, tt)
