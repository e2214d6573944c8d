"""The driver: run a real-model spec end to end and write its results folder (layout in
real_models/experiment/__init__.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iec_theory.errors import ConfigError

from .configurations import _load_models, _Models, _nominal_nfe, row_schemes
from .progress import RowProgress
from .quality import _comparisons, _floor, _quality
from .resources import check_memory
from .runs import (
    _classify,
    _dsigma,
    _eta_ref,
    _first_evals,
    _growth_by_batch,
    _local_errors,
    _Run,
    _run,
    common_states,
)
from .spec import RealSpec, load_real_spec
from .tables import (
    GROWTH_COLUMNS,
    JACOBIAN_COLUMNS,
    QUALITY_COLUMNS,
    _distinguishability_text,
    _fd_text,
    _growth_rows,
    _jacobian_rows,
    _jsonable,
    _markdown,
    _quality_row,
)
from .theorem_checks import _jacobian_estimates, _theorem_checks


def _quant_report(models: _Models, name: str) -> dict[str, Any]:
    """The quantizer's calibration report of model `name` with its five worst layers and its seconds."""
    qm = models.quantized[name]
    rep = qm.report.to_dict() if qm.report is not None else {}
    layers = rep.pop("layers", [])
    worst = sorted(layers, key=lambda r: -(r.get("out_rel_err") or 0.0))[:5]
    return {**rep, "layers_worst": worst, "seconds": models.quant_seconds.get(name)}


def _correction_record(models: _Models, every: int) -> dict[str, Any]:
    """Steps, seconds and fit record of the cached-feature correction for refresh interval `every`."""
    v = models.corrections[every]
    return {"steps": v.steps, "seconds": models.correction_seconds.get(every),
            **{m: v.meta.get(m) for m in ("n", "seed", "mse_identity", "mse_fitted")}}


def run_real_spec(path: str | Path | RealSpec, out_dir: str | Path | None = None,
                  model_dir: str | Path | None = None, quiet: bool = False) -> Path:
    """Run a real-model spec and write its results folder (layout in the module docstring); return the folder."""
    from iec_theory.measure import error_curve, state_abars
    from iec_theory.provenance import provenance, repo_relative

    spec = path if isinstance(path, RealSpec) else load_real_spec(path)
    prov = provenance(seed=spec.seed, spec_hash=spec.hash)     # at the start: the code that runs, not the end's
    if model_dir is not None:
        check_memory(spec, model_dir)       # the spec was checked against its own model.dir
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
    from ..pretrained import weights_sha256

    progress = RowProgress(out, {"spec_hash": spec.hash, "weights_sha256": weights_sha256(models.model_dir),
                                 "device": spec.device})
    done = progress.open()
    if done:
        log(f"resuming from {progress.dir}: {len(done)} finished rows restored")
    restored_commits: dict[str, Any] = {}
    cfg = models.unet.config
    shape = (int(cfg.in_channels), int(cfg.sample_size), int(cfg.sample_size))
    g = torch.Generator().manual_seed(spec.seed)
    x_T = torch.randn((spec.batch, *shape), generator=g).to(spec.device)
    B = spec.batch
    D, G = spec.metrics["diagnostic_samples"], spec.metrics["growth_batches"]
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
        from ..metrics import ClassifierFeatures

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
    saved_refs: dict[str, Any] = {}
    saved_quant: dict[str, Any] = {}
    saved_corr: dict[str, Any] = {}
    restored: list[str] = []
    schemes = [(c, *s) for c in spec.configs for s in row_schemes(spec, c)]
    for k, (c, method, label, iec, nfe_target) in enumerate(schemes):
        if k in done:
            rec = done[k]
            if rec["label"] != label:
                raise ConfigError(f"{progress.dir}: checkpoint row-{k:03d} is row {rec['label']!r}, the spec's "
                                  f"row {k} is {label!r}; pass another --out")
            row = rec["row"]
            rows.append(row)
            arrays.update(rec["arrays"])
            finals[label] = torch.from_numpy(rec["arrays"][f"{label}/x0"])
            checks += rec["checks"]
            if "cache_stats" in row:
                cache_stats[label] = row["cache_stats"]
            saved_refs.update(rec["reference"])
            saved_quant.update(rec["quant_reports"])
            saved_corr.update(rec["cache_corrections"])
            timings[label] = rec["seconds"]
            restored.append(label)
            restored_commits[label] = rec.get("git_commit")
            continue
        t0 = time.perf_counter()
        n_checks = len(checks)
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
        idx_m, idx_p = common_states(ts, list(ref_plain.traj.timesteps))
        dep = error_curve(traj.xs[idx_m], ref_plain.traj.xs[idx_p], abars_plain[idx_p])
        eta, eta_max, eta_ps, fp_first = _local_errors(pert.records, models.fp, n, D, c.is_fp)
        if not c.is_fp:
            pert.records = []      # every evaluation of the row's run: no longer needed (memory)
        eta_ref_ps = _eta_ref(models.efficient(c, spec) if c.cache else model, ref, n, c.is_fp, D)
        eta_ref = eta_ref_ps.mean(1)
        ds = np.array([_dsigma(sched, ts, i, spec.eta) for i in range(n)])
        E_diag = prop["xbar_per_sample"][:, :D]
        g_prop, R = _classify(E_diag.mean(1), eta_ref, ds)
        g_dep, _ = _classify(dep["xbar_per_sample"][:, :D].mean(1), None, None)
        by_batch = {"propagated": _growth_by_batch(E_diag, eta_ref_ps, ds, G),
                    "deployment": _growth_by_batch(dep["xbar_per_sample"][:, :D], None, None, G)}
        ray_mean, ray_min = np.full(n, np.nan), np.full(n, np.nan)
        ref_first = _first_evals(ref.records)
        if not c.is_fp:
            for i in range(n):
                delta = (traj.xs[i][:D] - ref.traj.xs[i][:D]).reshape(D, -1).double()
                nrm2 = (delta * delta).sum(1)
                if i not in fp_first or i not in ref_first or float(nrm2.max()) == 0.0:
                    continue
                de = (fp_first[i] - ref_first[i][1][:D]).reshape(D, -1).double()
                mu = ((de * delta).sum(1) / nrm2.clamp_min(1e-300))[nrm2 > 0]
                ray_mean[i], ray_min[i] = float(mu.mean()), float(mu.min())
        x0 = traj.x0.detach().cpu()
        finals[label] = x0
        quality = _quality(x0, ref_plain.traj.x0.cpu(), spec, extractor)
        selected = sorted(iec.select.resolve(ts)) if iec is not None else []
        row = {"label": label, "config": c.name,
               "model": {"quant": c.quant, "cache": c.cache, "correction": bool(c.correction)}, "scheme": method,
               "iec": None if iec is None else {"name": iec.name, "K": iec.K, "lambdas": list(iec.lambdas),
                                                "tol": iec.tol, "noise": iec.noise, "steps": selected},
               "NFE": int(traj.nfe), "NFE_nominal": _nominal_nfe(method, spec, iec, nfe_target),
               "steps": n, "wall_s": pert.wall_s, "cpu_s": pert.cpu_s,
               "early_stops": sum(int(r.early_stop) for r in traj.steps),
               "propagated_x": float(prop["x"][-1]), "propagated_xbar": float(prop["xbar"][-1]),
               "deployment_x": float(dep["x"][-1]), "deployment_xbar": float(dep["xbar"][-1]),
               "eta_mean": float(eta.mean()), "eta_ref_mean": float(eta_ref.mean()),
               "growth_propagated": g_prop, "growth_deployment": g_dep, "growth_batches": by_batch,
               "quality": quality}
        if c.cache and hasattr(model, "stats"):
            cache_stats[label] = model.stats.as_dict()
            row["cache_stats"] = cache_stats[label]
        rows.append(row)
        p = f"{label}/"
        row_arrays = {p + "timesteps": np.array(ts), p + "abars": abars, p + "dsigmas": ds, p + "eta": eta,
                       p + "eta_max": eta_max, p + "eta_ref": eta_ref, p + "eta_per_sample": eta_ps,
                       p + "eta_ref_per_sample": eta_ref_ps,
                       p + "propagated_x": prop["x"], p + "propagated_xbar": prop["xbar"],
                       p + "propagated_xbar_per_sample": prop["xbar_per_sample"],
                       p + "deployment_x": dep["x"], p + "deployment_xbar": dep["xbar"],
                       p + "deployment_states": np.array(idx_m), p + "growth_R": np.asarray(R, dtype=np.float64),
                       p + "rayleigh_mu_mean": ray_mean, p + "rayleigh_mu_min": ray_min,
                      p + "x0": x0.float().cpu().numpy()}
        arrays.update(row_arrays)
        if spec.theorems and jac and not c.is_fp:
            checks += _theorem_checks(label, method, pert, ref, eta_ps, jac, jac_arrays, spec.jacobian["samples"])
        timings[label] = time.perf_counter() - t0
        rkey = next(kk for kk, v in refs.items() if v is ref)
        progress.save(k, label, row_arrays, row=row, checks=checks[n_checks:], seconds=timings[label],
                      reference={str(rkey): {"NFE": ref.traj.nfe, "wall_s": ref.wall_s, "cpu_s": ref.cpu_s}},
                      quant_reports={c.quant: _quant_report(models, c.quant)} if c.quant != "none" else {},
                      cache_corrections={str(c.cache): _correction_record(models, c.cache)}
                      if c.correction else {}, git_commit=prov["git_commit"])
        log(f"{label}: NFE {traj.nfe}, sampling {pert.wall_s:.1f}s, row {timings[label]:.1f}s, "
            f"prop {row['propagated_xbar']:.3g}, dep {row['deployment_xbar']:.3g}, growth {g_prop['label']} "
            f"(batches {by_batch['propagated']['share']}){_fd_text(quality)}")

    t0 = time.perf_counter()
    floor = _floor(B, spec, extractor)
    comparisons = _comparisons(rows, floor, spec)
    timings["floor_and_comparisons"] = time.perf_counter() - t0
    if floor is not None:
        log(f"real-data floor at n={B} ({floor['source']}){_fd_text(floor)}")

    # ----- tables, grid, files
    qrows = [_quality_row(r) for r in rows]
    if floor is not None:
        qrows.append(_quality_row({"label": f"real data (n={floor['n']})", "quality": floor}))
    table = _markdown(QUALITY_COLUMNS, qrows)
    verdict = _distinguishability_text(comparisons, B)
    summary: dict[str, dict[str, Any]] = {}
    for ch in checks:
        d = summary.setdefault(ch["row"], {}).setdefault(ch["theorem"], {"checked": 0, "holds": 0})
        d["checked"] += 1
        d["holds"] += int(ch["holds"])
    files = {"arrays": "arrays.npz", "table": "table.md", "results": "results.json"}
    if spec.grid["n"] > 0 and spec.grid["rows"]:
        from iec_theory.commands.sample_real import save_grid

        from ..data import to_uint8_images

        imgs = torch.cat([finals[r][: spec.grid["n"]] for r in spec.grid["rows"]])
        if imgs.shape[1] == 3:
            save_grid(to_uint8_images(imgs), out / "grid.png", nrow=spec.grid["n"])
            files["grid"] = "grid.png"
            files["grid_rows"] = spec.grid["rows"]
    np.savez_compressed(out / "arrays.npz", **arrays)
    (out / "table.md").write_text(
        f"# {spec.name}\n\n{spec.description.strip()}\n\nModel: {repo_relative(models.model_dir)}; T = {spec.T}, "
        f"batch = {B}, "
        f"eta = {spec.eta}, IEC preset {spec.iec_preset}. FD/KID_cifarnet are in the project classifier's "
        f"feature space (not Inception FID), biased for small batches, with {100 * spec.metrics['level']:g}% "
        f"percentile-bootstrap intervals (B = {spec.metrics['bootstrap']}, seed {spec.seed}); the real-data row is "
        f"the floor at the same n; rows whose intervals overlap are not distinguishable at n = {B} and are not "
        f"ranked. PSNR/SSIM vs FP DDIM from the same noise; propagated/deployment errors: final state, xbar; "
        f"growth shares over {G} independent x_T batches of the first {D} images.\n\n{table}\n\n"
        f"## Errors and growth (propagated: vs the same scheme on FP; R = E / sum dsig eta_ref)\n\n"
        f"{_markdown(GROWTH_COLUMNS, _growth_rows(rows))}\n"
        + (f"\n## FP Jacobian estimates along the FP DDIM trajectory (x coordinates; estimates)\n\n"
           f"{_markdown(JACOBIAN_COLUMNS, _jacobian_rows(jac))}\n" if jac else "")
        + f"\n## Distinguishability\n\n{verdict}\n")
    from ..pretrained import model_metadata

    meta = model_metadata(models.model_dir)
    qreports = {**saved_quant, **{name: _quant_report(models, name) for name in models.quantized}}
    result = {
        "kind": "real", "name": spec.name, "description": spec.description, "spec": spec.raw, "spec_path": spec.path,
        "spec_hash": spec.hash,
        "model": {"dir": repo_relative(models.model_dir), "dir_from_command_line": model_dir is not None,
                  "weights_sha256": weights_sha256(models.model_dir),
                  "num_parameters": sum(p.numel() for p in models.unet.parameters()),
                  "config": {k: v for k, v in dict(cfg).items() if not k.startswith("_")},
                  "metadata": {k: meta.get(k) for k in ("steps", "images_seen", "train_hours", "description")}},
        "settings": {"T": spec.T, "T_requested": spec.T_requested,
                     "eta": spec.eta, "spacing": spec.spacing, "batch": B, "seed": spec.seed,
                     "timesteps": list(ref_plain.traj.timesteps), "iec_preset": spec.iec_preset,
                     "threads": torch.get_num_threads(), "device": spec.device, "diagnostic_samples": D,
                     "growth_batches": G, "cache_branch": spec.cache_branch, "bootstrap": spec.metrics["bootstrap"],
                     "level": spec.metrics["level"]},
        "floor": floor, "comparisons": comparisons,
        "cache_corrections": {**saved_corr, **{str(k): _correction_record(models, k) for k in models.corrections}},
        "rows": rows,
        "quality_table": {"columns": list(QUALITY_COLUMNS), "rows": qrows},
        "growth": {r["label"]: {"propagated": r["growth_propagated"], "deployment": r["growth_deployment"]}
                   for r in rows},
        "jacobian": jac, "theorem_checks": checks, "theorem_summary": summary, "quant_reports": qreports,
        "references": {**saved_refs,
                       **{str(k): {"NFE": v.traj.nfe, "wall_s": v.wall_s, "cpu_s": v.cpu_s} for k, v in refs.items()}},
        "timings_s": {**timings, "total": time.perf_counter() - t_start,
                      "total_cpu": time.process_time() - c_start}, "files": files,
        "resumed": {"rows_restored": restored, "git_commits": restored_commits,
                    "note": "rows restored from progress/ checkpoints of an interrupted run of the same spec and "
                            "weights; git_commits: the commit each restored row was computed at (provenance: this "
                            "process's, taken at its start); timings_s.total and total_cpu count this process only"}
        if restored else None,
        "notes": [
            "FP rows are their own references: their propagated error is zero by construction.",
            "wall_s / cpu_s: sampling time of the row alone (wall clock / process CPU time; threads as in "
            "settings; on a shared CPU the wall clock is indicative only, cpu_s is the fairer comparison).",
            "FD_cifarnet / KID_cifarnet: features of the project's CIFAR-10 classifier vs committed test "
            "statistics; not Inception FID/KID; biased at small n: compare with the real-data floor at the same n. "
            "Intervals: centred percentile bootstrap over the generated images (comparisons.method); rows whose "
            "intervals overlap are not distinguishable at this n (comparisons.*.not_distinguishable), never ranked.",
            "Local errors, eta_ref, Rayleigh quotients, growth labels and theorem checks use the first "
            "settings.diagnostic_samples images; growth_batches splits them into independent x_T batches.",
            "Jacobian and theorem-check constants are estimates (point estimates at FP DDIM states).",
            "DDIM<nfe> rows use the nominal NFE of the model's IEC row (no early stops).",
        ],
        "provenance": prov,
    }
    (out / "results.json").write_text(json.dumps(_jsonable(result), indent=2))
    progress.finish()
    log(f"done: {out} ({time.perf_counter() - t_start:.1f}s wall, {time.process_time() - c_start:.1f}s CPU)")
    if not quiet:
        print(table)
        print(verdict)
    return out
