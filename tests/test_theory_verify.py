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


def test_iter_suite_prefixes_are_the_default_suite() -> None:
    import itertools

    from iec_theory.theorems.suite import iter_suite

    assert list(itertools.islice(iter_suite(3), 25)) == default_suite(25, 3)
    assert default_suite(25, 3)[:10] == default_suite(10, 3)


def test_per_theorem_judges_each_theorem_on_its_first_n_applicable_instances() -> None:
    """`run_per_theorem` equals `run_suite` on the prefix, restricted per theorem to its first N applicable
    instances, and does not depend on the batch size (so neither on which theorems a batch skips)."""
    from iec_theory.theorems import THEOREMS
    from iec_theory.theorems.suite import run_per_theorem, run_suite

    n = 2
    small = run_per_theorem(n, batch=3)
    large = run_per_theorem(n, batch=8)
    assert small["complete"] and large["complete"] and not small["short"]
    for name, s in small["summary"].items():
        assert s["instances"] == n, name
        a, b = dict(s), dict(large["summary"][name])
        assert a == b, name
    full = run_suite(default_suite(small["instances_run"]))
    skip = ("hypotheses not met", "vacuous")
    for name, s in small["summary"].items():
        statuses = [r["results"][name]["status"] for r in full["records"]]
        end = [i for i, st in enumerate(statuses) if st not in skip][n - 1] + 1      # past the n-th checked one
        assert s["holds"] == statuses[:end].count("holds") == n, name
        assert s["vacuous"] == statuses[:end].count("vacuous"), name
        assert s["not_met"] == statuses[:end].count("hypotheses not met"), name
    alone = run_per_theorem(n, theorems={"T6": THEOREMS["T6"]}, batch=5)       # independent of the others
    assert alone["summary"]["T6"] == small["summary"]["T6"]


def test_per_theorem_reports_short_theorems_and_exits_2(capsys) -> None:
    rc = main(["verify", "--per-theorem", "5", "--instances", "3", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 2
    assert "SHORT after 3 instances" in text and "T6" in text.split("SHORT")[1]
    assert main(["verify", "--per-theorem", "0", "--quiet"]) == 2
    assert "--per-theorem must be >= 1" in capsys.readouterr().err
    assert main(["verify", "--theorems", "T7,T1", "--quiet"]) == 2
    assert "--theorems: unknown T7" in capsys.readouterr().err
    assert main(["verify", "--theorems", "T2", "--instances", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "T2 " in out and "T1 " not in out
