"""Stage 1, the spec: field sets, the validated RealSpec / ConfigSpec and the TOML loader.

Every field is validated before any work; every error is a ConfigError naming the field (layout in
real_models/experiment/__init__.py)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iec_theory.errors import ConfigError, require
from iec_theory.harness.spec import read_spec_toml

TOP_KEYS = {"kind", "name", "description", "seed", "model", "sampler", "iec", "quant", "cache", "configs",
            "jacobian", "metrics", "grid", "theorems", "shards"}
MODEL_KEYS = {"dir", "device", "threads"}
SAMPLER_KEYS = {"T", "eta", "spacing", "batch"}
IEC_KEYS = {"preset"}
QUANT_KEYS = {"calibration", "options"}
CALIB_KEYS = {"T", "trajectories", "batch_size", "seed"}
CONFIG_KEYS = {"quant", "cache", "correction", "iec", "baselines"}
CACHE_KEYS = {"branch", "calibration"}
CACHE_CALIB_KEYS = {"n", "batch_size", "seed"}
JACOBIAN_KEYS = {"enabled", "steps", "samples", "n_iter", "n_starts"}
METRIC_KEYS = {"fd_kid", "kid_subsets", "psnr_ssim", "bootstrap", "level", "floor", "growth_batches",
               "diagnostic_samples"}
GRID_KEYS = {"n", "rows"}
THEOREM_KEYS = {"enabled"}
SHARD_KEYS = {"n_samples", "batch"}
QUANT_PRESETS = ("none", "W8A8", "W4A8")
BASELINES = ("ddim_matched", "heun")
IEC_PRESETS = ("official_ddpm", "official_ldm")


@dataclass(frozen=True)
class ConfigSpec:
    """One efficient model (quantization preset and/or cache) and the rows run on it."""

    quant: str
    cache: int
    iec: tuple[bool, ...]
    baselines: tuple[str, ...]
    correction: bool = False

    @property
    def name(self) -> str:
        parts = ([f"cache{self.cache}"] if self.cache else []) + (["affine"] if self.correction else []) \
            + ([self.quant] if self.quant != "none" else [])
        return "+".join(parts) or "FP"

    @property
    def is_fp(self) -> bool:
        return self.quant == "none" and self.cache == 0


@dataclass
class RealSpec:
    """A validated real-model spec."""

    raw: dict
    name: str
    description: str
    seed: int
    model_dir: str | None
    device: str
    threads: int
    T: int
    eta: float
    spacing: str
    batch: int
    iec_preset: str
    calibration: dict[str, int]
    quant_options: dict[str, Any]
    configs: list[ConfigSpec]
    jacobian: dict[str, Any]
    metrics: dict[str, Any]
    grid: dict[str, Any]
    theorems: bool
    path: str | None = None
    cache_branch: int = 2
    cache_calibration: dict[str, int] = dataclasses.field(default_factory=dict)
    T_requested: int = 0          # sampler.T as written; T = the steps actually run (grids.effective_steps)
    shards: dict[str, int] = dataclasses.field(default_factory=dict)   # sharded evaluation: n_samples, batch

    @property
    def hash(self) -> str:
        from iec_theory.harness.spec import spec_hash

        return spec_hash(self.raw)

    def row_labels(self) -> list[str]:
        out = []
        for c in self.configs:
            for use in c.iec:
                out.append(c.name + ("+IEC" if use else ""))
            for b in c.baselines:
                out.append(f"{c.name}+{_baseline_tag(b, self, c)}")
        return out



def _unknown(table: dict, allowed: set[str], where: str) -> None:
    for k in table:
        if k not in allowed:
            raise ConfigError(f"{where}{k}: unknown field; allowed: {sorted(allowed)}")


def _table(raw: dict, key: str) -> dict:
    v = raw.get(key, {})
    require(isinstance(v, dict), f"{key}: must be a table, got {type(v).__name__}")
    return v


def _whole(v: Any) -> Any:
    """A float with an integer value as that integer (TOML writes 5e4 as a float), anything else unchanged."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _int(v: Any, where: str, lo: int | None = None) -> int:
    require(isinstance(v, int) and not isinstance(v, bool), f"{where}: must be an integer, got {v!r}")
    require(lo is None or v >= lo, f"{where}: must be >= {lo}, got {v}")
    return int(v)


def _num(v: Any, where: str, lo: float | None = None) -> float:
    require(isinstance(v, (int, float)) and not isinstance(v, bool), f"{where}: must be a number, got {v!r}")
    f = float(v)
    require(math.isfinite(f), f"{where}: must be finite, got {v!r}")
    require(lo is None or f >= lo, f"{where}: must be >= {lo}, got {v}")
    return f


def _bool(v: Any, where: str) -> bool:
    require(isinstance(v, bool), f"{where}: must be true or false, got {v!r}")
    return v


def _str(v: Any, where: str, choices: Sequence[str] | None = None) -> str:
    require(isinstance(v, str), f"{where}: must be a string, got {v!r}")
    require(choices is None or v in choices, f"{where}: must be one of {list(choices or [])}, got {v!r}")
    return v


def validate_real_spec(raw: dict, path: str | None = None) -> RealSpec:
    """Validate a parsed spec completely; every error is a ConfigError naming the field."""
    require(isinstance(raw, dict), "spec: must be a table")
    require("kind" in raw, "kind: required; real-model specs set kind = \"real\" (a toy spec runs with iec run)")
    require(raw["kind"] == "real", f"kind: must be \"real\" for a real-model spec, got {raw['kind']!r}")
    _unknown(raw, TOP_KEYS, "")
    require("name" in raw, "name: required")
    name = _str(raw["name"], "name")
    require(bool(name) and all(ch.isalnum() or ch in "-_." for ch in name),
            f"name: use letters, digits, '-', '_' or '.', got {name!r}")
    description = _str(raw.get("description", ""), "description")
    seed = _int(raw.get("seed", 0), "seed", 0)

    model = _table(raw, "model")
    _unknown(model, MODEL_KEYS, "model.")
    model_dir = _str(model.get("dir", ""), "model.dir") or None
    device = _check_device(_str(model.get("device", "cpu"), "model.device"))
    threads = _int(model.get("threads", 1), "model.threads", 1)

    sampler = _table(raw, "sampler")
    _unknown(sampler, SAMPLER_KEYS, "sampler.")
    T_requested = _int(sampler.get("T", 20), "sampler.T", 2)
    eta = _num(sampler.get("eta", 0.0), "sampler.eta", 0.0)
    spacing = _str(sampler.get("spacing", "uniform"), "sampler.spacing", ("uniform", "quad"))
    from .grids import DDPM_TRAIN_STEPS, effective_steps

    require(T_requested <= DDPM_TRAIN_STEPS, f"sampler.T: must be <= {DDPM_TRAIN_STEPS}, got {T_requested}")
    T = effective_steps(T_requested, spacing)     # quad: the distinct official timesteps (grids.py)
    require(T >= 2, f"sampler.T: {T_requested} with {spacing} spacing gives {T} distinct step(s); need >= 2")
    batch = _int(_whole(sampler.get("batch", 16)), "sampler.batch", 2)

    iec_t = _table(raw, "iec")
    _unknown(iec_t, IEC_KEYS, "iec.")
    iec_preset = _str(iec_t.get("preset", "official_ddpm"), "iec.preset", IEC_PRESETS)

    quant = _table(raw, "quant")
    _unknown(quant, QUANT_KEYS, "quant.")
    cal = quant.get("calibration", {})
    require(isinstance(cal, dict), "quant.calibration: must be a table")
    _unknown(cal, CALIB_KEYS, "quant.calibration.")
    calibration = {"T": _int(cal.get("T", T_requested), "quant.calibration.T", 1),
                   "trajectories": _int(cal.get("trajectories", 1), "quant.calibration.trajectories", 1),
                   "batch_size": _int(cal.get("batch_size", 8), "quant.calibration.batch_size", 1),
                   "seed": _int(cal.get("seed", seed + 1), "quant.calibration.seed", 0)}
    options = quant.get("options", {})
    require(isinstance(options, dict), "quant.options: must be a table")
    from ..quant import QuantConfig

    qfields = {f.name for f in dataclasses.fields(QuantConfig)} - {"name", "w_bits", "a_bits"}
    _unknown(options, qfields, "quant.options.")
    try:
        QuantConfig.preset("W8A8", **options)
    except ConfigError as exc:
        raise ConfigError(f"quant.options: {exc}") from exc

    ct = _table(raw, "cache")
    _unknown(ct, CACHE_KEYS, "cache.")
    from ..cache import BRANCHES, DEFAULT_BRANCH

    cache_branch = _int(ct.get("branch", DEFAULT_BRANCH), "cache.branch")
    require(cache_branch in BRANCHES, f"cache.branch: must be one of {list(BRANCHES)} (official --branch: 2 = input "
                                      f"of up[1].block[2], 1 = input of the last up block), got {cache_branch}")
    cc = ct.get("calibration", {})
    require(isinstance(cc, dict), "cache.calibration: must be a table")
    _unknown(cc, CACHE_CALIB_KEYS, "cache.calibration.")
    cache_calibration = {"n": _int(cc.get("n", 16), "cache.calibration.n", 1),
                         "batch_size": _int(cc.get("batch_size", 16), "cache.calibration.batch_size", 1),
                         "seed": _int(cc.get("seed", seed + 2), "cache.calibration.seed", 0)}

    confs = raw.get("configs")
    require(isinstance(confs, list) and len(confs) >= 1, "configs: required, a list of [[configs]] tables")
    configs: list[ConfigSpec] = []
    for j, c in enumerate(confs):
        w = f"configs[{j}]."
        require(isinstance(c, dict), f"configs[{j}]: must be a table")
        _unknown(c, CONFIG_KEYS, w)
        q = _str(c.get("quant", "none"), w + "quant", QUANT_PRESETS)
        cache = _int(c.get("cache", 0), w + "cache", 0)
        require(cache <= T, f"{w}cache: refresh interval {cache} exceeds T={T}")
        iv = c.get("iec", [False, True])
        iv = [iv] if isinstance(iv, bool) else iv
        require(isinstance(iv, list) and len(iv) >= 1, f"{w}iec: must be a bool or a list of bools")
        iecs = tuple(_bool(v, f"{w}iec") for v in iv)
        require(len(set(iecs)) == len(iecs), f"{w}iec: repeated value in {iv}")
        bl = c.get("baselines", [])
        require(isinstance(bl, list), f"{w}baselines: must be a list")
        bls = tuple(_str(b, f"{w}baselines", BASELINES) for b in bl)
        require(len(set(bls)) == len(bls), f"{w}baselines: repeated value in {bl}")
        require(not ("heun" in bls and eta != 0.0), f"{w}baselines: heun needs sampler.eta = 0")
        corr = _bool(c.get("correction", False), w + "correction")
        require(not corr or cache > 0, f"{w}correction: the cached-feature correction needs cache > 0")
        configs.append(ConfigSpec(q, cache, iecs, bls, corr))
    if options.get("per_timestep", False):
        require(calibration["T"] == T_requested, f"quant.options.per_timestep: needs quant.calibration.T = sampler.T = "
                                                 f"{T_requested} "
                                       f"(per-step scales are keyed by (step, t)), got {calibration['T']}")
        bad = [c.name for c in configs if c.quant != "none" and c.baselines]
        require(not bad, f"quant.options.per_timestep: per-step scales exist only for the T-step grid; remove the "
                         f"baselines of {bad} (DDIM at another NFE and Heun evaluate other (step, t) pairs)")
    names = [c.name for c in configs]
    require(len(set(names)) == len(names), f"configs: each (quant, cache) must appear once, got {names}")

    jac = _table(raw, "jacobian")
    _unknown(jac, JACOBIAN_KEYS, "jacobian.")
    steps = jac.get("steps", [0, T // 2, -1])
    require(isinstance(steps, list) and len(steps) >= 1, "jacobian.steps: must be a non-empty list of step indices")
    steps_n = []
    for s in steps:
        s = _int(s, "jacobian.steps")
        require(-T <= s < T, f"jacobian.steps: index {s} out of range for T={T}")
        steps_n.append(s % T)
    jacobian = {"enabled": _bool(jac.get("enabled", True), "jacobian.enabled"), "steps": sorted(set(steps_n)),
                "samples": _int(jac.get("samples", min(4, batch)), "jacobian.samples", 1),
                "n_iter": _int(jac.get("n_iter", 10), "jacobian.n_iter", 1),
                "n_starts": _int(jac.get("n_starts", 2), "jacobian.n_starts", 1)}
    require(not jacobian["enabled"] or jacobian["samples"] <= batch,
            f"jacobian.samples: {jacobian['samples']} exceeds sampler.batch={batch}")

    met = _table(raw, "metrics")
    _unknown(met, METRIC_KEYS, "metrics.")
    metrics = {"fd_kid": _bool(met.get("fd_kid", True), "metrics.fd_kid"),
               "kid_subsets": _int(met.get("kid_subsets", 20), "metrics.kid_subsets", 1),
               "psnr_ssim": _bool(met.get("psnr_ssim", True), "metrics.psnr_ssim"),
               "bootstrap": _int(met.get("bootstrap", 200), "metrics.bootstrap", 10),
               "level": _num(met.get("level", 0.95), "metrics.level", 0.5),
               "floor": _bool(met.get("floor", True), "metrics.floor"),
               "growth_batches": _int(met.get("growth_batches", 4), "metrics.growth_batches", 1),
               "diagnostic_samples": _int(met.get("diagnostic_samples", batch), "metrics.diagnostic_samples", 2)}
    require(metrics["level"] < 1, f"metrics.level: must be < 1, got {metrics['level']}")
    require(metrics["diagnostic_samples"] <= batch,
            f"metrics.diagnostic_samples: {metrics['diagnostic_samples']} exceeds sampler.batch={batch}")
    require(2 * metrics["growth_batches"] <= metrics["diagnostic_samples"],
            f"metrics.growth_batches: {metrics['growth_batches']} batches need at least 2 images each among the "
            f"{metrics['diagnostic_samples']} diagnostic samples")

    labels = RealSpec(raw, name, description, seed, model_dir, device, threads, T, eta, spacing, batch, iec_preset,
                      calibration, dict(options), configs, jacobian, metrics, {}, False, path).row_labels()
    gr = _table(raw, "grid")
    _unknown(gr, GRID_KEYS, "grid.")
    default_rows = [r for r in ("FP", "W4A8", "W4A8+IEC") if r in labels] or labels[:3]
    rows = gr.get("rows", default_rows)
    require(isinstance(rows, list), "grid.rows: must be a list of row labels")
    for r in rows:
        require(isinstance(r, str) and r in labels, f"grid.rows: unknown row {r!r}; rows are {labels}")
    grid = {"n": _int(gr.get("n", 8), "grid.n", 0), "rows": list(rows)}
    require(grid["n"] <= batch, f"grid.n: {grid['n']} exceeds sampler.batch={batch}")

    th = _table(raw, "theorems")
    _unknown(th, THEOREM_KEYS, "theorems.")
    theorems = _bool(th.get("enabled", True), "theorems.enabled")
    require(not (jacobian["enabled"] and theorems) or jacobian["samples"] <= metrics["diagnostic_samples"],
            f"jacobian.samples: {jacobian['samples']} exceeds metrics.diagnostic_samples="
            f"{metrics['diagnostic_samples']} (theorem checks use the diagnostic samples' local errors)")
    sh = _table(raw, "shards")
    _unknown(sh, SHARD_KEYS, "shards.")
    n_samples = _int(_whole(sh.get("n_samples", batch)), "shards.n_samples", 3)
    shards = {"n_samples": n_samples,
              "batch": _int(_whole(sh.get("batch", min(batch, n_samples))), "shards.batch", 1)}
    require(shards["batch"] <= n_samples, f"shards.batch: {shards['batch']} exceeds shards.n_samples={n_samples}")
    require(shards["batch"] <= batch, f"shards.batch: {shards['batch']} exceeds sampler.batch={batch} (the batch "
                                      "whose memory is checked)")
    spec = RealSpec(raw, name, description, seed, model_dir, device, threads, T, eta, spacing, batch, iec_preset,
                    calibration, dict(options), configs, jacobian, metrics, grid, theorems, path, cache_branch,
                    cache_calibration, T_requested, shards)
    from .resources import check_memory

    check_memory(spec, model_dir)
    return spec


def _check_device(device: str) -> str:
    """A torch device string that exists here (ConfigError otherwise)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"model.device: {device!r} is not a torch device (use \"cpu\" or \"cuda\"): "
                          f"{str(exc).splitlines()[0]}") from exc
    if dev.type == "cuda":
        require(torch.cuda.is_available(), f"model.device: {device!r} requested but CUDA is not available here; "
                                           "use \"cpu\"")
        require(dev.index is None or dev.index < torch.cuda.device_count(),
                f"model.device: {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type != "cpu":
        raise ConfigError(f"model.device: {device!r} is not supported (use \"cpu\" or \"cuda\")")
    return device


def is_real_spec(path: str | Path) -> bool:
    """True when the TOML file has top-level kind = "real" (for `iec run` dispatch)."""
    return read_spec_toml(path).get("kind") == "real"


def load_real_spec(path: str | Path) -> RealSpec:
    return validate_real_spec(read_spec_toml(path), str(path))



def _baseline_tag(b: str, spec: RealSpec, c: ConfigSpec) -> str:
    from .configurations import _baseline_tag as tag

    return tag(b, spec, c)
