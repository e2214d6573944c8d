"""Executors for sweep cells: in-process, a local process pool, or Dask distributed (`iec sweep --executor`).

Every executor has the same small interface (`submit`, `as_completed`, `cancel`, `close`), used as a
context manager by `run_sweep`:

- `InlineExecutor` (`--executor local --workers 1`): runs cells one after the other in this process.
- `LocalPoolExecutor` (`--executor local`, N >= 2 workers): a `concurrent.futures.ProcessPoolExecutor`
  (spawned processes). Each worker ignores SIGINT (the parent handles Ctrl-C and stops the pool) and
  never outlives the parent: it asks the kernel for SIGKILL when the parent dies (Linux
  `prctl(PR_SET_PDEATHSIG)`) and, everywhere, a watchdog thread exits when its parent pid changes.
- `DaskExecutor` (`--executor dask`): a `distributed.Client`. Without a scheduler address it starts a
  `LocalCluster` of N worker processes with one thread each (each worker holds a pipe from this
  process and exits as soon as it closes, so SIGKILL of the sweep leaves no worker); with an address
  (`--scheduler tcp://host:8786`) it uses any running Dask cluster, e.g. one started through
  dask-jobqueue on SLURM (`scripts/dask_slurm_sweep.py`). Cells are pure functions of their spec and
  return their results to the client, which writes the cell folders: workers need the package
  installed, not a shared filesystem.

On interruption `run_sweep` calls `cancel` (pending cells are dropped, running ones stopped) and
`close`; finished cells are already on disk, so a rerun resumes.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import ConfigError, require

__all__ = ["EXECUTORS", "DaskExecutor", "InlineExecutor", "LocalPoolExecutor", "check_executor_args", "make_executor",
           "watch_parent"]

EXECUTORS = ("local", "dask")


def watch_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """Make this process exit when parent_pid dies: PR_SET_PDEATHSIG on Linux, plus a daemon thread that
    polls os.getppid() (a reparented process has a new parent) and calls os._exit."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)        # PR_SET_PDEATHSIG = 1
        except OSError:                          # pragma: no cover - no libc
            pass
    if os.getppid() != parent_pid:               # the parent died before we got here
        os._exit(1)

    def _watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=_watch, name="iec-parent-watchdog", daemon=True).start()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _pool_worker_init(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle
    watch_parent(parent_pid)


class InlineExecutor:
    """Run cells one by one in this process (as_completed runs them lazily, so cancel drops the rest)."""

    kind = "local"

    def __init__(self) -> None:
        self.workers = 1
        self._pending: dict[cf.Future, tuple[Callable[..., Any], tuple]] = {}

    def __enter__(self) -> InlineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return "local, 1 worker (in-process)"

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        fut: cf.Future = cf.Future()
        self._pending[fut] = (fn, args)
        return fut

    def as_completed(self, futures: Iterable[cf.Future]) -> Iterator[cf.Future]:
        for fut in list(futures):
            job = self._pending.pop(fut, None)
            if job is None:
                continue
            fn, args = job
            fut.set_result(fn(*args))          # exceptions (KeyboardInterrupt included) propagate
            yield fut

    def cancel(self, futures: Iterable[cf.Future]) -> None:
        for fut in futures:
            self._pending.pop(fut, None)
            fut.cancel()

    def close(self) -> None:
        self._pending.clear()


class LocalPoolExecutor:
    """A spawned ProcessPoolExecutor whose workers ignore SIGINT and die with the parent."""

    kind = "local"

    def __init__(self, workers: int) -> None:
        import multiprocessing

        self.workers = workers
        self._pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_pool_worker_init, initargs=(os.getpid(),))
        self._started = False

    def _start_workers(self) -> None:
        """Spawn all workers now with SIGINT ignored (inherited across exec; the initializer keeps it so)."""
        if self._started:
            return
        self._started = True
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
        try:
            for _ in range(self.workers):
                self._pool.submit(int)
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)

    def __enter__(self) -> LocalPoolExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return f"local process pool, {self.workers} workers"

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        self._start_workers()
        return self._pool.submit(fn, *args)

    def as_completed(self, futures: Iterable[cf.Future]) -> Iterator[cf.Future]:
        return cf.as_completed(list(futures))

    def cancel(self, futures: Iterable[cf.Future]) -> None:
        for fut in futures:
            fut.cancel()
        # running cells cannot be cancelled through the public API: stop the worker processes
        procs = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=5)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """A distributed.Client on a LocalCluster (processes, one thread per worker) or on a scheduler address."""

    kind = "dask"

    def __init__(self, workers: int | None, scheduler: str | None = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - distributed is a dependency
            raise ConfigError("--executor dask needs the 'distributed' package: pip install distributed") from exc
        self.scheduler = scheduler
        self.cluster = None
        if scheduler is None:
            self.workers = int(workers or 2)
            # workers inherit an ignored SIGINT (kept across exec): a terminal Ctrl-C reaches only this process,
            # which cancels the cells and closes the cluster
            old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
            try:
                # the cluster's own logs only at CRITICAL: on an interrupted run the workers' heartbeats race the
                # closing scheduler and log tracebacks that mean nothing; a failing cell or shard still raises its
                # exception here, through its future
                self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                            dashboard_address=":0", silence_logs=logging.CRITICAL)
            finally:
                if old is not None:
                    signal.signal(signal.SIGINT, old)
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(scheduler, timeout=30)
            except (OSError, TimeoutError, ValueError) as exc:
                raise ConfigError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler ({exc})") from exc
            self.workers = len(self.client.scheduler_info().get("workers", {}))

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        where = self.scheduler or "LocalCluster"
        return f"dask ({where}), {self.workers} workers"

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def as_completed(self, futures: Iterable[Any]) -> Iterator[Any]:
        from distributed import as_completed

        return iter(as_completed(list(futures)))

    def cancel(self, futures: Iterable[Any]) -> None:
        self.client.cancel(list(futures), force=True)

    def close(self) -> None:
        try:
            self.client.close(timeout=10)
        finally:
            if self.cluster is not None:
                self.cluster.close(timeout=10)


def check_executor_args(kind: str, workers: int | None, scheduler: str | None) -> None:
    """Raise ConfigError (one line) for an unknown executor, workers < 1, or --scheduler misused."""
    require(kind in EXECUTORS, f"--executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    require(workers is None or (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1),
            f"--workers must be >= 1, got {workers}")
    if scheduler is not None:
        require(kind == "dask", "--scheduler needs --executor dask")
        require(isinstance(scheduler, str) and scheduler.strip(), "--scheduler: empty address")
        require(workers is None, "--workers applies to the local cluster only: size a --scheduler cluster where it "
                                 "is started")


def make_executor(kind: str, workers: int | None, scheduler: str | None = None) -> Any:
    """The executor for `iec sweep --executor kind [--workers N] [--scheduler ADDRESS]` (validated)."""
    check_executor_args(kind, workers, scheduler)
    if scheduler is not None:
        return DaskExecutor(None, scheduler)
    if kind == "dask":
        return DaskExecutor(workers or 2)
    if (workers or 1) <= 1:
        return InlineExecutor()
    return LocalPoolExecutor(workers)
