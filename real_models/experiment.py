"""Real-network IEC experiments (issue 6, items 4 and 5): spec loader, runner and results layout.

A spec is a TOML file with a top-level ``kind = "real"`` (experiments/real_quick.toml, real_full.toml);
``run_real_spec(path, out_dir, model_dir)`` runs it (``iec real-eval SPEC.toml``, and ``iec run`` once it
dispatches on ``kind``). Everything is paired: one x_T [batch, C, H, W] from ``seed``, keyed noise
(``NoiseSource(seed, keyed=True)``), every configuration and every reference from the same x_T and noise.

Spec layout (every field validated before any work; errors name the field, e.g. ``configs[2].quant``)::

    kind = "real"                 # required
    name = "real_quick"           # required: results folder results/<name>-<spec hash[:8]>
    description = "..."
    seed = 0
    [model]
    dir = ""                      # diffusers UNet2DModel folder; "" = committed default (--model-dir overrides)
    device = "cpu"
    threads = 1                   # torch.set_num_threads
    [sampler]
    T = 20                        # steps of the plain scheme
    eta = 0.0
    spacing = "uniform"           # uniform | quad
    batch = 16                    # images (all configurations share them)
    [iec]
    preset = "official_ddpm"      # official_ddpm | official_ldm; with a cache, IEC only at refresh steps
    [quant]                       # real_models.quant: data-free calibration on FP trajectories
    calibration = {T = 20, trajectories = 1, batch_size = 8, seed = 1}
    options = {}                  # QuantConfig overrides, e.g. {per_timestep = true}
    [[configs]]                   # one table per efficient model; each gives a plain and/or an IEC row
    quant = "W4A8"                # none | W8A8 | W4A8
    cache = 0                     # 0 = no cache, N = DeepCache refresh every N steps (refresh_all_evals)
    iec = [false, true]           # rows without / with IEC (a bool means one row)
    baselines = ["ddim_matched", "heun"]   # compute-matched rows on the same efficient model
    [jacobian]                    # FP Jacobian estimates along the FP DDIM trajectory
    enabled = true
    steps = [0, 10, -1]           # step indices (negative: from the end)
    samples = 4                   # first `samples` images of the batch
    n_iter = 10
    n_starts = 2
    [metrics]
    fd_kid = true                 # FD_cifarnet / KID_cifarnet vs committed CIFAR-10 test statistics
    kid_subsets = 20
    psnr_ssim = true              # vs the FP DDIM samples from the same noise
    [grid]
    n = 8                         # images per row of grid.png
    rows = ["FP", "W4A8", "W4A8+IEC"]
    [theorems]
    enabled = true                # T1 / T1m / T4-form with the estimated constants (marked estimates)

Row labels: the efficient model's name ("FP", "W8A8", "W4A8", "cache5", "cache5+W8A8"), then "+IEC"
for the IEC row, "+DDIM<nfe>" for plain DDIM with <nfe> steps (the nominal NFE of the model's IEC
row), "+Heun" for Heun (2T - 1 NFE). Schemes: "ddim" (T steps), "iec" (T steps, IEC at the selected
steps: all, or the cache's refresh steps), "ddim_matched", "heun" (iec_theory.baselines).

Distances (THEORY section 3, never mixed): propagated = the row vs the SAME scheme on the FP model
(for "+IEC" on a cache: FP with IEC at the same refresh steps); deployment = the row vs plain FP DDIM
with T steps, at the states whose times both grids share. Curves are batch means of per-sample
Euclidean norms, in x and in xbar = x / sqrt(abar) (iec_theory.measure.error_curve).

Local errors per step i (batch mean of per-sample norms):
``eta`` = ||eps~(x~_i) - eps(x~_i)|| at the step's first evaluation point of the row's own run;
``eta_max`` = largest over the step's evaluations (IEC corrections included); ``eta_ref`` = the same at
the reference state x_i, from a fresh instance of the efficient model run along the reference
(as iec_theory.measure does); the growth R series uses ``eta_ref``. ``rayleigh_mu`` = <eps(x~_i) - eps(x_i),
delta_i> / ||delta_i||^2 (FP model, along the trajectory difference: monotonicity seen by the error).

Results folder (results.json is written last; its presence marks a finished run):

* ``arrays.npz``: ``x_T``; ``fp_x0`` (FP DDIM samples); per row, prefix ``"<label>/"``: ``timesteps``
  [n], ``abars`` [n+1], ``dsigmas`` [n], ``eta``, ``eta_max``, ``eta_ref`` [n], ``eta_per_sample`` [n, B],
  ``propagated_x``, ``propagated_xbar`` [n+1], ``propagated_xbar_per_sample`` [n+1, B],
  ``deployment_x``, ``deployment_xbar``, ``deployment_states`` [k] (state indices of the row's grid),
  ``growth_R`` [n+1] (ratio series), ``rayleigh_mu_mean``, ``rayleigh_mu_min`` [n] (nan where delta = 0),
  ``x0`` [B, C, H, W] (final samples, float32); Jacobian estimates ``jacobian/steps`` [k],
  ``jacobian/t`` [k], ``jacobian/{L,L_spread,m,m_spread,radius}`` [k, samples] (x coordinates).
* default folder: ``results/<name>-<spec hash[:8]>`` (plus ``-<folder name>`` with a --model-dir override).
* ``results.json``:
  ``kind``, ``name``, ``description``, ``spec`` (raw), ``spec_path``, ``spec_hash``;
  ``model`` {dir, dir_from_command_line, weights_sha256, num_parameters, config, metadata (steps,
  images_seen, train_hours)};
  ``settings`` {T, eta, spacing, batch, seed, timesteps, iec_preset, threads};
  ``rows``: list, one per row, {label, model, scheme, iec (name, K, lambdas, tol, noise, selected steps),
  NFE, NFE_nominal, wall_s, cpu_s, early_stops, propagated_x, propagated_xbar, deployment_x, deployment_xbar
  (final state), eta_mean, eta_ref_mean, growth_propagated {label, label_E, label_R, rho, kappa, series,
  R_max}, growth_deployment {label, rho, kappa}, quality {FD_cifarnet, KID_cifarnet, KID_cifarnet_std,
  PSNR, SSIM} (PSNR null when identical to FP), cache_stats (cache rows)};
  ``quality_table`` {columns, rows (lists in column order)}; ``growth`` {label: {propagated, deployment}};
  ``jacobian`` {steps, t, samples, n_iter, n_starts, model, method, per_step: [{step, t, s, abar, dsigma, h,
  a, b, L {mean, min, max, spread_max}, m {...}, radius {mean, min, max}, Lbar_mean, mbar_mean, rho_T1m
  {mean, min, max}, explicit_stable_fraction, stability_threshold_2mbar_over_Lbar2}], note} (empty when
  disabled); ``theorem_checks`` (list of {row, theorem ("T1", "T1m" at plain steps, "T4-form" at IEC
  steps), step, sample, measured, bound, holds, estimate: true, plus rho / m, corrections, caveat}) and
  ``theorem_summary`` {row: {theorem: {checked, holds}}};
  ``quant_reports`` {preset: QuantReport.to_dict() minus layers, plus layers_worst};
  ``references`` {key: {NFE, wall_s, cpu_s}}; ``timings_s`` (per row, jacobian, total, total_cpu);
  ``files``; ``notes``; ``provenance`` (iec_theory.provenance.provenance(seed=...)); non-finite numbers
  are written as null.
* ``table.md``: the quality table, an errors-and-growth table and the Jacobian table (markdown);
  ``grid.png``: sample grid, one row per ``grid.rows`` label
  (default FP, W4A8, W4A8+IEC).

The Jacobian estimates use iec_theory.constants (power iteration on J^T J for L, Lanczos on the symmetric
part for the most negative Rayleigh quotient m) plus a JVP power iteration for the spectral radius, on a
differentiable copy of the FP UNet (math SDPA kernel; inputs of GroupNorm made contiguous so that
forward-mode AD works). They are estimates: L is approached from below, m from above, at the reference
state (not the worst case over a segment); ``spread`` is max - min over random starts.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iec_theory.errors import ConfigError, require

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["ConfigSpec", "RealSpec", "is_real_spec", "load_real_spec", "run_real_spec", "validate_real_spec"]

TOP_KEYS = {"kind", "name", "description", "seed", "model", "sampler", "iec", "quant", "configs", "jacobian",
            "metrics", "grid", "theorems"}
MODEL_KEYS = {"dir", "device", "threads"}
SAMPLER_KEYS = {"T", "eta", "spacing", "batch"}
IEC_KEYS = {"preset"}
QUANT_KEYS = {"calibration", "options"}
CALIB_KEYS = {"T", "trajectories", "batch_size", "seed"}
CONFIG_KEYS = {"quant", "cache", "iec", "baselines"}
JACOBIAN_KEYS = {"enabled", "steps", "samples", "n_iter", "n_starts"}
METRIC_KEYS = {"fd_kid", "kid_subsets", "psnr_ssim"}
GRID_KEYS = {"n", "rows"}
THEOREM_KEYS = {"enabled"}
QUANT_PRESETS = ("none", "W8A8", "W4A8")
BASELINES = ("ddim_matched", "heun")
IEC_PRESETS = ("official_ddpm", "official_ldm")
QUALITY_COLUMNS = ("row", "NFE", "wall_s", "cpu_s", "FD_cifarnet", "KID_cifarnet", "PSNR", "SSIM", "propagated_xbar",
                   "deployment_xbar", "growth_propagated", "growth_deployment")


# ------------------------------------------------------------------------------------------------
# spec
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConfigSpec:
    """One efficient model (quantization preset and/or cache) and the rows run on it."""

    quant: str
    cache: int
    iec: tuple[bool, ...]
    baselines: tuple[str, ...]

    @property
    def name(self) -> str:
        parts = ([f"cache{self.cache}"] if self.cache else []) + ([self.quant] if self.quant != "none" else [])
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


def _baseline_tag(b: str, spec: RealSpec, c: ConfigSpec) -> str:
    return f"DDIM{_matched_nfe(spec, c)}" if b == "ddim_matched" else "Heun"


def _matched_nfe(spec: RealSpec, c: ConfigSpec) -> int:
    from iec_theory.baselines import iec_nfe

    iec = _iec_for(spec.iec_preset, c.cache)
    return iec_nfe(spec.T, iec, list(range(spec.T)))


def _iec_for(preset: str, cache: int):
    from iec_theory.iec import IECConfig, StepSelection

    cfg = IECConfig.preset(preset)
    if cache:
        cfg = dataclasses.replace(cfg, select=StepSelection.every(cache))
    return cfg


def _unknown(table: dict, allowed: set[str], where: str) -> None:
    for k in table:
        if k not in allowed:
            raise ConfigError(f"{where}{k}: unknown field; allowed: {sorted(allowed)}")


def _table(raw: dict, key: str) -> dict:
    v = raw.get(key, {})
    require(isinstance(v, dict), f"{key}: must be a table, got {type(v).__name__}")
    return v


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
    _unknown(raw, TOP_KEYS, "")
    require("kind" in raw, "kind: required; real-model specs set kind = \"real\"")
    require(raw["kind"] == "real", f"kind: must be \"real\" for a real-model spec, got {raw['kind']!r}")
    require("name" in raw, "name: required")
    name = _str(raw["name"], "name")
    require(bool(name) and all(ch.isalnum() or ch in "-_." for ch in name),
            f"name: use letters, digits, '-', '_' or '.', got {name!r}")
    description = _str(raw.get("description", ""), "description")
    seed = _int(raw.get("seed", 0), "seed", 0)

    model = _table(raw, "model")
    _unknown(model, MODEL_KEYS, "model.")
    model_dir = _str(model.get("dir", ""), "model.dir") or None
    device = _str(model.get("device", "cpu"), "model.device")
    threads = _int(model.get("threads", 1), "model.threads", 1)

    sampler = _table(raw, "sampler")
    _unknown(sampler, SAMPLER_KEYS, "sampler.")
    T = _int(sampler.get("T", 20), "sampler.T", 2)
    eta = _num(sampler.get("eta", 0.0), "sampler.eta", 0.0)
    spacing = _str(sampler.get("spacing", "uniform"), "sampler.spacing", ("uniform", "quad"))
    batch = _int(sampler.get("batch", 16), "sampler.batch", 2)

    iec_t = _table(raw, "iec")
    _unknown(iec_t, IEC_KEYS, "iec.")
    iec_preset = _str(iec_t.get("preset", "official_ddpm"), "iec.preset", IEC_PRESETS)

    quant = _table(raw, "quant")
    _unknown(quant, QUANT_KEYS, "quant.")
    cal = quant.get("calibration", {})
    require(isinstance(cal, dict), "quant.calibration: must be a table")
    _unknown(cal, CALIB_KEYS, "quant.calibration.")
    calibration = {"T": _int(cal.get("T", T), "quant.calibration.T", 1),
                   "trajectories": _int(cal.get("trajectories", 1), "quant.calibration.trajectories", 1),
                   "batch_size": _int(cal.get("batch_size", 8), "quant.calibration.batch_size", 1),
                   "seed": _int(cal.get("seed", seed + 1), "quant.calibration.seed", 0)}
    options = quant.get("options", {})
    require(isinstance(options, dict), "quant.options: must be a table")
    from .quant import QuantConfig

    qfields = {f.name for f in dataclasses.fields(QuantConfig)} - {"name", "w_bits", "a_bits"}
    _unknown(options, qfields, "quant.options.")
    try:
        QuantConfig.preset("W8A8", **options)
    except ConfigError as exc:
        raise ConfigError(f"quant.options: {exc}") from exc

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
        configs.append(ConfigSpec(q, cache, iecs, bls))
    if options.get("per_timestep", False):
        require(calibration["T"] == T, f"quant.options.per_timestep: needs quant.calibration.T = sampler.T = {T} "
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
               "psnr_ssim": _bool(met.get("psnr_ssim", True), "metrics.psnr_ssim")}

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
    return RealSpec(raw, name, description, seed, model_dir, device, threads, T, eta, spacing, batch, iec_preset,
                    calibration, dict(options), configs, jacobian, metrics, grid, theorems, path)


def _read_toml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"spec file {str(p)!r} does not exist")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from exc


def is_real_spec(path: str | Path) -> bool:
    """True when the TOML file has top-level kind = "real" (for `iec run` dispatch)."""
    return _read_toml(path).get("kind") == "real"


def load_real_spec(path: str | Path) -> RealSpec:
    return validate_real_spec(_read_toml(path), str(path))


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------
def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


def differentiable_eps(unet: torch.nn.Module):
    """(x, t) -> eps of a private copy of `unet` that torch.func can differentiate (forward and reverse).

    diffusers' CPU flash attention has no forward-mode AD, so the math SDPA kernel is forced; GroupNorm
    inputs are made contiguous (group_norm's forward AD views its tangent, which fails for the transposed
    tangents that leave an attention block).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    net = copy.deepcopy(unet).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    for mod in net.modules():
        if isinstance(mod, torch.nn.GroupNorm):
            mod.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(SDPBackend.MATH):
            return net(x, t, return_dict=False)[0]

    return eps


def spectral_radius(model: Any, x: torch.Tensor, t: int, n_iter: int = 10, n_starts: int = 1,
                    generator: torch.Generator | None = None):
    """|lambda|_max of J = d model / dx per sample by power iteration on J (one JVP per iteration).

    Converges to the modulus of the dominant eigenvalue when it is real and simple (the authors' estimate);
    with a complex dominant pair it oscillates: the value is the last ||J v||. Returns a constants.Estimate.
    """
    from iec_theory.constants import Estimate

    tt = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
    xd = x.detach()
    out = np.empty((n_starts, x.shape[0]))
    for r in range(n_starts):
        v = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        v = v / torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1).reshape(-1, 1, 1, 1)
        lam = torch.zeros(x.shape[0])
        for _ in range(n_iter):
            w = torch.func.jvp(lambda y: model(y, tt), (xd,), (v,))[1].detach()
            lam = torch.linalg.vector_norm(w.reshape(w.shape[0], -1), dim=1)
            v = w / lam.clamp_min(1e-30).reshape(-1, 1, 1, 1)
        out[r] = lam.double().cpu().numpy()
    return Estimate(out.max(0), out.max(0) - out.min(0), out.std(0), out, "power iteration on J (jvp)",
                    {"n_iter": n_iter})


@dataclass
class _Models:
    fp: Any
    schedule: Any
    unet: torch.nn.Module
    model_dir: Path
    quantized: dict[str, Any] = field(default_factory=dict)
    quant_seconds: dict[str, float] = field(default_factory=dict)

    def efficient(self, c: ConfigSpec, spec: RealSpec) -> Any:
        """A fresh efficient model for config c (the cache wrapper is stateful: a new one per run)."""
        from .cache import CachedUNet
        from .quant import Calibration, quantize_model

        base: Any = self.fp
        if c.quant != "none":
            if c.quant not in self.quantized:
                t0 = time.perf_counter()
                cal = Calibration(self.schedule, T=spec.calibration["T"],
                                  trajectories=spec.calibration["trajectories"],
                                  batch_size=spec.calibration["batch_size"], eta=spec.eta,
                                  seed=spec.calibration["seed"], spacing=spec.spacing)
                self.quantized[c.quant] = quantize_model(self.unet, c.quant, calibration=cal, **spec.quant_options)
                self.quant_seconds[c.quant] = time.perf_counter() - t0
            base = self.quantized[c.quant]
        if c.cache:
            return CachedUNet(base, refresh_every=c.cache, refresh_all_evals=True)
        return base


def _load_models(spec: RealSpec, model_dir: str | Path | None) -> _Models:
    from .pretrained import DEFAULT_MODEL_DIR, load_default_model

    d = model_dir if model_dir is not None else spec.model_dir
    fp, schedule = load_default_model(d, device=spec.device)
    return _Models(fp, schedule, fp.unet, Path(d) if d is not None else DEFAULT_MODEL_DIR)


# ------------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------------
@dataclass
class _Run:
    traj: Any
    records: list
    wall_s: float
    cpu_s: float = 0.0


def _run(method: str, model: Any, spec: RealSpec, schedule: Any, x_T: torch.Tensor, iec: Any,
         nfe_target: int | None) -> _Run:
    from iec_theory.baselines import run_method
    from iec_theory.measure import Recorder
    from iec_theory.sampler import NoiseSource

    rec = Recorder(model)
    rec.reset()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        traj = run_method(method, rec, schedule, x_T, spec.T, spec.eta, iec if method == "iec" else None,
                          NoiseSource(seed=spec.seed, keyed=True), spec.spacing, nfe_target)
    return _Run(traj, list(rec.records), time.perf_counter() - t0, time.process_time() - c0)


def _first_evals(records: list) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for step, _t, x, y in records:
        if step is not None and step not in out:
            out[step] = (x, y)
    return out


def _per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1).double(), dim=1).cpu()


def _local_errors(records: list, fp: Any, n: int, B: int, is_fp: bool):
    """eta [n], eta_max [n], eta_per_sample [n, B] (first evaluation) and the FP eps at each first point.

    Like iec_theory.measure.local_errors, but keeps the per-sample values and the FP outputs at the first
    evaluation points (reused for the Rayleigh quotients). For the FP model itself everything is zero.
    """
    from iec_theory.sampler import evaluate

    eta = np.zeros(n)
    eta_max = np.zeros(n)
    eta_ps = np.zeros((n, B))
    fp_first: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    for step, t, x, out in records:
        if step is None:
            continue
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


def _eta_ref(model: Any, ref: _Run, n: int, is_fp: bool) -> np.ndarray:
    """Local errors at the reference states: a fresh run of the efficient model along the reference
    (begin_step as in sampling, one evaluation per step), FP outputs taken from the reference's records."""
    from iec_theory.sampler import evaluate

    out = np.zeros(n)
    if is_fp:
        return out
    first = _first_evals(ref.records)
    reset = getattr(model, "reset", None)
    if reset is not None:
        reset()
    begin = getattr(model, "begin_step", None)
    with torch.no_grad():
        for i, t in enumerate(ref.traj.timesteps[:n]):
            if begin is not None:
                begin(i, t)
            x, y_fp = first[i]
            out[i] = float(_per_sample_norm(evaluate(model, x, t, False) - y_fp).mean())
    if reset is not None:
        reset()
    return out


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


# ------------------------------------------------------------------------------------------------
# Jacobians and theorem checks (estimates)
# ------------------------------------------------------------------------------------------------
def _stats(v: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}


def _jacobian_estimates(spec: RealSpec, models: _Models, ref_plain: _Run) -> tuple[dict[str, Any], dict]:
    from iec_theory.constants import estimate_lipschitz, estimate_monotonicity
    from iec_theory.ddim import step_coefficients
    from iec_theory.theorems.t1m import rho_t1m

    jc = spec.jacobian
    f = differentiable_eps(models.unet)
    ts = ref_plain.traj.timesteps
    S = jc["samples"]
    per_step, arrays = [], {k: [] for k in ("L", "L_spread", "m", "m_spread", "radius")}
    for i in jc["steps"]:
        t = ts[i]
        s = ts[i + 1] if i + 1 < len(ts) else -1
        k = step_coefficients(models.schedule, t, s, spec.eta)
        x = ref_plain.traj.xs[i][:S].detach().clone()
        g = torch.Generator().manual_seed(spec.seed * 101 + i)
        L = estimate_lipschitz(f, x, t, n_iter=jc["n_iter"], n_starts=jc["n_starts"], generator=g)
        m = estimate_monotonicity(f, x, t, n_iter=jc["n_iter"], n_starts=jc["n_starts"], generator=g)
        r = spectral_radius(f, x, t, n_iter=jc["n_iter"], n_starts=1, generator=g)
        sq = math.sqrt(k.abar_t)
        h = abs(k.b) / math.sqrt(k.abar_s)
        Lbar, mbar = sq * L.value, sq * m.value
        rho = np.array([rho_t1m(h, float(mb), float(lb)) for mb, lb in zip(mbar, Lbar)])
        per_step.append({"step": i, "t": t, "s": s, "abar": k.abar_t, "dsigma": k.dsigma, "h": h, "a": k.a,
                         "b": k.b, "L": {**_stats(L.value), "spread_max": float(L.spread.max())},
                         "m": {**_stats(m.value), "spread_max": float(m.spread.max())},
                         "radius": {**_stats(r.value)}, "Lbar_mean": float(Lbar.mean()),
                         "mbar_mean": float(mbar.mean()), "rho_T1m": _stats(rho),
                         "explicit_stable_fraction": float(np.mean(rho <= 1.0)),
                         "stability_threshold_2mbar_over_Lbar2": _stats(2 * mbar / np.maximum(Lbar, 1e-30) ** 2)})
        arrays["L"].append(L.value)
        arrays["L_spread"].append(L.spread)
        arrays["m"].append(m.value)
        arrays["m_spread"].append(m.spread)
        arrays["radius"].append(r.value)
    out = {"steps": jc["steps"], "t": [ts[i] for i in jc["steps"]], "samples": S, "n_iter": jc["n_iter"],
           "n_starts": jc["n_starts"], "model": "FP (exact model of the theory)", "per_step": per_step,
           "method": {"L": "power iteration on J^T J (iec_theory.constants.estimate_lipschitz)",
                      "m": "Lanczos on (J+J^T)/2 (iec_theory.constants.estimate_monotonicity)",
                      "radius": "power iteration on J (JVP)"},
           "note": "estimates at the FP DDIM states (x coordinates; Lbar = sqrt(abar) L, mbar = sqrt(abar) m); "
                   "L is approached from below and m from above; not worst cases over segments"}
    npz = {f"jacobian/{k}": np.array(v) for k, v in arrays.items()}
    npz["jacobian/steps"] = np.array(jc["steps"])
    npz["jacobian/t"] = np.array(out["t"])
    return out, npz


def _theorem_checks(label: str, scheme: str, pert: _Run, ref: _Run, eta_ps: np.ndarray, jac: dict[str, Any],
                    jac_arrays: dict, S: int) -> list[dict[str, Any]]:
    """T1 and T1m at plain steps, the T4 form at IEC steps, with the estimated FP constants at the probed
    steps (per sample). Estimates only: the constants are point estimates, not suprema over segments.
    An IEC step that stopped before its first correction is a plain step; a step where only one of the two
    runs stopped early is skipped."""
    from iec_theory.theorems.t1m import rho_t1m

    if scheme not in ("ddim", "iec"):
        return []
    out = []
    steps_by_i = {ps["step"]: (j, ps) for j, ps in enumerate(jac["per_step"])}
    xs_p, xs_r = pert.traj.xs, ref.traj.xs
    for i, (j, ps) in steps_by_i.items():
        rec, rec_ref = pert.traj.steps[i], ref.traj.steps[i]
        if rec.corrections != rec_ref.corrections:
            continue            # early stop in one run only: the two runs took different step maps
        d_t = _per_sample_norm(xs_p[i][:S] - xs_r[i][:S]).numpy()
        d_s = _per_sample_norm(xs_p[i + 1][:S] - xs_r[i + 1][:S]).numpy()
        # rounding allowance of the measured distance: a few ulps of the states' size in their dtype
        # (at step 0 both runs start from the same x_T and the bound is met with equality)
        ulp = 8 * torch.finfo(xs_p.dtype).eps
        tol = ulp * (_per_sample_norm(xs_p[i + 1][:S]) + _per_sample_norm(xs_r[i + 1][:S])).numpy()
        sq_t, sq_s = math.sqrt(ps["abar"]), math.sqrt(ps["abar"] * ps["a"] ** 2)
        a, b, h = ps["a"], abs(ps["b"]), ps["h"]
        L = jac_arrays["jacobian/L"][j]
        m = jac_arrays["jacobian/m"][j]
        for bi in range(S):
            eta = float(eta_ps[i, bi])
            if rec.corrections == 0:      # plain step (also an IEC step that stopped before correcting)
                bound1 = (a + b * L[bi]) * d_t[bi] + b * eta
                out.append({"row": label, "theorem": "T1", "step": i, "sample": bi, "measured": float(d_s[bi]),
                            "bound": float(bound1), "holds": bool(d_s[bi] <= bound1 + tol[bi]), "estimate": True})
                rho = rho_t1m(h, sq_t * float(m[bi]), sq_t * float(L[bi]))
                meas = d_s[bi] / sq_s
                bound = rho * d_t[bi] / sq_t + h * eta
                out.append({"row": label, "theorem": "T1m", "step": i, "sample": bi, "measured": float(meas),
                            "bound": float(bound), "holds": bool(meas <= bound + tol[bi] / sq_s), "rho": rho,
                            "estimate": True})
            else:
                den = 1.0 + b * float(m[bi])
                meas = d_s[bi] / sq_s
                bound = (d_t[bi] / sq_t + h * eta) / den if den > 0 else float("inf")
                out.append({"row": label, "theorem": "T4-form", "step": i, "sample": bi, "measured": float(meas),
                            "bound": float(bound), "holds": bool(meas <= bound + tol[bi] / sq_s), "m": float(m[bi]),
                            "corrections": rec.corrections, "estimate": True,
                            "caveat": "K=1 iteration, not the fixed point; eta at the plain-step evaluation"})
    return out


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------
def _quality(x0: torch.Tensor, fp_x0: torch.Tensor, spec: RealSpec, extractor: Any) -> dict[str, Any]:
    from .metrics import fd_kid_vs_cifar_test, psnr, ssim

    q: dict[str, Any] = {}
    img = x0.float().clamp(-1, 1)
    if spec.metrics["fd_kid"] and extractor is not None and tuple(img.shape[1:]) == (3, 32, 32):
        r = fd_kid_vs_cifar_test(img, extractor=extractor, kid_subsets=spec.metrics["kid_subsets"], seed=spec.seed)
        q.update(FD_cifarnet=r["FD_cifarnet"], KID_cifarnet=r["KID_cifarnet"], KID_cifarnet_std=r["KID_cifarnet_std"])
    if spec.metrics["psnr_ssim"]:
        ref = fp_x0.float().clamp(-1, 1)
        p = psnr(img, ref)["mean"]
        q.update(PSNR=p if math.isfinite(p) else None,
                 SSIM=ssim(img, ref)["mean"] if img.shape[-1] >= 11 else None)
    return q


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:.4g}" if (abs(v) >= 1e-3 or v == 0) else f"{v:.2e}"
    return str(v)


def _markdown(columns: Sequence[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def run_real_spec(path: str | Path | RealSpec, out_dir: str | Path | None = None,
                  model_dir: str | Path | None = None, quiet: bool = False) -> Path:
    """Run a real-model spec and write its results folder (layout in the module docstring); return the folder."""
    from iec_theory.measure import error_curve, state_abars
    from iec_theory.provenance import provenance

    spec = path if isinstance(path, RealSpec) else load_real_spec(path)
    if out_dir is None:
        tag = f"-{Path(model_dir).name}" if model_dir is not None else ""
        out_dir = Path("results") / f"{spec.name}-{spec.hash[:8]}{tag}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(spec.threads)
    t_start, c_start = time.perf_counter(), time.process_time()

    def log(msg: str) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    models = _load_models(spec, model_dir)
    cfg = models.unet.config
    shape = (int(cfg.in_channels), int(cfg.sample_size), int(cfg.sample_size))
    g = torch.Generator().manual_seed(spec.seed)
    x_T = torch.randn((spec.batch, *shape), generator=g).to(spec.device)
    B = spec.batch
    sched = models.schedule
    refs: dict[tuple, _Run] = {}
    timings: dict[str, float] = {}

    def reference(method: str, iec: Any, nfe_target: int | None) -> _Run:
        key = (method, None if iec is None else (iec.name, iec.select.kind, iec.select.count), nfe_target)
        if key not in refs:
            r = _run(method, models.fp, spec, sched, x_T, iec, nfe_target)
            # keep only each step's first evaluation (at x = xs[i]; memory), as the later uses need
            r.records = [(i, r.traj.timesteps[i], r.traj.xs[i], y) for i, (_x, y) in _first_evals(r.records).items()]
            refs[key] = r
            log(f"reference {key}: NFE {refs[key].traj.nfe}, {refs[key].wall_s:.1f}s")
        return refs[key]

    ref_plain = reference("ddim", None, None)
    abars_plain = state_abars(sched, ref_plain.traj.timesteps)
    arrays: dict[str, np.ndarray] = {"x_T": x_T.cpu().numpy(), "fp_x0": ref_plain.traj.x0.cpu().numpy()}

    extractor = None
    if spec.metrics["fd_kid"] and shape == (3, 32, 32):
        from .metrics import ClassifierFeatures

        extractor = ClassifierFeatures()

    jac: dict[str, Any] = {}
    jac_arrays: dict[str, np.ndarray] = {}
    if spec.jacobian["enabled"]:
        t0 = time.perf_counter()
        jac, jac_arrays = _jacobian_estimates(spec, models, ref_plain)
        timings["jacobian"] = time.perf_counter() - t0
        arrays.update(jac_arrays)
        log(f"jacobian estimates at steps {spec.jacobian['steps']}: {timings['jacobian']:.1f}s")

    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    finals: dict[str, torch.Tensor] = {}
    cache_stats: dict[str, Any] = {}
    for c in spec.configs:
        schemes: list[tuple[str, str, Any, int | None]] = []
        for use in c.iec:
            schemes.append(("iec" if use else "ddim", c.name + ("+IEC" if use else ""),
                            _iec_for(spec.iec_preset, c.cache) if use else None, None))
        for b in c.baselines:
            nfe = _matched_nfe(spec, c) if b == "ddim_matched" else None
            schemes.append((b, f"{c.name}+{_baseline_tag(b, spec, c)}", None, nfe))
        for method, label, iec, nfe_target in schemes:
            t0 = time.perf_counter()
            model = models.efficient(c, spec)
            ref = reference(method, iec, nfe_target)
            if c.is_fp:
                pert = ref       # the FP row of a scheme is its own reference (propagated error exactly zero)
            else:
                pert = _run(method, model, spec, sched, x_T, iec, nfe_target)
            traj = pert.traj
            ts = list(traj.timesteps)
            n = len(ts)
            abars = state_abars(sched, ts)
            prop = error_curve(traj.xs, ref.traj.xs, abars)
            times_m = ts + [-1]
            pos = {tm: k for k, tm in enumerate(times_m)}
            common = [(pos[tp], k) for k, tp in enumerate(list(ref_plain.traj.timesteps) + [-1]) if tp in pos]
            idx_m, idx_p = [a for a, _ in common], [b for _, b in common]
            dep = error_curve(traj.xs[idx_m], ref_plain.traj.xs[idx_p], abars_plain[idx_p])
            eta, eta_max, eta_ps, fp_first = _local_errors(pert.records, models.fp, n, B, c.is_fp)
            if not c.is_fp:
                pert.records = []      # every evaluation of the row's run: no longer needed (memory)
            eta_ref = _eta_ref(models.efficient(c, spec) if c.cache else model, ref, n, c.is_fp)
            ds = np.array([_dsigma(sched, ts, i, spec.eta) for i in range(n)])
            g_prop, R = _classify(prop["xbar"], eta_ref, ds)
            g_dep, _ = _classify(dep["xbar"], None, None)
            ray_mean, ray_min = np.full(n, np.nan), np.full(n, np.nan)
            ref_first = _first_evals(ref.records)
            if not c.is_fp:
                for i in range(n):
                    delta = (traj.xs[i] - ref.traj.xs[i]).reshape(B, -1).double()
                    nrm2 = (delta * delta).sum(1)
                    if i not in fp_first or i not in ref_first or float(nrm2.max()) == 0.0:
                        continue
                    de = (fp_first[i] - ref_first[i][1]).reshape(B, -1).double()
                    mu = ((de * delta).sum(1) / nrm2.clamp_min(1e-300))[nrm2 > 0]
                    ray_mean[i], ray_min[i] = float(mu.mean()), float(mu.min())
            x0 = traj.x0.detach().cpu()
            finals[label] = x0
            quality = _quality(x0, ref_plain.traj.x0.cpu(), spec, extractor)
            selected = sorted(iec.select.resolve(ts)) if iec is not None else []
            row = {"label": label, "model": {"quant": c.quant, "cache": c.cache}, "scheme": method,
                   "iec": None if iec is None else {"name": iec.name, "K": iec.K, "lambdas": list(iec.lambdas),
                                                    "tol": iec.tol, "noise": iec.noise, "steps": selected},
                   "NFE": int(traj.nfe), "NFE_nominal": _nominal_nfe(method, spec, iec, nfe_target),
                   "steps": n, "wall_s": pert.wall_s, "cpu_s": pert.cpu_s,
                   "early_stops": sum(int(r.early_stop) for r in traj.steps),
                   "propagated_x": float(prop["x"][-1]), "propagated_xbar": float(prop["xbar"][-1]),
                   "deployment_x": float(dep["x"][-1]), "deployment_xbar": float(dep["xbar"][-1]),
                   "eta_mean": float(eta.mean()), "eta_ref_mean": float(eta_ref.mean()),
                   "growth_propagated": g_prop, "growth_deployment": g_dep, "quality": quality}
            if c.cache and hasattr(model, "stats"):
                cache_stats[label] = model.stats.as_dict()
                row["cache_stats"] = cache_stats[label]
            rows.append(row)
            p = f"{label}/"
            arrays.update({p + "timesteps": np.array(ts), p + "abars": abars, p + "dsigmas": ds, p + "eta": eta,
                           p + "eta_max": eta_max, p + "eta_ref": eta_ref, p + "eta_per_sample": eta_ps,
                           p + "propagated_x": prop["x"], p + "propagated_xbar": prop["xbar"],
                           p + "propagated_xbar_per_sample": prop["xbar_per_sample"],
                           p + "deployment_x": dep["x"], p + "deployment_xbar": dep["xbar"],
                           p + "deployment_states": np.array(idx_m), p + "growth_R": np.asarray(R, dtype=np.float64),
                           p + "rayleigh_mu_mean": ray_mean, p + "rayleigh_mu_min": ray_min,
                           p + "x0": x0.float().cpu().numpy()})
            if spec.theorems and jac and not c.is_fp:
                checks += _theorem_checks(label, method, pert, ref, eta_ps, jac, jac_arrays, spec.jacobian["samples"])
            timings[label] = time.perf_counter() - t0
            log(f"{label}: NFE {traj.nfe}, sampling {pert.wall_s:.1f}s, row {timings[label]:.1f}s, "
                f"prop {row['propagated_xbar']:.3g}, dep {row['deployment_xbar']:.3g}, growth {g_prop['label']}")

    # ----- tables, grid, files
    qrows = [[r["label"], r["NFE"], r["wall_s"], r["cpu_s"], r["quality"].get("FD_cifarnet"),
              r["quality"].get("KID_cifarnet"), r["quality"].get("PSNR"), r["quality"].get("SSIM"),
              r["propagated_xbar"], r["deployment_xbar"], r["growth_propagated"]["label"],
              r["growth_deployment"]["label"]] for r in rows]
    table = _markdown(QUALITY_COLUMNS, qrows)
    summary: dict[str, dict[str, Any]] = {}
    for ch in checks:
        d = summary.setdefault(ch["row"], {}).setdefault(ch["theorem"], {"checked": 0, "holds": 0})
        d["checked"] += 1
        d["holds"] += int(ch["holds"])
    files = {"arrays": "arrays.npz", "table": "table.md", "results": "results.json"}
    if spec.grid["n"] > 0 and spec.grid["rows"]:
        from iec_theory.commands.sample_real import save_grid

        from .data import to_uint8_images

        imgs = torch.cat([finals[r][: spec.grid["n"]] for r in spec.grid["rows"]])
        if imgs.shape[1] == 3:
            save_grid(to_uint8_images(imgs), out / "grid.png", nrow=spec.grid["n"])
            files["grid"] = "grid.png"
            files["grid_rows"] = spec.grid["rows"]
    np.savez_compressed(out / "arrays.npz", **arrays)
    (out / "table.md").write_text(
        f"# {spec.name}\n\n{spec.description.strip()}\n\nModel: {models.model_dir}; T = {spec.T}, batch = {B}, "
        f"eta = {spec.eta}, IEC preset {spec.iec_preset}. FD/KID_cifarnet are in the project classifier's "
        f"feature space (not Inception FID), biased for small batches; PSNR/SSIM vs FP DDIM from the same "
        f"noise; propagated/deployment errors: final state, xbar.\n\n{table}\n\n"
        f"## Errors and growth (propagated: vs the same scheme on FP; R = E / sum dsig eta_ref)\n\n"
        f"{_markdown(GROWTH_COLUMNS, _growth_rows(rows))}\n"
        + (f"\n## FP Jacobian estimates along the FP DDIM trajectory (x coordinates; estimates)\n\n"
           f"{_markdown(JACOBIAN_COLUMNS, _jacobian_rows(jac))}\n" if jac else ""))
    from .pretrained import model_metadata, weights_sha256

    meta = model_metadata(models.model_dir)
    qreports = {}
    for name, qm in models.quantized.items():
        rep = qm.report.to_dict() if qm.report is not None else {}
        layers = rep.pop("layers", [])
        worst = sorted(layers, key=lambda r: -(r.get("out_rel_err") or 0.0))[:5]
        qreports[name] = {**rep, "layers_worst": worst, "seconds": models.quant_seconds.get(name)}
    result = {
        "kind": "real", "name": spec.name, "description": spec.description, "spec": spec.raw, "spec_path": spec.path,
        "spec_hash": spec.hash,
        "model": {"dir": str(models.model_dir), "dir_from_command_line": model_dir is not None,
                  "weights_sha256": weights_sha256(models.model_dir),
                  "num_parameters": sum(p.numel() for p in models.unet.parameters()),
                  "config": {k: v for k, v in dict(cfg).items() if not k.startswith("_")},
                  "metadata": {k: meta.get(k) for k in ("steps", "images_seen", "train_hours", "description")}},
        "settings": {"T": spec.T, "eta": spec.eta, "spacing": spec.spacing, "batch": B, "seed": spec.seed,
                     "timesteps": list(ref_plain.traj.timesteps), "iec_preset": spec.iec_preset,
                     "threads": torch.get_num_threads(), "device": spec.device},
        "rows": rows,
        "quality_table": {"columns": list(QUALITY_COLUMNS), "rows": qrows},
        "growth": {r["label"]: {"propagated": r["growth_propagated"], "deployment": r["growth_deployment"]}
                   for r in rows},
        "jacobian": jac, "theorem_checks": checks, "theorem_summary": summary, "quant_reports": qreports,
        "references": {str(k): {"NFE": v.traj.nfe, "wall_s": v.wall_s, "cpu_s": v.cpu_s} for k, v in refs.items()},
        "timings_s": {**timings, "total": time.perf_counter() - t_start,
                      "total_cpu": time.process_time() - c_start}, "files": files,
        "notes": [
            "FP rows are their own references: their propagated error is zero by construction.",
            "wall_s / cpu_s: sampling time of the row alone (wall clock / process CPU time; threads as in "
            "settings; on a shared CPU the wall clock is indicative only, cpu_s is the fairer comparison).",
            "FD_cifarnet / KID_cifarnet: features of the project's CIFAR-10 classifier vs committed test "
            "statistics; not Inception FID/KID; strongly biased at small batch.",
            "Jacobian and theorem-check constants are estimates (point estimates at FP DDIM states).",
            "DDIM<nfe> rows use the nominal NFE of the model's IEC row (no early stops).",
        ],
        "provenance": provenance(seed=spec.seed, spec_hash=spec.hash),
    }
    (out / "results.json").write_text(json.dumps(_jsonable(result), indent=2))
    log(f"done: {out} ({time.perf_counter() - t_start:.1f}s wall, {time.process_time() - c_start:.1f}s CPU)")
    if not quiet:
        print(table)
    return out


GROWTH_COLUMNS = ("row", "NFE", "eta_mean", "eta_ref_mean", "early_stops", "propagated_xbar", "growth (R)", "E",
                  "R_max", "kappa", "deployment_xbar", "growth deployment")
JACOBIAN_COLUMNS = ("step", "t", "dsigma", "L mean [min, max]", "L spread", "m mean [min, max]", "m spread",
                    "radius mean", "rho_T1m mean", "2 mbar / Lbar^2")


def _growth_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for r in rows:
        g, d = r["growth_propagated"], r["growth_deployment"]
        out.append([r["label"], r["NFE"], r["eta_mean"], r["eta_ref_mean"], r["early_stops"], r["propagated_xbar"],
                    g["label"], g.get("label_E"), g.get("R_max"), g.get("kappa"), r["deployment_xbar"], d["label"]])
    return out


def _jacobian_rows(jac: dict[str, Any]) -> list[list[Any]]:
    def mmm(d: dict[str, float]) -> str:
        return f"{_fmt(d['mean'])} [{_fmt(d['min'])}, {_fmt(d['max'])}]"

    return [[p["step"], p["t"], p["dsigma"], mmm(p["L"]), p["L"]["spread_max"], mmm(p["m"]), p["m"]["spread_max"],
             p["radius"]["mean"], p["rho_T1m"]["mean"], p["stability_threshold_2mbar_over_Lbar2"]["mean"]]
            for p in jac["per_step"]]


def _dsigma(schedule: Any, ts: list[int], i: int, eta: float) -> float:
    from iec_theory.ddim import step_coefficients

    return step_coefficients(schedule, ts[i], ts[i + 1] if i + 1 < len(ts) else -1, eta).dsigma


def _nominal_nfe(method: str, spec: RealSpec, iec: Any, nfe_target: int | None) -> int:
    from iec_theory.baselines import iec_nfe

    if method == "iec":
        return iec_nfe(spec.T, iec, list(range(spec.T)))
    if method == "ddim_matched":
        return int(nfe_target or spec.T)
    if method == "heun":
        return 2 * spec.T - 1
    return spec.T
