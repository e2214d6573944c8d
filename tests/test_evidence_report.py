"""The report chapter renders evidence.json: verdict table, figures, the page-one line (issue 12, item 9)."""

from __future__ import annotations

import json

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from iec_theory.evidence.document import build_evidence

    d = tmp_path_factory.mktemp("res")
    doc = build_evidence("quick", None, 0, ("toy_var100",), log=lambda s: None)
    (d / "evidence").mkdir()
    (d / "evidence" / "evidence.json").write_text(json.dumps(doc, allow_nan=False))
    return d, doc


def test_evidence_chapter_builds_and_shows_the_verdicts(results, tmp_path):
    from iec_theory.report.builder import build_report

    d, doc = results
    r = build_report("ci", out=tmp_path / "r.pdf", results_dirs=(d,), sections=("evidence",), log=lambda s: None)
    assert not r.failures and r.pages >= 1
    assert {"evidence_norms", "evidence_contraction", "evidence_s5"} <= {f.name for f in r.figures}
    assert ("Statement", "Toy") in r.tables
    assert doc["summary_line"] in r.verdicts


def test_page_one_line(results, tmp_path):
    from iec_theory.report.builder import PROFILES, Context
    from iec_theory.report.sections.evidence import page_one_line

    d, doc = results
    ctx = Context(profile=PROFILES["ci"], seed=0, build_dir=tmp_path, results_dirs=(d,))
    line = page_one_line(ctx)
    assert line == doc["summary_line"] and line.startswith("On the paper's own ground:") and "\n" not in line
    empty = Context(profile=PROFILES["ci"], seed=0, build_dir=tmp_path, results_dirs=(tmp_path / "none",))
    assert page_one_line(empty).startswith("On the paper's own ground: not available")
