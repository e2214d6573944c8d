"""Small file-system helpers shared by the commands: atomic writes and liveness of a temporary's writer."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write_bytes", "pid_alive"]


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
