"""Provenance of a run: seed, package versions, git commit, machine (recorded with every result)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def git_commit(path: Path | None = None) -> str:
    """The current git commit of the project checkout (with '+dirty' if modified), or 'unknown'."""
    root = path or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    """Versions of the numerical packages that determine results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("iec-theory", "torch", "numpy", "scipy", "diffusers", "safetensors", "typst", "hypothesis"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """A JSON-serialisable record of seed, versions, git commit and machine."""
    record: dict[str, Any] = {"seed": seed, "git_commit": git_commit(), "machine": platform.platform(),
                              "processor": platform.machine()}
    record.update(package_versions())
    record.update(extra)
    return record


def repo_relative(path: str | Path) -> str:
    """`path` relative to the repository root when it lies inside it (records never hold machine-specific
    absolute paths of the checkout); other paths unchanged."""
    root = Path(__file__).resolve().parents[1]
    p = Path(path).expanduser()
    try:
        return str(p.resolve().relative_to(root))
    except ValueError:
        return str(path)
