"""`run_spec`: run every method of a validated spec and write a results folder.

Folder contents:
- `arrays.npz`: per method (prefix "<label>/"): error curves (propagated / deployment / total, x and xbar),
  local errors eta, amplification estimates, timesteps; exact-law means and variances (diagonal of
  the covariance) when computed;
- `summary.json`: one row per method (NFE, final errors, growth label and rho, W2 / KL of the exact
  output law to the data law, and of the same method on the exact model);
- `table.md`: the same rows as a markdown table (NFE column first);
- `metadata.json` (written last: its valid presence marks the run finished, see `is_finished`): provenance
  (versions, seed, git commit, machine), the spec and its hash, timings.

`compute_spec` computes everything in memory (a pure function of the spec); `write_results` writes the
folder, each file atomically (temporary file + rename), so an interrupted write never leaves a
half-written marker.
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..baselines import iec_nfe
from ..errors import ConfigError
from ..exact_law import exact_output_law, law_distances
from ..fileops import atomic_write_bytes as _atomic_write
from ..jsonsafe import json_safe
from ..measure import measure
from ..provenance import provenance
from .spec import MethodSpec, Spec, load_spec, validate_spec

__all__ = ["TABLE_COLUMNS", "compute_spec", "is_finished", "markdown_table", "run_spec", "write_results"]

TABLE_COLUMNS = ("method", "NFE", "propagated_xbar", "deployment_xbar", "total_xbar", "growth", "rho", "W2", "KL",
                 "W2_exact_model")


def _jsonable(v: Any) -> Any:
    """Harness results convention: non-finite floats as strings."""
    return json_safe(v, "string")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.3g}" if (abs(v) >= 1e-3 or v == 0) else f"{v:.2e}"
    return str(v)


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = TABLE_COLUMNS) -> str:
    head = "| " + " | ".join(columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def _method_T(spec: Spec, m: MethodSpec) -> tuple[int, str]:
    """(number of steps, exact-law scheme) for a method."""
    if m.name == "ddim_matched":
        ts = spec.schedule.timesteps(spec.T, spec.spacing)
        return (m.nfe_target or iec_nfe(spec.T, m.iec, ts)), "ddim"
    if m.name == "heun":
        return spec.T, "heun"
    if m.name == "repeat":
        return spec.T, "repeat"
    return spec.T, "ddim"


def _exact_law_row(spec: Spec, m: MethodSpec) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    steps, scheme = _method_T(spec, m)
    iec = m.iec if m.name in ("iec", "repeat") else None
    out: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    try:
        law = exact_output_law(spec.efficient(m), spec.schedule, steps, spec.eta, iec, spacing=spec.spacing,
                               scheme=scheme)
    except ConfigError as exc:
        return {"exact_law": f"not affine: {exc}"}, {}
    dist = law_distances(law, spec.toy)
    ref = exact_output_law(spec.toy, spec.schedule, steps, spec.eta, iec, spacing=spec.spacing, scheme=scheme)
    dist_ref = law_distances(ref, spec.toy)
    out.update({"W2": dist["w2"], "KL": dist["kl"], "KL_reverse": dist["kl_reverse"], "mean_err": dist["mean_err"],
                "W2_exact_model": dist_ref["w2"], "KL_exact_model": dist_ref["kl"], "exact_law_nfe": law.nfe,
                "exact_law_path": law.path, "tol_ignored": law.tol_ignored})
    arrays["law_mean"] = law.mean.numpy()
    arrays["law_var"] = (law.var if law.var is not None else torch.diagonal(law.cov)).numpy()
    return out, arrays


def compute_spec(spec: Spec | dict | str | Path) -> dict[str, Any]:
    """Run every method of a spec in memory (no files): a pure function of the spec.

    Returns {"name", "rows", "arrays", "table", "meta"}: what `write_results` writes. Sweep workers call
    this and return the result to the parent, which writes the cell folder (no shared filesystem needed).
    """
    if isinstance(spec, (str, Path)):
        spec = load_spec(spec)
    elif isinstance(spec, dict):
        spec = validate_spec(spec)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    g = torch.Generator().manual_seed(spec.seed)
    x_T = torch.randn(spec.batch, spec.toy.dim, generator=g, dtype=torch.float64)
    rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {"x_T": x_T.numpy()}
    timings: dict[str, float] = {}
    for m in spec.methods:
        t0 = time.perf_counter()
        row: dict[str, Any] = {"method": m.label, "kind": m.name,
                               "perturbation": m.perturbation if m.perturbation is not None
                               else spec.raw.get("perturbation"),
                               "iec": None if m.iec is None else {"name": m.iec.name, "K": m.iec.K,
                                                                   "lambdas": list(m.iec.lambdas), "tol": m.iec.tol,
                                                                   "noise": m.iec.noise}}
        steps, _ = _method_T(spec, m)
        if spec.metrics["monte_carlo"]:
            meas = measure(spec.toy, spec.efficient(m), spec.schedule, x_T, spec.T, spec.eta, m.iec, method=m.name,
                           nfe_target=steps if m.name == "ddim_matched" else None, seed=spec.seed,
                           spacing=spec.spacing, total=spec.metrics["total"])
            sm = meas.summary()
            row.update({"NFE": sm["nfe"], "propagated_xbar": sm["propagated_xbar"],
                        "deployment_xbar": sm["deployment_xbar"], "total_xbar": sm.get("total_xbar"),
                        "propagated_x": sm["propagated_x"], "deployment_x": sm["deployment_x"],
                        "total_x": sm.get("total_x"), "eta_mean": sm["eta_mean"], "early_stops": sm["early_stops"],
                        "growth": sm.get("growth_label"), "rho": sm.get("growth_rho"),
                        "kappa": sm.get("growth_kappa"), "growth_series": sm.get("growth_series"),
                        "amp_plain_max": sm.get("amp_plain_max"), "amp_scheme_max": sm.get("amp_scheme_max"),
                        "amp_plain_eff_max": sm.get("amp_plain_eff_max"),
                        "amp_scheme_eff_max": sm.get("amp_scheme_eff_max"), "eta_ref_mean": sm.get("eta_ref_mean"),
                        "steps": sm["T"]})
            for k, v in meas.arrays().items():
                arrays[f"{m.label}/{k}"] = np.asarray(v)
        if spec.metrics["exact_law"]:
            law_row, law_arrays = _exact_law_row(spec, m)
            row.update(law_row)
            row.setdefault("NFE", law_row.get("exact_law_nfe"))
            for k, v in law_arrays.items():
                arrays[f"{m.label}/{k}"] = v
        timings[m.label] = time.perf_counter() - t0
        rows.append(row)
    table = markdown_table(rows)
    meta = provenance(seed=spec.seed, spec_hash=spec.hash, spec_path=spec.path, spec=spec.raw,
                      timings_s=timings, wall_s=time.perf_counter() - t_start)
    return {"name": spec.name, "rows": rows, "arrays": arrays,
            "table": f"# {spec.name}\n\n{spec.raw.get('description', '')}\n\n{table}\n", "meta": meta}


def write_results(result: dict[str, Any], out: str | Path) -> Path:
    """Write a `compute_spec` result into the folder out; `metadata.json` last (its valid presence marks the
    run finished, see `is_finished`). Every file is written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **result["arrays"])
    _atomic_write(out / "arrays.npz", buf.getvalue())
    summary = _jsonable({"name": result["name"], "rows": result["rows"]})
    _atomic_write(out / "summary.json", json.dumps(summary, indent=2).encode())
    _atomic_write(out / "table.md", result["table"].encode())
    _atomic_write(out / "metadata.json", json.dumps(_jsonable(result["meta"]), indent=2, default=str).encode())
    return out


def is_finished(out: str | Path, spec_hash: str | None = None) -> bool:
    """True when out holds a complete run: `metadata.json` is a JSON object with a 64-hex `spec_hash` (equal
    to spec_hash when given) and `summary.json` is a JSON object with a list of rows. A 0-byte, truncated
    or foreign marker is not a finished run."""
    out = Path(out)
    try:
        meta = json.loads((out / "metadata.json").read_text())
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or not isinstance(summary, dict) or not isinstance(summary.get("rows"), list):
        return False
    h = meta.get("spec_hash")
    if not (isinstance(h, str) and len(h) == 64):
        return False
    return spec_hash is None or h == spec_hash


def run_spec(spec: Spec | dict | str | Path, out_dir: str | Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run a spec (a Spec, a raw dict or a TOML path); write the results folder; return the summary."""
    if isinstance(spec, (str, Path)):
        spec = load_spec(spec)
    elif isinstance(spec, dict):
        spec = validate_spec(spec)
    out = Path(out_dir) if out_dir is not None else Path("results") / f"{spec.name}-{spec.hash[:8]}"
    result = compute_spec(spec)
    write_results(result, out)
    rows = result["rows"]
    if not quiet:
        print(f"{spec.name}: results in {out}")
        print(markdown_table(rows))
    return {"name": spec.name, "out": str(out), "rows": rows}
