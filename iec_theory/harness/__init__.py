"""Experiment harness: TOML specs (spec.py), single runs (runner.py) and grid sweeps (sweep.py)."""

from .runner import run_spec
from .spec import Spec, load_spec, validate_spec
from .sweep import expand_grid, run_sweep

__all__ = ["Spec", "expand_grid", "load_spec", "run_spec", "run_sweep", "validate_spec"]
