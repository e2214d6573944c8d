"""Numbers traced to results files: every number on page 1 goes through `Context.fact`.

A `Fact` is a number as printed (formatted once, by `typst_util.num`) with the results file it was read
from and, when it is a value stored in a JSON file, the JSON pointer (keys and list indices) of that
value. Counts and differences derived from a file carry a note instead of a pointer. The tests read
each file back: a pointed value must format to the printed text; a derived one must come from an
existing file. Files of this build (toy runs, verdicts.json) are named "build:<path inside the build
folder>"; `iec report --keep-build DIR` keeps them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import typst_util as tu

BUILD_PREFIX = "build:"
# a number as printed (tu.num): not part of an identifier (W4A8, T1m, 2T) nor of a path or a hash
NUMBER = re.compile(r"(?<![\w./\\-])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w/])")


@dataclass(frozen=True)
class Fact:
    """One printed number and where it comes from."""

    text: str                              # the number exactly as printed
    file: str                              # path as opened (cwd-relative or absolute), or "build:<path in build>"
    pointer: tuple[str | int, ...] = ()    # JSON keys / indices of the value in `file`; () when derived
    note: str = ""                         # how a derived number is obtained from the file
    section: str = ""

    def display_file(self) -> str:
        """The file as a reader sees it in the PDF."""
        return display(self.file)


def display(file: str) -> str:
    """A results file as the PDF names it: relative to the checkout, build files marked "(this build)"."""
    if file.startswith(BUILD_PREFIX):
        return file[len(BUILD_PREFIX):] + " (this build)"
    return tu.display_path(file)


def resolve(fact_file: str, build_dir: Path, root: Path | None = None) -> Path:
    """The file on disk: inside the build folder for "build:" files, else relative to `root` (default cwd)."""
    if fact_file.startswith(BUILD_PREFIX):
        return Path(build_dir) / fact_file[len(BUILD_PREFIX):]
    p = Path(fact_file)
    return p if p.is_absolute() else (root or Path.cwd()) / p


def lookup(doc: Any, pointer: tuple[str | int, ...]) -> Any:
    """doc[p0][p1]... (KeyError / IndexError when the pointer does not exist)."""
    for key in pointer:
        doc = doc[key]
    return doc


def read_back(fact: Fact, build_dir: Path, root: Path | None = None) -> str | None:
    """The value at the fact's pointer, formatted as the report formats it (None for derived facts)."""
    path = resolve(fact.file, build_dir, root)
    if not fact.pointer:
        return None
    value = lookup(json.loads(path.read_text(encoding="utf-8")), fact.pointer)
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        value = float(value)
    return tu.num(value)


