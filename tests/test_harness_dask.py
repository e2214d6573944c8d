"""`iec sweep --executor dask|local`: bitwise-identical results across executors and worker counts, prompt
Ctrl-C with resume, and no worker outliving a SIGKILLed sweep (Dask LocalCluster with 2 worker processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

distributed = pytest.importorskip("distributed")

from iec_theory.cli import main  # noqa: E402
from iec_theory.harness import run_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SPEC = """
name = "dasky"
seed = 5

[model]
kind = "gaussian"
dim = 3
variances = [1.0, 0.1, 0.01]
mean = 0.5

[sampler]
T = {T}
batch = {batch}

[perturbation]
kind = "bias"
magnitude = 0.02

[[methods]]
name = "ddim"

[[methods]]
name = "iec"
label = "iec-official"
iec = {{preset = "official_ddpm"}}

[sweep]
grid = {{"perturbation.magnitude" = [0.01, 0.05], "seed" = {seeds}}}
"""


def _spec(tmp_path: Path, T: int = 4, batch: int = 8, seeds: str = "[1, 2]") -> Path:
    p = tmp_path / "dasky.toml"
    p.write_text(SPEC.format(T=T, batch=batch, seeds=seeds))
    return p


def _slow_spec(tmp_path: Path) -> Path:
    """Cells of about half a second each (4 cells)."""
    return _spec(tmp_path, T=60, batch=2048, seeds="[1, 2]")


@pytest.fixture(scope="module")
def cluster():
    import logging

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=logging.ERROR) as lc:
        yield lc


def _summary(out: Path) -> dict:
    return json.loads((out / "sweep_summary.json").read_text())


def _arrays(out: Path, cell: str) -> dict[str, np.ndarray]:
    with np.load(out / "cells" / cell / "arrays.npz") as z:
        return {k: z[k] for k in z.files}


def _sweep_cmd(spec: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "iec_theory.cli", "sweep", str(spec), "--out", str(out), "--no-progress", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _wait_for_cells(out: Path, n: int, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    t0 = time.monotonic()
    while len(list((out / "cells").glob("*/metadata.json"))) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "no cell finished in time"
        time.sleep(0.1)


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def test_rows_bitwise_identical_across_executors_and_worker_counts(tmp_path, cluster):
    spec = _spec(tmp_path)
    with distributed.Client(cluster) as client:     # the workers run this checkout's code
        files = set(client.run(lambda: __import__("iec_theory").__file__).values())
    assert files == {str(ROOT / "iec_theory" / "__init__.py")}
    outs = {"inline": tmp_path / "inline", "dask": tmp_path / "dask"}
    run_sweep(str(spec), outs["inline"], workers=1, progress=False)
    res = run_sweep(str(spec), outs["dask"], progress=False, executor="dask", scheduler=cluster.scheduler_address)
    assert res["ran"] == 4
    ref = _summary(outs["inline"])
    for name in ("dask",):
        assert _summary(outs[name]) == ref, name
        for cell in {r["cell"] for r in ref["rows"]}:
            a, b = _arrays(outs["inline"], cell), _arrays(outs[name], cell)
            assert a.keys() == b.keys()
            assert all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes()
                       for k in a)          # bitwise (NaN entries included)


def test_cli_dask_local_cluster_matches_local_pool(tmp_path, capsys):
    spec = _spec(tmp_path)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "A"), "--executor", "dask", "--workers", "2",
                 "--no-progress"]) == 0
    assert main(["sweep", str(spec), "--out", str(tmp_path / "B"), "--executor", "local", "--workers", "2",
                 "--no-progress"]) == 0
    assert _summary(tmp_path / "A")["rows"] == _summary(tmp_path / "B")["rows"]
    assert "4 cells (4 run, 0 already finished)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --executor dask"),
    (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--workers applies"),
    (["--executor", "dask", "--workers", "0"], "--workers must be an integer >= 1"),
    (["--workers", "-1"], "--workers must be an integer >= 1"),
])
def test_executor_flags_are_validated_before_work(tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert main(["sweep", str(_spec(tmp_path)), "--out", str(out), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (out / "cells").exists() or not any((out / "cells").iterdir())


def test_ctrl_c_stops_dask_sweep_and_it_resumes(tmp_path, cluster):
    spec = _slow_spec(tmp_path)
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(_sweep_cmd(spec, out, "--executor", "dask", "--workers", "2"), cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_cells(out, 1, proc)
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGINT)          # a terminal Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume with: iec sweep" in err and "Traceback" not in err
    deadline = time.monotonic() + 15
    while _alive(family) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(family)
    finished = len(list((out / "cells").glob("*/metadata.json")))
    assert 1 <= finished < 4
    resumed = run_sweep(str(spec), out, progress=False, executor="dask", scheduler=cluster.scheduler_address)
    assert resumed["skipped"] == finished and resumed["ran"] == 4 - finished
    ref = run_sweep(str(spec), tmp_path / "ref", progress=False, executor="dask", scheduler=cluster.scheduler_address)
    assert resumed["rows"] == ref["rows"]


def _workers(pid: int) -> list[psutil.Process]:
    """Alive spawned worker processes below pid."""
    out = []
    for p in _alive(psutil.Process(pid).children(recursive=True)):
        try:
            if "spawn_main" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.parametrize("executor", ["dask", "local"])
def test_sigkill_of_the_sweep_leaves_no_worker(tmp_path, executor):
    spec = _slow_spec(tmp_path)
    proc = subprocess.Popen(_sweep_cmd(spec, tmp_path / "killed", "--executor", executor, "--workers", "2"),
                            cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    t0 = time.monotonic()
    while len(_workers(proc.pid)) < 2:          # both workers up (cells are being submitted to them)
        assert proc.poll() is None and time.monotonic() - t0 < 90
        time.sleep(0.1)
    time.sleep(0.5)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _alive(children)
    for p in left:                               # do not leak them into the rest of the test session
        p.kill()
    assert not left, [p.cmdline() for p in left]
