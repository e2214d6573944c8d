"""CIFAR-10 loading: official python pickle batches, a folder of class subfolders, or a zip of one.

Every loader returns ``(images, labels)``: ``images`` uint8 ``[n, 32, 32, 3]`` (HWC, RGB) and
``labels`` int64 ``[n]`` with the standard CIFAR-10 class order (``CLASSES``).

Where the data is found (never guessed): an explicit ``root`` argument, else the environment variable
``IEC_CIFAR10_DIR``. ``root`` may be

- a directory holding the official ``cifar-10-batches-py`` files (``data_batch_1..5``, ``test_batch``),
  or a directory containing a ``cifar-10-batches-py`` subfolder;
- a directory holding ``cifar10-train-jpeg.zip`` / ``cifar10-test-jpeg.zip`` (zips of ``CLASS/*.jpg``);
- a directory holding ``train/`` and ``test/`` folders of class subfolders of images;
- for ``load_image_folder`` / ``load_image_zip``: the folder or zip itself.

Pickle batches are decoded with a restricted unpickler (``SafeUnpickler``) that only reconstructs
builtins containers and numpy arrays; any other class in the stream raises ``DataError``. Decoding
the 50,000 JPEGs of a zip takes a while on a CPU, so the result is cached once as ``.npz`` in the cache
dir (``IEC_CACHE_DIR`` or ``~/.cache/iec_theory``), keyed by the zip's sha256 (read from a
``SHA256SUMS`` file beside the zip when present, else computed) and its size in bytes.

The shared zips are a JPEG re-encoding of CIFAR-10: their pixels differ slightly from the official
binary release, so numbers measured on them are not bit-comparable to numbers on the pickles.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from iec_theory.errors import ConfigError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ENV_VAR = "IEC_CIFAR10_DIR"
CACHE_ENV_VAR = "IEC_CACHE_DIR"
SPLITS = ("train", "test")
ZIP_NAMES = {"train": "cifar10-train-jpeg.zip", "test": "cifar10-test-jpeg.zip"}
PICKLE_NAMES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

HOW_TO_GET = (
    "CIFAR-10 is not bundled with this project. Get it in one of these forms and pass its location with "
    f"--data PATH or the environment variable {ENV_VAR}:\n"
    "  (a) the official python version: download cifar-10-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html and extract it (folder cifar-10-batches-py with "
    "data_batch_1..5 and test_batch);\n"
    "  (b) a folder with train/ and test/, each with one subfolder of images per class "
    f"({', '.join(CLASSES)});\n"
    "  (c) zips of such folders named cifar10-train-jpeg.zip / cifar10-test-jpeg.zip (layout CLASS/NNNN.jpg)."
)


class DataError(ConfigError):
    """The dataset is missing, malformed or unsafe to decode; the message says what to do."""


# ----- locating -------------------------------------------------------------------------------------
def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The explicit root, else $IEC_CIFAR10_DIR; a DataError with instructions when neither exists."""
    if root is None:
        env = os.environ.get(ENV_VAR)
        if not env:
            raise DataError(f"no CIFAR-10 location given and ${ENV_VAR} is not set.\n{HOW_TO_GET}")
        root = env
        origin = f"${ENV_VAR}"
    else:
        origin = "the given path"
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"CIFAR-10 location {str(path)!r} ({origin}) does not exist.\n{HOW_TO_GET}")
    return path


def _pickle_dir(path: Path) -> Path | None:
    for cand in (path, path / "cifar-10-batches-py"):
        if cand.is_dir() and ((cand / "test_batch").is_file() or (cand / "data_batch_1").is_file()):
            return cand
    return None


def load_cifar10(split: str = "train", root: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Load a CIFAR-10 split from whichever supported form lives at root (or $IEC_CIFAR10_DIR)."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    path = resolve_root(root)
    if path.is_file():
        if path.suffix.lower() == ".zip":
            return load_image_zip(path, cache_dir=cache_dir, progress=progress)
        raise DataError(f"{str(path)!r} is a file but not a zip.\n{HOW_TO_GET}")
    pdir = _pickle_dir(path)
    if pdir is not None:
        return load_pickle_batches(pdir, split)
    zpath = path / ZIP_NAMES[split]
    if zpath.is_file():
        return load_image_zip(zpath, cache_dir=cache_dir, progress=progress)
    fdir = path / split
    if fdir.is_dir():
        return load_image_folder(fdir)
    raise DataError(f"no CIFAR-10 {split} split found in {str(path)!r}: expected pickle batches "
                    f"({', '.join(PICKLE_NAMES[split])}), {ZIP_NAMES[split]}, or a {split}/ folder.\n{HOW_TO_GET}")


# ----- (a) official pickle batches, decoded safely ---------------------------------------------------
class SafeUnpickler(pickle.Unpickler):
    """Unpickler that only reconstructs plain containers and numpy arrays (never arbitrary classes)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("copyreg", "_reconstructor"),
        ("builtins", "object"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes (pure function)
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if module == "builtins" and name in {"list", "dict", "tuple", "set", "bytes", "bytearray", "str", "int",
                                             "float"}:
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name}: CIFAR-10 batches contain only dicts, lists, "
                        "bytes and numpy arrays")


def _read_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = SafeUnpickler(fh, encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:  # truncated or not a pickle
        raise DataError(f"cannot decode CIFAR-10 batch {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-10 batch {str(path)!r} is not a dict (got {type(obj).__name__})")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def load_pickle_batches(folder: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The official cifar-10-batches-py files of a split (data rows: 3072 uint8, channel-major)."""
    folder = Path(folder)
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    files = [folder / n for n in PICKLE_NAMES[split]]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"missing CIFAR-10 batch files in {str(folder)!r}: {missing}.\n{HOW_TO_GET}")
    xs, ys = [], []
    for f in files:
        d = _read_batch(f)
        if "data" not in d or "labels" not in d:
            raise DataError(f"CIFAR-10 batch {str(f)!r} lacks 'data' or 'labels' (keys: {sorted(d)})")
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d["labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
            raise DataError(f"CIFAR-10 batch {str(f)!r} has data {data.shape} and labels {labels.shape}; "
                            "expected [n, 3072] and [n]")
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(labels)
    x, y = np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)
    _check_labels(y, str(folder))
    return x, y


# ----- (b) folder of class subfolders -----------------------------------------------------------------
def _decode_image(data: bytes | Path, name: str) -> np.ndarray:
    from PIL import Image

    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else data
        with Image.open(src) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:
        raise DataError(f"cannot decode image {name!r}: {type(exc).__name__}: {exc}") from exc
    if arr.shape != (32, 32, 3):
        raise DataError(f"image {name!r} has shape {arr.shape}; CIFAR-10 images are 32x32 RGB")
    return arr


def _class_index(name: str, where: str) -> int:
    if name not in CLASSES:
        raise DataError(f"unknown class folder {name!r} in {where!r}; expected one of {CLASSES}")
    return CLASSES.index(name)


def load_image_folder(folder: str | os.PathLike, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images in folder/CLASS/*.{png,jpg,...}, sorted by class then file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {str(folder)!r} does not exist.\n{HOW_TO_GET}")
    items = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = _class_index(sub.name, str(folder))
        items += [(label, f) for f in sorted(sub.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise DataError(f"no images found in class subfolders of {str(folder)!r}.\n{HOW_TO_GET}")
    items = sorted(items, key=lambda it: (it[0], it[1].name))[:limit]
    x = np.stack([_decode_image(f, str(f)) for _, f in items])
    return x, np.array([lab for lab, _ in items], dtype=np.int64)


# ----- (c) zip of such a folder -----------------------------------------------------------------------
def zip_members(zf: zipfile.ZipFile, where: str = "zip") -> list[tuple[int, str]]:
    """(label, member name) of every image in a CLASS/FILE zip, sorted by class then name."""
    items = []
    for name in zf.namelist():
        if name.endswith("/") or not name.lower().endswith(IMAGE_SUFFIXES):
            continue
        parts = name.split("/")
        if len(parts) < 2:
            raise DataError(f"zip member {name!r} in {where!r} is not inside a class folder")
        items.append((_class_index(parts[-2], where), name))
    if not items:
        raise DataError(f"no images found in {where!r}.\n{HOW_TO_GET}")
    return sorted(items, key=lambda it: (it[0], it[1]))


def read_zip_images(path: str | os.PathLike, names: Iterable[str] | None = None,
                    limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode selected images of a zip (all, the given member names, or the first `limit`), no caching."""
    path = Path(path)
    zf = _open_zip(path)
    with zf:
        items = zip_members(zf, str(path))
        if names is not None:
            wanted = set(names)
            items = [it for it in items if it[1] in wanted]
        items = items[:limit]
        x = np.stack([_decode_image(zf.read(n), f"{path}:{n}") for _, n in items]) if items else \
            np.zeros((0, 32, 32, 3), np.uint8)
    return x, np.array([lab for lab, _ in items], dtype=np.int64)


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise DataError(f"zip {str(path)!r} does not exist.\n{HOW_TO_GET}")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{str(path)!r} is not a valid zip file: {exc}") from exc


def file_sha256(path: str | os.PathLike, use_sums: bool = True) -> str:
    """sha256 of a file: taken from a SHA256SUMS file beside it when listed there, else computed."""
    path = Path(path)
    sums = path.parent / "SHA256SUMS"
    if use_sums and sums.is_file():
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("*") == path.name:
                return parts[0].lower()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache directory: the argument, else $IEC_CACHE_DIR, else ~/.cache/iec_theory."""
    if path is None:
        path = os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "iec_theory"
    return Path(path).expanduser()


def load_image_zip(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """All images of a CLASS/FILE zip, decoded once and cached as .npz keyed by the zip's sha256."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"zip {str(path)!r} does not exist.\n{HOW_TO_GET}")
    cfile = None
    if use_cache:
        cfile = globals()["cache_dir"](cache_dir) / f"cifar10-{file_sha256(path)}-{path.stat().st_size}.npz"
        if cfile.is_file():
            try:
                with np.load(cfile, allow_pickle=False) as d:
                    x, y = d["images"], d["labels"]
                if x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3) and y.shape == (x.shape[0],):
                    return x, y.astype(np.int64)
            except Exception:  # corrupt cache: decode again and overwrite
                pass
    zf = _open_zip(path)
    with zf:
        items = zip_members(zf, str(path))
        x = np.empty((len(items), 32, 32, 3), np.uint8)
        it = enumerate(items)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(items), desc=f"decoding {path.name}", unit="img")
        for i, (_, n) in it:
            x[i] = _decode_image(zf.read(n), f"{path}:{n}")
    y = np.array([lab for lab, _ in items], dtype=np.int64)
    _check_labels(y, str(path))
    if cfile is not None:
        cfile.parent.mkdir(parents=True, exist_ok=True)
        tmp = cfile.with_name(cfile.name + f".tmp{os.getpid()}.npz")
        np.savez(tmp, images=x, labels=y)
        os.replace(tmp, cfile)
    return x, y


def _check_labels(y: np.ndarray, where: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= len(CLASSES)):
        raise DataError(f"labels in {where!r} outside 0..9")


# ----- tensors ----------------------------------------------------------------------------------------
def to_float_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [n, 32, 32, 3] -> float32 [n, 3, 32, 32] in [-1, 1]."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise DataError(f"expected uint8 images [n, H, W, 3], got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def to_uint8_images(x: torch.Tensor) -> np.ndarray:
    """float [n, 3, H, W] in [-1, 1] (clamped) -> uint8 [n, H, W, 3]."""
    x = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
