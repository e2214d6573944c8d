"""`iec evidence`: bad input fails with one line and exit 2 before any work; the toy-only document has the
issue's schema (statements S1-S5 with id/statement/hypotheses/verdict_toy/verdict_real/numbers; per_step
arrays) and reproduces the closed forms."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iec_theory.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_missing_model_dir_is_a_one_line_error(tmp_path, capsys):
    t0 = time.perf_counter()
    rc = main(["evidence", "--model-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "does not exist" in err[0]
    assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "o").exists()


def test_out_under_a_regular_file_is_a_one_line_error(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    rc = main(["evidence", "--settings", "toy_var100", "--out", str(f / "sub")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "regular file" in err[0]


def test_unknown_setting_is_a_one_line_error(tmp_path, capsys):
    rc = main(["evidence", "--settings", "toy_var100,real_w2a2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "real_w2a2" in err[0]


@pytest.fixture(scope="module")
def toy_doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("ev")
    proc = subprocess.run([sys.executable, "-m", "iec_theory.cli", "evidence", "--settings", "toy_var100",
                           "--threads", "1", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""                 # progress goes to stderr
    return json.loads((out / "evidence.json").read_text())


def test_toy_document_schema(toy_doc):
    ids = [s["id"] for s in toy_doc["statements"]]
    assert ids == ["S1", "S2", "S3", "S4", "S5"]
    for s in toy_doc["statements"]:
        assert {"id", "statement", "hypotheses", "verdict_toy", "verdict_real", "numbers"} <= set(s)
        for h in s["hypotheses"]:
            assert set(h["met"]) == {"toy_var100"}
    ps = toy_doc["per_step"]["toy_var100"]
    for key in ("timesteps", "spectral_norm_x", "spectral_norm_xbar", "contraction_L", "linearization_residual"):
        assert key in ps
    assert sorted(ps["contraction_L"]) == [f"{0.1 * k:.1f}" for k in range(1, 11)]
    assert len(ps["timesteps"]) == 100
    prov = toy_doc["provenance"]
    assert {"seed", "git_commit", "torch"} <= set(prov)
    assert toy_doc["summary_line"].startswith("On the paper's own ground:")


def test_toy_document_numbers(toy_doc):
    from iec_theory.evidence.toy import closed_form_norms, toy_var100

    toy = toy_var100()
    ps = toy_doc["per_step"]["toy_var100"]
    cf = closed_form_norms(toy, ps["timesteps"], [0.5])
    assert max(abs(a - b) for a, b in zip(ps["spectral_norm_x"], cf["spectral_norm_x"])) < 1e-12
    for v in toy_doc["toy_products"].values():
        assert round(v["computed"], 2) == v["paper"]
    s2 = next(s for s in toy_doc["statements"] if s["id"] == "S2")
    n = s2["numbers"]["toy_var100"]
    assert n["rel_error_correct_order"] < 0.05 < n["rel_error_transcribed_order"]
    s3 = next(s for s in toy_doc["statements"] if s["id"] == "S3")
    assert s3["verdict_toy"].startswith("refuted")      # norms > 1 everywhere, product ~9.8, not exponential
