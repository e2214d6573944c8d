"""The one JSON-safe conversion used by every results writer (iec_theory/jsonsafe.py)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from iec_theory.jsonsafe import json_safe


def test_numbers_arrays_and_tensors_become_plain_json():
    x = {1: np.float32(0.5), "a": np.int64(3), "b": np.array([[1.0, 2.0]]), "c": torch.tensor([1.5, 2.5]),
         "d": torch.tensor(7), "e": (np.bool_(True), False, None, "s"), "f": Path("results/x.json")}
    out = json_safe(x)
    assert out == {"1": 0.5, "a": 3, "b": [[1.0, 2.0]], "c": [1.5, 2.5], "d": 7, "e": [True, False, None, "s"],
                   "f": "results/x.json"}
    assert type(out["a"]) is int and type(out["e"][0]) is bool
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("mode, expect", [("string", ["inf", "-inf", "nan"]), ("null", [None, None, None])])
def test_nonfinite_follow_the_callers_convention(mode, expect):
    vals = [math.inf, np.float64(-np.inf), torch.tensor(float("nan"))]
    assert json_safe(vals, mode) == expect
    assert json_safe(np.array([1.0, np.inf]), mode) == [1.0, expect[0]]
    json.dumps(json_safe(vals, mode), allow_nan=False)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="nonfinite"):
        json_safe(1.0, "zero")


def test_keep_mode_round_trips_nonfinite_floats_through_python_json():
    """'keep' (the project's own checkpoints): NaN and +-inf stay floats and survive json.dumps/loads."""
    out = json_safe({"a": [math.inf, np.float64(-np.inf), torch.tensor(float("nan"))], "b": np.float32(0.5)}, "keep")
    back = json.loads(json.dumps(out))
    assert back["a"][0] == math.inf and back["a"][1] == -math.inf and math.isnan(back["a"][2]) and back["b"] == 0.5
