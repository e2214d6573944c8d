"""Experiment harness: TOML specs (spec.py), single runs (runner.py), grid sweeps (sweep.py) and their
executors (executors.py: local or Dask distributed)."""

from .runner import compute_spec, is_finished, run_spec, write_results
from .spec import Spec, load_spec, validate_spec
from .sweep import SweepInterrupted, expand_grid, run_sweep

__all__ = ["Spec", "SweepInterrupted", "compute_spec", "expand_grid", "is_finished", "load_spec", "run_spec",
           "run_sweep", "validate_spec", "write_results"]
