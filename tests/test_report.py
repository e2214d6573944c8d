"""The report: the ci profile builds a PDF whose text has every verdict and table header, and every
figure has data. Text is extracted from the PDF with pypdf (pure Python, in the `test` extra): it
reads what a reader of the PDF sees, which a query of the typst source would not."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from iec_theory.report import build_report, check_figure_data
from iec_theory.report import typst_util as tu
from iec_theory.report.builder import page_count
from iec_theory.report.figures import FigureDataError

pypdf = pytest.importorskip("pypdf")
torch.set_num_threads(1)


def _norm(s: str) -> str:
    """NFKC (math italic letters become ASCII) and no whitespace: robust to line and cell wrapping."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", s))


def _pdf_text(path: Path) -> str:
    reader = pypdf.PdfReader(str(path))
    return "\n".join(page.extract_text() or "" for page in reader.pages)


@pytest.fixture(scope="module")
def ci_report(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    res = build_report("ci", out=d / "ci.pdf", seed=0, keep_build=d / "build", log=lambda m: None)
    return res, d


def test_ci_profile_builds_pdf_with_every_verdict_and_table_header(ci_report):
    res, d = ci_report
    pdf = d / "ci.pdf"
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and res.pages >= 1
    assert page_count(data) == len(pypdf.PdfReader(str(pdf)).pages)
    assert not res.failures, f"sections failed: {res.failures}"
    text = _norm(_pdf_text(pdf))
    for line in res.verdicts:
        assert _norm(line) in text, f"verdict line missing from the PDF text: {line!r}"
    for headers in res.tables:
        for h in headers:
            assert _norm(h) in text, f"table header missing from the PDF text: {h!r}"
    for _section, reason in res.unavailable:
        assert _norm(reason) in text
    assert res.tables, "the report has no table"
    assert not [f for f in d.iterdir() if f.name.endswith(".tmp")], "temporary PDF left behind"


def test_every_figure_in_the_ci_report_has_data(ci_report):
    res, d = ci_report
    for fig in res.figures:
        assert fig.n_points > 0, fig
        svg = (d / "build" / fig.path.name).read_text()
        assert "<path" in svg and len(svg) > 2000, fig.name
        assert f'"{fig.path.name}"' in res.source, f"figure {fig.name} not placed in the report"


def test_check_figure_data_rejects_empty_nonfinite_and_nonpositive_log_data():
    assert check_figure_data({"x": [1.0, 2.0], "y": np.ones((2, 3))}) == 8
    with pytest.raises(FigureDataError, match="'y' is empty"):
        check_figure_data({"x": [1.0], "y": []})
    with pytest.raises(FigureDataError, match="non-finite"):
        check_figure_data({"y": [1.0, float("nan")]})
    with pytest.raises(FigureDataError, match="non-finite"):
        check_figure_data({"y": np.array([[1.0, np.inf]])})
    with pytest.raises(FigureDataError, match="log axis"):
        check_figure_data({"y": [0.0, -1.0]}, log=("y",))
    with pytest.raises(FigureDataError, match="no data"):
        check_figure_data({})
    with pytest.raises(FigureDataError, match="not numeric"):
        check_figure_data({"y": ["a"]})


def test_typst_escaping_keeps_arbitrary_text_literal(tmp_path):
    import typst

    nasty = "C1: $x$ *bold* _em_ #let <lbl> @ref [a] {b} // c /* d */ = e - f + g 1. h \\ i ~ j `k` 'l' \"m\""
    (tmp_path / "t.typ").write_text("= " + tu.text("Head #1") + "\n" + tu.text(nasty) + "\n"
                                    + tu.table(["a $b$", "c_d"], [("x*y", 1.5e-7)], caption="cap [1]"))
    typst.compile(str(tmp_path / "t.typ"), output=str(tmp_path / "t.pdf"))
    text = _norm(_pdf_text(tmp_path / "t.pdf"))
    for s in ("Head #1", nasty, "a $b$", "c_d", "x*y", "1.5e-7", "cap [1]"):
        assert _norm(s) in text, s
    assert tu.num(0.000123456) == "1.23e-4" and tu.num(12.3456) == "12.3" and tu.num(3.0) == "3"


def test_failed_typesetting_leaves_the_old_pdf_untouched(tmp_path, monkeypatch):
    from iec_theory.report import builder

    out = tmp_path / "r.pdf"
    out.write_bytes(b"%PDF old")
    monkeypatch.setattr(builder, "TEMPLATE", tmp_path / "broken.typ")
    (tmp_path / "broken.typ").write_text("#let report(..args) = { undefined_function() }\n")
    with pytest.raises(Exception):  # noqa: B017 - whatever typst raises, the old PDF must survive
        build_report("ci", out=out, sections=("appendix",), log=lambda m: None)
    assert out.read_bytes() == b"%PDF old"
    assert [p.name for p in tmp_path.iterdir()] and not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_same_inputs_give_the_same_pdf(tmp_path):
    a = build_report("ci", out=tmp_path / "a.pdf", seed=3, sections=("stability", "appendix"), log=lambda m: None)
    b = build_report("ci", out=tmp_path / "b.pdf", seed=3, sections=("stability", "appendix"), log=lambda m: None)
    assert a.source == b.source
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()


def test_report_command_is_registered():
    from iec_theory.cli import build_parser

    args = build_parser().parse_args(["report", "--profile", "ci", "--out", "x.pdf", "--seed", "4"])
    assert (args.profile, args.out, args.seed) == ("ci", "x.pdf", 4)
