"""scripts/publish_real_results.py: the committed copy of a real-eval folder keeps the report's inputs, leaves
out the images, records what it left out, and never overwrites a folder it did not write."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("publish_real_results", ROOT / "scripts" / "publish_real_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _folder(tmp_path: Path) -> Path:
    src = tmp_path / "results" / "real_x-12345678"
    src.mkdir(parents=True)
    (src / "results.json").write_text(json.dumps({"kind": "real", "spec_hash": "ab" * 32, "rows": [],
                                                  "model": {"dir": str(ROOT / "real_models" / "weights" / "m")}}))
    (src / "table.md").write_text("# t\n")
    np.savez_compressed(src / "arrays.npz", **{"FP/propagated_xbar": np.arange(101.0),
                                               "FP/x0": np.zeros((256, 3, 32, 32), np.float32),
                                               "x_T": np.ones((256, 3, 32, 32), np.float32)})
    return src


def test_publish_keeps_curves_leaves_out_images_and_records_it(tmp_path):
    pub = _script()
    src = _folder(tmp_path)
    dest = pub.publish(src, tmp_path / "evidence")
    assert sorted(p.name for p in dest.iterdir()) == ["PUBLISHED.json", "arrays.npz", "results.json", "table.md"]
    assert json.loads((dest / "results.json").read_text())["model"]["dir"] == "real_models/weights/m"
    with np.load(dest / "arrays.npz", allow_pickle=False) as z:
        assert z.files == ["FP/propagated_xbar"] and np.array_equal(z["FP/propagated_xbar"], np.arange(101.0))
    rec = json.loads((dest / "PUBLISHED.json").read_text())
    assert rec["arrays_left_out"] == {"FP/x0": [256, 3, 32, 32], "x_T": [256, 3, 32, 32]}
    assert rec["spec_hash"] == "ab" * 32 and set(rec["files"]) == {"arrays.npz", "results.json", "table.md"}
    assert not Path(rec["source"]).is_absolute()
    assert rec["absolute_paths_made_relative"] == {"results.json": 1, "table.md": 0}


def test_publish_never_overwrites_a_folder_it_did_not_write(tmp_path):
    pub = _script()
    src = _folder(tmp_path)
    foreign = tmp_path / "evidence" / src.name
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    for replace in (False, True):
        with pytest.raises(SystemExit, match="exists"):
            pub.publish(src, tmp_path / "evidence", replace=replace)
    assert (foreign / "notes.txt").read_text() == "mine"
    (foreign / "notes.txt").unlink()
    foreign.rmdir()
    pub.publish(src, tmp_path / "evidence")
    with pytest.raises(SystemExit, match="exists"):
        pub.publish(src, tmp_path / "evidence")
    assert pub.publish(src, tmp_path / "evidence", replace=True) == foreign


def test_publish_refuses_a_folder_without_real_results(tmp_path):
    pub = _script()
    with pytest.raises(SystemExit, match="no results.json"):
        pub.publish(tmp_path, tmp_path / "evidence")
    (tmp_path / "results.json").write_text(json.dumps({"kind": "toy"}))
    with pytest.raises(SystemExit, match="not a real-eval results file"):
        pub.publish(tmp_path, tmp_path / "evidence")
