"""`iec verify` smoke test (a tiny suite; the default suite is exercised by running the command)."""

from __future__ import annotations

import json

from iec_theory.cli import main
from iec_theory.theorems.suite import default_suite


def test_verify_small_suite_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "verify.json"
    rc = main(["verify", "--instances", "4", "--json", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "T1m" in text and "every proven bound holds" in text
    doc = json.loads(out.read_text())
    assert set(doc["summary"]) == {"T1", "T1m", "T2", "T3", "T4", "T5", "T6"}
    assert doc["summary"]["T1"]["instances"] == 4 and doc["summary"]["T1"]["violated"] == 0
    assert len(doc["records"]) == 4 and "provenance" in doc


def test_default_suite_is_deterministic_and_diverse() -> None:
    a, b = default_suite(40), default_suite(40)
    assert a == b
    assert {i.model for i in a} == {"gaussian", "gaussian_full", "stiff", "mixture"}
    assert {i.iec for i in a} >= {"relaxed", "official_ddpm", "official_ldm"}
