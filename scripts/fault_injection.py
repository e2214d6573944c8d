"""Replay interruption scenarios against the real `iec` commands and check that nothing is lost.

    python scripts/fault_injection.py [--only training,report] [--keep DIR]

Every scenario runs `python -m iec_theory.cli ...` in a subprocess of this checkout, interrupts it with
a signal at a point where work is in progress, reruns the same command, and checks:

- training (SIGINT, SIGTERM, SIGKILL during `iec train-ddpm --config tiny` on synthetic 32x32 images):
  SIGINT/SIGTERM exit with 128 + signal after saving a checkpoint at the current step; the rerun resumes
  and its final checkpoint (weights, EMA, Adam state, generator, data order) and loss log equal an
  uninterrupted run's bit for bit; the log has no repeated steps; no process is left behind.
- report (SIGINT, SIGTERM, SIGKILL during the typesetting of `iec report --profile ci --sections
  appendix`): the previous PDF is untouched, SIGINT/SIGTERM leave no temporary, and after the next run
  none is left either (SIGKILL's leftover is removed); no process is left behind.
- sweep: see `sweep_scenarios()` (a hook for the sweep engine's own scenarios).

Not part of CI (about a minute on one core). Prints one line per scenario and a summary; exit code 1 if
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
def sweep_scenarios(work: Path) -> list[Scenario]:
    """TODO(sweep engine owner): SIGINT / SIGTERM / SIGKILL during `iec sweep` (iec_theory/harness/sweep.py).

    Each should interrupt a sweep of a small spec mid-way, check that the parent exits promptly with a
    resume hint, that no worker outlives it (assert_no_leftovers on the sweep folder), that rerunning
    finishes only the missing cells, and that the final summary equals an uninterrupted sweep's.
    Return Scenario(name, run, {"sweep"}) objects; none yet.
    """
    return []


# ----- main -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated tags: training, report, sweep")
    ap.add_argument("--keep", default=None, help="work in this (new) folder and keep it")
    args = ap.parse_args(argv)
    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True, exist_ok=False)
    else:
        work = Path(tempfile.mkdtemp(prefix="iec_fault_injection_"))
    sys.path.insert(0, str(ROOT))
    tags = set(args.only.split(",")) if args.only else {"training", "report", "sweep"}
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
            print(f"[{'PASS' if ok else 'FAIL'}] {res.scenario:<18} {res.seconds:6.1f} s  {res.detail}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    n_fail = sum(not r.ok for r in results)
    skipped = "" if sweep_scenarios(work) or "sweep" not in tags else " (sweep: no scenarios yet, see sweep_scenarios)"
    print(f"fault injection: {len(results)} scenarios, {len(results) - n_fail} passed, {n_fail} failed{skipped}")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
