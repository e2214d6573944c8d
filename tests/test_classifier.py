"""The committed CIFAR-10 classifier: loads, has the recorded feature dim, classifies real test images as
recorded in metrics.json, and its reference statistics are consistent; corrupt weights give clear errors.

Tests that need CIFAR-10 images read the test zip from $IEC_CIFAR10_DIR (CI sets it to the shared
folder) and are skipped, with the reason, when it is not set or the zip is absent.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from iec_theory.errors import ConfigError
from real_models.classifier import DEFAULT_WEIGHTS_DIR, CifarNet, check_images, load_classifier
from real_models.metrics import ClassifierFeatures, fd_kid_vs_cifar_test, load_test_stats

torch.set_num_threads(1)

WDIR = DEFAULT_WEIGHTS_DIR
CONFIG = json.loads((WDIR / "config.json").read_text())
METRICS = json.loads((WDIR / "metrics.json").read_text())


@pytest.fixture(scope="module")
def model():
    return load_classifier()


@pytest.fixture(scope="module")
def check_images_and_labels():
    """The fixed check images recorded in metrics.json, read from the shared test zip (or skip)."""
    root = os.environ.get("IEC_CIFAR10_DIR")
    if not root:
        pytest.skip("IEC_CIFAR10_DIR is not set: no CIFAR-10 test zip to classify (CI sets it to the shared folder)")
    zpath = Path(root) / METRICS["check"]["zip"]
    if not zpath.is_file():
        pytest.skip(f"{zpath} is absent: cannot classify real CIFAR-10 test images")
    from real_models.data import read_zip_images, to_float_tensor

    names = METRICS["check"]["members"]
    x, y = read_zip_images(zpath, names=names)
    assert x.shape[0] == len(names), "the shared test zip lacks some recorded check images"
    return to_float_tensor(x), torch.from_numpy(y)


def test_committed_files_and_recorded_values():
    for name in ("model.safetensors", "config.json", "metrics.json", "test_stats.safetensors"):
        assert (WDIR / name).is_file(), name
    assert CONFIG["architecture"] == "CifarNet"
    assert 64 <= CONFIG["feature_dim"] <= 256
    assert METRICS["feature_dim"] == CONFIG["feature_dim"]
    assert 0.5 < METRICS["test_accuracy"] <= 1.0 and METRICS["n_test"] == 10000
    assert METRICS["train_seconds"] > 0 and METRICS["epochs"] >= 1 and "seed" in METRICS
    assert METRICS["provenance"]["git_commit"]


def test_classifier_loads_with_recorded_dims(model):
    assert isinstance(model, CifarNet) and not model.training
    assert model.feature_dim == CONFIG["feature_dim"] == CONFIG["widths"][3]
    assert sum(p.numel() for p in model.parameters()) == CONFIG["n_params"]
    x = torch.zeros(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        assert model.features(x).shape == (2, CONFIG["feature_dim"])


def test_reference_statistics_consistent():
    ref = load_test_stats()
    d = CONFIG["feature_dim"]
    assert ref["mean"].shape == (d,) and ref["cov"].shape == (d, d)
    assert ref["kid_features"].shape == (METRICS["test_stats"]["kid_subset"], d)
    np.testing.assert_allclose(ref["cov"], ref["cov"].T, atol=1e-12)
    assert np.linalg.eigvalsh(ref["cov"]).min() > -1e-8  # PSD
    # features are post-ReLU averages: non-negative; the subset mean estimates the full mean
    assert ref["kid_features"].min() >= 0
    sd = np.sqrt(np.diag(ref["cov"]) / ref["kid_features"].shape[0])
    assert np.all(np.abs(ref["kid_features"].mean(0) - ref["mean"]) < 6 * sd + 1e-9)


def test_classifies_test_images_as_recorded(model, check_images_and_labels):
    x, y = check_images_and_labels
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x[:8]).double()
    correct = int((logits.argmax(1) == y).sum())
    n = y.shape[0]
    # the recorded count (two flips of margin for floating-point differences across machines)
    assert abs(correct - METRICS["check"]["n_correct"]) <= 2, (correct, METRICS["check"]["n_correct"])
    # and consistent with the full test accuracy: within 4 binomial standard deviations
    p = METRICS["test_accuracy"]
    assert abs(correct / n - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1 / n
    np.testing.assert_allclose(feats.sum(1).numpy(), METRICS["check"]["first8_features_sum"], rtol=1e-4, atol=1e-4)


def test_fd_kid_real_images_beat_noise(check_images_and_labels):
    x, _ = check_images_and_labels
    ext = ClassifierFeatures()
    real = fd_kid_vs_cifar_test(x, extractor=ext, kid_subsets=10, kid_subset_size=100)
    g = torch.Generator().manual_seed(0)
    noise = fd_kid_vs_cifar_test(torch.rand(x.shape, generator=g) * 2 - 1, extractor=ext, kid_subsets=10,
                                 kid_subset_size=100)
    assert set(real) >= {"FD_cifarnet", "KID_cifarnet", "KID_cifarnet_std"}
    assert "not Inception" in real["reference"]
    assert real["FD_cifarnet"] < 0.25 * noise["FD_cifarnet"]
    assert real["KID_cifarnet"] < 0.1 * noise["KID_cifarnet"]


def test_fd_kid_without_data_runs_and_is_seeded():
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(16, 3, 32, 32, generator=g) * 2 - 1)
    a = fd_kid_vs_cifar_test(x, kid_subsets=5, kid_subset_size=8, seed=3)
    b = fd_kid_vs_cifar_test(x, kid_subsets=5, kid_subset_size=8, seed=3)
    assert a == b and a["FD_cifarnet"] > 0 and a["n_images"] == 16 and a["kid_subset_size"] == 8
    assert a["feature_dim"] == CONFIG["feature_dim"]


def test_image_validation():
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        check_images(torch.full((1, 3, 32, 32), 3.0))
    with pytest.raises(ConfigError, match="shape"):
        check_images(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ConfigError, match="NaN"):
        check_images(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(ConfigError, match="at least 2"):
        fd_kid_vs_cifar_test(torch.zeros(1, 3, 32, 32))


def _copy_weights(tmp_path: Path) -> Path:
    d = tmp_path / "cls"
    shutil.copytree(WDIR, d)
    return d


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_safetensors_gives_clear_error(tmp_path, damage):
    d = _copy_weights(tmp_path)
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes({"garbage": b"\x00\x01not a safetensors file" * 10, "truncated": data[: len(data) // 2],
                   "empty": b""}[damage])
    with pytest.raises(ConfigError, match="corrupt or not safetensors"):
        load_classifier(d)


def test_corrupt_stats_and_mismatched_config(tmp_path):
    d = _copy_weights(tmp_path)
    (d / "test_stats.safetensors").write_bytes(b"{}")
    with pytest.raises(ConfigError, match="test_stats.safetensors"):
        load_test_stats(d)
    cfg = dict(CONFIG, widths=[8, 8, 8, 8])
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="does not match"):
        load_classifier(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="missing"):
        load_classifier(d)
