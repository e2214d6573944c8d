"""Shared validation of command-line inputs: output paths, threads, devices, seeds and memory estimates.

Every check raises ``ConfigError`` (exit code 2 through the CLI) with a one-line message naming the
argument, and runs before any long work.

Memory limit: ``check_memory`` refuses a request whose estimated size exceeds the limit, which is
``$IEC_MEMORY_LIMIT_GB`` (gibibytes) when set, else 80% of the machine's physical memory. Set the
variable to a larger value to override (e.g. ``IEC_MEMORY_LIMIT_GB=500 iec run big.toml``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import ConfigError, require

SEED_MAX = 2**63 - 1
MEMORY_ENV = "IEC_MEMORY_LIMIT_GB"
_GIB = 2**30


# ----- output paths ----------------------------------------------------------------------------------
def _file_ancestor(path: Path) -> Path | None:
    """The first existing ancestor of path that is not a directory (a regular file), else None."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """A file we will write: it must not be a directory and no ancestor may be a regular file."""
    p = Path(path)
    require(str(path) != "", f"{what}: empty path")
    require(not p.is_dir(), f"{what}: {str(p)!r} is a directory; give a file path")
    anc = _file_ancestor(p)
    require(anc is None, f"{what}: {str(p)!r} lies under {str(anc)!r}, which is a file, not a folder")
    return p


def check_output_dir(path: str | os.PathLike, what: str, must_be_empty: bool = False) -> Path:
    """A folder we will write into: not a regular file, not under one; optionally absent or empty."""
    p = Path(path)
    require(str(path) != "", f"{what}: empty path")
    require(not (p.exists() and not p.is_dir()), f"{what}: {str(p)!r} is a file, not a folder")
    anc = _file_ancestor(p)
    require(anc is None, f"{what}: {str(p)!r} lies under {str(anc)!r}, which is a file, not a folder")
    if must_be_empty and p.is_dir():
        require(not any(p.iterdir()), f"{what}: {str(p)!r} exists and is not empty; give a new or empty folder "
                                      "(nothing in it is deleted)")
    return p


# ----- numbers ---------------------------------------------------------------------------------------
def check_threads(threads: int | None, what: str = "--threads") -> int | None:
    """None (torch's default) or an integer >= 1."""
    if threads is None:
        return None
    require(isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1,
            f"{what} must be an integer >= 1, got {threads!r}")
    return int(threads)


def check_seed(seed: int, what: str = "--seed") -> int:
    """A seed in [0, 2**63 - 1] (the range of a TOML integer; every derived seed stays valid)."""
    require(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX,
            f"{what} must be an integer in [0, 2**63 - 1], got {seed!r}")
    return int(seed)


def derive_seed(value: int) -> int:
    """A torch.Generator seed from an integer key (reduced mod 2**64; unchanged for keys below 2**64)."""
    return int(value) % 2**64


def check_device(device: str, what: str = "--device") -> str:
    """A torch device string that parses and is available here (cpu, cuda, cuda:N, mps)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: unknown device {device!r}; use cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda":
        require(torch.cuda.is_available(), f"{what}: {device!r} requested but CUDA is not available here; use cpu")
        n = torch.cuda.device_count()
        require(dev.index is None or dev.index < n, f"{what}: {device!r} does not exist ({n} CUDA device(s))")
    elif dev.type == "mps":
        require(torch.backends.mps.is_available(), f"{what}: 'mps' requested but MPS is not available here; use cpu")
    else:
        require(dev.type == "cpu", f"{what}: device type {dev.type!r} is not supported; use cpu, cuda or mps")
    return device


def check_finite(value: float, what: str, lo: float | None = None, strict: bool = False) -> float:
    """A finite float, optionally >= lo (or > lo when strict)."""
    v = float(value)
    require(math.isfinite(v), f"{what} must be finite, got {value!r}")
    if lo is not None:
        require(v > lo if strict else v >= lo, f"{what} must be {'>' if strict else '>='} {lo}, got {value!r}")
    return v


# ----- memory ----------------------------------------------------------------------------------------
def memory_limit_bytes() -> int:
    """The allocation limit: $IEC_MEMORY_LIMIT_GB GiB if set, else 80% of physical memory."""
    env = os.environ.get(MEMORY_ENV)
    if env:
        try:
            gb = float(env)
        except ValueError as exc:
            raise ConfigError(f"${MEMORY_ENV} must be a number of GiB, got {env!r}") from exc
        require(math.isfinite(gb) and gb > 0, f"${MEMORY_ENV} must be a positive number of GiB, got {env!r}")
        return int(gb * _GIB)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 16 * _GIB
    return int(0.8 * total)


def fmt_bytes(n: float) -> str:
    """Human-readable size (GiB/TiB/...)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(n) < 1024 or unit == "EiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover


def check_memory(estimate_bytes: float, what: str) -> None:
    """Refuse (before allocating) when the estimated memory exceeds the limit, naming both."""
    limit = memory_limit_bytes()
    if estimate_bytes > limit:
        raise ConfigError(f"{what} needs about {fmt_bytes(estimate_bytes)} of memory, over the limit of "
                          f"{fmt_bytes(limit)} (set ${MEMORY_ENV} to raise it)")
