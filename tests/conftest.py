"""Shared test configuration: hypothesis profiles.

Profiles (select with the environment variable IEC_HYPOTHESIS_PROFILE):

- "ci" (default): derandomized (a fixed seed derived from each test, so CI is deterministic), no example
  database, small example counts set per test (the `pytest -k bounds` suite must finish in <= 60 s on
  one core), print_blob=True: a failure prints the `@reproduce_failure` blob and the falsifying example.
- "thorough": random seeds, 20x the examples of each test (`max_examples` is multiplied via
  `examples(n)` in the tests), no deadline.  Run:  IEC_HYPOTHESIS_PROFILE=thorough pytest -k bounds
  (expect tens of minutes); hypothesis prints the seed of a failing run ("--hypothesis-seed=...").
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("IEC_HYPOTHESIS_PROFILE", "ci")
THOROUGH_FACTOR = 20

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile(
    "thorough", derandomize=False, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.load_profile(PROFILE if PROFILE in ("ci", "thorough") else "ci")
torch.set_num_threads(1)


def examples(n: int) -> int:
    """Example count of a test under the active profile (the CI count n, or THOROUGH_FACTOR * n)."""
    return n * THOROUGH_FACTOR if PROFILE == "thorough" else n
