"""A small CIFAR-10 classifier ("cifarnet") whose penultimate features define the project's FD/KID.

The network is a compact residual CNN (ResNet-9-like layout, narrow widths): a 3x3 stem, three
down-sampling stages (conv-BN-ReLU, max-pool) with a residual block after the first two, a global
average pool giving a ``feature_dim``-dimensional feature vector, and one linear layer to the 10
classes. Images enter in [-1, 1] with shape [B, 3, 32, 32]; per-channel normalisation with the
CIFAR-10 training statistics happens inside the model, so callers never normalise.

The committed weights live in ``real_models/weights/cifar10_classifier/`` (``model.safetensors``,
``config.json``, ``metrics.json``, ``test_stats.safetensors``) and are produced by
``scripts/train_classifier.py``. Weights are read only through safetensors (no unpickling).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iec_theory.errors import ConfigError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "cifar10_classifier"

# Per-channel mean/std of the CIFAR-10 training images mapped to [-1, 1] (x = 2 * u8 / 255 - 1).
# Computed from the standard [0, 1] statistics (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616).
_MEAN_PM1 = (2 * 0.4914 - 1, 2 * 0.4822 - 1, 2 * 0.4465 - 1)
_STD_PM1 = (2 * 0.2470, 2 * 0.2435, 2 * 0.2616)


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CifarNet(nn.Module):
    """Compact residual CNN; ``widths`` = (stem, stage1, stage2, stage3); feature_dim = widths[3]."""

    def __init__(self, widths: tuple[int, int, int, int] = (24, 48, 96, 128), num_classes: int = 10) -> None:
        super().__init__()
        if len(widths) != 4 or any(int(w) <= 0 for w in widths):
            raise ConfigError(f"widths must be 4 positive integers, got {widths!r}")
        w0, w1, w2, w3 = (int(w) for w in widths)
        self.widths = (w0, w1, w2, w3)
        self.num_classes = int(num_classes)
        self.register_buffer("in_mean", torch.tensor(_MEAN_PM1).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_std", torch.tensor(_STD_PM1).view(1, 3, 1, 1), persistent=False)
        self.stem = _conv_bn(3, w0)
        self.stage1 = nn.Sequential(_conv_bn(w0, w1), nn.MaxPool2d(2), _Residual(w1))   # 16x16
        self.stage2 = nn.Sequential(_conv_bn(w1, w2), nn.MaxPool2d(2), _Residual(w2))   # 8x8
        self.stage3 = nn.Sequential(_conv_bn(w2, w3), nn.MaxPool2d(2))                  # 4x4
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, self.num_classes)

    @property
    def feature_dim(self) -> int:
        return self.widths[3]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [B, feature_dim] of images in [-1, 1] with shape [B, 3, 32, 32]."""
        x = (x - self.in_mean) / self.in_std
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Validate a batch of images in [-1, 1] of shape [B, 3, 32, 32]; return it as float32."""
    if not isinstance(images, torch.Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, 32, 32):
        raise ConfigError(f"{name} must have shape [B, 3, 32, 32], got {list(images.shape)}")
    if images.shape[0] == 0:
        raise ConfigError(f"{name} is empty (batch size 0)")
    if not torch.is_floating_point(images):
        raise ConfigError(f"{name} must be a floating tensor in [-1, 1], got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ConfigError(f"{name} contains NaN or Inf")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.0 - 1e-3 or hi > 1.0 + 1e-3:
        raise ConfigError(f"{name} must lie in [-1, 1] (got range [{lo:.4g}, {hi:.4g}]); "
                          "map uint8 images with x = 2 * u / 255 - 1")
    return images.float()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"classifier file missing: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"classifier file {path} is not valid JSON: {exc}") from exc


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning any read or parse failure into a ConfigError naming the file."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"safetensors file missing: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises SafetensorError / OSError variants on corrupt files
        raise ConfigError(f"cannot read safetensors file {path} (corrupt or not safetensors): {exc}") from exc


def load_classifier(weights_dir: str | Path | None = None, device: str | torch.device = "cpu") -> CifarNet:
    """Load the committed (or given) classifier in eval mode from ``config.json`` + ``model.safetensors``."""
    d = Path(weights_dir) if weights_dir is not None else DEFAULT_WEIGHTS_DIR
    config = _read_json(d / "config.json")
    if config.get("architecture") != "CifarNet":
        raise ConfigError(f"{d / 'config.json'}: architecture must be 'CifarNet', got {config.get('architecture')!r}")
    model = CifarNet(widths=tuple(config["widths"]), num_classes=int(config.get("num_classes", 10)))
    state = load_safetensors(d / "model.safetensors")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{d / 'model.safetensors'} does not match config {config['widths']}: {exc}") from exc
    if int(config.get("feature_dim", model.feature_dim)) != model.feature_dim:
        raise ConfigError(f"config feature_dim {config.get('feature_dim')} != model feature_dim {model.feature_dim}")
    return model.to(device).eval()


@torch.no_grad()
def extract_features(model: CifarNet, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Features [B, D] (float64, CPU) of images in [-1, 1], computed in eval mode in batches."""
    images = check_images(images)
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    outs = [model.features(images[i:i + batch_size].to(dev)).double().cpu()
            for i in range(0, images.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(outs)
