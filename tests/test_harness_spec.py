"""Spec validation: invalid specs fail before any work with a message naming the field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from iec_theory.errors import ConfigError
from iec_theory.harness import load_spec, validate_spec
from iec_theory.harness.spec import spec_hash

BASE = {
    "name": "tiny",
    "seed": 1,
    "model": {"kind": "gaussian", "dim": 3, "variances": [1.0, 0.1, 0.01]},
    "sampler": {"T": 5, "batch": 4},
    "perturbation": {"kind": "bias", "magnitude": 0.01},
    "methods": [{"name": "ddim"}, {"name": "iec", "iec": {"preset": "official_ddpm"}}],
}


def _with(path: str, value, delete: bool = False) -> dict:
    spec = copy.deepcopy(BASE)
    cur = spec
    keys = path.split(".")
    for k in keys[:-1]:
        cur = cur[int(k)] if isinstance(cur, list) else cur[k]
    if delete:
        del cur[keys[-1]]
    elif isinstance(cur, list):
        cur[int(keys[-1])] = value
    else:
        cur[keys[-1]] = value
    return spec


@pytest.mark.parametrize("path,value,field", [
    ("name", "", "name"),
    ("colour", "red", "spec.colour"),
    ("kind", "real", "kind"),
    ("model.kind", "potato", "model.kind"),
    ("model.dim", 0, "model.dim"),
    ("model.variances", [1.0, -1.0], "model.variances"),
    ("model.shape", 2, "model.shape"),
    ("sampler.T", 0, "sampler.T"),
    ("sampler.T", 5000, "sampler.T"),
    ("sampler.eta", -1.0, "sampler.eta"),
    ("sampler.spacing", "cubic", "sampler.spacing"),
    ("sampler.batch", 2.5, "sampler.batch"),
    ("schedule", {"name": "exp"}, "schedule.name"),
    ("perturbation", {"kind": "bias", "magnitud": 1.0}, "perturbation.magnitud"),
    ("perturbation", {"kind": "warp"}, "perturbation.kind"),
    ("perturbation", {"kind": "cache"}, "perturbation"),
    ("methods", [], "methods"),
    ("methods.0.name", "euler", "methods[0].name"),
    ("methods.1.iec", {"preset": "fastest"}, "methods[1].iec.preset"),
    ("methods.1.iec", {"K": 2, "lambda": [0.5]}, "methods[1].iec.lambda"),
    ("methods.1.iec", {"K": 1, "lambda": 3.0}, "methods[1].iec.lambda"),
    ("methods.1.iec", {"K": 1, "noise": "pink"}, "methods[1].iec.noise"),
    ("methods.1.iec", {"K": 1, "select": {"kind": "cache_refresh"}}, "methods[1].iec.select.kind"),
    ("methods.1.iec", {"K": 1, "select": {"kind": "indices", "steps": [9]}}, "methods[1].iec.select.steps"),
    ("methods.1.label", "ddim", "methods[1].label"),
    ("methods.0.perturbation", {"kind": "scale"}, "methods[0].perturbation.scale"),
    ("metrics", {"exact_law": "yes"}, "metrics.exact_law"),
    ("sweep", {"grid": {"sampler.T": 5}}, "sweep.grid.sampler.T"),
    ("sweep", {"grid": {"planet.T": [5]}}, "sweep.grid.planet.T"),
])
def test_invalid_specs_name_the_field(path, value, field):
    with pytest.raises(ConfigError) as info:
        validate_spec(_with(path, value))
    assert field in str(info.value), str(info.value)


def test_missing_required_fields():
    for path, field in (("name", "name"), ("model", "model"), ("sampler", "sampler"), ("methods", "methods"),
                        ("sampler.T", "sampler.T"), ("model.kind", "model.kind")):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            validate_spec(_with(path, None, delete=True))
    with pytest.raises(ConfigError, match="methods\\[1\\].iec"):
        validate_spec(_with("methods.1", {"name": "iec"}))
    with pytest.raises(ConfigError, match="heun"):
        validate_spec(_with("methods.1", {"name": "heun"}) | {"sampler": {"T": 5, "eta": 1.0}})


def test_valid_spec_builds_everything():
    spec = validate_spec(copy.deepcopy(BASE))
    assert spec.T == 5 and spec.toy.dim == 3 and [m.label for m in spec.methods] == ["ddim", "iec"]
    assert spec.methods[1].iec.K == 1 and spec.metrics == {"exact_law": True, "monte_carlo": True, "total": True}
    assert spec_hash(BASE) == spec.hash and len(spec.hash) == 64
    other = _with("sampler.T", 6)
    assert spec_hash(other) != spec.hash
    cached = _with("perturbation", {"kind": "cache", "every": 2})
    cached["methods"][1]["iec"] = {"K": 1, "lambda": 0.5, "select": {"kind": "cache_refresh"}}
    s = validate_spec(cached)
    assert s.methods[1].iec.select.resolve(list(range(5))) == frozenset({0, 2, 4})


def test_example_specs_validate():
    root = Path(__file__).resolve().parents[1] / "experiments"
    from iec_theory.harness.spec import tomllib

    files = [f for f in sorted(root.glob("*.toml")) if tomllib.loads(f.read_text()).get("kind", "toy") == "toy"]
    assert len(files) >= 6
    for f in files:
        spec = load_spec(f)
        assert spec.methods and spec.name


def test_load_spec_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_spec(bad)
