"""Real models: the committed default DDPM (training record), then every real-model results folder
(written by `iec run` on a real-model spec or by the real-model code): quality table, error curves,
Jacobian estimates, sample grids (FP vs W4A8, with and without IEC). By default nothing here is
computed from a network during the report build: it reads what `iec real-eval` wrote (or runs the
missing specs first with `iec report --run-real`), and each part says "not available: <reason>" when
its folder is absent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from .. import typst_util as tu
from ..builder import NotAvailable
from ..figures import positive

COLUMN_NAMES = {"row": "Row", "wall_s": "Wall s", "cpu_s": "CPU s", "FD_cifarnet": "FD (classifier)",
                "FD_cifarnet_ci": "FD interval", "KID_cifarnet": "KID (classifier)", "KID_cifarnet_ci": "KID interval",
                "out_of_range": "Share outside [-1, 1]", "growth_share_batches": "Growth share (x_T batches)",
                "propagated_xbar": "Propagated (xbar)", "deployment_xbar": "Deployment (xbar)",
                "growth_propagated": "Growth (propagated)", "growth_deployment": "Growth (deployment)"}


def _default_model(ctx) -> str:
    out = [tu.heading("The default checkpoint", 2)]
    try:
        pre = ctx.module("real_models.pretrained", "model_metadata", "default_model_dir")
    except NotAvailable as exc:
        return "".join(out) + ctx.not_available(str(exc))
    d = Path(pre.default_model_dir())
    meta = pre.model_metadata() if (d / "metadata.json").is_file() else {}
    weights = d / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        out.append(ctx.not_available(f"the default DDPM weights are not in this checkout "
                                     f"({d.relative_to(d.parents[2]) if len(d.parents) > 2 else d} has no "
                                     f"{weights.name}); train them with iec train-ddpm"))
        return "".join(out)
    rows = []
    for k, v in sorted(meta.items()):
        if k == "history":          # the replaced models' quality appears in the quality table below
            continue
        if isinstance(v, (dict, list)):
            v = json.dumps(v, sort_keys=True)
            if len(v) > 90:
                v = v[:87] + "..."
        rows.append((k, v if isinstance(v, (int, float)) else str(v)))
    if rows:
        out.append(ctx.table(["Field", "Value"], rows, caption="metadata.json of the committed default DDPM",
                             align="(left, left)"))
    out.append(_quality_files(ctx, d, meta))
    log = d / "training_log.jsonl"
    if log.is_file():
        recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        steps = np.array([r.get("step", i) for i, r in enumerate(recs)], dtype=float)
        loss = np.array([r.get("loss", np.nan) for r in recs], dtype=float)
        ok = np.isfinite(loss) & (loss > 0)
        if ok.any():
            data = {"step": steps[ok], "loss": loss[ok]}

            def draw(fig, dd):
                ax = fig.subplots()
                ax.semilogy(dd["step"], dd["loss"], color="#1565c0", lw=1)
                ax.set_xlabel("training step")
                ax.set_ylabel("training loss (eps MSE)")

            out.append(ctx.figure("real_training_loss", data, draw, "Training loss of the default DDPM "
                                  "(training_log.jsonl, log scale).", size=(5.5, 2.4), log=("loss",), width="70%"))
    return "".join(out)


def _quality_rows(model: str, source: str, rec: dict) -> list[tuple]:
    n, T = rec.get("n"), rec.get("T", rec.get("steps"))
    return [(model, source, key, n, T, r.get("out_of_range"), r.get("FD_cifarnet"), r.get("FD_cifarnet_ci"),
             r.get("KID_cifarnet"), r.get("KID_cifarnet_ci"), r.get("IS_cifarnet"), r.get("IS_cifarnet_ci"))
            for key, r in (rec.get("rows") or {}).items() if isinstance(r, dict)]


def _quality_files(ctx, d: Path, meta: dict | None = None) -> str:
    """Sample-quality measurements in the model folder (quality*.json of scripts/measure_default_quality.py),
    then those of the models it replaced (metadata.json history, real_models/model_history.py)."""
    rows = []
    for f in sorted(d.glob("quality*.json")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        rows += _quality_rows("this model", f.name, rec)
    for i, h in enumerate((meta or {}).get("history") or []):
        if not isinstance(h, dict):
            continue
        label = f"replaced #{i + 1} ({h.get('steps')} steps)"
        for q in h.get("quality") or []:
            if isinstance(q, dict):
                rows += _quality_rows(label, Path(str(q.get("source", "?"))).name, q)
    if not rows:
        return ctx.not_available("no quality*.json in the model folder (run scripts/measure_default_quality.py)")
    return ctx.table(["Model", "File", "Row", "n", "T", "Outside [-1, 1]", "FD", "FD interval", "KID", "KID interval",
                      "IS (classifier)", "IS interval"], [[_fmt_cell(v) for v in r] for r in rows],
                     caption="Sample quality of the committed default DDPM and of the models it replaced (plain DDIM, "
                             "eta 0; FD/KID/IS in the "
                             "project classifier's space, not Inception; intervals where the file has them; the "
                             "real-data row is the floor at the same n). Rows whose intervals overlap are not "
                             "distinguishable at that n.",
                     align="(left, left, left, right, right, right, right, left, right, left, right, left)")


def _real_specs(ctx):
    """[(spec file, RealSpec or None, reason)] for experiments/*.toml with kind = "real"."""
    from ..experiments import EXPERIMENTS

    try:
        exp = ctx.module("real_models.experiment", "load_real_spec", "is_real_spec")
    except NotAvailable as exc:
        return [], str(exc)
    out = []
    for f in sorted(EXPERIMENTS.glob("*.toml")) if EXPERIMENTS.is_dir() else []:
        try:
            if not exp.is_real_spec(f):
                continue
            out.append((f, exp.load_real_spec(f), ""))
        except Exception as exc:  # ConfigError names the field
            out.append((f, None, f"rejected: {exc}"))
    return out, ""


def _find_real_folder(ctx, spec_hash: str) -> Path | None:
    for root in ctx.results_dirs:
        root = Path(root)
        if not root.is_dir():
            continue
        for rj in sorted(root.glob("*/results.json")):
            try:
                r = json.loads(rj.read_text())
            except (OSError, ValueError):
                continue
            if r.get("kind") == "real" and r.get("spec_hash") == spec_hash:
                return rj.parent
    return None


def _num(v) -> str:
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def _fmt_cell(v):
    if v is None:
        return "n/a"
    if isinstance(v, dict):
        return v.get("label", json.dumps(v, sort_keys=True))
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return f"[{_num(float(v[0]))}, {_num(float(v[1]))}]"
    return v


def _distinguishability(name: str, res: dict) -> str:
    """Which rows can be told apart at this n (overlapping intervals: 'not distinguishable', never ranked)."""
    cmp_, floor = res.get("comparisons") or {}, res.get("floor")
    if not cmp_:
        return tu.text(f"{name}: this results folder has no FD/KID intervals (written before issue 13); its FD/KID "
                       "numbers carry no uncertainty and must not be used to rank rows.") + "\n\n"
    n, level = cmp_.get("n"), cmp_.get("level")
    out = [f"{name}: FD/KID intervals are {100 * float(level or 0):g}% bootstrap intervals (B = {cmp_.get('B')}, "
           f"seed {cmp_.get('seed')}; {cmp_.get('method')}). Rule: rows whose intervals overlap are not "
           f"distinguishable at n = {n} and are not ranked."]
    for metric, label in (("FD_cifarnet", "FD (classifier)"), ("KID_cifarnet", "KID (classifier)")):
        pairs = (cmp_.get(metric) or {}).get("not_distinguishable")
        if pairs is None:
            continue
        if pairs:
            out.append(f"{label}: not distinguishable at n = {n}: " + "; ".join(f"{a} ~ {b}" for a, b in pairs) + ".")
        else:
            out.append(f"{label}: all rows are distinguishable at n = {n} (pairwise disjoint intervals).")
        same_as_real = [r.get("label") for r in res.get("rows") or []
                        if (r.get("quality") or {}).get(f"{metric}_distinguishable_from_real") is False]
        if floor is not None:
            out.append(f"{label} of real images at the same n ({floor.get('source')}): "
                       f"{_num(float(floor.get(metric)))} {_fmt_cell(floor.get(f'{metric}_ci'))}"
                       + (f"; not distinguishable from real data at this n: {', '.join(same_as_real)}."
                          if same_as_real else "; every row is distinguishable from real data at this n."))
    return "".join(tu.text(x) + "\n\n" for x in out)


def _share(gb) -> str | None:
    """'linear 75%, exponential 25%' from a growth_batches entry (None when absent)."""
    share = (gb or {}).get("share")
    if not share:
        return None
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(share.items(), key=lambda kv: -kv[1]))


def _per_row_curves(ctx, name, res, arrays, key, ylabel, fig) -> str:
    labels = [r["label"] for r in res.get("rows", [])]
    data, names = {}, []
    for lab in labels:
        y = arrays.get(f"{lab}/{key}")
        if y is None:
            continue
        y = np.asarray(y, dtype=float).reshape(-1)
        if y.size and np.all(np.isfinite(y)) and np.any(y > 0):
            data[f"c{len(names)}"] = y
            names.append(lab)
    if not data:
        return ""

    def draw(figure, d):
        ax = figure.subplots()
        for i, (k, lab) in enumerate(zip(d, names)):
            ax.semilogy(np.arange(d[k].size), positive(d[k]), lw=1.0, ls=("-", "--", "-.", ":")[i % 4],
                        color=f"C{i % 10}", label=lab)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("state index n (steps taken)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=6, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        figure.subplots_adjust(right=0.78)

    why = ("FP rows are their own reference and have zero propagated error, so they are not drawn"
           if key.startswith("propagated") else
           "distance to plain FP DDIM from the same noise: what a user gets; rows with zero distance are not drawn")
    return ctx.figure(fig, data, draw, f"{name}: {ylabel} per step, one curve per configuration (log scale; "
                      f"{why}).", size=(6.5, 3.0), log=tuple(data), width="90%")


def _jacobian(ctx, name, res) -> str:
    jac = res.get("jacobian") or {}
    steps = jac.get("per_step") or []
    if not steps:
        return ctx.not_available(f"{name}: no Jacobian estimates in results.json (jacobian.enabled = false?)")

    def m(d, k):
        v = d.get(k)
        return v.get("mean") if isinstance(v, dict) else v

    rows = [(st.get("step"), st.get("t"), st.get("dsigma"), m(st, "L"), (st.get("L") or {}).get("spread_max"),
             m(st, "m"), m(st, "radius"), st.get("Lbar_mean"), st.get("mbar_mean"), m(st, "rho_T1m"),
             st.get("explicit_stable_fraction")) for st in steps]
    out = [ctx.table(["Step", "t", "dsigma", "L (est.)", "L spread", "m (est.)", "Spectral radius (est.)",
                      "Lbar", "mbar", "rho T1m", "Explicit stable share"],
                     [[_fmt_cell(v) for v in r] for r in rows],
                     caption=f"{name}: Jacobian estimates of the FP UNet along the FP DDIM trajectory (ESTIMATES: "
                             "L from below by power iteration, m from above by Lanczos)")]
    method = jac.get("method")
    if isinstance(method, dict):
        out.append(tu.text("Estimators: " + "; ".join(f"{k}: {v}" for k, v in sorted(method.items())) + ".") + "\n\n")
    if jac.get("note"):
        note = str(jac["note"])
        out.append(tu.text(note[:1].upper() + note[1:]) + "\n\n")
    return "".join(out)


def _stale_weights(ctx, mod: dict) -> str:
    """A warning when the run used other weights than the model folder holds now ('' if they match)."""
    try:
        pre = ctx.module("real_models.pretrained", "weights_sha256")
        now = pre.weights_sha256(mod.get("dir")) if mod.get("dir") else ""
    except (NotAvailable, OSError):
        return ""
    was = str(mod.get("weights_sha256") or "")
    if now and was and now != was:
        return (f"Stale results: this run used weights {was[:12]}, but {mod.get('dir')} now holds weights "
                f"{now[:12]}; rerun the spec to refresh these numbers.")
    return ""


def _real_result(ctx, spec_file: Path, folder: Path) -> str:
    res = json.loads((folder / "results.json").read_text())
    name = str(res.get("name", folder.name))
    prov = res.get("provenance") or {}
    ctx.shared.setdefault("results_used", []).append((str(folder), f"iec real-eval experiments/{spec_file.name}",
                                                     str(prov.get("seed")), str(prov.get("git_commit"))))
    ctx.shared.setdefault("commands", []).append(f"iec real-eval experiments/{spec_file.name}")
    out = [tu.heading(name, 2)]
    if res.get("description"):
        out.append(tu.text(res["description"]) + "\n\n")
    st, mod = res.get("settings") or {}, res.get("model") or {}
    out.append(tu.text(f"Results folder {folder} (spec hash {str(res.get('spec_hash', ''))[:8]}, git commit "
                       f"{prov.get('git_commit')}). Model {mod.get('dir')} ({mod.get('num_parameters')} parameters, "
                       f"weights sha256 {str(mod.get('weights_sha256', ''))[:12]}); T = {st.get('T')}, eta = "
                       f"{st.get('eta')}, batch {st.get('batch')}, seed {st.get('seed')}, IEC preset "
                       f"{st.get('iec_preset')}, {st.get('threads')} thread(s).") + "\n\n")
    stale = _stale_weights(ctx, mod)
    if stale:
        out.append(f"#verdictbox(\"fails\")[{tu.text(stale)}]\n")
    arrays = {}
    if (folder / "arrays.npz").is_file():
        with np.load(folder / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if not k.endswith("/x0") and k not in ("x_T", "fp_x0")}
    qt = res.get("quality_table") or {}
    if qt.get("columns") and qt.get("rows"):
        heads = [COLUMN_NAMES.get(c, c) for c in qt["columns"]]
        out.append(ctx.table(heads, [[_fmt_cell(v) for v in r] for r in qt["rows"]],
                             caption=f"{name}: quality table (FD/KID in the project classifier's feature space, "
                                     "PSNR/SSIM against FP from the same noise; errors at the final state, xbar; "
                                     "wall_s is indicative on a shared CPU)",
                             align="(" + ", ".join(["left"] + ["right"] * (len(qt["columns"]) - 1)) + ")"))
        out.append(_distinguishability(name, res))
    else:
        out.append(ctx.not_available(f"{name}: results.json has no quality table"))
    rows = res.get("rows") or []
    if rows:
        grow = []
        for r in rows:
            gp, gd = r.get("growth_propagated") or {}, r.get("growth_deployment") or {}
            gb = r.get("growth_batches") or {}
            grow.append((r.get("label"), r.get("NFE"), gp.get("label"), _share(gb.get("propagated")), gp.get("rho"),
                         gp.get("kappa"), gp.get("series"), gd.get("label"), _share(gb.get("deployment"))))
        nb = ((rows[0].get("growth_batches") or {}).get("propagated") or {}).get("batches")
        out.append(ctx.table(["Row", "NFE", "Propagated growth", "Share over x_T batches", "rho", "kappa", "Series",
                              "Deployment growth", "Deployment share"],
                             [[_fmt_cell(v) for v in r] for r in grow],
                             caption=f"{name}: growth classification of the measured error curves "
                                     f"(iec_theory.growth.classify): label of the diagnostic samples' mean curves, "
                                     f"and the share of {nb or 'n/a'} independent x_T batches per label",
                             align="(left, right, left, left, right, right, left, left, left)"))
    fig = _per_row_curves(ctx, name, res, arrays, "propagated_xbar", "propagated error (xbar)",
                          f"real_{name}_propagated")
    out.append(fig or ctx.not_available(f"{name}: no propagated error curves in arrays.npz"))
    fig = _per_row_curves(ctx, name, res, arrays, "deployment_xbar", "deployment error (xbar)",
                          f"real_{name}_deployment")
    out.append(fig or ctx.not_available(f"{name}: no deployment error curves in arrays.npz"))
    out.append(_jacobian(ctx, name, res))
    summ = res.get("theorem_summary") or {}
    trows = [(row, th, d.get("checked"), d.get("holds")) for row, per in sorted(summ.items())
             for th, d in sorted(per.items())]
    if trows:
        out.append(ctx.table(["Row", "Theorem", "Checked (estimated constants)", "Holds"], trows,
                             caption=f"{name}: theorem checks with ESTIMATED constants (not proofs: the constants "
                                     "are point estimates at FP states)", align="(left, left, right, right)"))
    files = res.get("files") or {}
    grid = folder / str(files.get("grid", "grid.png"))
    if grid.is_file():
        dest = ctx.build_dir / f"real_{name}_grid.png"
        shutil.copy(grid, dest)
        rows_lab = ", ".join(str(x) for x in files.get("grid_rows", []))
        cap = tu.text(f"{name}: samples from the same noise, one row per configuration, top to bottom: {rows_lab}.")
        out.append(f"#figure(image({tu.string(dest.name)}, width: 80%, scaling: \"pixelated\"), caption: [{cap}])\n")
    else:
        out.append(ctx.not_available(f"{name}: no sample grid (grid.png) in the results folder"))
    notes = res.get("notes") or []
    if notes:
        out.append("*Notes of the run.*" + "".join(f"\n- {tu.text(n)}" for n in notes) + "\n\n")
    return "".join(out)


def section(ctx) -> str:
    out = [tu.text("What the efficient-model claims look like on a real network. Everything below is read from "
                   "the results folders of the real-model specs (iec real-eval experiments/NAME.toml, or iec report "
                   "--run-real); the report never substitutes toy numbers. The Jacobian quantities are estimates "
                   "(power iteration and Lanczos with JVPs), not exact.") + "\n\n"]
    out.append(_default_model(ctx))
    out.append(tu.heading("Measurements on real networks", 2))
    specs, why = _real_specs(ctx)
    if why:
        return "".join(out) + ctx.not_available(f"real-model experiments: {why}")
    if not specs:
        return "".join(out) + ctx.not_available("no real-model spec (kind = \"real\") in experiments/")
    for f, spec, reason in specs:
        if spec is None:
            out.append(ctx.not_available(f"{f.name}: {reason}"))
            continue
        folder = _find_real_folder(ctx, spec.hash)
        if folder is None and ctx.run_real and (ctx.profile.name == "full" or spec.name == "real_quick"):
            exp = ctx.module("real_models.experiment", "run_real_spec")
            dest = Path("results") / f"{spec.name}-{spec.hash[:8]}"
            ctx.log(f"    running {f.name} into {dest} (this takes minutes)")
            folder = Path(exp.run_real_spec(spec, dest, quiet=True))
        if folder is None:
            where = " or ".join(str(p) for p in ctx.results_dirs)
            out.append(tu.heading(spec.name, 2))
            # a profile that does not run this spec says so in plain text (no warning box): it is a choice of
            # the profile, not a failure
            out.append(tu.text(
                f"Not run in this build: {spec.name} has no finished results folder for this spec (hash "
                f"{spec.hash[:8]}) under {where}. Run iec real-eval experiments/{f.name} (its cost is stated in "
                "the spec) and rebuild the report to include it.") + "\n\n")
            continue
        out.append(_real_result(ctx, f, folder))
    return "".join(out)
