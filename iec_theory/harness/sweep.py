"""`run_sweep`: expand a spec's [sweep] grid into cells and run them in a process pool, resumably.

Each cell is the base spec with the grid values set at their dotted keys (e.g. "sampler.T",
"perturbation.every", "methods.1.iec.K"); a cell's folder is `<out>/cells/<id>` with id a short hash of
its overrides. A cell is finished when its `metadata.json` exists (run_spec writes it last), so a
re-run skips finished cells (resume). Every cell is validated before any cell runs. Results are
collected into `<out>/sweep_summary.json` and `<out>/sweep_table.md` (one row per cell and method,
NFE column included).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .runner import _jsonable, markdown_table, run_spec
from .spec import Spec, load_spec, set_dotted, validate_spec


def expand_grid(raw: dict) -> list[tuple[str, dict[str, Any], dict]]:
    """[(cell id, overrides, cell spec dict)] for the cartesian product of raw['sweep']['grid']."""
    grid = raw.get("sweep", {}).get("grid", {})
    keys = sorted(grid)
    cells = []
    for values in itertools.product(*(grid[k] for k in keys)):
        overrides = dict(zip(keys, values))
        cell = {k: v for k, v in raw.items() if k != "sweep"}
        for k, v in overrides.items():
            cell = set_dotted(cell, k, v)
        cid = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:10]
        cell["name"] = f"{raw['name']}.{cid}"
        cells.append((cid, overrides, cell))
    return cells


def _run_cell(cell: dict, out: str) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    return run_spec(cell, out, quiet=True)


def run_sweep(spec: Spec | str | Path, out_dir: str | Path | None = None, workers: int | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Run every cell of the spec's grid (finished cells are skipped); return the collected rows."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    raw = spec.raw
    cells = expand_grid(raw)
    for _, overrides, cell in cells:          # validate everything before any work
        try:
            validate_spec(cell)
        except ValueError as exc:
            raise type(exc)(f"sweep cell {overrides}: {exc}") from exc
    out = Path(out_dir) if out_dir is not None else Path("results") / f"{spec.name}-sweep-{spec.hash[:8]}"
    (out / "cells").mkdir(parents=True, exist_ok=True)
    n_workers = workers or int(raw.get("sweep", {}).get("workers", 2))
    todo = [(cid, ov, cell) for cid, ov, cell in cells if not (out / "cells" / cid / "metadata.json").exists()]
    skipped = len(cells) - len(todo)
    bar = tqdm(total=len(cells), initial=skipped, desc=spec.name, disable=not progress)
    if todo:
        if n_workers <= 1:
            for cid, _, cell in todo:
                _run_cell(cell, str(out / "cells" / cid))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                futs = {pool.submit(_run_cell, cell, str(out / "cells" / cid)): cid for cid, _, cell in todo}
                for f in as_completed(futs):
                    f.result()
                    bar.update(1)
    bar.close()
    rows = []
    for cid, ov, _ in cells:
        summ = json.loads((out / "cells" / cid / "summary.json").read_text())
        for r in summ["rows"]:
            rows.append({"cell": cid, **{k: v for k, v in ov.items()}, **r})
    (out / "sweep_summary.json").write_text(json.dumps(_jsonable({"name": spec.name, "cells": len(cells),
                                                                  "skipped": skipped, "rows": rows}), indent=2))
    grid_keys = tuple(sorted(raw.get("sweep", {}).get("grid", {})))
    cols = ("cell", *grid_keys, "method", "NFE", "propagated_xbar", "deployment_xbar", "growth", "rho", "W2", "KL")
    (out / "sweep_table.md").write_text(f"# sweep {spec.name}\n\n{markdown_table(rows, cols)}\n")
    return {"out": str(out), "cells": len(cells), "skipped": skipped, "ran": len(todo), "rows": rows}
