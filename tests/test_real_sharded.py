"""Sharded real-model evaluation through `iec real-eval` (issue 14, item 2): a 4-shard run on 2 Dask workers
equals the 1-shard run, a deleted shard is rerun alone, incomplete or foreign shards are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from iec_theory.cli import main

SPEC = """kind = "real"
name = "sharded_tiny"
description = "tiny sharded evaluation (tests)"
seed = 3
[model]
dir = ""
device = "cpu"
threads = 1
[sampler]
T = 3
eta = 0.0
spacing = "uniform"
batch = 8
[iec]
preset = "official_ddpm"
[quant]
calibration = {T = 3, trajectories = 1, batch_size = 2, seed = 1}
[[configs]]
quant = "none"
[[configs]]
quant = "W8A8"
iec = [true]
[[configs]]
cache = 2
iec = [false]
[jacobian]
enabled = false
[metrics]
fd_kid = true
bootstrap = 20
floor = true
growth_batches = 2
diagnostic_samples = 8
psnr_ssim = true
[grid]
n = 0
[theorems]
enabled = false
[shards]
n_samples = 8
batch = 2
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    import os

    root = tmp_path_factory.mktemp("sharded")
    spec = root / "tiny.toml"
    spec.write_text(SPEC)
    old = os.environ.pop("IEC_CIFAR10_DIR", None)          # floor from the committed features (fast)
    try:
        assert main(["real-eval", str(spec), "--shards", "1", "--out", str(root / "one"), "--quiet"]) == 0
        assert main(["real-eval", str(spec), "--shards", "4", "--executor", "dask", "--workers", "2",
                     "--out", str(root / "four"), "--quiet"]) == 0
    finally:
        if old is not None:
            os.environ["IEC_CIFAR10_DIR"] = old
    return {"spec": spec, "one": root / "one", "four": root / "four"}


def _rows(folder: Path) -> list[dict]:
    return json.loads((folder / "sharded_results.json").read_text())["rows"]


def test_four_shards_on_two_dask_workers_equal_one_shard(runs) -> None:
    from real_models.shards import merge_shards

    one, four = _rows(runs["one"]), _rows(runs["four"])
    assert [r["label"] for r in one] == ["FP", "FP+IEC", "W8A8+IEC", "cache2"]
    for a, b in zip(one, four):
        assert a == b, a["label"]           # every number, interval, curve and growth label identical
        assert a["growth_batches"]["batches"] == 4
        fa = merge_shards(runs["one"] / "shards" / a["label"].replace("+", "_")).features
        fb = merge_shards(runs["four"] / "shards" / a["label"].replace("+", "_")).features
        assert fa.shape == (8, 128) and np.array_equal(fa, fb)
        q = a["quality"]
        assert abs(q["FD_cifarnet_moments"] - q["FD_cifarnet"]) <= 1e-6 * q["FD_cifarnet"]
    doc = json.loads((runs["four"] / "sharded_results.json").read_text())
    assert doc["n_shards"] == 4 and doc["plan"] == {"n_samples": 8, "batch": 2, "seed": 3}
    assert doc["floor"]["n"] == 8


def test_a_deleted_shard_is_rerun_alone_and_the_merge_is_unchanged(runs, tmp_path, monkeypatch) -> None:
    import shutil

    monkeypatch.delenv("IEC_CIFAR10_DIR", raising=False)      # the same floor source as the fixture's runs

    from real_models.experiment import load_real_spec
    from real_models.experiment.sharded import merge_sharded, run_sharded

    out = tmp_path / "four"
    shutil.copytree(runs["four"], out)
    (out / "shards" / "cache2" / "shard-00002-of-00004.json").unlink()
    spec = load_real_spec(runs["spec"])
    assert run_sharded(spec, out, 4) == [2]
    assert run_sharded(spec, out, 4) == []
    merge_sharded(spec, out)
    assert _rows(out) == _rows(runs["four"])


def test_incomplete_or_foreign_shards_are_refused(runs, tmp_path, capsys) -> None:
    out = tmp_path / "part"
    spec = runs["spec"]
    assert main(["real-eval", str(spec), "--shard", "1/4", "--out", str(out), "--quiet"]) == 0
    assert main(["real-eval", str(spec), "--merge-shards", "--out", str(out), "--quiet"]) == 2
    assert "shards missing: 0, 2, 3 of 4" in capsys.readouterr().err
    other = tmp_path / "other.toml"
    other.write_text(SPEC.replace("seed = 3", "seed = 4", 1))
    assert main(["real-eval", str(other), "--merge-shards", "--out", str(runs["four"]), "--quiet"]) == 2
    assert "meta spec_hash" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--shard", "4/4"], "--shard I/N needs N >= 1 and 0 <= I < N"),
    (["--shard", "a/b"], "--shard must be I/N with integers"),
    (["--shards", "0"], "--shards must be >= 1"),
    (["--workers", "2"], "--executor/--workers/--scheduler apply to --shards only"),
    (["--shard", "0/2", "--executor", "dask"], "--executor/--workers/--scheduler apply to --shards only"),
    (["--shards", "2", "--executor", "spark"], "--executor must be one of"),
    (["--shards", "5"], "5 shards but the plan has only 4 global batch(es)"),
    (["--shard", "1/8"], "8 shards but the plan has only 4 global batch(es)"),
])
def test_bad_shard_arguments_are_one_line_errors(runs, argv, message, capsys, tmp_path) -> None:
    assert main(["real-eval", str(runs["spec"]), *argv, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_shards_table_is_validated(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SPEC.replace("batch = 2\n", "batch = 9\n").replace("n_samples = 8", "n_samples = 8"))
    assert main(["real-eval", str(bad), "--shards", "1", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "shards.batch: 9 exceeds shards.n_samples=8" in capsys.readouterr().err
    bad.write_text(SPEC.replace("batch = 8\n", "batch = 4\n", 1).replace("batch = 2\n", "batch = 6\n")
                   .replace("diagnostic_samples = 8", "diagnostic_samples = 4"))
    assert main(["real-eval", str(bad), "--shards", "1", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "shards.batch: 6 exceeds sampler.batch=4" in capsys.readouterr().err
    bad.write_text(SPEC.replace("n_samples = 8", "n_samples = 8\nsize = 3"))
    assert main(["real-eval", str(bad), "--shards", "1", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "shards." in capsys.readouterr().err


def test_paper_scale_example_is_a_valid_sharded_spec(tmp_path) -> None:
    """The GPU-only example validates (with device = cpu here) and plans 200 global batches of 250."""
    from real_models.experiment import load_real_spec
    from real_models.experiment.sharded import plan_for

    src = Path(__file__).resolve().parents[1] / "experiments" / "paper_scale.toml.example"
    f = tmp_path / "paper_scale.toml"
    f.write_text(src.read_text().replace('device = "cuda"', 'device = "cpu"'))
    spec = load_real_spec(f)
    plan = plan_for(spec)
    assert (plan.n_samples, plan.batch, plan.n_batches, spec.T) == (50_000, 250, 200, 100)
    assert len(plan.sample_range(3, 8)) == 6250


def test_torchrun_rank_runs_its_shard_with_the_same_statistics(runs, tmp_path, monkeypatch) -> None:
    """--shards-from-env: RANK 1 of WORLD_SIZE 4 writes shard 1 of 4, byte-identical statistics to the Dask run's."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "0")
    out = tmp_path / "rank"
    assert main(["real-eval", str(runs["spec"]), "--shards-from-env", "--out", str(out), "--quiet"]) == 0
    for row in ("FP", "FP_IEC", "W8A8_IEC", "cache2"):
        got = sorted(p.name for p in (out / "shards" / row).iterdir())
        assert got == ["shard-00001-of-00004.json", "shard-00001-of-00004.safetensors"]
        mine = json.loads((out / "shards" / row / got[0]).read_text())
        dask = json.loads((runs["four"] / "shards" / row / got[0]).read_text())
        assert mine["sha256"] == dask["sha256"] and mine["range"] == [2, 4]
    monkeypatch.setenv("RANK", "4")
    assert main(["real-eval", str(runs["spec"]), "--shards-from-env", "--out", str(out), "--quiet"]) == 2
