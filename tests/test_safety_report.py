"""Issue 11: `iec report` never deletes what it did not create and cleans the temporaries a killed run left."""

from __future__ import annotations

import os
import subprocess

from iec_theory.cli import main
from iec_theory.report.builder import clean_stale_temporaries

ARGS = ["report", "--profile", "ci", "--sections", "appendix", "--no-run-real"]


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_keep_build_into_the_pdf_folder_keeps_the_pdf(tmp_path, capsys):
    d = tmp_path / "D"
    d.mkdir()
    assert main(ARGS + ["--out", str(d / "r.pdf"), "--keep-build", str(d)]) == 0, capsys.readouterr().err
    assert (d / "r.pdf").read_bytes().startswith(b"%PDF")       # --keep-build deleted it before
    assert (d / "main.typ").is_file()


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path, capsys):
    d = tmp_path / "D"
    d.mkdir()
    stale_pid = d / f".r.pdf.{_dead_pid()}.abcd1234.tmp"      # left by a SIGKILLed run (our naming)
    legacy = d / ".r.pdf.k2j3h4g5.tmp"                          # older naming, no pid
    for f in (stale_pid, legacy):
        f.write_bytes(b"partial")
    live = d / f".r.pdf.{os.getppid()}.zzzz9999.tmp"            # a live process's build: kept
    live.write_bytes(b"in progress")
    other = d / ".other.pdf.123.x.tmp"                          # not ours: kept
    other.write_bytes(b"x")
    assert main(ARGS + ["--out", str(d / "r.pdf")]) == 0, capsys.readouterr().err
    assert (d / "r.pdf").read_bytes().startswith(b"%PDF")
    assert not stale_pid.exists() and not legacy.exists()
    assert live.exists() and other.exists()
    assert sorted(f.name for f in d.iterdir()) == sorted(["r.pdf", live.name, other.name])


def test_clean_stale_temporaries_only_touches_our_pattern(tmp_path):
    out = tmp_path / "x.pdf"
    mine = tmp_path / f".x.pdf.{_dead_pid()}.aaaa.tmp"
    near = tmp_path / ".x.pdfa.1.b.tmp"
    keep = tmp_path / "x.pdf.tmp"
    for f in (mine, near, keep):
        f.write_text("t")
    assert clean_stale_temporaries(out) == [mine]
    assert near.exists() and keep.exists()


def test_interrupt_right_after_the_temporary_is_created_leaves_none(tmp_path, monkeypatch):
    import tempfile

    import pytest

    import iec_theory.report.builder as builder

    real_mkstemp = tempfile.mkstemp

    def mkstemp_then_interrupt(*a, **k):
        fd, path = real_mkstemp(*a, **k)
        if k.get("suffix") == ".tmp":
            os.close(fd)
            raise KeyboardInterrupt        # Ctrl-C landing between mkstemp and the try block
        return fd, path

    monkeypatch.setattr(builder.tempfile, "mkstemp", mkstemp_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        builder.build_report(profile="ci", out=tmp_path / "r.pdf", sections=("appendix",), log=lambda s: None)
    assert list(tmp_path.iterdir()) == []
