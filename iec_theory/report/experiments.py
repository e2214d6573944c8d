"""Toy experiment results for the report: collected from `iec run` results folders or computed.

For every spec in experiments/*.toml that the harness accepts (toy models; real-model specs and
files the harness rejects are listed as skipped with the reason), the report uses

1. by default, it runs the spec in-process with `iec_theory.harness.run_spec` into the build folder
   (toy specs take seconds; the numbers then always belong to the code being reported on);
2. with `--reuse-results` (quick or full profile), a finished results folder of `iec run`
   (metadata.json present) with the same spec hash under the --results folders, when there is one.

The ci profile always computes, on a reduced spec (batch <= 16, specs with the cheapest sampler),
so the tests never depend on folders lying around. Results are computed once per build and shared
by the toy, compute-matched and growth sections.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .builder import NotAvailable

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
CI_MAX_SPECS = 4
CI_BATCH = 16
QUICK_MAX_CELLS = 12      # the quick profile runs a spec's [sweep] grid when it has at most this many cells


@dataclass
class ExperimentResult:
    name: str
    description: str
    path: str                      # the spec file
    spec_hash: str
    rows: list[dict[str, Any]]
    arrays: dict[str, np.ndarray]
    source: str                    # "computed in this build" or the folder read
    metadata: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    reduced: bool = False
    sweep_rows: list[dict[str, Any]] = field(default_factory=list)   # `iec sweep` rows (grid values included)
    sweep_keys: tuple[str, ...] = ()
    summary_file: str = ""         # summary.json of the run, for facts: "build:results/<name>/summary.json" or a path
    sweep_file: str = ""           # sweep_summary.json of the sweep, same convention

    def methods(self) -> list[str]:
        return [str(r.get("method")) for r in self.rows]

    def curve(self, method: str, key: str) -> np.ndarray | None:
        a = self.arrays.get(f"{method}/{key}")
        return None if a is None else np.asarray(a, dtype=float)


@dataclass
class Collection:
    results: list[ExperimentResult]
    skipped: list[tuple[str, str]]     # (spec file, reason)


def _is_real(raw: dict) -> bool:
    if raw.get("kind") == "real":
        return True
    kind = str(raw.get("model", {}).get("kind", "")) if isinstance(raw.get("model"), dict) else ""
    return kind not in ("", "gaussian", "gaussian_diag", "mixture")


def _reduce(raw: dict) -> dict:
    out = copy.deepcopy(raw)
    smp = out.setdefault("sampler", {})
    smp["batch"] = min(int(smp.get("batch", 64)), CI_BATCH)
    out.pop("sweep", None)
    return out


def _find_folder(dirs, spec_hash: str) -> Path | None:
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            continue
        for meta in sorted(d.glob("*/metadata.json")):
            try:
                m = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if m.get("spec_hash") == spec_hash and (meta.parent / "summary.json").exists():
                return meta.parent
    return None


def _load_folder(folder: Path) -> tuple[list[dict], dict[str, np.ndarray], dict]:
    summary = json.loads((folder / "summary.json").read_text())
    arrays: dict[str, np.ndarray] = {}
    npz = folder / "arrays.npz"
    if npz.exists():
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    meta = json.loads((folder / "metadata.json").read_text())
    return summary.get("rows", []), arrays, meta


def collect(ctx) -> Collection:
    """All toy experiment results of this build (computed once, cached in ctx.shared)."""
    if "experiments" in ctx.shared:
        return ctx.shared["experiments"]
    harness = ctx.module("iec_theory.harness", "run_spec", "validate_spec", "run_sweep")
    files = sorted(EXPERIMENTS.glob("*.toml")) if EXPERIMENTS.is_dir() else []
    if not files:
        raise NotAvailable("no experiment specs (experiments/*.toml) in this checkout")
    specs, skipped = [], []
    for f in files:
        try:
            raw = tomllib.loads(f.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            skipped.append((f.name, f"unreadable TOML: {exc}"))
            continue
        if _is_real(raw):
            skipped.append((f.name, "real-model spec (shown in the real-model section)"))
            continue
        if ctx.profile.name != "full" and "sweep" in raw and len(raw) <= 3:
            skipped.append((f.name, "sweep-only spec (full profile)"))
            continue
        try:
            spec = harness.validate_spec(_reduce(raw) if ctx.profile.name == "ci" else raw, str(f))
        except Exception as exc:  # ConfigError names the field
            skipped.append((f.name, f"rejected by the harness: {exc}"))
            continue
        specs.append((f, raw, spec))
    if ctx.profile.name == "ci":
        # the cheapest specs: fewest sampler steps times methods
        specs.sort(key=lambda fs: (fs[2].T * len(fs[2].methods), fs[0].name))
        for f, _, _ in specs[CI_MAX_SPECS:]:
            skipped.append((f.name, f"left out of the ci profile (it runs the {CI_MAX_SPECS} cheapest specs)"))
        specs = sorted(specs[:CI_MAX_SPECS], key=lambda fs: fs[0].name)
    results = []
    used = ctx.shared.setdefault("results_used", [])
    for f, raw, spec in specs:
        reuse = ctx.reuse_results and ctx.profile.name != "ci"
        folder = _find_folder(ctx.results_dirs, spec.hash) if reuse else None
        if folder is not None:
            rows, arrays, meta = _load_folder(folder)
            source = str(folder)
            summary_file = str(folder / "summary.json")
            used.append((str(folder), f"iec run {f.parent.name}/{f.name}", str(meta.get("seed")),
                         str(meta.get("git_commit"))))
            ctx.log(f"    {f.name}: read {folder}")
        else:
            out = ctx.build_dir / "results" / spec.name
            ctx.log(f"    {f.name}: running ({len(spec.methods)} methods, T={spec.T}, batch {spec.batch})")
            harness.run_spec(spec, out, quiet=True)
            rows, arrays, meta = _load_folder(out)
            source = "computed in this build"
            summary_file = f"build:results/{spec.name}/summary.json"
        ctx.shared.setdefault("commands", []).append(f"iec run {f.parent.name}/{f.name}")
        res = ExperimentResult(name=spec.name, description=str(raw.get("description", "")), path=f.name,
                               spec_hash=spec.hash, rows=rows, arrays=arrays, source=source, metadata=meta,
                               raw=raw, reduced=ctx.profile.name == "ci", summary_file=summary_file)
        grid = raw.get("sweep", {}).get("grid", {}) if isinstance(raw.get("sweep"), dict) else {}
        n_cells = int(np.prod([len(v) for v in grid.values()])) if grid else 0
        if n_cells and (ctx.profile.name == "full" or (ctx.profile.name == "quick" and n_cells <= QUICK_MAX_CELLS)):
            ctx.log(f"    {f.name}: sweep of {n_cells} cells")
            sw = harness.run_sweep(spec, ctx.build_dir / "sweeps" / spec.name, workers=1, progress=False)
            res.sweep_rows = list(sw["rows"])
            res.sweep_keys = tuple(sorted(grid))
            res.sweep_file = f"build:sweeps/{spec.name}/sweep_summary.json"
            ctx.shared.setdefault("commands", []).append(f"iec sweep {f.parent.name}/{f.name}")
        results.append(res)
    coll = Collection(results, skipped)
    ctx.shared["experiments"] = coll
    return coll


def value(row: dict, key: str):
    """A summary value as float when numeric (JSON stores inf/nan as strings), else as given."""
    v = row.get(key)
    if isinstance(v, str) and v in ("inf", "-inf", "nan"):
        return float(v)
    return v
