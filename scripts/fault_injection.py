"""Replay interruption scenarios against the real `iec` commands and check that nothing is lost.

    python scripts/fault_injection.py [--only training,report,sweep] [--keep DIR]

Every scenario runs `python -m iec_theory.cli ...` in a subprocess of this checkout, interrupts it with
a signal at a point where work is in progress, reruns the same command, and checks:

- training (SIGINT, SIGTERM, SIGKILL during `iec train-ddpm --config tiny` on synthetic 32x32 images):
  SIGINT/SIGTERM exit with 128 + signal after saving a checkpoint at the current step; the rerun resumes
  and its final checkpoint (weights, EMA, Adam state, generator, data order) and loss log equal an
  uninterrupted run's bit for bit; the log has no repeated steps; no process is left behind.
- report (SIGINT, SIGTERM, SIGKILL during the typesetting of `iec report --profile ci --sections
  appendix`): the previous PDF is untouched, SIGINT/SIGTERM leave no temporary, and after the next run
  none is left either (SIGKILL's leftover is removed); no process is left behind.
- sweep (SIGINT to the process group, SIGTERM to the main process or the group, SIGKILL to the main
  process, once the first cell is finished, of `iec sweep --executor local|dask --workers 2` on a 6-cell
  toy grid): SIGINT/SIGTERM exit with 130 and a resume hint; no worker or helper process is left; the
  rerun reuses every finished cell, runs only the others, and its summary and cell arrays equal an
  uninterrupted sweep's bit for bit.

Not part of CI (a few minutes on two cores). Prints one line per scenario and a summary; exit code 1 if
any scenario fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))


@dataclass
class Result:
    scenario: str
    ok: bool
    detail: str
    seconds: float = 0.0


@dataclass
class Scenario:
    name: str
    run: Callable[[Path], str]          # returns a detail line; raises AssertionError on failure
    tags: set[str] = field(default_factory=set)


# ----- helpers -----------------------------------------------------------------------------------------
def iec(*args: str) -> list[str]:
    return [sys.executable, "-m", "iec_theory.cli", *args]


def run_to_end(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def processes_mentioning(marker: str) -> list[int]:
    """PIDs (other than ours) whose command line contains marker: the leftovers check."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(d.name))
    return pids


def assert_no_leftovers(marker: str) -> None:
    deadline = time.monotonic() + 5
    while processes_mentioning(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = processes_mentioning(marker)
    assert not left, f"processes left behind: {left}"


def interrupt_when(cmd: list[str], ready: Callable[[str], bool], sig: int, delay: float = 0.0,
                   timeout: float = 300) -> tuple[int, str]:
    """Start cmd, read its output until ready(line), wait delay, send sig; return (exit code, output)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    out = []
    t0 = time.monotonic()
    assert proc.stdout is not None
    for line in proc.stdout:
        out.append(line)
        if ready(line):
            if delay:
                time.sleep(delay)
            proc.send_signal(sig)
            break
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("the command never reached the interruption point")
    rest, _ = proc.communicate(timeout=timeout)
    return proc.returncode, "".join(out) + (rest or "")


# ----- training ---------------------------------------------------------------------------------------
TRAIN_STEPS = 40


def synthetic_images(root: Path, n: int = 24) -> Path:
    """A CIFAR-10-style image folder (train/CLASS/*.png) of random 32x32 images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / "train" / ("airplane", "automobile", "bird")[i % 3]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)).save(d / f"{i:04d}.png")
    return root


def train_cmd(data: Path, run_dir: Path, steps: int = TRAIN_STEPS) -> list[str]:
    return iec("train-ddpm", "--data", str(data), "--config", "tiny", "--max-steps", str(steps), "--batch-size", "4",
               "--log-every", "5", "--checkpoint-steps", "15", "--threads", "1", "--run-dir", str(run_dir),
               "--no-export", "--no-progress")


def _progress_file(run_dir: Path, at_step: int) -> Callable[[str], bool]:
    """Ready once the run has logged step >= at_step (the log is written every --log-every steps)."""
    def ready(_line: str) -> bool:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            log = run_dir / "training_log.jsonl"
            if log.is_file():
                lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
                try:
                    if lines and json.loads(lines[-1])["step"] >= at_step:
                        return True
                except (ValueError, KeyError):
                    pass
            time.sleep(0.02)
        raise AssertionError(f"training never reached step {at_step}")
    return ready


def compare_runs(a: Path, b: Path) -> str:
    import torch

    from real_models.checkpoint import load_checkpoint
    from real_models.train import read_log

    ta, sa = load_checkpoint(a)
    tb, sb = load_checkpoint(b)
    assert sa["step"] == sb["step"] == TRAIN_STEPS, (sa["step"], sb["step"])
    assert ta.keys() == tb.keys(), "checkpoint keys differ"
    diff = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not diff, f"{len(diff)} tensors differ from the uninterrupted run, e.g. {diff[:3]}"
    la = [(r["step"], r["loss"]) for r in read_log(a)]
    lb = [(r["step"], r["loss"]) for r in read_log(b)]
    steps = [s for s, _ in lb]
    assert len(steps) == len(set(steps)), f"repeated steps in the log: {steps}"
    assert la == lb, f"loss logs differ: {la} vs {lb}"
    return f"{len(ta)} tensors and {len(lb)} log lines equal the uninterrupted run"


def training_scenarios(work: Path) -> list[Scenario]:
    data = synthetic_images(work / "data")
    ref = work / "train-ref"
    state: dict[str, bool] = {}

    def reference() -> None:
        if not state.get("ref"):
            r = run_to_end(train_cmd(data, ref))
            assert r.returncode == 0, r.stderr[-2000:]
            state["ref"] = True

    def scenario(sig: int) -> Callable[[Path], str]:
        def run(_work: Path) -> str:
            reference()
            run_dir = work / f"train-{signal.Signals(sig).name}"
            rc, out = interrupt_when(train_cmd(data, run_dir), _progress_file(run_dir, 17), sig)
            assert_no_leftovers(str(run_dir))
            from real_models.checkpoint import load_checkpoint

            saved = load_checkpoint(run_dir)[1]["step"]
            if sig == signal.SIGKILL:
                assert rc == -signal.SIGKILL, rc
                what = f"killed; last periodic checkpoint at step {saved}"
            else:
                assert rc == 128 + sig, (rc, out[-1500:])
                assert "interrupted by" in out and "resume" in out, out[-1500:]
                assert saved >= 17, f"checkpoint at step {saved}, work since the last periodic one lost"
                what = f"exit {rc}, checkpoint saved at step {saved}"
            r = run_to_end(train_cmd(data, run_dir))
            assert r.returncode == 0, r.stderr[-2000:]
            assert f"resuming {run_dir} from step {saved}" in r.stdout, r.stdout[-1500:]
            assert_no_leftovers(str(run_dir))
            return f"{what}; resumed to {TRAIN_STEPS}: {compare_runs(ref, run_dir)}"
        return run

    return [Scenario(f"training {signal.Signals(s).name}", scenario(s), {"training"})
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)]


# ----- report -----------------------------------------------------------------------------------------
def report_cmd(out: Path) -> list[str]:
    return iec("report", "--profile", "ci", "--sections", "appendix", "--no-run-real", "--out", str(out))


def temporaries(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.*.tmp"))


def report_scenarios(work: Path) -> list[Scenario]:
    def scenario(sig: int) -> Callable[[Path], str]:
        def run(_work: Path) -> str:
            d = work / f"report-{signal.Signals(sig).name}"
            d.mkdir()
            out = d / "r.pdf"
            r = run_to_end(report_cmd(out))
            assert r.returncode == 0, r.stderr[-2000:]
            before = out.read_bytes()
            # typesetting takes a fraction of a second: retry with growing delays after the
            # "typesetting" line until the signal lands while the temporary exists (or give up)
            caught, rc = None, 0
            for attempt in range(40):
                rc, output = interrupt_when(report_cmd(out), lambda line: "typesetting" in line, sig,
                                            delay=attempt * 0.004)
                assert_no_leftovers(str(out))
                if rc != 0 and (sig != signal.SIGKILL or temporaries(out)):
                    caught = attempt
                    break
            assert caught is not None, "the signal never landed before the build finished"
            left = temporaries(out)
            assert out.read_bytes() == before, "the previous PDF changed"
            if sig != signal.SIGKILL:
                assert not left, f"{signal.Signals(sig).name} left temporaries: {left}"
            r = run_to_end(report_cmd(out))
            assert r.returncode == 0, r.stderr[-2000:]
            assert not temporaries(out), f"temporaries after the next run: {temporaries(out)}"
            assert out.read_bytes().startswith(b"%PDF")
            assert_no_leftovers(str(out))
            return (f"exit {rc} (attempt {caught + 1}), {len(left)} temporary left by the interrupted run, "
                    "0 after the next run; previous PDF intact")
        return run

    return [Scenario(f"report {signal.Signals(s).name}", scenario(s), {"report"})
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)]


# ----- sweep ------------------------------------------------------------------------------------------
SWEEP_SPEC = """
name = "fi_sweep"
seed = 5

[model]
kind = "gaussian"
dim = 3
variances = [1.0, 0.1, 0.01]
mean = 0.5

[sampler]
T = 60
batch = 4096

[perturbation]
kind = "bias"
magnitude = 0.02

[[methods]]
name = "ddim"

[[methods]]
name = "iec"
label = "iec-official"
iec = {preset = "official_ddpm"}

[sweep]
grid = {"perturbation.magnitude" = [0.01, 0.05, 0.1], "seed" = [1, 2]}
"""
SWEEP_CELLS = 6                 # cells of SWEEP_SPEC's grid, about 1-2 s each on one core
SWEEP_GRACE_S = 20.0            # how long the sweep's processes may take to exit after the main one (Dask nannies)


def sweep_cmd(spec: Path, out: Path, executor: str) -> list[str]:
    return iec("sweep", str(spec), "--out", str(out), "--executor", executor, "--workers", "2", "--no-progress")


def finished_cells(out: Path) -> int:
    """Cells with a completion marker (metadata.json is written last, atomically)."""
    return len(list((out / "cells").glob("*/metadata.json")))


def _alive(procs: list) -> list:
    import psutil

    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _cmdline(p: object) -> str:
    try:
        return " ".join(p.cmdline())            # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - gone meanwhile
        return ""


def _describe(procs: list) -> list[str]:
    return [f"{p.pid}: {_cmdline(p)[:160]}" for p in procs]


class Tracked:
    """A command in its own session (process group) whose descendants are recorded while it runs, so that
    after it exits we can check none of them is left; output goes to files (no pipe to fill up)."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        import psutil

        self.log = log
        self._stdout = open(log.with_suffix(".out"), "w")     # noqa: SIM115 - closed in wait()
        self._stderr = open(log.with_suffix(".err"), "w")     # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=self._stdout, stderr=self._stderr,
                                     start_new_session=True)
        self.main = psutil.Process(self.proc.pid)
        self.family: dict[int, object] = {self.proc.pid: self.main}

    def snapshot(self) -> None:
        import psutil

        try:
            for c in self.main.children(recursive=True):
                self.family.setdefault(c.pid, c)
        except psutil.NoSuchProcess:
            pass

    def poll_until(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        """Record descendants until cond() holds; AssertionError if the command exits or time runs out first."""
        t0 = time.monotonic()
        while not cond():
            self.snapshot()
            if self.proc.poll() is not None:
                raise AssertionError(f"the sweep exited ({self.proc.returncode}) before {what}: "
                                     f"{self.stderr()[-1500:]}")
            if time.monotonic() - t0 > timeout:
                self.kill_all()
                raise AssertionError(f"no {what} within {timeout:.0f} s")
            time.sleep(0.05)
        self.snapshot()

    def wait(self, timeout: float) -> float:
        """Wait for the main process (recording descendants meanwhile); return the seconds it took."""
        t0 = time.monotonic()
        while self.proc.poll() is None:
            self.snapshot()
            if time.monotonic() - t0 > timeout:
                self.kill_all()
                raise AssertionError(f"the sweep did not exit within {timeout:.0f} s")
            time.sleep(0.05)
        self._stdout.close()
        self._stderr.close()
        return time.monotonic() - t0

    def stdout(self) -> str:
        return self.log.with_suffix(".out").read_text()

    def stderr(self) -> str:
        return self.log.with_suffix(".err").read_text()

    def leftovers(self, grace: float = SWEEP_GRACE_S) -> tuple[list, float]:
        """(processes of the family still alive after grace seconds, seconds until the family was gone)."""
        t0 = time.monotonic()
        others = [p for pid, p in self.family.items() if pid != self.proc.pid]
        while _alive(others) and time.monotonic() - t0 < grace:
            time.sleep(0.1)
        return _alive(others), time.monotonic() - t0

    def kill_all(self) -> None:
        """Clean up after a failure: SIGKILL everything recorded (do not leak into the next scenario)."""
        import psutil

        self.snapshot()
        alive = _alive(list(self.family.values()))
        for p in alive:
            try:
                p.kill()
            except psutil.Error:               # gone meanwhile
                pass
        psutil.wait_procs(alive, timeout=10)
        self.proc.wait(timeout=30)
        self._stdout.close()
        self._stderr.close()


def run_tracked(cmd: list[str], log: Path, timeout: float = 900) -> tuple[Tracked, float]:
    """Run cmd to the end; assert exit 0 and that none of its processes is left. Return (tracked, seconds)."""
    t = Tracked(cmd, log)
    seconds = t.wait(timeout)
    assert t.proc.returncode == 0, f"exit {t.proc.returncode}: {t.stderr()[-2000:]}"
    left, _ = t.leftovers()
    if left:
        t.kill_all()
    assert not left, f"processes left behind by {cmd[3]}: {_describe(left)}"
    return t, seconds


def compare_sweeps(ref: Path, out: Path) -> str:
    """Summary (rows included) and every cell's arrays equal the reference sweep's, bit for bit."""
    import numpy as np

    a = json.loads((ref / "sweep_summary.json").read_text())
    b = json.loads((out / "sweep_summary.json").read_text())
    assert len(b["rows"]) == len(a["rows"]) > 0, (len(a["rows"]), len(b["rows"]))
    a.pop("skipped")
    b.pop("skipped")

    def canon(x: object) -> str:                      # float repr round-trips exactly; NaN compares equal here
        return json.dumps(x, sort_keys=True)

    assert canon(a) == canon(b), "sweep_summary.json differs from the uninterrupted sweep's"
    cells = sorted({r["cell"] for r in a["rows"]})
    assert len(cells) == SWEEP_CELLS, cells
    for cell in cells:
        with np.load(ref / "cells" / cell / "arrays.npz") as za, np.load(out / "cells" / cell / "arrays.npz") as zb:
            assert za.files == zb.files, (cell, za.files, zb.files)
            for k in za.files:
                x, y = za[k], zb[k]
                assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), \
                    f"cell {cell}: arrays.npz[{k}] differs from the uninterrupted sweep's"
        left = list((out / "cells" / cell).glob(".*.tmp"))
        assert not left, f"temporaries left in cell {cell}: {left}"
    return f"{len(b['rows'])} rows and the arrays of {len(cells)} cells equal the uninterrupted sweep"


def sweep_scenarios(work: Path) -> list[Scenario]:
    """SIGINT / SIGTERM / SIGKILL during `iec sweep --executor local|dask --workers 2` of a 6-cell toy grid.

    Each starts the sweep in its own process group, waits until its first cell is finished (and both
    workers are up), then sends SIGINT to the process group (a terminal Ctrl-C), SIGTERM to the main
    process (`kill PID`) or to the process group (`kill -TERM -PGID`, as SLURM's scancel or a container
    stop does), or SIGKILL to the main process (`kill -9 PID`), and checks: exit 130 with a resume hint
    and no traceback (SIGINT, SIGTERM) or killed (SIGKILL); no process of the sweep (pool or Dask
    workers, resource tracker) left after a grace period; the rerun of the same command reuses every
    finished cell, runs only the missing ones, leaves no process or temporary behind, and its summary and
    cell arrays equal those of an uninterrupted sweep into another folder bit for bit.
    """
    spec = work / "fi_sweep.toml"
    refs: dict[str, Path] = {}

    def reference(executor: str) -> Path:
        if executor not in refs:
            spec.write_text(SWEEP_SPEC)
            out = work / f"sweep-ref-{executor}"
            t, _ = run_tracked(sweep_cmd(spec, out, executor), work / f"sweep-ref-{executor}.log")
            assert f"{SWEEP_CELLS} cells ({SWEEP_CELLS} run, 0 already finished)" in t.stdout(), t.stdout()
            refs[executor] = out
        return refs[executor]

    def scenario(executor: str, sig: int, to_group: bool) -> Callable[[Path], str]:
        def run(_work: Path) -> str:
            ref = reference(executor)
            name = f"sweep-{executor}-{signal.Signals(sig).name}{'-group' if to_group else ''}"
            out = work / name
            cmd = sweep_cmd(spec, out, executor)
            t = Tracked(cmd, work / f"{name}.log")
            try:
                t.poll_until(lambda: finished_cells(out) >= 1, timeout=600, what="finished cell")
                at_signal = finished_cells(out)
                workers = [p for p in _alive(list(t.family.values())) if "spawn_main" in _cmdline(p)]
                assert len(workers) >= 2, f"expected 2 worker processes at the signal: {_describe(workers)}"
                if to_group:
                    os.killpg(t.proc.pid, sig)          # Ctrl-C in a terminal / kill -TERM -PGID (scancel)
                else:
                    os.kill(t.proc.pid, sig)            # kill [-9] PID: the main process only
                seconds = t.wait(timeout=120)
            except BaseException:
                t.kill_all()
                raise
            rc, err = t.proc.returncode, t.stderr()
            left, gone_s = t.leftovers()
            if left:
                t.kill_all()
            assert not left, f"{len(left)} of {len(t.family)} processes left behind: {_describe(left)}"
            n_done = finished_cells(out)
            if sig == signal.SIGKILL:
                assert rc == -signal.SIGKILL, (rc, err[-1500:])
                what = "killed"
            else:
                assert rc == 130, (rc, err[-1500:])
                assert "resume with: iec sweep" in err and "Traceback" not in err, err[-1500:]
                what = "exit 130 with a resume hint"
            assert at_signal <= n_done < SWEEP_CELLS, \
                f"{n_done} cells finished (>= {at_signal} at the signal): the sweep was not interrupted mid-way"
            what += (f" {seconds:.1f} s after the signal, {n_done}/{SWEEP_CELLS} cells finished, "
                     f"{len(t.family)} processes ({len(workers)} workers) gone in {gone_s:.1f} s")
            r, _ = run_tracked(cmd, work / f"{name}-rerun.log")
            expect = f"{SWEEP_CELLS} cells ({SWEEP_CELLS - n_done} run, {n_done} already finished)"
            assert expect in r.stdout(), f"rerun: expected '{expect}': {r.stdout()[-1000:]}"
            return f"{what}; rerun ran the other {SWEEP_CELLS - n_done}: {compare_sweeps(ref, out)}"
        return run

    kinds = [("SIGINT", signal.SIGINT, True), ("SIGTERM", signal.SIGTERM, False),
             ("SIGTERM group", signal.SIGTERM, True), ("SIGKILL", signal.SIGKILL, False)]
    return [Scenario(f"sweep {ex} {label}", scenario(ex, sig, group), {"sweep"})
            for ex in ("local", "dask") for label, sig, group in kinds]


# ----- main -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated tags: training, report, sweep")
    ap.add_argument("--keep", default=None, help="work in this (new) folder and keep it")
    args = ap.parse_args(argv)
    known = {"training", "report", "sweep"}
    tags = {t.strip() for t in args.only.split(",") if t.strip()} if args.only else known
    if not tags or tags - known:
        ap.error(f"--only: unknown tag(s) {', '.join(sorted(tags - known)) or '(none given)'}; "
                 f"use a comma-separated subset of {', '.join(sorted(known))}")
    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True, exist_ok=False)
    else:
        work = Path(tempfile.mkdtemp(prefix="iec_fault_injection_"))
    sys.path.insert(0, str(ROOT))
    scenarios: list[Scenario] = []
    if "training" in tags:
        scenarios += training_scenarios(work)
    if "report" in tags:
        scenarios += report_scenarios(work)
    if "sweep" in tags:
        scenarios += sweep_scenarios(work)
    results = []
    try:
        for sc in scenarios:
            t0 = time.monotonic()
            try:
                detail, ok = sc.run(work), True
            except (AssertionError, subprocess.TimeoutExpired) as exc:
                detail, ok = f"{type(exc).__name__}: {exc}", False
            res = Result(sc.name, ok, detail, time.monotonic() - t0)
            results.append(res)
            print(f"[{'PASS' if ok else 'FAIL'}] {res.scenario:<25} {res.seconds:6.1f} s  {res.detail}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    n_fail = sum(not r.ok for r in results)
    print(f"fault injection: {len(results)} scenarios, {len(results) - n_fail} passed, {n_fail} failed")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
