"""The committed default model: a small DDPM UNet trained on CIFAR-10 by `iec train-ddpm`.

``load_default_model()`` returns ``(eps_model, schedule)`` ready for ``iec_theory.sample``; no dataset
is needed. The weights live in ``real_models/weights/ddpm_cifar10_small/`` (diffusers format:
config.json + diffusion_pytorch_model.safetensors; metadata.json and training_log.jsonl describe how
they were trained).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from iec_theory.schedules import Schedule

from .unet import CONFIG_NAME, WEIGHTS_NAME, ModelLoadError, UNetEpsModel, load_unet

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "weights" / "ddpm_cifar10_small"


def default_model_dir() -> Path:
    return DEFAULT_MODEL_DIR


def model_metadata(model_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """metadata.json of a model folder ({} when absent)."""
    p = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    f = p / "metadata.json"
    if not f.is_file():
        return {}
    try:
        meta = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{str(f)!r} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{str(f)!r} must hold a JSON object, got {type(meta).__name__}")
    return meta


def schedule_for(model_dir: str | os.PathLike | None = None) -> Schedule:
    """The training schedule recorded in metadata.json (default: DDPM linear, N = 1000)."""
    from iec_theory.errors import ConfigError

    p = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    s = model_metadata(model_dir).get("schedule", {})
    where = f"{str(p / 'metadata.json')!r}: schedule"
    if not isinstance(s, dict):
        raise ModelLoadError(f"{where} must be an object, got {type(s).__name__}")
    name = s.get("name", "linear")
    n = s.get("num_train_steps", 1000)
    if not isinstance(n, int) or isinstance(n, bool):
        raise ModelLoadError(f"{where}.num_train_steps must be an integer, got {n!r}")
    try:
        if name != "linear":
            return Schedule.named(name, n)
        b0, b1 = s.get("beta_start", 1e-4), s.get("beta_end", 0.02)
        for key, v in (("beta_start", b0), ("beta_end", b1)):
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ModelLoadError(f"{where}.{key} must be a number, got {v!r}")
        return Schedule.linear(n, float(b0), float(b1))
    except ModelLoadError:
        raise
    except ConfigError as exc:
        raise ModelLoadError(f"{where}: {exc}") from exc


def load_default_model(model_dir: str | os.PathLike | None = None,
                       device: str | torch.device = "cpu") -> tuple[UNetEpsModel, Schedule]:
    """(eps_model, schedule) of the committed default, or of another diffusers-format folder."""
    p = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    if model_dir is None and not (p / WEIGHTS_NAME).is_file():
        raise ModelLoadError(
            f"the default model weights are absent ({str(p / WEIGHTS_NAME)!r}). They are committed with the "
            "project; in a checkout without them, train them with `iec train-ddpm --data PATH_TO_CIFAR10` "
            "(exports to that folder) or pass --model-dir to a diffusers-format UNet2DModel folder "
            f"({CONFIG_NAME} + {WEIGHTS_NAME}).")
    return UNetEpsModel(load_unet(p, device)), schedule_for(p)


def weights_sha256(model_dir: str | os.PathLike | None = None) -> str:
    p = (Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR) / WEIGHTS_NAME
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
