"""The report: the ci profile builds a PDF whose text has every verdict and table header, and every
figure has data. Text is extracted from the PDF with pypdf (pure Python, in the `test` extra): it
reads what a reader of the PDF sees, which a query of the typst source would not."""

from __future__ import annotations

import json
import re
import time
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


def _real_results_fixture(root: Path) -> Path:
    """A small real-model results folder for experiments/real_quick.toml (the ci profile runs no network).

    Its numbers are test data, not measurements: they exercise page 1's real-network answer, which must
    read and trace them like the numbers of a real run."""
    import json

    from real_models.experiment import load_real_spec

    spec = load_real_spec(Path(__file__).resolve().parents[1] / "experiments" / "real_quick.toml")

    def row(label, scheme, iec, quant, nfe, fd, kid, prop, growth="linear"):
        return {"label": label, "scheme": scheme, "iec": {"name": "official_ddpm"} if iec else None,
                "model": {"quant": quant, "cache": 0}, "NFE": nfe, "propagated_xbar": prop,
                "growth_propagated": {"label": growth, "kappa": 0.0, "rho": 1.0, "series": "R"},
                "quality": {"FD_cifarnet": fd, "KID_cifarnet": kid, "KID_cifarnet_std": 0.05}}

    rows = [row("FP", "ddim", False, "none", 20, 36.3, 0.598, 0.0, "zero"),
            row("FP+IEC", "iec", True, "none", 40, 37.5, 0.617, 0.0, "zero"),
            row("W4A8", "ddim", False, "W4A8", 20, 30.9, 0.418, 135.7),
            row("W4A8+IEC", "iec", True, "W4A8", 40, 31.7, 0.423, 117.2),
            row("W4A8+DDIM40", "ddim_matched", False, "W4A8", 40, 32.0, 0.430, 162.9),
            row("W4A8+Heun", "heun", False, "W4A8", 39, 30.7, 0.380, 119.1)]
    for r in rows:   # bootstrap-style intervals FD +- 1 and the no-ranking flags they imply
        q = r["quality"]
        q["FD_cifarnet_ci"] = [q["FD_cifarnet"] - 1.0, q["FD_cifarnet"] + 1.0]
        q["FD_cifarnet_not_distinguishable_from"] = [o["label"] for o in rows if o is not r and abs(
            o["quality"]["FD_cifarnet"] - q["FD_cifarnet"]) < 2.0]
    folder = root / f"real_quick-{spec.hash[:8]}"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "kind": "real", "name": "real_quick", "spec_hash": spec.hash, "rows": rows,
        "settings": {"T": 20, "eta": 0.0, "batch": 16, "seed": 0, "iec_preset": "official_ddpm", "threads": 1},
        "model": {"dir": "real_models/weights/ddpm_cifar10_small", "num_parameters": 1113955,
                  "weights_sha256": "0" * 64},
        "provenance": {"seed": 0, "git_commit": "test"},
        "quality_table": {"columns": ["row", "NFE", "FD_cifarnet"],
                          "rows": [[r["label"], r["NFE"], r["quality"]["FD_cifarnet"]] for r in rows]}}))
    return folder


@pytest.fixture(scope="module")
def ci_report(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    _real_results_fixture(d / "results")
    res = build_report("ci", out=d / "ci.pdf", seed=0, keep_build=d / "build", log=lambda m: None,
                       results_dirs=(d / "results",))
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


def test_report_command_is_registered_and_writes_to_an_ignored_folder_by_default():
    import subprocess

    from iec_theory.cli import build_parser

    args = build_parser().parse_args(["report", "--profile", "ci", "--out", "x.pdf", "--seed", "4"])
    assert (args.profile, args.out, args.seed) == ("ci", "x.pdf", 4)
    default = build_parser().parse_args(["report"]).out
    assert not default.startswith("reports/"), "the default run would overwrite the committed reference PDF"
    root = Path(__file__).resolve().parents[1]
    ignored = subprocess.run(["git", "check-ignore", "-q", default], cwd=root)
    if ignored.returncode in (0, 1):          # 128: not a git checkout (e.g. an sdist): nothing to check
        assert ignored.returncode == 0, f"{default} is not ignored by git: a run would leave git status dirty"


# ---- machine checks of what a reviewer sees -------------------------------------------------------------

def _plain(markup: str) -> str:
    """Typst markup of page 1 as plain text: code lines, source lines and escapes removed."""
    text = re.sub(r"#srcline\[(?:[^\]\\]|\\.)*\]", " ", markup)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("#set", "#show", "#[", "]")))
    text = re.sub(r"^=+ ", "", text, flags=re.M)
    return re.sub(r"\\(.)", r"\1", text)


def untraced_numbers(markup: str, facts) -> list[str]:
    """Numbers in the page-1 markup that were not printed through ctx.fact (multiset difference)."""
    from collections import Counter

    from iec_theory.report.facts import NUMBER

    left = Counter(f.text for f in facts)
    bad = []
    for m in NUMBER.finditer(_plain(markup)):
        if left[m.group(0)] > 0:
            left[m.group(0)] -= 1
        else:
            bad.append(m.group(0))
    return bad


def test_untraced_number_check_catches_a_hard_coded_number():
    from iec_theory.report.facts import Fact

    facts = [Fact(text="0.291", file="x.json", pointer=("rows", 0, "W2"))]
    assert untraced_numbers("IEC reaches W2 0\\.291 on W4A8 at T1m", facts) == []
    assert untraced_numbers("IEC reaches W2 0\\.291 and Heun 0\\.253", facts) == ["0.253"]
    assert untraced_numbers("#srcline[source\\: results\\/real\\_quick\\-3a7c1890\\/results\\.json]", []) == []


def test_every_number_on_page_1_is_traced_to_a_results_file(ci_report):
    from iec_theory.report.facts import read_back, resolve

    res, d = ci_report
    summary = res.parts["summary"]
    facts = [f for f in res.facts if f.section == "summary"]
    assert len(facts) >= 10, "page 1 prints too few numbers to answer its three questions"
    assert untraced_numbers(summary, facts) == [], "numbers on page 1 that no results file backs"
    for f in facts:
        path = resolve(f.file, d / "build")
        assert path.is_file(), f"{f.text}: results file {f.file} does not exist"
        assert f.display_file().split(" ")[0] in re.sub(r"\\(.)", r"\1", summary), f"{f.file} not cited on page 1"
        if f.pointer:
            assert read_back(f, d / "build") == f.text, f"{f.text} is not the value at {f.file} {f.pointer}"
        else:
            assert f.note, f"derived number {f.text} from {f.file} does not say how it is derived"
    # page 1 is one page and carries the three answers, the real network's included
    page1 = _norm(pypdf.PdfReader(str(d / "ci.pdf")).pages[0].extract_text())
    for head in ("What holds on toy models", "paper's own ground", "What IEC buys at equal compute"):
        assert _norm(head) in page1, head
    for f in facts:
        assert _norm(f.text) in page1, f"{f.text} is not on page 1 of the PDF"
    assert _norm("configurations with a propagated error grow at most linearly") in page1
    assert _norm("worsens the output law") in page1 or _norm("improves the output law") in page1


def test_no_none_and_no_absolute_path_in_the_report(ci_report):
    res, d = ci_report
    text = _pdf_text(d / "ci.pdf")
    for where, body in (("typst source", re.sub(r"\\(.)", r"\1", res.source)), ("PDF text", text)):
        assert not re.search(r"\bNone\b", body), f"'None' in the {where}"
        hits = re.findall(r"(?<![\w.~)])/(?:home|work|tmp|root|Users|usr|var|mnt|opt|private)/[\w./-]*", body)
        assert not hits, f"absolute paths in the {where}: {hits[:3]}"


def test_no_empty_section_or_heading(ci_report):
    res, _ = ci_report
    assert tu.empty_headings(res.source) == [], [res.source.splitlines()[i] for i in tu.empty_headings(res.source)]
    for key, part in res.parts.items():
        body = part.split("\n", 1)[1] if "\n" in part else ""
        assert len(re.sub(r"\s", "", body)) > 40, f"section {key} is (almost) empty"


def test_every_figure_axis_is_labelled(ci_report):
    res, _ = ci_report
    assert all(fig.axes for fig in res.figures), "a figure recorded no axes"
    bad = [msg for fig in res.figures for msg in fig.unlabelled()]
    assert not bad, bad


def test_axis_label_hook_sees_a_missing_label(tmp_path):
    from iec_theory.report.figures import save_figure

    def draw(fig, d):
        ax1, ax2 = fig.subplots(1, 2)
        ax1.plot(d["x"])
        ax1.set_xlabel("step")
        ax1.set_ylabel("error")
        ax2.plot(d["x"])
        ax2.set_xlabel("step")

    rec = save_figure(tmp_path, "f", {"x": [1.0, 2.0]}, draw)
    assert rec.unlabelled() == ["f: panel 1 (untitled) has no y label"]


def test_empty_heading_is_dropped():
    src = "== A\n\n== B\ntext\n=== C\n== D\n=== E\nbody\n"
    out, dropped = tu.drop_empty_headings(src)
    assert dropped == ["== A", "=== C"] and tu.empty_headings(out) == []


def test_absolute_paths_are_shown_relative():
    assert tu.relativize_paths("Model /somewhere/checkout/real_models/weights/x ok") == "Model real_models/weights/x ok"
    home = "/" + "home"      # built, so the repository itself names no machine-specific path
    assert home + "/" not in tu.text(f"data in {home}/alice/data/cifar10")
    assert tu.relativize_paths("u in [1e-3, 1e2], 1/2, (a)/2/3") == "u in [1e-3, 1e2], 1/2, (a)/2/3"
    assert tu.cell(None) == "[n\\/a]"


# ---- the first run: commands fail fast, progress goes to stderr -----------------------------------------

def test_sample_rejects_bad_arguments_before_loading_the_model(monkeypatch, capsys):
    import real_models.pretrained as pre
    from iec_theory.cli import main

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(pre, "load_default_model", boom)
    for bad in (["--steps", "-3"], ["--n", "0"], ["--batch-size", "0"], ["--eta", "nan"], ["--clip-x0", "0"],
                ["--threads", "0"], ["--iec", "officialddpm"]):
        try:
            rc = main(["sample", *bad, "--out", "x.png"])
        except SystemExit as exc:      # argparse (choices): usage + error, exit 2
            rc = exc.code
        assert rc == 2, bad
        assert "error:" in capsys.readouterr().err
    assert main(["sample", "--steps", "5000", "--out", "x.png"]) == 2
    assert "--steps must be <=" in capsys.readouterr().err


def test_sample_default_threads_is_the_measured_best():
    import json

    from iec_theory.cli import build_parser

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "sample_threads.json"
    rec = json.loads(path.read_text())
    default = build_parser().parse_args(["sample"]).threads
    best = rec["best"]
    assert str(default) == best or (default is None and best == "torch default"), (default, best)


def test_verify_prints_progress_on_stderr_and_keeps_stdout_a_table(capsys):
    from iec_theory.cli import main

    assert main(["verify", "--instances", "3"]) == 0
    cap = capsys.readouterr()
    assert cap.out.splitlines()[0].split()[:2] == ["theorem", "instances"]
    assert "instances checked" not in cap.out and "3/3 instances checked" in cap.err


def test_report_logs_progress_per_section_and_a_heartbeat(tmp_path, monkeypatch):
    from iec_theory.report import builder

    monkeypatch.setattr(builder, "HEARTBEAT_SECONDS", 0.05)
    lines = []
    orig = builder._run_section

    def slow(ctx, sec, failures):
        time.sleep(0.2)
        return orig(ctx, sec, failures)

    monkeypatch.setattr(builder, "_run_section", slow)
    build_report("ci", out=tmp_path / "r.pdf", sections=("appendix",), log=lines.append)
    assert any(line.startswith("[1/1] Reproducibility appendix") for line in lines)
    assert any("still running" in line for line in lines), lines


def test_first_jvp_after_the_report_preload_raises_no_jit_script_warning():
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('error')\n"
            "from iec_theory.report.builder import import_jvp_decompositions\n"
            "import_jvp_decompositions()\n"
            "import torch\n"
            "f = lambda x: torch.nn.functional.group_norm(x.view(1, 4, 1), 2)\n"
            "torch.func.jvp(f, (torch.ones(4),), (torch.ones(4),))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr[-2000:]


def test_quality_table_shows_the_replaced_models_numbers(tmp_path):
    from iec_theory.report.sections.real import _quality_files

    class Ctx:
        def table(self, header, rows, **kw):
            self.header, self.rows = header, rows
            return "table"

        def not_available(self, why):
            return "n/a: " + why

    (tmp_path / "quality_n1000.json").write_text(json.dumps(
        {"n": 1000, "T": 100, "rows": {"ddim_uniform": {"out_of_range": 0.04, "FD_cifarnet": 8.0}}}))
    meta = {"history": [{"steps": 3296, "quality": [{"source": "real_models/weights/x/quality_n1000.json", "n": 1000,
                                                     "T": 100, "rows": {"ddim_uniform": {"out_of_range": 0.6365,
                                                                                         "FD_cifarnet": 33.01}}}]}]}
    ctx = Ctx()
    assert _quality_files(ctx, tmp_path, meta) == "table"
    assert ctx.header[0] == "Model" and len(ctx.rows) == 2
    assert ctx.rows[0][:3] == ["this model", "quality_n1000.json", "ddim_uniform"]
    assert ctx.rows[1][0] == "replaced #1 (3296 steps)" and str(ctx.rows[1][6]).startswith("33.0")
    assert _quality_files(Ctx(), tmp_path / "none", {}).startswith("n/a")


def test_page1_real_says_which_way_distinguishable_pairs_go(tmp_path):
    """Page 1 must not claim IEC worsens FD where its interval says it improves: one distinguishable pair where
    IEC is better, one pair with overlapping intervals (the counts are traced)."""
    import json

    from iec_theory.report.builder import PROFILES, Context
    from iec_theory.report.sections.page1_real import real_answer

    folder = _real_results_fixture(tmp_path / "results")
    doc = json.loads((folder / "results.json").read_text())
    q = {r["label"]: r["quality"] for r in doc["rows"]}
    q["W4A8+IEC"].update(FD_cifarnet=20.0, FD_cifarnet_ci=[19.0, 21.0], FD_cifarnet_not_distinguishable_from=[])
    q["W4A8"]["FD_cifarnet_not_distinguishable_from"] = []
    (folder / "results.json").write_text(json.dumps(doc))
    ctx = Context(profile=PROFILES["ci"], seed=0, build_dir=tmp_path, results_dirs=(tmp_path / "results",))
    text = _norm(re.sub(r"\\(.)", r"\1", real_answer(ctx, None)))
    assert _norm("not distinguishable in 1 of 2 pairs (not ranked); of the 1 distinguishable pairs, IEC's FD is "
                 "higher (worse) in 0 and lower (better) in 1") in text, text
    assert _norm("higher (worse) one") not in text


def test_page1_real_adds_one_traced_sentence_per_other_real_run(tmp_path):
    """With results of two real specs, page 1 describes one in full and the other in one sentence whose
    counts come from that file (here IEC better in its one distinguishable pair)."""
    import json
    import shutil

    from iec_theory.report.builder import PROFILES, Context
    from iec_theory.report.facts import read_back
    from iec_theory.report.sections.page1_real import real_answer
    from real_models.experiment import load_real_spec

    quick = _real_results_fixture(tmp_path / "results")
    full_spec = load_real_spec(Path(__file__).resolve().parents[1] / "experiments" / "real_full.toml")
    full = tmp_path / "results" / f"real_full-{full_spec.hash[:8]}"
    shutil.copytree(quick, full)
    doc = json.loads((full / "results.json").read_text())
    doc.update(name="real_full", spec_hash=full_spec.hash)
    doc["settings"].update(T=100, batch=8)              # fewer images: page 1 describes real_quick in full
    q = {r["label"]: r["quality"] for r in doc["rows"]}
    q["W4A8+IEC"].update(FD_cifarnet=20.0, FD_cifarnet_ci=[19.0, 21.0], FD_cifarnet_not_distinguishable_from=[])
    q["W4A8"]["FD_cifarnet_not_distinguishable_from"] = []
    # "cache10" and "cache10+affine" share the model field (it omits the correction): IEC on the corrected
    # cache must be compared with the corrected cache (4.8 -> 5.0, higher), not with plain cache10 (6.0)
    for label, scheme, prop in (("cache10", "ddim", 6.0), ("cache10+affine", "ddim", 4.8),
                                ("cache10+affine+IEC", "iec", 5.0)):
        doc["rows"].append({"label": label, "scheme": scheme, "iec": {"name": "official_ddpm"} if scheme == "iec"
                            else None, "model": {"quant": "none", "cache": 10}, "NFE": 100, "propagated_xbar": prop,
                            "growth_propagated": {"label": "linear"},
                            "quality": {"FD_cifarnet": 10.0, "FD_cifarnet_ci": [9.0, 11.0],
                                        "FD_cifarnet_not_distinguishable_from": ["cache10", "cache10+affine",
                                                                                 "cache10+affine+IEC"]}})
    (full / "results.json").write_text(json.dumps(doc))
    ctx = Context(profile=PROFILES["ci"], seed=0, build_dir=tmp_path, results_dirs=(tmp_path / "results",))
    text = _norm(re.sub(r"\\(.)", r"\1", real_answer(ctx, None)))
    assert text.startswith(_norm("Real network (real_quick:")), text
    assert _norm("Also real_full (T = 100 DDIM steps, 8 images): 7 of 7 configurations with a propagated error grow "
                 "at most linearly; FD of X+IEC vs X not distinguishable in 2 of 3 pairs (IEC worse in 0, better "
                 "in 1); IEC lowers the propagated error in 1 of 2.") in text, text
    assert _norm(f"results/real_full-{full_spec.hash[:8]}/results.json") in text
    for fact in ctx.facts:
        if fact.pointer:
            assert read_back(fact, tmp_path) == fact.text, fact
        else:
            assert fact.note, fact
