"""Sharded evaluation of a real spec: the per-sample part of every row, split into shards that run anywhere,
merged exactly (issue 14, item 2; the core is real_models.shards).

What a shard computes, per row of the spec (FP, quantized, cached; with and without IEC; baselines) and per
global batch b of ``ShardPlan(shards.n_samples, shards.batch, seed)``: x_T from the per-sample seeds (the same
images whatever the shard count), per-step noise keyed by the batch, the row's scheme on its efficient model
and the same scheme on the FP model (the reference of the propagated error), FP DDIM (the reference of the
deployment error and of PSNR/SSIM), then the sufficient statistics of ``ShardStats``: classifier features
(FD/KID), per-sample propagated and deployment error curves (xbar), per-sample out-of-range share, PSNR and
SSIM, and the growth label of the batch's mean propagated curve (the global batches are independent x_T
batches). Shards are saved under ``<out>/shards/<row>/shard-i-of-n.{safetensors,json}``.

The merge (``merge_sharded``) gives per row: n, FD_cifarnet both from the merged sufficient statistics and
from the merged features with its bootstrap interval (they agree to float64 rounding for n above the feature
dimension), KID with its interval
(for n <= KID_MAX_N; the U-statistic needs an n x n kernel), the real-data floor at the same n, the
not-distinguishable pairs (real_models.intervals; never ranked), the mean error curves with their growth
label, and the share of global batches per growth label. It writes ``sharded_results.json`` and
``sharded_table.md``. The diagnostics of the single-process run (Jacobian estimates, local errors at the
reference, theorem checks, grids) use a few images and stay in ``run_real_spec``.

Every process uses the spec's ``model.threads`` (results depend on the thread count only through float
rounding, so keep it fixed across a sharded run; with W local workers set it to cores / W).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iec_theory.errors import require

from .. import shards as shard_core
from ..shards import ShardPlan, ShardStats, merge_shards, save_shard
from .spec import RealSpec, validate_real_spec

__all__ = ["KID_MAX_N", "evaluate_rows_shard", "merge_sharded", "plan_for", "row_folder", "run_sharded",
           "shard_done", "shard_meta"]

KID_MAX_N = 10_000
_PROCESS: dict[tuple, Any] = {}        # (spec hash, model dir) -> (models, extractor): built once per worker


def plan_for(spec: RealSpec) -> ShardPlan:
    """The shard plan of a spec: its [shards] n_samples and batch, its seed."""
    return ShardPlan(spec.shards["n_samples"], spec.shards["batch"], spec.seed)


def row_folder(out: Path, label: str) -> Path:
    """<out>/shards/<label with every character outside [A-Za-z0-9._-] replaced by '_'>."""
    return Path(out) / "shards" / re.sub(r"[^A-Za-z0-9._-]", "_", label)


def shard_meta(spec: RealSpec, model_dir: str | Path | None) -> dict[str, Any]:
    """What every shard record of one evaluation must share (checked at resume and at the merge)."""
    from ..pretrained import DEFAULT_MODEL_DIR, weights_sha256

    d = Path(model_dir) if model_dir is not None else (Path(spec.model_dir) if spec.model_dir else DEFAULT_MODEL_DIR)
    return {"spec_hash": spec.hash, "weights_sha256": weights_sha256(d)}


def _setup(spec: RealSpec, model_dir: str | Path | None) -> tuple[Any, Any]:
    from .configurations import _load_models

    key = (spec.hash, None if model_dir is None else str(model_dir))
    if key not in _PROCESS:
        _PROCESS.clear()
        models = _load_models(spec, model_dir)
        extractor = None
        if spec.metrics["fd_kid"]:
            from ..metrics import ClassifierFeatures

            extractor = ClassifierFeatures()
        _PROCESS[key] = (models, extractor)
    return _PROCESS[key]


def _batch_rows(spec: RealSpec, models: Any, extractor: Any, x_T: torch.Tensor, noise_seed: int
                ) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Every row on one global batch: {label: (ShardStats.add arguments, record meta)}."""
    from iec_theory.measure import error_curve, state_abars

    from ..metrics import psnr, ssim
    from .configurations import row_schemes
    from .runs import _classify, _run, common_states

    sched = models.schedule
    refs: dict[tuple, Any] = {}

    def reference(method: str, iec: Any, nfe: int | None) -> Any:
        key = (method, None if iec is None else (iec.name, iec.select.kind, iec.select.count), nfe)
        if key not in refs:
            refs[key] = _run(method, models.fp, spec, sched, x_T, iec, nfe, noise_seed).traj
        return refs[key]

    plain = reference("ddim", None, None)
    plain_x0 = plain.x0.detach().float().cpu().clamp(-1, 1)
    abars_plain = state_abars(sched, plain.timesteps)
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for c in spec.configs:
        for method, label, iec, nfe in row_schemes(spec, c):
            ref = reference(method, iec, nfe)
            traj = ref if c.is_fp else _run(method, models.efficient(c, spec), spec, sched, x_T, iec, nfe,
                                            noise_seed).traj
            ts = list(traj.timesteps)
            prop = error_curve(traj.xs, ref.xs, state_abars(sched, ts))["xbar_per_sample"]      # [S, n]
            i_m, i_p = common_states(ts, list(plain.timesteps))
            dep = error_curve(traj.xs[i_m], plain.xs[i_p], abars_plain[i_p])["xbar_per_sample"]
            x0 = traj.x0.detach().float().cpu()
            img = x0.clamp(-1, 1)
            scalars = {"out_of_range": (x0.abs() > 1).double().flatten(1).mean(1).numpy()}
            if spec.metrics["psnr_ssim"]:
                p = psnr(img, plain_x0)["per_image"]
                scalars["psnr"] = np.where(np.isfinite(p), p, 0.0)
                scalars["psnr_identical"] = (~np.isfinite(p)).astype(np.float64)
                if img.shape[-1] >= 11:
                    scalars["ssim"] = ssim(img, plain_x0)["per_image"]
            feats = extractor(img) if extractor is not None and tuple(img.shape[1:]) == (3, 32, 32) else None
            add = {"features": feats, "curves": {"propagated_xbar": prop.T, "deployment_xbar": dep.T},
                   "scalars": scalars}
            out[label] = (add, {"NFE": int(traj.nfe), "timesteps": ts, "deployment_states": i_m,
                                "label": _classify(prop.mean(1), None, None)[0]["label"]})
    return out


def evaluate_rows_shard(spec_raw: dict, spec_path: str | None, model_dir: str | None, shard: int,
                        n_shards: int) -> dict[str, tuple[ShardStats, dict[str, Any]]]:
    """Shard `shard` of `n_shards`: {row label: (statistics, record meta)} (a pure function of its arguments:
    safe to run in any process; the spec is re-validated there)."""
    spec = validate_real_spec(spec_raw, spec_path)
    torch.set_num_threads(spec.threads)
    models, extractor = _setup(spec, model_dir)
    cfg = models.unet.config
    shape = (int(cfg.in_channels), int(cfg.sample_size), int(cfg.sample_size))
    plan = plan_for(spec)
    stats: dict[str, ShardStats] = {}
    meta: dict[str, dict[str, Any]] = {}
    for b, idx in plan.batches(shard, n_shards):
        x_T = plan.x_T(idx, shape).to(spec.device)
        for label, (add, m) in _batch_rows(spec, models, extractor, x_T, plan.batch_noise_seed(b)).items():
            stats.setdefault(label, ShardStats()).add(**add)
            rec = meta.setdefault(label, {"batch_labels": {}, "NFE": m["NFE"], "timesteps": m["timesteps"],
                                          "deployment_states": m["deployment_states"]})
            rec["batch_labels"][str(b)] = m["label"]
    return {label: (stats[label], meta[label]) for label in stats}


def shard_done(out: Path, spec: RealSpec, shard: int, n_shards: int, meta: dict[str, Any]) -> bool:
    """True when every row of this shard has a valid record of the same plan and meta (a rerun skips it)."""
    plan = plan_for(spec)
    return all(shard_core.shard_done(row_folder(out, label), plan, shard, n_shards, meta)
               for label in spec.row_labels())


def save_rows_shard(out: Path, spec: RealSpec, shard: int, n_shards: int,
                    result: dict[str, tuple[ShardStats, dict[str, Any]]], meta: dict[str, Any]) -> None:
    plan = plan_for(spec)
    for label, (st, m) in result.items():
        save_shard(row_folder(out, label), st, plan, shard, n_shards, {**meta, **m, "row": label})


def run_sharded(spec: RealSpec, out: str | Path, n_shards: int, shards: list[int] | None = None,
                executor: Any = None, model_dir: str | Path | None = None,
                log: Any = None) -> list[int]:
    """Evaluate the given shards (default all of n_shards) on `executor` (default in this process), skipping
    those already complete, saving each as it finishes (resumable). Returns the shards run now."""
    from iec_theory.harness.executors import InlineExecutor

    out = Path(out)
    require(n_shards >= 1, f"--shards must be >= 1, got {n_shards}")
    nb = plan_for(spec).n_batches
    require(n_shards <= nb, f"{n_shards} shards but the plan has only {nb} global batch(es) (shards.n_samples = "
                            f"{spec.shards['n_samples']}, shards.batch = {spec.shards['batch']}): use at most {nb}")
    meta = shard_meta(spec, model_dir)
    todo = [i for i in (shards if shards is not None else range(n_shards))
            if not shard_done(out, spec, i, n_shards, meta)]
    if not todo:
        return []
    ex = executor if executor is not None else InlineExecutor()
    md = None if model_dir is None else str(model_dir)
    futures = {ex.submit(evaluate_rows_shard, spec.raw, spec.path, md, i, n_shards): i for i in todo}
    t0 = time.perf_counter()
    try:
        for fut in ex.as_completed(list(futures)):
            i = futures.pop(fut)
            save_rows_shard(out, spec, i, n_shards, fut.result(), meta)
            if log is not None:
                log(f"shard {i} of {n_shards} saved ({time.perf_counter() - t0:.1f}s)")
    except BaseException:
        ex.cancel(list(futures))
        raise
    return todo


def _records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("shard-*-of-*.json"))]


def merge_sharded(spec: RealSpec, out: str | Path, model_dir: str | Path | None = None) -> dict[str, Any]:
    """Merge every row's shards (checking plan, coverage and meta) into sharded_results.json and
    sharded_table.md; return the results."""
    from iec_theory.provenance import provenance

    from ..intervals import fd_from_moments
    from ..metrics import ClassifierFeatures, fd_kid_intervals_vs_cifar_test, load_test_stats, real_data_floor
    from .quality import _comparisons
    from .runs import _classify
    from .tables import _jsonable

    out = Path(out)
    meta = shard_meta(spec, model_dir)
    m = spec.metrics
    extractor = ClassifierFeatures() if m["fd_kid"] else None
    ref = load_test_stats(extractor.weights_dir) if extractor is not None else None
    rows: list[dict[str, Any]] = []
    n = spec.shards["n_samples"]
    n_shards = 0
    for label in spec.row_labels():
        folder = row_folder(out, label)
        st = merge_shards(folder, expect_meta=meta)
        recs = _records(folder)
        n_shards = recs[0]["n_shards"]
        batch_labels = [lab for r in sorted(recs, key=lambda r: r["shard"])
                        for _, lab in sorted(r["meta"]["batch_labels"].items(), key=lambda kv: int(kv[0]))]
        E = st.curve_mean("propagated_xbar")
        growth = _classify(E, None, None)[0]
        q: dict[str, Any] = {"n": st.count, "out_of_range": st.scalars["out_of_range"]["sum"] / st.count}
        if "psnr" in st.scalars:
            ident = st.scalars["psnr_identical"]["sum"]
            q["PSNR"] = None if ident else st.scalars["psnr"]["sum"] / st.count
            q["PSNR_identical_images"] = int(ident)
        if "ssim" in st.scalars:
            q["SSIM"] = st.scalars["ssim"]["sum"] / st.count
        if st.feature_sum is not None and ref is not None:
            mu, cov = st.fd_stats()
            q["FD_cifarnet_moments"] = fd_from_moments(mu, cov, ref["mean"], ref["cov"])
            if st.count <= KID_MAX_N:
                r = fd_kid_intervals_vs_cifar_test(feats=st.features, extractor=extractor, B=m["bootstrap"],
                                                   seed=spec.seed, level=m["level"])
                q.update(FD_cifarnet=r["FD_cifarnet"], FD_cifarnet_ci=r["FD_cifarnet_ci"],
                         KID_cifarnet=r["KID_cifarnet"], KID_cifarnet_ci=r["KID_cifarnet_ci"])
            else:
                q["FD_cifarnet"] = q["FD_cifarnet_moments"]
                q["note"] = f"n > {KID_MAX_N}: no bootstrap intervals or KID (n x n kernel); FD from the moments"
        rows.append({"label": label, "NFE": recs[0]["meta"]["NFE"], "quality": q,
                     "propagated_xbar_final": float(E[-1]), "deployment_xbar_final":
                         float(st.curve_mean("deployment_xbar")[-1]),
                     "growth_propagated": growth, "growth_batches": {
                         "batches": len(batch_labels), "labels": batch_labels,
                         "share": {lab: batch_labels.count(lab) / len(batch_labels)
                                   for lab in sorted(set(batch_labels))}},
                     "curves": {"propagated_xbar_mean": st.curve_mean("propagated_xbar"),
                                "propagated_xbar_std": st.curve_std("propagated_xbar"),
                                "deployment_xbar_mean": st.curve_mean("deployment_xbar")}})
    floor = None
    if m["fd_kid"] and m["floor"] and extractor is not None and n <= KID_MAX_N:
        r = real_data_floor(n, extractor=extractor, B=m["bootstrap"], seed=spec.seed, level=m["level"])
        floor = {k: r[k] for k in ("FD_cifarnet", "FD_cifarnet_ci", "KID_cifarnet", "KID_cifarnet_ci", "n", "source")}
    comparisons = _comparisons(rows, floor, spec, n=n)
    result = {"kind": "real-sharded", "name": spec.name, "spec_hash": spec.hash, "spec_path": spec.path,
              "plan": plan_for(spec).as_dict(), "n_shards": n_shards, "meta": meta,
              "settings": {"T": spec.T, "eta": spec.eta, "spacing": spec.spacing, "iec_preset": spec.iec_preset,
                           "threads": spec.threads, "device": spec.device, "cache_branch": spec.cache_branch},
              "rows": rows, "floor": floor, "comparisons": comparisons,
              "notes": ["Merged from per-shard sufficient statistics; results do not depend on the shard count.",
                        "FD_cifarnet_moments: FD from the merged feature sums and scatter matrices; FD_cifarnet and "
                        "its interval: from the merged features (bootstrap). They agree to float64 rounding when "
                        "n exceeds the feature dimension; below it the covariance is singular and the square "
                        "roots of its rounding-level eigenvalues differ at about 1e-9 relative.",
                        "growth_batches: one label per global batch (independent x_T batches)."],
              "provenance": provenance(seed=spec.seed, spec_hash=spec.hash, n_shards=n_shards)}
    (out / "sharded_results.json").write_text(json.dumps(_jsonable(result), indent=2))
    cols = ["row", "NFE", "n", "FD_cifarnet [CI]", "KID_cifarnet [CI]", "out of range", "PSNR", "growth (share)"]

    def fmt_ci(q: dict[str, Any], k: str) -> str:
        if q.get(k) is None:
            return "-"
        ci = q.get(f"{k}_ci")
        return f"{q[k]:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")

    body = [[r["label"], str(r["NFE"]), str(r["quality"]["n"]), fmt_ci(r["quality"], "FD_cifarnet"),
             fmt_ci(r["quality"], "KID_cifarnet"), f"{r['quality']['out_of_range']:.4f}",
             "-" if r["quality"].get("PSNR") is None else f"{r['quality']['PSNR']:.2f}",
             f"{r['growth_propagated']['label']} ({r['growth_batches']['share']})"] for r in rows]
    if floor is not None:
        body.append([f"real data (n={floor['n']})", "-", str(floor["n"]), fmt_ci(floor, "FD_cifarnet"),
                     fmt_ci(floor, "KID_cifarnet"), "-", "-", "-"])
    table = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n" + "\n".join(
        "| " + " | ".join(r) + " |" for r in body)
    (out / "sharded_table.md").write_text(
        f"# {spec.name} (sharded: {n_shards} shards, n = {n}, global batch {spec.shards['batch']})\n\n{table}\n")
    return result
