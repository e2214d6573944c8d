"""What a replaced model was: the history carried in an export's metadata.json and quality JSON files.

When `iec train-ddpm --export-default` (or any export over a previous export) replaces a model, the old
model's counters and its measured quality are kept as the first entry of the new metadata's `history`, so
the improvement (or its absence) stays visible after the old files are gone (issue 13, item 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iec_theory.provenance import repo_relative

__all__ = ["QUALITY_KEYS", "model_history_entry", "quality_summary"]

QUALITY_KEYS = ("out_of_range", "FD_cifarnet", "FD_cifarnet_ci", "KID_cifarnet", "KID_cifarnet_ci", "IS_cifarnet",
                "IS_cifarnet_ci")
_COUNTERS = ("steps", "images_seen", "train_seconds", "num_parameters", "weights", "final_loss_mean_last_20_logs")


def quality_summary(record: dict[str, Any], source: str) -> dict[str, Any]:
    """The comparable numbers of a quality JSON (scripts/measure_default_quality.py's format or the older n=256 one)."""
    rows = {k: {m: v.get(m) for m in QUALITY_KEYS if m in v} for k, v in (record.get("rows") or {}).items()
            if isinstance(v, dict)}
    return {"source": source, "model": record.get("model"), "n": record.get("n"),
            "T": record.get("T", record.get("steps")),
            "seed": record.get("seed", (record.get("provenance") or {}).get("seed")), "rows": rows}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def model_history_entry(model_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """(summary of the model in `model_dir`, its own earlier history), or None when it has no metadata.json.

    The summary holds the training counters, the weights' sha256 and the summary of every quality*.json
    next to the weights.
    """
    from .pretrained import WEIGHTS_NAME, weights_sha256

    d = Path(model_dir)
    meta = _read_json(d / "metadata.json")
    if meta is None:
        return None
    entry: dict[str, Any] = {"dir": repo_relative(d), **{k: meta.get(k) for k in _COUNTERS}}
    if (d / WEIGHTS_NAME).is_file():
        entry["weights_sha256"] = weights_sha256(d)
    entry["quality"] = [quality_summary(q, repo_relative(p)) for p in sorted(d.glob("quality*.json"))
                        if (q := _read_json(p)) is not None]
    earlier = [h for h in meta.get("history") or [] if isinstance(h, dict)]
    return entry, earlier
