"""The IEC report: `build_report(profile, out, seed)` typesets every section into one PDF."""

from .builder import PROFILES, SECTIONS, BuildResult, Context, NotAvailable, build_report
from .figures import FigureDataError, check_figure_data

__all__ = ["PROFILES", "SECTIONS", "BuildResult", "Context", "FigureDataError", "NotAvailable", "build_report",
           "check_figure_data"]
