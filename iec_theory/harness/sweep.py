"""`run_sweep`: expand a spec's [sweep] grid into cells and run them on an executor, resumably.

Each cell is the base spec with the grid values set at their dotted keys (e.g. "sampler.T",
"perturbation.every", "methods.1.iec.K"). A cell's identity covers the WHOLE cell spec: its id is a short
hash of the cell spec (everything but its name and description), so a changed base spec (e.g. another
perturbation magnitude) gives new cells and never reuses old results; the cell folder is
`<out>/cells/<id>`. Duplicate grid values are dropped (each distinct cell runs once, one summary row
set per cell). A grid larger than `max_cells` (default 10,000) is refused before it is expanded.

A cell is finished when `is_finished` accepts its folder: a valid `metadata.json` (written last,
atomically) whose spec hash is the cell's, and a valid `summary.json`; a 0-byte, truncated or foreign
marker is not. A rerun skips finished cells (resume). Every cell is validated before any cell runs.

Cells are pure functions of their spec (`compute_spec`, one torch thread): the workers return results and
this process writes the cell folders, so rows are bitwise identical across executors and worker counts.
Executors (`executors.py`): local (in-process or a process pool) or Dask distributed. Ctrl-C or SIGTERM
cancels pending cells, stops running ones, and raises `SweepInterrupted` with how to resume (the CLI
exits 130). Results are collected into `<out>/sweep_summary.json` and `<out>/sweep_table.md` (one row
per cell and method, NFE column included).
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..errors import ConfigError, require
from .executors import check_executor_args, make_executor
from .runner import _atomic_write, _jsonable, compute_spec, is_finished, markdown_table, write_results
from .spec import Spec, load_spec, set_dotted, spec_hash, validate_spec

__all__ = ["DEFAULT_MAX_CELLS", "SweepInterrupted", "cell_id", "expand_grid", "run_sweep"]

DEFAULT_MAX_CELLS = 10_000


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C or SIGTERM; finished cells are on disk and `str(exc)` says how to resume."""

    def __init__(self, message: str, finished: int, total: int) -> None:
        super().__init__(message)
        self.finished = finished
        self.total = total


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def cell_id(cell: dict) -> str:
    """Short sha256 of the whole cell spec (its name and description excluded: they do not change results)."""
    body = {k: v for k, v in cell.items() if k not in ("name", "description", "sweep")}
    return hashlib.sha256(_canon(body).encode()).hexdigest()[:12]


def expand_grid(raw: dict, max_cells: int = DEFAULT_MAX_CELLS) -> list[tuple[str, dict[str, Any], dict]]:
    """[(cell id, overrides, cell spec dict)] for the cartesian product of raw['sweep']['grid'].

    Duplicate values of a key are dropped (first occurrence kept), and so is a cell equal to an earlier
    one. A grid of more than max_cells cells raises ConfigError before anything is expanded.
    """
    grid = raw.get("sweep", {}).get("grid", {})
    keys = sorted(grid)
    values: dict[str, list[Any]] = {}
    for k in keys:
        vals = grid[k] if isinstance(grid[k], list) else [grid[k]]
        seen: dict[str, Any] = {}
        for v in vals:
            seen.setdefault(_canon(v), v)
        values[k] = list(seen.values())
    n = math.prod(len(values[k]) for k in keys)
    if n > max_cells:
        shape = " x ".join(f"{len(values[k])} {k}" for k in keys)
        raise ConfigError(f"sweep.grid: {n:,} cells ({shape}) exceed the cap of {max_cells:,}; "
                          f"pass --max-cells {n} to run them anyway")
    import itertools

    cells: list[tuple[str, dict[str, Any], dict]] = []
    ids: set[str] = set()
    base = {k: v for k, v in raw.items() if k != "sweep"}
    for combo in itertools.product(*(values[k] for k in keys)):
        overrides = dict(zip(keys, combo))
        cell = base
        for k, v in overrides.items():
            cell = set_dotted(cell, k, v)
        cid = cell_id(cell)
        if cid in ids:
            continue
        ids.add(cid)
        cell = dict(cell, name=f"{raw['name']}.{cid}")
        cells.append((cid, overrides, cell))
    return cells


def _compute_cell(cell: dict) -> dict[str, Any]:
    """What every executor runs: the in-memory results of one cell (a pure function of the cell spec)."""
    import torch

    torch.set_num_threads(1)
    return compute_spec(cell)


def _clean_own_temporaries(cell_dir: Path) -> None:
    """Remove the `.<file>.<pid>.tmp` files an interrupted `write_results` may have left (ours only)."""
    if cell_dir.is_dir():
        for tmp in cell_dir.glob(".*.tmp"):
            if tmp.name.split(".")[1] in ("arrays", "summary", "table", "metadata"):
                tmp.unlink(missing_ok=True)


class _Interruptible:
    """Within the block, SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, even when SIGINT was
    inherited as ignored (a background job of a non-interactive shell): an explicit `kill -INT` stops the sweep."""

    def __enter__(self) -> _Interruptible:
        self._old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            def _raise(signum: int, frame: Any) -> None:
                raise KeyboardInterrupt(signal.Signals(signum).name)

            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, _raise)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _resume_hint(spec: Spec, out: Path, executor: str, scheduler: str | None, workers: int | None) -> str:
    parts = ["iec", "sweep", spec.path or "SPEC.toml", "--out", str(out)]
    if executor != "local":
        parts += ["--executor", executor]
    if scheduler:
        parts += ["--scheduler", scheduler]
    elif workers:
        parts += ["--workers", str(workers)]
    return " ".join(parts)


def run_sweep(spec: Spec | str | Path, out_dir: str | Path | None = None, workers: int | None = None,
              progress: bool = True, *, executor: str = "local", scheduler: str | None = None,
              max_cells: int = DEFAULT_MAX_CELLS) -> dict[str, Any]:
    """Run every cell of the spec's grid (finished cells are skipped) on the executor; return the rows.

    executor: "local" (in-process for 1 worker, else a process pool) or "dask" (a LocalCluster of
    `workers` processes, or the cluster at `scheduler`). workers defaults to sweep.workers, else 2.
    Raises ConfigError on bad input (before any work) and SweepInterrupted on Ctrl-C / SIGTERM.
    """
    check_executor_args(executor, workers, scheduler)
    require(isinstance(max_cells, int) and max_cells >= 1, f"--max-cells must be >= 1, got {max_cells}")
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    raw = spec.raw
    cells = expand_grid(raw, max_cells)
    hashes: dict[str, str] = {}
    for cid, overrides, cell in cells:          # validate everything before any work
        try:
            validate_spec(cell)
        except ValueError as exc:
            raise type(exc)(f"sweep cell {overrides}: {exc}") from exc
        hashes[cid] = spec_hash(cell)
    out = Path(out_dir) if out_dir is not None else Path("results") / f"{spec.name}-sweep-{spec.hash[:8]}"
    for parent in (out, *out.parents):
        require(not parent.exists() or parent.is_dir(), f"--out {out}: {parent} is a file, not a folder")
    n_workers = workers if workers is not None else (None if scheduler else int(raw.get("sweep", {}).get("workers", 2)))
    todo = [(cid, ov, cell) for cid, ov, cell in cells if not is_finished(out / "cells" / cid, hashes[cid])]
    skipped = len(cells) - len(todo)
    stale = 0
    if (out / "cells").is_dir():
        current = {cid for cid, _, _ in cells}
        stale = sum(1 for d in (out / "cells").iterdir() if d.is_dir() and d.name not in current)
    done = skipped
    if todo:
        bar = tqdm(total=len(cells), initial=skipped, desc=spec.name, disable=not progress, file=sys.stderr)
        futures: dict[Any, str] = {}
        try:
            with _Interruptible(), make_executor(executor, None if scheduler else n_workers, scheduler) as ex:
                bar.set_description(f"{spec.name} [{ex.describe()}]")
                try:
                    for cid, _, cell in todo:
                        _clean_own_temporaries(out / "cells" / cid)
                        futures[ex.submit(_compute_cell, cell)] = cid
                    for fut in ex.as_completed(futures):
                        cid = futures.pop(fut)
                        write_results(fut.result(), out / "cells" / cid)
                        done += 1
                        bar.update(1)
                except BaseException:
                    ex.cancel(list(futures))        # pending cells dropped, running ones stopped
                    raise
        except KeyboardInterrupt as exc:            # Ctrl-C / SIGTERM, also while the cluster starts or stops
            bar.close()
            hint = _resume_hint(spec, out, executor, scheduler, workers)
            raise SweepInterrupted(f"interrupted: {done} of {len(cells)} cells finished in {out}; "
                                   f"resume with: {hint}", done, len(cells)) from exc
        bar.close()
    rows = []
    for cid, ov, _ in cells:
        summ = json.loads((out / "cells" / cid / "summary.json").read_text())
        for r in summ["rows"]:
            rows.append({"cell": cid, **ov, **r})
    summary = _jsonable({"name": spec.name, "spec_hash": spec.hash, "cells": len(cells), "skipped": skipped,
                         "rows": rows})
    _atomic_write(out / "sweep_summary.json", json.dumps(summary, indent=2).encode())
    grid_keys = tuple(sorted(raw.get("sweep", {}).get("grid", {})))
    cols = ("cell", *grid_keys, "method", "NFE", "propagated_xbar", "deployment_xbar", "growth", "rho", "W2", "KL")
    _atomic_write(out / "sweep_table.md", f"# sweep {spec.name}\n\n{markdown_table(rows, cols)}\n".encode())
    return {"out": str(out), "cells": len(cells), "skipped": skipped, "ran": len(todo), "stale": stale, "rows": rows}
