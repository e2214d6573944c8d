"""Per-row checkpoints of a single-process real run: an interrupted ``run_real_spec`` (Ctrl-C, SIGTERM, a
session's end) resumes at its first unfinished row.

Layout under the results folder: ``progress/meta.json`` (what every checkpoint must share: the spec hash,
the weights' sha256 and the device) and per finished row ``progress/row-NNN.json`` (the row, its theorem
checks, its cache statistics, the reference it used, the quantizer and cache-correction records it needed)
with ``progress/row-NNN.npz`` (the row's arrays, its final samples included). Each file is written through a
temporary and ``os.replace`` (a kill leaves whole files only); the npz is written before its json, and a
row counts as done only when both exist. Non-finite floats are kept (JSON ``NaN``), so a restored row is the
row the run computed. Restored rows are not recomputed; the FP reference trajectory and the Jacobian
estimates are recomputed (seeded, so the same numbers at the same thread count). The folder is removed once
``results.json`` is written (the command created it).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from iec_theory.errors import ConfigError
from iec_theory.fileops import atomic_write_bytes
from iec_theory.jsonsafe import json_safe

__all__ = ["RowProgress"]


class RowProgress:
    """The checkpoints of one results folder (see the module docstring)."""

    def __init__(self, out: Path, meta: dict[str, Any]):
        self.dir = Path(out) / "progress"
        self.meta = json_safe(meta, "keep")

    def open(self) -> dict[int, dict[str, Any]]:
        """Check (or write) meta.json and return the finished rows by index; raise ConfigError when the folder
        holds checkpoints of another spec, model or device."""
        mpath = self.dir / "meta.json"
        if mpath.is_file():
            try:
                old = json.loads(mpath.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ConfigError(f"{mpath} is not valid JSON ({exc}); pass another --out") from exc
            diff = sorted(k for k in set(old) | set(self.meta) if old.get(k) != self.meta.get(k))
            if diff:
                raise ConfigError(f"{self.dir} holds checkpoints of another run (differs in {', '.join(diff)}); "
                                  "pass another --out, or remove that folder to start over")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(mpath, json.dumps(self.meta, indent=1).encode())
        done: dict[int, dict[str, Any]] = {}
        for js in sorted(self.dir.glob("row-*.json")):
            npz = js.with_suffix(".npz")
            if not npz.is_file():
                continue
            rec = json.loads(js.read_text(encoding="utf-8"))
            with np.load(npz, allow_pickle=False) as z:
                rec["arrays"] = {k: z[k] for k in z.files}
            done[int(rec["index"])] = rec
        return done

    def save(self, index: int, label: str, arrays: dict[str, np.ndarray], **record: Any) -> None:
        """Checkpoint finished row `index` (label, arrays and any JSON-ready record fields)."""
        stem = self.dir / f"row-{index:03d}"
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(stem.with_suffix(".npz"), buf.getvalue())
        doc = {"index": index, "label": label, **json_safe(record, "keep")}
        atomic_write_bytes(stem.with_suffix(".json"), json.dumps(doc).encode())

    def finish(self) -> None:
        """Remove the checkpoints once the results are written."""
        if self.dir.is_dir():
            shutil.rmtree(self.dir)
