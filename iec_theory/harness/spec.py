"""TOML experiment specs, validated completely before any work; every error names the field.

Layout (one file per experiment; see experiments/*.toml):

    kind = "toy"                        # optional; `iec run` hands kind = "real" specs to `iec real-eval`
    name = "stiff"                      # required, used for the results folder
    description = "..."
    seed = 0                            # x_T, noise, random model parts

    [model]                             # the exact model (a toy with exact answers)
    kind = "gaussian"                   # "gaussian" (random eigenbasis), "gaussian_diag", "mixture"
    dim = 8
    variances = [1.0, 1e-4]             # one value, `dim` values, or cycled to dim ...
    spectrum = {lo = 1e-4, hi = 1.0}    # ... or log-spaced from lo to hi (exclusive with variances)
    mean = 0.0                          # a number or `dim` numbers
    # mixture: weights = [..], means = [[..], ..] (K x dim), var = 0.05 (isotropic per component)

    [schedule]
    name = "linear"                     # linear | quad | cosine
    num_train_steps = 1000

    [sampler]
    T = 20
    eta = 0.0
    spacing = "uniform"                 # uniform | quad
    batch = 256                         # Monte Carlo samples for the paired runs

    [perturbation]                      # iec_theory.perturbations.make_perturbation table (kind = "none" ok)
    kind = "bias"
    magnitude = 0.01

    [[methods]]                         # one table per method (a results row each)
    name = "ddim"                       # ddim | iec | ddim_matched | heun | repeat
    perturbation = {kind = "cache", every = 5}   # optional: this method's own perturbation
    [[methods]]
    name = "iec"
    label = "iec-official"
    iec = {preset = "official_ddpm"}    # or K, lambda (number or list), tol, noise, select
    # select = {kind = "all" | "every" (n) | "indices" (steps) | "first" (m) | "last" (m) | "cache_refresh"}

    [metrics]
    exact_law = true                    # closed-form output law, W2 / KL (affine toys only)
    monte_carlo = true                  # paired runs: propagated / deployment / total error curves
    total = true                        # exact-flow reference (toys, eta = 0)

    [sweep]                             # `iec sweep` only
    grid = {"sampler.T" = [5, 10, 20], "perturbation.magnitude" = [0.01, 0.1]}
    workers = 2
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..baselines import METHODS
from ..checks import check_memory
from ..errors import ConfigError, require
from ..iec import IECConfig, StepSelection, check_K_memory
from ..perturbations import Cache, Compose, Perturbation, StepLocalized, make_perturbation
from ..schedules import Schedule

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

TOP_KEYS = {"kind", "name", "description", "seed", "model", "schedule", "sampler", "perturbation", "methods", "metrics",
            "sweep"}
MODEL_KEYS = {"kind", "dim", "variances", "spectrum", "mean", "rotate", "weights", "means", "var"}
SCHEDULE_KEYS = {"name", "num_train_steps"}
SAMPLER_KEYS = {"T", "eta", "spacing", "batch"}
METHOD_KEYS = {"name", "label", "iec", "nfe_target", "perturbation"}
IEC_KEYS = {"preset", "K", "lambda", "tol", "noise", "select"}
SELECT_KEYS = {"kind", "n", "m", "steps"}
METRIC_KEYS = {"exact_law", "monte_carlo", "total"}
SWEEP_KEYS = {"grid", "workers"}


def _unknown(table: dict, allowed: set[str], where: str) -> None:
    for k in table:
        if k not in allowed:
            raise ConfigError(f"{where}.{k}: unknown field; allowed: {sorted(allowed)}")


def _table(spec: dict, key: str, required: bool) -> dict:
    if key not in spec:
        require(not required, f"{key}: required table is missing")
        return {}
    require(isinstance(spec[key], dict), f"{key}: must be a table, got {type(spec[key]).__name__}")
    return spec[key]


def _int(v: Any, where: str, lo: int | None = None) -> int:
    require(isinstance(v, int) and not isinstance(v, bool), f"{where}: must be an integer, got {v!r}")
    require(lo is None or v >= lo, f"{where}: must be >= {lo}, got {v}")
    return int(v)


def _num(v: Any, where: str, lo: float | None = None, strict: bool = False) -> float:
    require(isinstance(v, (int, float)) and not isinstance(v, bool), f"{where}: must be a number, got {v!r}")
    f = float(v)
    require(math.isfinite(f), f"{where}: must be finite, got {v!r}")
    if lo is not None:
        require(f > lo if strict else f >= lo, f"{where}: must be {'>' if strict else '>='} {lo}, got {v}")
    return f


def _bool(v: Any, where: str) -> bool:
    require(isinstance(v, bool), f"{where}: must be true or false, got {v!r}")
    return v


def spec_hash(spec: dict) -> str:
    """sha256 of the canonical JSON of the spec (without the sweep table)."""
    body = {k: v for k, v in spec.items() if k != "sweep"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class MethodSpec:
    name: str
    label: str
    iec: IECConfig | None
    nfe_target: int | None = None
    perturbation: dict | None = None      # overrides the spec's [perturbation] for this method


@dataclass
class Spec:
    """A validated experiment spec with everything built except the models' state."""

    raw: dict
    name: str
    seed: int
    schedule: Schedule
    T: int
    eta: float
    spacing: str
    batch: int
    methods: list[MethodSpec]
    metrics: dict[str, bool]
    toy: Any = field(repr=False, default=None)
    path: str | None = None

    @property
    def hash(self) -> str:
        return spec_hash(self.raw)

    def efficient(self, method: MethodSpec | None = None) -> Any:
        """A fresh perturbed model (stateful wrappers must not be shared between runs); a method's own
        `perturbation` table overrides the spec's."""
        table = self.raw.get("perturbation") or None
        if method is not None and method.perturbation is not None:
            table = method.perturbation
        return make_perturbation(table, self.toy, seed=self.seed)


# ------------------------------------------------------------------------------------------------
def _build_model(m: dict, schedule: Schedule, seed: int) -> Any:
    from toy_models import GaussianMixtureToy, GaussianToy

    require("kind" in m, "model.kind: required (gaussian | gaussian_diag | mixture)")
    kind = m["kind"]
    require(kind in ("gaussian", "gaussian_diag", "mixture"),
            f"model.kind: unknown model {kind!r}; choose gaussian, gaussian_diag or mixture")
    require("dim" in m, "model.dim: required")
    d = _int(m["dim"], "model.dim", 1)
    mean_v = m.get("mean", 0.0)
    if isinstance(mean_v, list):
        require(len(mean_v) == d, f"model.mean: needs {d} numbers, got {len(mean_v)}")
        mean = torch.tensor([_num(v, "model.mean") for v in mean_v], dtype=torch.float64)
    else:
        mean = torch.full((d,), _num(mean_v, "model.mean"), dtype=torch.float64)
    if kind == "mixture":
        for k in ("variances", "spectrum", "rotate"):
            require(k not in m, f"model.{k}: not used by kind 'mixture' (use weights, means, var)")
        require("weights" in m and "means" in m, "model.weights / model.means: required for kind 'mixture'")
        w = [_num(v, "model.weights", 0.0, strict=True) for v in m["weights"]]
        require(abs(sum(w) - 1.0) < 1e-9, f"model.weights: must sum to 1, got {sum(w)}")
        means = m["means"]
        require(isinstance(means, list) and len(means) == len(w) and all(isinstance(r, list) and len(r) == d
                                                                          for r in means),
                f"model.means: needs {len(w)} lists of {d} numbers")
        var = _num(m.get("var", 0.05), "model.var", 0.0, strict=True)
        M = torch.tensor([[_num(v, "model.means") for v in r] for r in means], dtype=torch.float64)
        covs = torch.stack([var * torch.eye(d, dtype=torch.float64)] * len(w))
        return GaussianMixtureToy(torch.tensor(w, dtype=torch.float64), M, covs, schedule)
    for k in ("weights", "means", "var"):
        require(k not in m, f"model.{k}: only for kind 'mixture'")
    require(("variances" in m) != ("spectrum" in m), "model.variances / model.spectrum: give exactly one")
    if "variances" in m:
        vals = m["variances"]
        vals = vals if isinstance(vals, list) else [vals]
        require(len(vals) >= 1, "model.variances: must not be empty")
        vv = [_num(v, "model.variances", 0.0, strict=True) for v in vals]
        var = torch.tensor([vv[i % len(vv)] for i in range(d)], dtype=torch.float64)
    else:
        sp = m["spectrum"]
        require(isinstance(sp, dict), "model.spectrum: must be a table {lo, hi}")
        _unknown(sp, {"lo", "hi"}, "model.spectrum")
        lo = _num(sp.get("lo"), "model.spectrum.lo", 0.0, strict=True)
        hi = _num(sp.get("hi"), "model.spectrum.hi", 0.0, strict=True)
        require(lo <= hi, f"model.spectrum: lo must be <= hi, got {lo} > {hi}")
        var = torch.logspace(math.log10(hi), math.log10(lo), d, dtype=torch.float64)
    if kind == "gaussian_diag":
        require("rotate" not in m, "model.rotate: only for kind 'gaussian'")
        return GaussianToy.diagonal(mean, var, schedule)
    rotate = _bool(m.get("rotate", True), "model.rotate")
    if rotate:
        g = torch.Generator().manual_seed(seed + 17)
        Q, R = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        Q = Q * torch.sign(torch.diagonal(R)).unsqueeze(0)
    else:
        Q = torch.eye(d, dtype=torch.float64)
    cov = (Q * var) @ Q.T
    return GaussianToy(mean, 0.5 * (cov + cov.T), schedule)


def _check_sizes(m: dict, T: int, batch: int) -> None:
    """Refuse (before allocating) a model or batch whose float64 tensors would exceed the memory limit."""
    d = m.get("dim")
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        return                                  # _build_model names the field
    kind = m.get("kind")
    if kind == "gaussian":
        model_bytes, parts = 8 * d * d * 6, "dense d x d covariance, eigenbasis and rotation"
    elif kind == "mixture":
        k = len(m["weights"]) if isinstance(m.get("weights"), list) and m["weights"] else 1
        model_bytes, parts = 8 * d * d * k * 4, f"{k} dense d x d component covariances"
    else:
        model_bytes, parts = 8 * d * 8, "diagonal variances and work vectors"
    check_memory(model_bytes, f"model.dim = {d} ({kind}: {parts})")
    check_memory(8 * batch * d * (T + 1) * 8, f"sampler.batch = {batch} with model.dim = {d} and sampler.T = {T} "
                                              "(float64 trajectories [T + 1, batch, dim] of the paired runs)")


def _find_cache(model: Any) -> Cache | None:
    stack = [model]
    while stack:
        m = stack.pop()
        if isinstance(m, Cache):
            return m
        if isinstance(m, StepLocalized):
            stack.append(m.inner)
        elif isinstance(m, Compose):
            stack.append(m.outer)
        elif isinstance(m, Perturbation):
            stack.append(m.base)
    return None


def _build_select(sel: Any, where: str, T: int, efficient: Any) -> StepSelection:
    if sel is None:
        return StepSelection.all()
    require(isinstance(sel, dict), f"{where}: must be a table {{kind = ...}}")
    _unknown(sel, SELECT_KEYS, where)
    kind = sel.get("kind", "all")
    if kind == "all":
        return StepSelection.all()
    if kind == "every":
        return StepSelection.every(_int(sel.get("n"), f"{where}.n", 1))
    if kind == "first":
        return StepSelection.first(_int(sel.get("m"), f"{where}.m", 0))
    if kind == "last":
        return StepSelection.last(_int(sel.get("m"), f"{where}.m", 0))
    if kind == "indices":
        steps = sel.get("steps")
        require(isinstance(steps, list), f"{where}.steps: must be a list of step indices")
        idx = [_int(v, f"{where}.steps", 0) for v in steps]
        require(all(i < T for i in idx), f"{where}.steps: indices must be < T = {T}, got {idx}")
        return StepSelection.explicit(idx)
    if kind == "cache_refresh":
        cache = _find_cache(efficient)
        require(cache is not None, f"{where}.kind: 'cache_refresh' needs a cache perturbation")
        return StepSelection.explicit(cache.refresh_steps(T))
    raise ConfigError(f"{where}.kind: unknown selection {kind!r}; choose all, every, first, last, indices, "
                      "cache_refresh")


def _build_iec(t: Any, where: str, T: int, efficient: Any) -> IECConfig:
    require(isinstance(t, dict), f"{where}: must be a table")
    _unknown(t, IEC_KEYS, where)
    select = _build_select(t.get("select"), f"{where}.select", T, efficient)
    if "preset" in t:
        for k in ("K", "lambda"):
            require(k not in t, f"{where}.{k}: not allowed together with preset")
        p = t["preset"]
        require(p in ("official_ddpm", "official_ldm"), f"{where}.preset: unknown preset {p!r}; choose "
                                                         "official_ddpm or official_ldm")
        base = IECConfig.preset(p)
        tol = _num(t.get("tol", base.tol), f"{where}.tol", 0.0)
        noise = t.get("noise", base.noise)
        require(noise in ("fresh", "shared"), f"{where}.noise: must be 'fresh' or 'shared', got {noise!r}")
        return IECConfig(base.K, base.lambdas, tol, noise, select, base.name)
    require("K" in t, f"{where}.K: required (or give preset)")
    K = _int(t["K"], f"{where}.K", 0)
    check_K_memory(K, T, f"{where}.K")
    lam = t.get("lambda", 0.5)
    if isinstance(lam, list):
        require(len(lam) == K, f"{where}.lambda: needs K = {K} values, got {len(lam)}")
        lams = tuple(_num(v, f"{where}.lambda", 0.0, strict=True) for v in lam)
    else:
        lams = (_num(lam, f"{where}.lambda", 0.0, strict=True),) * K
    require(all(v <= 2.0 for v in lams), f"{where}.lambda: every lambda must lie in (0, 2], got {lams}")
    tol = _num(t.get("tol", 0.0), f"{where}.tol", 0.0)
    noise = t.get("noise", "fresh")
    require(noise in ("fresh", "shared"), f"{where}.noise: must be 'fresh' or 'shared', got {noise!r}")
    return IECConfig(K, lams, tol, noise, select, f"K={K},lambda={list(lams)}")


def validate_spec(raw: dict, path: str | None = None) -> Spec:
    """Validate a spec dict and build its parts; raises ConfigError naming the field."""
    require(isinstance(raw, dict), "spec: must be a table")
    kind = raw.get("kind", "toy")
    require(kind == "toy", f"kind: this is the toy-model harness (kind = \"toy\", the default), got {kind!r}; "
                           "real-network specs (kind = \"real\") run with `iec run` / `iec real-eval`")
    _unknown(raw, TOP_KEYS, "spec")
    require("name" in raw and isinstance(raw["name"], str) and raw["name"].strip(),
            "name: required non-empty string")
    name = raw["name"]
    require(all(c.isalnum() or c in "-_." for c in name), f"name: use letters, digits, '-', '_' or '.', got {name!r}")
    seed = _int(raw.get("seed", 0), "seed", 0)
    sch_t = _table(raw, "schedule", False)
    _unknown(sch_t, SCHEDULE_KEYS, "schedule")
    sch_name = sch_t.get("name", "linear")
    require(sch_name in ("linear", "quad", "cosine"), f"schedule.name: unknown schedule {sch_name!r}")
    n_train = _int(sch_t.get("num_train_steps", 1000), "schedule.num_train_steps", 2)
    schedule = Schedule.named(sch_name, n_train)
    smp = _table(raw, "sampler", True)
    _unknown(smp, SAMPLER_KEYS, "sampler")
    require("T" in smp, "sampler.T: required")
    T = _int(smp["T"], "sampler.T", 1)
    require(T <= n_train, f"sampler.T: must be <= num_train_steps = {n_train}, got {T}")
    eta = _num(smp.get("eta", 0.0), "sampler.eta", 0.0)
    spacing = smp.get("spacing", "uniform")
    require(spacing in ("uniform", "quad"), f"sampler.spacing: must be 'uniform' or 'quad', got {spacing!r}")
    try:
        schedule.timesteps(T, spacing)
    except ConfigError as exc:
        raise ConfigError(f"sampler.T: {exc}") from exc
    batch = _int(smp.get("batch", 64), "sampler.batch", 1)
    model_t = _table(raw, "model", True)
    _unknown(model_t, MODEL_KEYS, "model")
    _check_sizes(model_t, T, batch)
    toy = _build_model(model_t, schedule, seed)
    pert = raw.get("perturbation")
    if pert is not None:
        require(isinstance(pert, dict), "perturbation: must be a table")
    efficient = make_perturbation(pert or None, toy, seed=seed)   # validates the perturbation table
    require("methods" in raw, "methods: required (an array of tables [[methods]])")
    mt = raw["methods"]
    require(isinstance(mt, list) and len(mt) >= 1 and all(isinstance(m, dict) for m in mt),
            "methods: must be a non-empty array of tables [[methods]]")
    methods: list[MethodSpec] = []
    labels: set[str] = set()
    for j, m in enumerate(mt):
        where = f"methods[{j}]"
        _unknown(m, METHOD_KEYS, where)
        require("name" in m, f"{where}.name: required ({', '.join(METHODS)})")
        m_pert = m.get("perturbation")
        m_eff = efficient
        if m_pert is not None:
            require(isinstance(m_pert, dict), f"{where}.perturbation: must be a table")
            m_eff = make_perturbation(m_pert or None, toy, seed=seed, field=f"{where}.perturbation")
        mname = m["name"]
        require(mname in METHODS, f"{where}.name: unknown method {mname!r}; choose one of {list(METHODS)}")
        iec = None
        if "iec" in m:
            iec = _build_iec(m["iec"], f"{where}.iec", T, m_eff)
        if mname in ("iec", "repeat"):
            require(iec is not None, f"{where}.iec: required for method {mname!r}")
        if mname == "heun":
            require(eta == 0.0, f"{where}.name: heun needs sampler.eta = 0, got {eta}")
        nfe_target = None
        if "nfe_target" in m:
            require(mname == "ddim_matched", f"{where}.nfe_target: only for ddim_matched")
            nfe_target = _int(m["nfe_target"], f"{where}.nfe_target", 1)
        if mname == "ddim_matched":
            require(iec is not None or nfe_target is not None,
                    f"{where}.iec: ddim_matched needs the IEC config it matches (or nfe_target)")
        label = m.get("label", mname if iec is None or mname == "ddim_matched" else f"{mname}")
        require(isinstance(label, str) and label, f"{where}.label: must be a non-empty string")
        require(label not in labels, f"{where}.label: duplicate label {label!r} (give each method a label)")
        labels.add(label)
        methods.append(MethodSpec(mname, label, iec, nfe_target, m_pert))
    met = _table(raw, "metrics", False)
    _unknown(met, METRIC_KEYS, "metrics")
    metrics = {k: _bool(met.get(k, True), f"metrics.{k}") for k in ("exact_law", "monte_carlo", "total")}
    sw = raw.get("sweep")
    if sw is not None:
        require(isinstance(sw, dict), "sweep: must be a table")
        _unknown(sw, SWEEP_KEYS, "sweep")
        grid = sw.get("grid")
        require(isinstance(grid, dict) and grid, "sweep.grid: required non-empty table of dotted keys -> lists")
        for k, vals in grid.items():
            require(isinstance(vals, list) and vals, f"sweep.grid.{k}: must be a non-empty list")
            _check_dotted(raw, k)
        if "workers" in sw:
            _int(sw["workers"], "sweep.workers", 1)
    return Spec(raw=raw, name=name, seed=seed, schedule=schedule, T=T, eta=eta, spacing=spacing, batch=batch,
                methods=methods, metrics=metrics, toy=toy, path=path)


def _check_dotted(raw: dict, key: str) -> None:
    parts = key.split(".")
    require(all(parts), f"sweep.grid.{key}: malformed dotted key")
    require(parts[0] in TOP_KEYS - {"sweep", "methods"} or (parts[0] == "methods" and len(parts) >= 3),
            f"sweep.grid.{key}: unknown top-level field {parts[0]!r}")


def set_dotted(raw: dict, key: str, value: Any) -> dict:
    """A deep copy of raw with raw[a][b]... = value for key 'a.b...' (methods.<i>.<field> indexes the array)."""
    out = copy.deepcopy(raw)
    cur: Any = out
    parts = key.split(".")
    for p in parts[:-1]:
        if isinstance(cur, list):
            require(p.isdigit() and int(p) < len(cur), f"sweep.grid.{key}: bad index {p!r}")
            cur = cur[int(p)]
        else:
            cur = cur.setdefault(p, {})
    if isinstance(cur, list):
        cur[int(parts[-1])] = value
    else:
        cur[parts[-1]] = value
    return out


def read_spec_toml(path: str | Path) -> dict:
    """Parse a TOML spec file; a missing file, non-UTF-8 text or bad TOML is one clear error."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"spec file {str(p)!r} is a directory; pass a TOML file, e.g. experiments/stiff.toml")
    if not p.is_file():
        raise FileNotFoundError(f"spec file {str(p)!r} does not exist")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not a UTF-8 text file (TOML specs must be UTF-8): {exc.reason} at byte "
                          f"{exc.start}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from exc


def load_spec(path: str | Path) -> Spec:
    """Read and validate a TOML spec file."""
    return validate_spec(read_spec_toml(path), str(path))
