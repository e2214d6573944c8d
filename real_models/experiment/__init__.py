"""Real-network IEC experiments (issue 6, items 4 and 5): spec loader, runner and results layout.

One module per stage: ``spec`` (fields, validation, TOML), ``configurations`` (FP and efficient models, IEC
settings, nominal NFE), ``runs`` (sampling runs, local errors, growth labels), ``quality`` (FD/KID, PSNR/SSIM),
``theorem_checks`` (Jacobian estimates, T1/T1m/T4-form checks), ``tables`` (JSON/markdown output),
``driver`` (``run_real_spec``), ``progress`` (its per-row checkpoints: an interrupted run resumes) and
``sharded`` (the per-sample part of every row in mergeable shards). The public names are re-exported here.

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
    [cache]                       # real_models.cache
    branch = 2                    # official split: 2 = input of up[1].block[2] (default), 1 = last up block input
    calibration = {n = 16, batch_size = 16, seed = 2}   # for configs with correction = true (calibrate_cache)
    [quant]                       # real_models.quant: data-free calibration on FP trajectories
    calibration = {T = 20, trajectories = 1, batch_size = 8, seed = 1}
    options = {}                  # QuantConfig overrides, e.g. {per_timestep = true}
    [[configs]]                   # one table per efficient model; each gives a plain and/or an IEC row
    quant = "W4A8"                # none | W8A8 | W4A8
    cache = 0                     # 0 = no cache, N = DeepCache refresh every N steps (refresh_all_evals)
    correction = false            # cached-feature correction h = a h + b, fitted in the run (needs cache > 0)
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
    kid_subsets = 20              # (unused since the bootstrap: KID is one U-statistic over all images)
    bootstrap = 200               # B replicates of the bootstrap intervals (real_models.intervals), >= 10
    level = 0.95                  # interval level
    floor = true                  # FD/KID of real CIFAR-10 images at the same n
    growth_batches = 4            # growth labels per independent x_T batch (share per label)
    diagnostic_samples = 64       # first images used for local errors, eta_ref, growth, Rayleigh, theorem checks
    psnr_ssim = true              # vs the FP DDIM samples from the same noise
    [grid]
    n = 8                         # images per row of grid.png
    rows = ["FP", "W4A8", "W4A8+IEC"]
    [theorems]
    enabled = true                # T1 / T1m / T4-form with the estimated constants (marked estimates)
    [shards]                      # sharded evaluation only (iec real-eval --shards/--shard/...; ``sharded``)
    n_samples = 256               # samples per row (default sampler.batch)
    batch = 64                    # global batch, the shard unit (default min(sampler.batch, n_samples))

Row labels: the efficient model's name ("FP", "W8A8", "W4A8", "cache5", "cache5+affine", "cache5+W8A8"), then "+IEC"
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
  FD_cifarnet_ci, KID_cifarnet_ci, n, out_of_range, PSNR, SSIM, <metric>_not_distinguishable_from,
  <metric>_distinguishable_from_real} (PSNR null when identical to FP), growth_batches {propagated, deployment:
  {batches, batch_sizes, labels, share}}, cache_stats (cache rows)};
  ``floor`` {FD_cifarnet, FD_cifarnet_ci, KID_cifarnet, KID_cifarnet_ci, n, source} (real images at the same n);
  ``comparisons`` {n, B, level, seed, method, rule, FD_cifarnet / KID_cifarnet: {not_distinguishable: [[a, b]]}};
  ``cache_corrections`` {refresh interval: {steps, seconds, n, seed, mse_identity, mse_fitted}};
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

from .driver import run_real_spec
from .spec import ConfigSpec, RealSpec, is_real_spec, load_real_spec, validate_real_spec
from .theorem_checks import differentiable_eps, spectral_radius

__all__ = ["ConfigSpec", "RealSpec", "differentiable_eps", "is_real_spec", "load_real_spec", "run_real_spec",
           "spectral_radius", "validate_real_spec"]
