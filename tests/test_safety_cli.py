"""Issue 11: bad command-line input ends in ONE clear line (exit code 2), checked before any long work."""

from __future__ import annotations

import os

import pytest

from iec_theory.cli import main

TINY = """
name = "tiny"
seed = 3
[model]
kind = "gaussian"
dim = 3
variances = [1.0, 0.1, 0.01]
[sampler]
T = 3
batch = 4
[[methods]]
name = "ddim"
"""

TINY_SWEEP = TINY + """
[sweep]
grid = {"sampler.T" = [2, 3]}
"""


def _err(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI; assert exit 2 with a one-line error containing every needle; return the message."""
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, (rc, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"iec {argv[0]}: error: "), err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.fixture
def spec(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY)
    return p


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("keep me")
    return f


# ----- specs ------------------------------------------------------------------------------------------
def test_non_utf8_spec_is_a_clear_error(tmp_path, capsys):
    p = tmp_path / "latin1.toml"
    p.write_bytes(TINY.replace('"tiny"', '"t\xe9"').encode("latin-1"))
    _err(capsys, ["run", str(p)], "UTF-8")
    _err(capsys, ["sweep", str(p)], "UTF-8")


# ----- output paths -----------------------------------------------------------------------------------
def test_run_out_at_or_under_a_file(spec, a_file, capsys):
    _err(capsys, ["run", str(spec), "--out", str(a_file), "--quiet"], "--out", "is a file")
    _err(capsys, ["run", str(spec), "--out", str(a_file / "sub"), "--quiet"], "--out", "which is a file")
    assert a_file.read_text() == "keep me"


def test_sweep_out_at_a_file_and_bad_workers(tmp_path, a_file, capsys):
    p = tmp_path / "sw.toml"
    p.write_text(TINY_SWEEP)
    _err(capsys, ["sweep", str(p), "--out", str(a_file), "--no-progress"], "--out", "is a file")
    _err(capsys, ["sweep", str(p), "--out", str(a_file / "x"), "--no-progress"], "--out")
    _err(capsys, ["sweep", str(p), "--workers", "-1", "--out", str(tmp_path / "s")], "--workers")
    _err(capsys, ["sweep", str(p), "--workers", "0", "--out", str(tmp_path / "s")], "--workers")
    assert not (tmp_path / "s").exists()


def test_sample_bad_outputs_and_arguments(tmp_path, a_file, capsys):
    base = ["sample", "--n", "2", "--steps", "1"]
    _err(capsys, base + ["--out", str(tmp_path)], "--out", "is a directory")
    _err(capsys, base + ["--out", str(a_file / "g.png")], "--out", "which is a file")
    out = ["--out", str(tmp_path / "g.png")]
    _err(capsys, base + out + ["--nrow", "0"], "--nrow")
    _err(capsys, base + out + ["--nrow", "-2"], "--nrow")
    _err(capsys, base + out + ["--threads", "0"], "--threads")
    _err(capsys, base + out + ["--eta", "nan"], "--eta")
    _err(capsys, base + out + ["--clip-x0", "-1"], "--clip-x0")
    _err(capsys, base + out + ["--device", "bogus"], "--device", "bogus")
    _err(capsys, base + out + ["--seed", str(2**64)], "--seed")
    _err(capsys, base + out + ["--seed", "-1"], "--seed")
    assert not (tmp_path / "g.png").exists()


def test_sample_unavailable_cuda_is_clear(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    _err(capsys, ["sample", "--n", "2", "--out", str(tmp_path / "g.png"), "--device", "cuda"], "CUDA")


def test_sample_huge_n_is_refused_with_an_estimate(tmp_path, capsys):
    err = _err(capsys, ["sample", "--n", "100000000", "--out", str(tmp_path / "g.png")], "memory", "limit")
    assert "GiB" in err or "TiB" in err


def test_sample_memory_limit_is_overridable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IEC_MEMORY_LIMIT_GB", "0.000001")
    _err(capsys, ["sample", "--n", "64", "--out", str(tmp_path / "g.png")], "IEC_MEMORY_LIMIT_GB")


def test_report_out_dir_and_keep_build_fail_before_the_build(tmp_path, a_file, capsys, monkeypatch):
    import iec_theory.report.builder as builder

    def boom(*a, **k):
        raise AssertionError("the build started")

    monkeypatch.setattr(builder, "_run_section", boom)
    base = ["report", "--profile", "ci", "--sections", "appendix", "--no-run-real"]
    _err(capsys, base + ["--out", str(tmp_path)], "--out", "is a directory")
    _err(capsys, base + ["--out", str(a_file / "r.pdf")], "--out", "which is a file")
    full = tmp_path / "full"
    full.mkdir()
    (full / "precious.txt").write_text("x")
    _err(capsys, base + ["--out", str(tmp_path / "r.pdf"), "--keep-build", str(full)], "--keep-build", "not empty")
    assert (full / "precious.txt").read_text() == "x"
    _err(capsys, base + ["--out", str(tmp_path / "r.pdf"), "--keep-build", str(a_file)], "--keep-build")


def test_report_keep_build_dot_refused_and_working_folder_untouched(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("x")
    _err(capsys, ["report", "--profile", "ci", "--sections", "appendix", "--no-run-real", "--out", "r.pdf",
                  "--keep-build", "."], "--keep-build", "not empty")
    assert sorted(os.listdir(tmp_path)) == ["mine.txt"]


def test_verify_json_dir_fails_before_the_suite(tmp_path, a_file, capsys, monkeypatch):
    import iec_theory.theorems.suite as suite

    def boom(*a, **k):
        raise AssertionError("the suite started")

    monkeypatch.setattr(suite, "run_suite", boom)
    _err(capsys, ["verify", "--json", str(tmp_path), "--instances", "1", "--quiet"], "--json", "is a directory")
    _err(capsys, ["verify", "--json", str(a_file / "v.json"), "--instances", "1", "--quiet"], "--json")
    _err(capsys, ["verify", "--seed", str(2**64), "--instances", "1", "--quiet"], "--seed")
    _err(capsys, ["verify", "--seed", str(2**63 - 1), "--instances", "1", "--quiet"], "--seed")


def test_info_seed_out_of_range(capsys):
    _err(capsys, ["info", "--seed", str(2**64)], "--seed")
    _err(capsys, ["info", "--steps", "0"], "--steps")


def test_train_ddpm_bad_arguments_fail_before_loading_data(tmp_path, a_file, capsys):
    base = ["train-ddpm", "--data", str(tmp_path / "no-data"), "--config", "tiny", "--max-steps", "1",
            "--no-progress"]
    run = ["--run-dir", str(tmp_path / "run")]
    _err(capsys, base + ["--run-dir", str(a_file)], "--run-dir", "is a file")
    _err(capsys, base + ["--run-dir", str(a_file / "r")], "--run-dir", "which is a file")
    _err(capsys, base + run + ["--export-dir", str(a_file)], "--export-dir", "is a file")
    _err(capsys, base + run + ["--export-dir", "."], "--export-dir")
    _err(capsys, base + run + ["--export-dir", str(tmp_path / "e"), "--export-default"], "--export-default")
    _err(capsys, base + run + ["--threads", "0"], "--threads")
    _err(capsys, base + run + ["--lr", "inf"], "--lr")
    _err(capsys, base + run + ["--lr", "nan"], "--lr")
    _err(capsys, base + run + ["--grad-clip", "nan"], "--grad-clip")
    _err(capsys, base + run + ["--grad-clip", "-1"], "--grad-clip")
    _err(capsys, base + run + ["--limit", "-5"], "--limit")
    _err(capsys, base + run + ["--limit", "0"], "--limit")
    _err(capsys, base + run + ["--seed", str(2**64)], "--seed")
    _err(capsys, base + run + ["--warmup-steps", "-1"], "--warmup-steps")
    _err(capsys, base + run + ["--checkpoint-minutes", "nan"], "--checkpoint-minutes")
    _err(capsys, base + run + ["--high-t-share", "1.5"], "--high-t-share")
    _err(capsys, base + run + ["--high-t-share", "nan"], "--high-t-share")
    _err(capsys, base + run + ["--high-t-from", "1000"], "--high-t-from")
    _err(capsys, base + run + ["--high-t-weight", "0"], "--high-t-weight")
    assert not (tmp_path / "run").exists()
