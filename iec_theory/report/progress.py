"""Progress of a report build: a heartbeat while a long section runs, and quiet torch JVP set-up."""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable


class Heartbeat:
    """While a section runs, log "still running" every `every` seconds (long sections: real models).

    A daemon thread; stopped when the section returns (also on an exception).
    """

    def __init__(self, log: Callable[[str], None], what: str, every: float) -> None:
        self.log, self.what, self.every = log, what, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.perf_counter()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.log(f"    ... {self.what} still running ({time.perf_counter() - self._t0:.0f} s so far)")

    def __enter__(self) -> Heartbeat:
        if self.every > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)


JIT_SCRIPT_WARNING = r"`torch\.jit\.script` is deprecated"


def import_jvp_decompositions() -> None:
    """Register torch's forward-mode AD decompositions now, with their one deprecation warning silenced.

    The first JVP of a process (the real-model section's Jacobian estimates) makes torch import
    torch._decomp.decompositions_for_jvp, which registers each decomposition through the deprecated
    torch.jit.script and so warns (DeprecationWarning; FutureWarning in other torch versions) in the middle
    of the report's output. Importing that module here under a filter for exactly that message from
    torch.jit._script removes the noise at its origin; later JVPs find the decompositions registered.
    """
    import warnings

    with warnings.catch_warnings():
        for cat in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", message=JIT_SCRIPT_WARNING, category=cat, module=r"torch\.jit\._script")
        try:
            importlib.import_module("torch._decomp.decompositions_for_jvp")
        except ImportError:   # another torch layout: nothing to pre-register
            pass
