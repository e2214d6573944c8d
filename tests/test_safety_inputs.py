"""Issue 11: sizes are range-checked with a memory estimate before allocating, every accepted seed works,
and the sampler / model loader refuse what they used to accept silently."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from iec_theory.errors import ConfigError
from iec_theory.harness.spec import validate_spec
from iec_theory.iec import IECConfig
from iec_theory.sampler import NoiseSource, sample
from iec_theory.schedules import Schedule

BASE = {
    "name": "t", "seed": 0,
    "model": {"kind": "gaussian", "dim": 3, "variances": [1.0, 0.1, 0.01]},
    "sampler": {"T": 3, "batch": 4, "eta": 0.0},
    "methods": [{"name": "ddim"}],
}


def _spec(**changes) -> dict:
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        cur = raw
        for p in path:
            cur = cur.setdefault(p, {})
        cur[last] = value
    return raw


@pytest.mark.parametrize("changes,field", [
    ({"model__dim": 200_000}, "model.dim"),
    ({"model__kind": "gaussian_diag", "model__dim": 10**12}, "model.dim"),
    ({"sampler__batch": 10**12}, "sampler.batch"),
    ({"schedule__num_train_steps": 10**10}, "num_train_steps"),
])
def test_spec_sizes_are_refused_with_an_estimate(changes, field):
    with pytest.raises(ConfigError, match="memory") as exc:
        validate_spec(_spec(**changes))
    msg = str(exc.value)
    assert field in msg and "limit" in msg and "IEC_MEMORY_LIMIT_GB" in msg


def test_spec_huge_K_is_refused_with_an_estimate():
    raw = _spec()
    raw["methods"] = [{"name": "iec", "iec": {"K": 10**12, "lambda": 0.5}}]
    with pytest.raises(ConfigError, match="memory"):
        validate_spec(raw)
    with pytest.raises(ConfigError, match="memory"):
        IECConfig.relaxed(0.5, 10**12)


def test_memory_limit_override(monkeypatch):
    monkeypatch.setenv("IEC_MEMORY_LIMIT_GB", "1e-6")
    with pytest.raises(ConfigError, match="memory"):
        validate_spec(_spec(**{"model__dim": 64}))
    monkeypatch.setenv("IEC_MEMORY_LIMIT_GB", "100000")
    validate_spec(_spec(**{"model__dim": 64}))


def test_largest_spec_seed_works_with_eta_and_keyed_noise():
    from iec_theory.harness import run_spec

    raw = _spec(seed=2**63 - 1, **{"sampler__eta": 1.0})
    raw["methods"] = [{"name": "ddim"}, {"name": "iec", "iec": {"K": 2, "lambda": 0.5}}]
    raw["perturbation"] = {"kind": "iid_noise", "std": 0.01}
    raw["metrics"] = {"exact_law": False, "monte_carlo": True, "total": False}
    spec = validate_spec(raw)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        run_spec(spec, d, quiet=True)
    z = NoiseSource(seed=2**63 - 1, keyed=True).draw(torch.zeros(2, 3), 999, 7)
    assert z.shape == (2, 3)


def test_keyed_noise_unchanged_for_small_seeds():
    g = torch.Generator().manual_seed(5 * 1_000_003 + 3 * 1009 + 1)
    assert torch.equal(NoiseSource(seed=5, keyed=True).draw(torch.zeros(4), 3, 1), torch.randn(4, generator=g))


# ----- sampler ------------------------------------------------------------------------------------------
def _toy(schedule=None):
    from toy_models import GaussianToy

    return GaussianToy.diagonal(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64),
                                schedule or Schedule.linear())


def test_complex_eps_is_refused():
    def eps(x, t):
        return torch.zeros_like(x, dtype=torch.complex128)

    with pytest.raises(ConfigError, match="complex"):
        sample(eps, Schedule.linear(), torch.zeros(2, 2, dtype=torch.float64), 2)


def test_meta_device_x_T_is_refused():
    with pytest.raises(ConfigError, match="meta"):
        sample(_toy(), Schedule.linear(), torch.zeros(2, 2, device="meta"), 2)


def test_schedule_other_than_the_toys_own_is_refused():
    toy = _toy(Schedule.linear())
    with pytest.raises(ConfigError, match="schedule"):
        sample(toy, Schedule.named("cosine", 1000), torch.zeros(2, 2, dtype=torch.float64), 2)
    with pytest.raises(ConfigError, match="schedule"):
        sample(toy, Schedule.linear(500), torch.zeros(2, 2, dtype=torch.float64), 2)
    sample(toy, Schedule.linear(), torch.zeros(2, 2, dtype=torch.float64), 2)   # the same schedule: fine


# ----- model folders ------------------------------------------------------------------------------------
@pytest.fixture
def model_dir(tmp_path):
    from real_models.unet import build_unet, tiny_config

    d = tmp_path / "m"
    torch.manual_seed(0)
    build_unet(tiny_config()).save_pretrained(str(d), safe_serialization=True)
    return d


def test_config_not_matching_weights_is_refused(model_dir, tmp_path):
    from real_models.unet import ModelLoadError, load_unet

    load_unet(model_dir)   # consistent folder: fine
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["down_block_types"] = ["DownBlock2D", "DownBlock2D"]      # attention blocks missing
    cfg["up_block_types"] = ["UpBlock2D", "UpBlock2D"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="attentions"):
        load_unet(bad)


def test_metadata_with_non_numeric_num_train_steps(model_dir):
    from real_models.pretrained import load_default_model
    from real_models.unet import ModelLoadError

    (model_dir / "metadata.json").write_text(json.dumps({"schedule": {"name": "linear", "num_train_steps": "abc"}}))
    with pytest.raises(ModelLoadError, match="num_train_steps"):
        load_default_model(model_dir)
