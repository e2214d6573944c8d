"""Small file-system helpers shared by the commands: atomic writes and liveness of a temporary's writer."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["atomic_write_bytes", "pid_alive", "remove_stale"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to path through a sibling temporary file and os.replace (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (or cannot be signalled by us): its temporaries are kept."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale(files: Iterable[tuple[Path, int | None]], *, remove_without_pid: bool) -> list[Path]:
    """Remove our own temporaries whose writer is gone: (file, writer pid or None).  A file whose pid is a live
    process other than this one is kept (a concurrent writer); one without a pid is removed only when
    `remove_without_pid`.  Returns the removed paths."""
    removed = []
    for f, pid in files:
        if pid is None and not remove_without_pid:
            continue
        if pid is not None and pid != os.getpid() and pid_alive(pid):
            continue
        try:
            f.unlink()
            removed.append(f)
        except OSError:
            pass
    return removed
