"""Stage 3, the runs: one sampling run per row and reference (records of every evaluation), local
errors along the run and along the reference, growth classification of the error curves."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from iec_theory.errors import require

from .spec import RealSpec


@dataclass
class _Run:
    traj: Any
    records: list
    wall_s: float
    cpu_s: float = 0.0


def _run(method: str, model: Any, spec: RealSpec, schedule: Any, x_T: torch.Tensor, iec: Any,
         nfe_target: int | None, noise_seed: int | None = None) -> _Run:
    """One sampling run of `model` from x_T (keyed noise from `noise_seed`, default the spec's seed), every
    evaluation recorded."""
    from iec_theory import sample
    from iec_theory.baselines import run_method
    from iec_theory.measure import Recorder
    from iec_theory.sampler import NoiseSource

    from .grids import timesteps_for, timesteps_with_steps

    rec = Recorder(model)
    rec.reset()
    noise = NoiseSource(seed=spec.seed if noise_seed is None else noise_seed, keyed=True)
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        if method == "ddim_matched":       # plain DDIM on a grid with exactly nfe_target steps, same spacing
            require(nfe_target is not None, "ddim_matched needs its NFE target")
            traj = sample(rec, schedule, x_T, timesteps_with_steps(schedule, int(nfe_target), spec.spacing),
                          spec.eta, None, noise=noise)
        else:                              # explicit grid: the distinct official timesteps for quad (grids.py)
            ts = timesteps_for(schedule, spec.T_requested or spec.T, spec.spacing)
            require(len(ts) == spec.T, f"sampler.T: the model's schedule gives {len(ts)} steps, the spec {spec.T}")
            traj = run_method(method, rec, schedule, x_T, ts, spec.eta, iec if method == "iec" else None, noise,
                              spec.spacing, nfe_target)
    return _Run(traj, list(rec.records), time.perf_counter() - t0, time.process_time() - c0)


def common_states(ts: list[int], ref_ts: list[int]) -> tuple[list[int], list[int]]:
    """State indices (in a run with timesteps ts, in a reference with ref_ts) of the states both visit, the final
    state (t = -1) included: the deployment error compares a row with FP DDIM there."""
    pos = {tm: k for k, tm in enumerate(list(ts) + [-1])}
    common = [(pos[tp], k) for k, tp in enumerate(list(ref_ts) + [-1]) if tp in pos]
    return [a for a, _ in common], [b for _, b in common]


def _first_evals(records: list) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for step, _t, x, y in records:
        if step is not None and step not in out:
            out[step] = (x, y)
    return out


def _per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1).double(), dim=1).cpu()


def _local_errors(records: list, fp: Any, n: int, D: int, is_fp: bool):
    """eta [n], eta_max [n], eta_per_sample [n, D] (first evaluation) and the FP eps at each first point,
    on the first D images of the batch (the diagnostic samples).

    Like iec_theory.measure.local_errors, but keeps the per-sample values and the FP outputs at the first
    evaluation points (reused for the Rayleigh quotients). For the FP model itself everything is zero.
    """
    from iec_theory.sampler import evaluate

    eta = np.zeros(n)
    eta_max = np.zeros(n)
    eta_ps = np.zeros((n, D))
    fp_first: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    for step, t, x, out in records:
        if step is None:
            continue
        x, out = x[:D], out[:D]
        if is_fp:
            ref = out
        else:
            with torch.no_grad():
                ref = evaluate(fp, x, t, check_finite=False)
        e = _per_sample_norm(out - ref)
        if step not in seen:
            seen.add(step)
            eta[step] = float(e.mean())
            eta_ps[step] = e.numpy()
            fp_first[step] = ref
        eta_max[step] = max(eta_max[step], float(e.mean()))
    return eta, eta_max, eta_ps, fp_first


def _eta_ref(model: Any, ref: _Run, n: int, is_fp: bool, D: int | None = None) -> np.ndarray:
    """Per-sample local errors [n, D] at the reference states of the first D images: a fresh run of the
    efficient model along the reference (begin_step as in sampling, one evaluation per step), FP outputs
    taken from the reference's records."""
    from iec_theory.sampler import evaluate

    first = _first_evals(ref.records)
    D = int(D if D is not None else first[0][0].shape[0])
    out = np.zeros((n, D))
    if is_fp:
        return out
    reset = getattr(model, "reset", None)
    if reset is not None:
        reset()
    begin = getattr(model, "begin_step", None)
    with torch.no_grad():
        for i, t in enumerate(ref.traj.timesteps[:n]):
            if begin is not None:
                begin(i, t)
            x, y_fp = first[i]
            out[i] = _per_sample_norm(evaluate(model, x[:D], t, False) - y_fp[:D]).numpy()
    if reset is not None:
        reset()
    return out


def _growth_by_batch(E_ps: np.ndarray, eta_ps: np.ndarray | None, ds: np.ndarray | None,
                     batches: int) -> dict[str, Any]:
    """Growth labels of G independent x_T batches: the diagnostic samples [D] split into G consecutive
    chunks (x_T is i.i.d., so the chunks are independent draws); each chunk's label from its mean curves
    (E [n+1], eta_ref [n]); ``share`` = fraction of batches per label."""
    D = E_ps.shape[1]
    chunks = np.array_split(np.arange(D), batches)
    labels = []
    for idx in chunks:
        g, _ = _classify(E_ps[:, idx].mean(1), None if eta_ps is None else eta_ps[:, idx].mean(1), ds)
        labels.append(g["label"])
    share = {lab: labels.count(lab) / len(labels) for lab in sorted(set(labels))}
    return {"batches": batches, "batch_sizes": [len(c) for c in chunks], "labels": labels, "share": share}


def _classify(E: np.ndarray, eta: np.ndarray | None, ds: np.ndarray | None) -> tuple[dict[str, Any], np.ndarray]:
    from iec_theory.growth import classify

    if not np.all(np.isfinite(E)):
        return {"label": "nonfinite"}, np.full(E.shape, np.nan)
    if float(np.max(E)) <= 0.0:
        return {"label": "zero", "label_E": "zero", "label_R": None, "rho": None, "kappa": None,
                "series": "E"}, np.zeros(E.shape)
    use_R = eta is not None and float(np.sum(eta)) > 0
    res = classify(E, eta, ds) if use_R else classify(E)
    R = res.R if res.R is not None else np.full(E.shape, np.nan)
    return {"label": res.label, "label_E": res.label_E, "label_R": res.label_R, "rho": float(res.rho),
            "kappa": float(res.kappa), "series": res.series,
            "R_max": float(res.fit.get("R_max", float("nan"))) if use_R else None}, R


def _dsigma(schedule: Any, ts: list[int], i: int, eta: float) -> float:
    from iec_theory.ddim import step_coefficients

    return step_coefficients(schedule, ts[i], ts[i + 1] if i + 1 < len(ts) else -1, eta).dsigma

