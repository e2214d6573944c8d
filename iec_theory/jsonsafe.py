"""One JSON-safe conversion for every results file the project writes.

numpy and torch scalars and arrays become Python numbers and lists, mapping keys become strings,
and non-finite floats become either their string ("inf", "-inf", "nan"; readers such as
`iec_theory.report.facts` parse them back), null, or stay floats ("keep": Python's json writes NaN and
Infinity and reads them back; for the project's own checkpoints), by the caller's file convention. Anything
else that is not a number becomes its `str`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

__all__ = ["json_safe"]


def _float(f: float, nonfinite: str) -> float | str | None:
    if math.isfinite(f) or nonfinite == "keep":
        return f
    return str(f) if nonfinite == "string" else None


def json_safe(x: Any, nonfinite: Literal["string", "null", "keep"] = "string") -> Any:
    """A JSON-serialisable copy of `x`; non-finite floats become strings, None, or stay (`nonfinite`)."""
    if nonfinite not in ("string", "null", "keep"):
        raise ValueError(f"nonfinite must be 'string', 'null' or 'keep', got {nonfinite!r}")
    if isinstance(x, dict):
        return {str(k): json_safe(v, nonfinite) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v, nonfinite) for v in x]
    if x is None or isinstance(x, str):
        return x
    if type(x).__name__ == "bool_" or isinstance(x, bool):  # numpy bool without importing numpy
        return bool(x)
    if hasattr(x, "tolist") and not isinstance(x, (int, float)):  # numpy/torch arrays and scalars
        return json_safe(x.tolist(), nonfinite)
    if isinstance(x, int):
        return int(x)
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return _float(f, nonfinite)
