"""Sweep safety (issue 11): cell identity covers the whole cell spec, duplicate grid values run once,
invalid completion markers never count as finished, and a huge grid is refused before expansion."""

from __future__ import annotations

import json

import pytest

from iec_theory.cli import main
from iec_theory.errors import ConfigError
from iec_theory.harness import expand_grid, run_sweep
from iec_theory.harness.spec import tomllib

BASE = """
name = "safety"
seed = 1

[model]
kind = "gaussian"
dim = 2
variances = [1.0, 0.1]

[sampler]
T = 3
batch = 4

[perturbation]
kind = "bias"
magnitude = 0.01

[[methods]]
name = "ddim"

[metrics]
exact_law = false
monte_carlo = true
total = false
"""


def _write(tmp_path, text: str, name: str = "s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _rows_by_T(res: dict) -> dict[int, dict]:
    return {r["sampler.T"]: r for r in res["rows"]}


def test_changed_base_spec_does_not_reuse_old_cells(tmp_path):
    grid = '\n[sweep]\ngrid = {"sampler.T" = [2, 3]}\n'
    spec = _write(tmp_path, BASE + grid)
    out = tmp_path / "sw"
    first = run_sweep(str(spec), out, workers=1, progress=False)
    assert first["ran"] == 2
    spec.write_text((BASE + grid).replace("magnitude = 0.01", "magnitude = 5.0"))
    second = run_sweep(str(spec), out, workers=1, progress=False)
    assert second["ran"] == 2 and second["skipped"] == 0          # nothing reused from the old base spec
    old, new = _rows_by_T(first), _rows_by_T(second)
    assert new[3]["propagated_xbar"] > 10 * old[3]["propagated_xbar"]
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert {r["cell"] for r in summary["rows"]} == {r["cell"] for r in second["rows"]}


def test_duplicate_grid_values_run_once(tmp_path):
    spec = _write(tmp_path, BASE + '\n[sweep]\ngrid = {"sampler.T" = [3, 3, 2]}\n')
    cells = expand_grid(tomllib.loads(spec.read_text()))
    assert len(cells) == 2 and len({c[0] for c in cells}) == 2
    res = run_sweep(str(spec), tmp_path / "sw", workers=1, progress=False)
    assert res["cells"] == 2 and res["ran"] == 2 and len(res["rows"]) == 2
    summary = json.loads((tmp_path / "sw" / "sweep_summary.json").read_text())
    assert len(summary["rows"]) == 2


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"seed": 1}'])
def test_invalid_metadata_is_not_a_finished_cell(tmp_path, content):
    spec = _write(tmp_path, BASE + '\n[sweep]\ngrid = {"sampler.T" = [2, 3]}\n')
    out = tmp_path / "sw"
    run_sweep(str(spec), out, workers=1, progress=False)
    cid = expand_grid(tomllib.loads(spec.read_text()))[0][0]
    (out / "cells" / cid / "metadata.json").write_text(content)
    again = run_sweep(str(spec), out, workers=1, progress=False)
    assert again["ran"] == 1 and again["skipped"] == 1
    meta = json.loads((out / "cells" / cid / "metadata.json").read_text())
    assert meta["seed"] == 1 and len(meta["spec_hash"]) == 64


def test_missing_summary_is_not_a_finished_cell(tmp_path):
    spec = _write(tmp_path, BASE + '\n[sweep]\ngrid = {"sampler.T" = [2, 3]}\n')
    out = tmp_path / "sw"
    run_sweep(str(spec), out, workers=1, progress=False)
    cid = expand_grid(tomllib.loads(spec.read_text()))[1][0]
    (out / "cells" / cid / "summary.json").unlink()
    again = run_sweep(str(spec), out, workers=1, progress=False)
    assert again["ran"] == 1 and len(again["rows"]) == 2


def test_huge_grid_is_refused_before_expansion(tmp_path, capsys):
    values = ", ".join(str(0.001 * (i + 1)) for i in range(100))
    grid = (f'\n[sweep]\ngrid = {{"perturbation.magnitude" = [{values}], "seed" = [{", ".join(map(str, range(100)))}],'
            f' "sampler.batch" = [{", ".join(map(str, range(1, 101)))}]}}\n')
    spec = _write(tmp_path, BASE + grid)
    with pytest.raises(ConfigError, match="1,000,000 cells.*--max-cells"):
        expand_grid(tomllib.loads(spec.read_text()))
    out = tmp_path / "sw"
    assert main(["sweep", str(spec), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "1,000,000 cells" in err and "--max-cells" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_grid_cap_override(tmp_path):
    spec = _write(tmp_path, BASE + '\n[sweep]\ngrid = {"sampler.T" = [2, 3], "seed" = [1, 2]}\n')
    raw = tomllib.loads(spec.read_text())
    with pytest.raises(ConfigError, match="4 cells"):
        expand_grid(raw, max_cells=3)
    assert len(expand_grid(raw, max_cells=4)) == 4
    res = run_sweep(str(spec), tmp_path / "sw", workers=1, progress=False, max_cells=4)
    assert res["cells"] == 4
