"""`iec run` end to end on a tiny spec, and `iec sweep` with resume."""

from __future__ import annotations

import json

import numpy as np

from iec_theory.cli import main
from iec_theory.harness import expand_grid, run_sweep

TINY = """
name = "tiny"
description = "tiny end-to-end run"
seed = 3

[model]
kind = "gaussian"
dim = 3
variances = [1.0, 0.1, 0.01]
mean = 0.5

[sampler]
T = 4
batch = 8

[perturbation]
kind = "bias"
magnitude = 0.02

[[methods]]
name = "ddim"

[[methods]]
name = "iec"
label = "iec-official"
iec = {preset = "official_ddpm"}

[[methods]]
name = "ddim_matched"
label = "ddim-2T"
iec = {preset = "official_ddpm"}

[[methods]]
name = "iec"
label = "iec-W2"
perturbation = {kind = "output_quant", bits = 6, range = 3.0}
iec = {K = 1, lambda = 0.5}
"""


def test_iec_run_end_to_end(tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| method | NFE |" in printed
    meta = json.loads((out / "metadata.json").read_text())
    for key in ("seed", "git_commit", "spec_hash", "torch", "numpy", "python", "spec"):
        assert key in meta
    assert meta["seed"] == 3 and len(meta["spec_hash"]) == 64
    rows = {r["method"]: r for r in json.loads((out / "summary.json").read_text())["rows"]}
    assert rows["ddim"]["NFE"] == 4 and rows["iec-official"]["NFE"] == 8 and rows["ddim-2T"]["NFE"] == 8
    assert rows["ddim"]["W2"] > 0 and rows["ddim"]["exact_law_nfe"] == 4
    assert str(rows["iec-W2"].get("exact_law", "")).startswith("not affine")   # output quantization
    assert rows["ddim"]["growth"] in ("linear", "superlinear", "exponential", "inconclusive")
    arrays = np.load(out / "arrays.npz")
    assert "ddim/propagated_xbar" in arrays and arrays["ddim/propagated_xbar"].shape == (5,)
    assert arrays["ddim-2T/propagated_xbar"].shape == (9,) and "iec-official/law_mean" in arrays
    assert "NFE" in (out / "table.md").read_text()


def test_iec_run_invalid_spec_fails_before_work(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text(TINY.replace("T = 4", "T = 0"))
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out)]) == 2
    assert "sampler.T" in capsys.readouterr().err
    assert not out.exists()


def test_iec_sweep_grid_and_resume(tmp_path, capsys):
    text = TINY + '\n[sweep]\ngrid = {"sampler.T" = [2, 3], "perturbation.magnitude" = [0.01, 0.1]}\nworkers = 2\n'
    spec = tmp_path / "sweep.toml"
    spec.write_text(text)
    from iec_theory.harness.spec import tomllib

    cells = expand_grid(tomllib.loads(text))
    assert len(cells) == 4 and len({c[0] for c in cells}) == 4
    assert {c[2]["sampler"]["T"] for c in cells} == {2, 3}
    out = tmp_path / "sw"
    res = run_sweep(str(spec), out, workers=2, progress=False)
    assert res["ran"] == 4 and res["skipped"] == 0 and len(res["rows"]) == 16
    again = run_sweep(str(spec), out, workers=1, progress=False)
    assert again["ran"] == 0 and again["skipped"] == 4
    victim = out / "cells" / cells[0][0] / "metadata.json"
    victim.unlink()
    third = run_sweep(str(spec), out, workers=1, progress=False)
    assert third["ran"] == 1 and third["skipped"] == 3
    table = (out / "sweep_table.md").read_text()
    assert "NFE" in table and "sampler.T" in table
    assert main(["sweep", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert "4 cells (0 run, 4 already finished)" in capsys.readouterr().out


def test_iec_run_hands_real_specs_to_real_eval(tmp_path, monkeypatch):
    import iec_theory.commands.real_eval as real_eval

    seen = {}
    monkeypatch.setattr(real_eval, "run", lambda args: seen.setdefault("spec", args.spec) and 0)
    spec = tmp_path / "real.toml"
    spec.write_text('kind = "real"\nname = "r"\n')
    assert main(["run", str(spec), "--model-dir", "x"]) == 0
    assert seen["spec"] == str(spec)
