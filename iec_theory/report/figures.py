"""Figures for the report: data checked before plotting, saved as deterministic vector SVG.

`check_figure_data` is the gate every figure passes: each named array must be non-empty and
finite (and, for log axes, contain positive values), otherwise a `FigureDataError` says which
array is wrong. Figures are written with a fixed `svg.hashsalt`, no date metadata and text as
paths, so the same data gives byte-identical SVG files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HASHSALT = "iec-report"


class FigureDataError(ValueError):
    """A figure was asked to plot empty, non-finite or (on a log axis) non-positive data."""


@dataclass(frozen=True)
class AxesLabels:
    """What one matplotlib Axes of a figure shows as labels (collected after drawing, for the tests)."""

    title: str
    xlabel: str
    ylabel: str
    colorbar: bool          # a colorbar's axes: one label (on its long side) is enough


@dataclass(frozen=True)
class FigureRecord:
    name: str
    path: Path
    n_points: int          # finite values plotted, summed over arrays
    arrays: tuple[str, ...]
    axes: tuple[AxesLabels, ...] = ()

    def unlabelled(self) -> list[str]:
        """Descriptions of the axes that lack an x or y label (a colorbar needs one label)."""
        bad = []
        for k, a in enumerate(self.axes):
            if a.colorbar:
                if not (a.xlabel or a.ylabel):
                    bad.append(f"{self.name}: colorbar {k} has no label")
                continue
            missing = [w for w, lab in (("x", a.xlabel), ("y", a.ylabel)) if not lab.strip()]
            if missing:
                bad.append(f"{self.name}: panel {k} ({a.title or 'untitled'}) has no {' or '.join(missing)} label")
        return bad


def axes_labels(fig) -> tuple[AxesLabels, ...]:
    """The labels of every Axes of a drawn figure (the hook the report tests use)."""
    out = []
    for ax in fig.axes:
        out.append(AxesLabels(title=ax.get_title(), xlabel=ax.get_xlabel(), ylabel=ax.get_ylabel(),
                              colorbar=getattr(ax, "_colorbar", None) is not None))
    return tuple(out)


def check_figure_data(data: Mapping[str, object], log: tuple[str, ...] = ()) -> int:
    """Check every array in `data`: non-empty, all finite; names in `log` need a positive value.

    Returns the total number of values. Raises FigureDataError naming the offending array.
    """
    if not data:
        raise FigureDataError("figure has no data arrays")
    total = 0
    for name, arr in data.items():
        try:
            a = np.asarray(arr, dtype=float)
        except (TypeError, ValueError) as exc:
            raise FigureDataError(f"array {name!r} is not numeric: {exc}") from exc
        if a.size == 0:
            raise FigureDataError(f"array {name!r} is empty")
        if not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise FigureDataError(f"array {name!r} has {bad} non-finite value(s) of {a.size}")
        if name in log and not np.any(a > 0):
            raise FigureDataError(f"array {name!r} is plotted on a log axis but has no positive value")
        total += int(a.size)
    for name in log:
        if name not in data:
            raise FigureDataError(f"log-axis array {name!r} missing from the figure data")
    return total


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update({
        "svg.hashsalt": HASHSALT,
        "svg.fonttype": "path",
        "font.size": 8.5,
        "axes.titlesize": 9,
        "axes.labelsize": 8.5,
        "legend.fontsize": 7.5,
        "figure.dpi": 100,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "path.simplify": False,
    })
    return plt


def save_figure(directory: Path, name: str, data: Mapping[str, object],
                draw: Callable[[object, Mapping[str, np.ndarray]], None],
                size: tuple[float, float] = (6.0, 3.2), log: tuple[str, ...] = ()) -> FigureRecord:
    """Check `data`, call draw(fig, arrays) and save `<directory>/<name>.svg` deterministically."""
    n = check_figure_data(data, log)
    arrays = {k: np.asarray(v, dtype=float) for k, v in data.items()}
    plt = _mpl()
    fig = plt.figure(figsize=size, layout="constrained")
    try:
        draw(fig, arrays)
        labels = axes_labels(fig)
        path = Path(directory) / f"{name}.svg"
        fig.savefig(path, format="svg", dpi=200, metadata={"Date": None})
    finally:
        plt.close(fig)
    return FigureRecord(name=name, path=path, n_points=n, arrays=tuple(arrays), axes=labels)


def positive(y: np.ndarray, floor: float | None = None) -> np.ndarray:
    """Values for a log axis: non-positive entries become NaN (not drawn), or `floor` if given."""
    y = np.asarray(y, dtype=float).copy()
    y[y <= 0] = np.nan if floor is None else floor
    return y
