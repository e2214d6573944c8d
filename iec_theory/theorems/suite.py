"""The default toy suite of `iec verify`: a deterministic list of instances on which every theorem is checked.

Design (instance i of n): model cycles gaussian, gaussian_full, stiff (kappa 4..16), mixture (x_T on the saddle
plane every other time); perturbations cycle through deterministic certified ones (bias, scale, monotone,
non-monotone, adversarial) and the others (output quantization, iid noise, cache); IEC relaxed on every
other step (so plain steps for T1/T1m and IEC steps for T4/T5 occur in the same run), lambda in
[0.2, 1], K 1..5, shared noise; every 6th instance uses an official preset (alternating DDPM / LDM)
instead; T 5..60, d 1..32, eta alternating 0 / 1, spectra 4..6 decades, magnitudes 1e-4..1e-1,
initial perturbation 0 or 1e-3 alternating.  With n >= 160 every theorem is applicable on >= 100 instances.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import THEOREMS
from .instances import ToyInstance

DEFAULT_INSTANCES = 160
MODELS = ("gaussian", "gaussian_full", "stiff", "mixture")
PERTS = ("bias", "scale", "monotone", "nonmonotone", "bias", "monotone", "quant", "iid_noise", "adversarial", "cache",
         "scale", "nonmonotone")


def default_suite(n: int = DEFAULT_INSTANCES, seed: int = 0) -> list[ToyInstance]:
    """The first n instances of `iter_suite(seed)`."""
    return list(itertools.islice(iter_suite(seed), n))


def iter_suite(seed: int = 0) -> Iterator[ToyInstance]:
    """The suite's instances, in order and without end (every prefix is `default_suite` of its length)."""
    rng = np.random.default_rng(seed)
    for i in itertools.count():
        model = MODELS[i % len(MODELS)]
        pert = PERTS[(i // len(MODELS) + i) % len(PERTS)]
        if model == "mixture" and pert == "adversarial":
            pert = "bias"
        T = int(rng.integers(5, 61)) if model != "stiff" else int(rng.integers(5, 31))
        iec, K, lam = "relaxed", int(rng.integers(1, 6)), float(rng.uniform(0.2, 1.0))
        if i % 6 == 5:
            iec = "official_ddpm" if (i // 6) % 2 == 0 else "official_ldm"
        yield ToyInstance(
            model=model, dim=int(rng.integers(1, 33 if model != "mixture" else 9)), T=T,
            decades=float(rng.uniform(4.0, 6.0)), seed=int(seed * 100_003 + i), eta=float(i % 2),
            perturbation=pert, magnitude=float(10 ** rng.uniform(-4, -1)), iec=iec, K=K, lam=lam, noise="shared",
            every=2, kappa=float(rng.uniform(4, 16)) if model == "stiff" else 1.0,
            x_T="saddle" if (model == "mixture" and (i // 4) % 2 == 1) else "random",
            delta_T=1e-3 if (i // 2) % 2 else 0.0)


def _check_instance(inst: ToyInstance, names: tuple[str, ...]) -> list[tuple[str, Any]]:
    """(theorem name, TheoremResult) for one instance (a pure function of the instance: parallel-safe)."""
    run = inst.run()
    return [(name, THEOREMS[name].check(run)) for name in names]


def _results(instances: list[ToyInstance], theorems: dict, workers: int,
             names_per_instance: list[tuple[str, ...]] | None = None) -> Any:
    """Yield (instance, results) in order; `workers` > 1 uses a process pool (same results, any worker count).

    `names_per_instance[j]`: the theorems checked on instance j (default: all of `theorems`)."""
    names = names_per_instance or [tuple(theorems)] * len(instances)
    if workers <= 1 or any(THEOREMS.get(n) is not th for n, th in theorems.items()):
        for inst, want in zip(instances, names):
            run = inst.run() if want else None
            yield inst, [(n, theorems[n].check(run)) for n in want]
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as ex:
        yield from zip(instances, ex.map(_check_instance, instances, names, chunksize=4))


class _Tally:
    """Per-theorem counts over instances: checked (holds / violated), vacuous, hypotheses not met, margins."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.per = {name: {"instances": 0, "holds": 0, "holds_certified": 0, "holds_estimated": 0, "violated": 0,
                           "not_met": 0, "vacuous": 0, "worst_margin": float("inf"),
                           "tightness": [], "worst_instance": None} for name in names}

    def checked(self, name: str) -> int:
        """Instances on which `name` was checked and informative (hypotheses met, not vacuous)."""
        return self.per[name]["instances"]

    def add(self, inst: ToyInstance, name: str, res: Any) -> None:
        p = self.per[name]
        if res.status == "hypotheses not met":
            p["not_met"] += 1
            return
        if res.status == "vacuous":      # a lower bound <= 0 everywhere: no evidence, not counted as holds
            p["vacuous"] += 1
            return
        p["instances"] += 1
        p["holds"] += res.status == "holds"
        if res.status == "holds":
            key = "holds_certified" if res.summary()["certified"] else "holds_estimated"
            p[key] += 1
        p["violated"] += res.status == "violated"
        if res.worst_margin < p["worst_margin"]:
            p["worst_margin"] = res.worst_margin
            p["worst_instance"] = inst.describe()
        t = res.tightness[np.isfinite(res.tightness)]
        p["tightness"].extend(float(v) for v in t)

    def summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, p in self.per.items():
            checked = p["instances"] + p["vacuous"]
            t = np.array(p["tightness"])
            q = {k: v for k, v in p.items() if k != "tightness"}
            out[name] = {**q, "vacuous_share": p["vacuous"] / checked if checked else float("nan"),
                         "median_tightness": float(np.median(t)) if t.size else float("nan"),
                         "p90_tightness": float(np.quantile(t, 0.9)) if t.size else float("nan"),
                         "max_tightness": float(t.max()) if t.size else float("nan"), "steps": int(t.size),
                         "worst_margin": p["worst_margin"] if p["instances"] else float("nan")}
        return out


def run_suite(instances: list[ToyInstance], theorems: dict | None = None, progress: Any = None,
              workers: int = 1) -> dict[str, Any]:
    """Check every theorem on every instance; per-theorem summary and per-instance records.

    Instances whose status is "vacuous" (a lower bound <= 0 everywhere) are counted apart from the checked
    ones; "holds" is split into certified constants and estimated (sampled mixture) constants."""
    theorems = theorems or THEOREMS
    tally = _Tally(tuple(theorems))
    records = []
    t0 = time.time()
    for j, (inst, results) in enumerate(_results(instances, theorems, workers)):
        rec = {"instance": inst.describe(), "results": {}}
        for name, res in results:
            rec["results"][name] = res.summary()
            tally.add(inst, name, res)
        records.append(rec)
        if progress is not None:
            progress(j + 1, len(instances))
    return {"summary": tally.summary(), "records": records, "seconds": time.time() - t0}


BATCH = 512


def run_per_theorem(per_theorem: int, seed: int = 0, theorems: dict | None = None, progress: Any = None,
                    workers: int = 1, max_instances: int | None = None, batch: int = BATCH) -> dict[str, Any]:
    """Extend the suite (`iter_suite(seed)`) until every theorem has been checked on `per_theorem` instances.

    Each theorem is judged on the FIRST `per_theorem` instances of the sequence on which its hypotheses are met
    and its check is informative (vacuous instances, T6's lower bound <= 0 everywhere, are counted apart and do
    not fill the quota); a theorem's result is therefore the same whichever other theorems run.
    An instance is checked only for the theorems still short when its batch of `batch`
    instances starts, and results past a theorem's quota are dropped, so the summary depends neither on the
    worker count nor on the batch size (only `instances_run` does).  Stops at `max_instances` (default
    50 x per_theorem): `complete` says whether every quota was met and `short` lists the theorems that were not.
    `progress(checked_min, per_theorem)` after each batch.
    No per-instance records (they would run to hundreds of MB); `instances_run` counts the instances drawn.
    """
    theorems = theorems or THEOREMS
    cap = max_instances if max_instances is not None else 50 * per_theorem
    tally = _Tally(tuple(theorems))
    source = iter_suite(seed)
    drawn = 0
    t0 = time.time()
    while drawn < cap:
        short = tuple(n for n in theorems if tally.checked(n) < per_theorem)
        if not short:
            break
        chunk = list(itertools.islice(source, min(batch, cap - drawn)))
        drawn += len(chunk)
        for inst, results in _results(chunk, theorems, workers, [short] * len(chunk)):
            for name, res in results:
                if tally.checked(name) < per_theorem:
                    tally.add(inst, name, res)
        if progress is not None:
            progress(min(tally.checked(n) for n in theorems), per_theorem)
    short = [n for n in theorems if tally.checked(n) < per_theorem]
    return {"summary": tally.summary(), "instances_run": drawn, "complete": not short, "short": short,
            "per_theorem": per_theorem, "seconds": time.time() - t0}
