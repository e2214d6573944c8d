"""The FID variant of Inception-v3 (pool3, 2048-d features) for standard FID, written for this project.

Standard FID (Heusel et al. 2017) is defined by the TTUR TensorFlow code on the 2015-12-05 Inception
graph; pytorch-fid (mseitzer/pytorch-fid) ports that graph to PyTorch together with its weights, the
plain state dict ``pt_inception-2015-12-05-6726825d.pth``, published on pytorch-fid's GitHub releases
page (https://github.com/mseitzer/pytorch-fid/releases, tag ``fid_weights``). This module re-implements
that network in plain PyTorch (no torchvision) so that the user can load that file and compute standard
FID features. **This project ships no Inception weights and cannot download them.**

**Numerical agreement with the reference network cannot be verified here**: the weights file is not
available on the machines this project is developed on, so only the architecture (every parameter and
buffer name and shape, the layer wiring, pooling variants and preprocessing) is checked, against the
public source below; no feature value has been compared with pytorch-fid or TTUR output. Users who
have the file should compare a few features with pytorch-fid once before relying on the numbers.

Facts used, and where each was checked (read, not copied):

- From ``torchvision/models/inception.py`` (pytorch/vision), whose ``Inception3`` pytorch-fid builds on:
  ``BasicConv2d`` = ``Conv2d(bias=False)`` + ``BatchNorm2d(eps=0.001)`` + ReLU, attribute names
  ``conv`` / ``bn``; the stem ``Conv2d_1a_3x3`` (3->32, k3, s2), ``Conv2d_2a_3x3`` (32->32, k3),
  ``Conv2d_2b_3x3`` (32->64, k3, pad 1), max pool k3 s2, ``Conv2d_3b_1x1`` (64->80, k1),
  ``Conv2d_4a_3x3`` (80->192, k3), max pool k3 s2; the branch names, widths, kernel sizes and paddings
  of ``InceptionA`` (Mixed_5b/5c/5d, in 192/256/288, pool_features 32/64/64), ``InceptionB``
  (Mixed_6a, in 288), ``InceptionC`` (Mixed_6b..6e, in 768, channels_7x7 128/160/160/192),
  ``InceptionD`` (Mixed_7a, in 768) and ``InceptionE`` (Mixed_7b in 1280, Mixed_7c in 2048); branch
  concatenation order; ``AdaptiveAvgPool2d((1, 1))`` then ``fc = Linear(2048, num_classes)``.
- From ``src/pytorch_fid/inception.py`` (mseitzer/pytorch-fid): the FID network is torchvision's
  ``Inception3`` with ``num_classes=1008`` and ``aux_logits=False`` (so the state dict has ``fc`` of
  shape [1008, 2048] and no ``AuxLogits``), with Mixed_5b..5d / Mixed_6b..6e / Mixed_7b replaced by
  blocks whose pool branch is ``avg_pool2d(k3, s1, pad 1, count_include_pad=False)`` (TF's average pool
  ignores padding) and Mixed_7c replaced by a block whose pool branch is ``max_pool2d(k3, s1, pad 1)``;
  the weights are loaded with a strict ``load_state_dict``; pool3 features are the output of the final
  adaptive average pool (block index 3, 2048-d); input preprocessing is
  ``F.interpolate(size=(299, 299), mode="bilinear", align_corners=False)`` of images in [0, 1], then
  ``2 * x - 1``; the weights URL and file name.
- From ``src/pytorch_fid/fid_score.py``: images are read as PNG/JPEG and converted with
  ``ToTensor`` (uint8 / 255, so [0, 1]); statistics are ``mu = mean(act, 0)``, ``sigma = cov(act,
  rowvar=False)`` in float64, stored in ``.npz`` files under the keys ``mu`` and ``sigma``; the distance
  uses ``scipy.linalg.sqrtm`` with a 1e-6 diagonal offset when the product is singular.

One fact could not be checked: whether the weights file stores the BatchNorm ``num_batches_tracked``
buffers (they exist in PyTorch >= 0.4.1 and PyTorch's own loader tolerates their absence in old state
dicts). ``load_fid_inception`` therefore accepts the file with or without them; they do not affect
eval-mode outputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iec_theory.errors import ConfigError

__all__ = ["FID_INCEPTION_WEIGHTS", "FID_WEIGHTS_SOURCE", "FID_NUM_CLASSES", "FID_FEATURE_DIM", "BasicConv2d",
           "FIDInceptionV3", "preprocess_for_fid", "expected_state_dict_shapes", "check_fid_state_dict",
           "load_fid_state_dict",
           "load_fid_inception", "fid_inception_features", "InceptionWeightsMissing", "file_sha256"]

FID_INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_SOURCE = ("pytorch-fid's GitHub releases: https://github.com/mseitzer/pytorch-fid/releases "
                      "(tag fid_weights)")
FID_NUM_CLASSES = 1008
FID_FEATURE_DIM = 2048
FID_INPUT_SIZE = 299
_OPTIONAL_SUFFIX = ".num_batches_tracked"


class InceptionWeightsMissing(ConfigError):
    """The FID Inception weights file is not there; the message names it and where to get it."""


# ----- layers ---------------------------------------------------------------------------------------------
class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 0.001), ReLU; parameters ``conv.*`` and ``bn.*``."""

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _pool_branch_input(x: torch.Tensor, kind: str) -> torch.Tensor:
    """3x3 stride-1 pooling with padding 1: TF-style average (padding not counted) or max."""
    if kind == "avg":
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _MixedA(nn.Module):
    """35x35 block (Mixed_5b..5d): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_pool_branch_input(x, "avg"))
        return torch.cat([a, b, c, d], dim=1)


class _ReduceB(nn.Module):
    """35x35 -> 17x17 reduction (Mixed_6a): 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max pool 3x3/2."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        c = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([a, b, c], dim=1)


class _MixedC(nn.Module):
    """17x17 block (Mixed_6b..6e) with factorised 7x7 convolutions and an avg-pool branch."""

    def __init__(self, c_in: int, c7: int) -> None:
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) of a 1x7 and a 7x1 conv
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, row[0], padding=row[1])
        self.branch7x7_3 = BasicConv2d(c7, 192, col[0], padding=col[1])
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, row[0], padding=row[1])
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, row[0], padding=row[1])
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_pool_branch_input(x, "avg"))
        return torch.cat([a, b, c, d], dim=1)


class _ReduceD(nn.Module):
    """17x17 -> 8x8 reduction (Mixed_7a): 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max pool 3x3/2."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        c = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([a, b, c], dim=1)


class _MixedE(nn.Module):
    """8x8 block (Mixed_7b: avg pool branch without padding in the count; Mixed_7c: max pool branch)."""

    def __init__(self, c_in: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ConfigError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        s = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], dim=1)
        t = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(t), self.branch3x3dbl_3b(t)], dim=1)
        d = self.branch_pool(_pool_branch_input(x, self.pool))
        return torch.cat([a, b, c, d], dim=1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as used by standard FID; ``forward`` maps preprocessed [B, 3, 299, 299] to pool3 [B, 2048].

    Module names equal those of the pytorch-fid weights file, so its state dict loads with
    ``strict=True``. ``fc`` (2048 -> 1008) is kept only so that the state dict matches; ``logits`` applies
    it. Build, then load weights with ``load_fid_inception``; a freshly built network has random weights.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = _MixedA(192, 32)
        self.Mixed_5c = _MixedA(256, 64)
        self.Mixed_5d = _MixedA(288, 64)
        self.Mixed_6a = _ReduceB(288)
        self.Mixed_6b = _MixedC(768, 128)
        self.Mixed_6c = _MixedC(768, 160)
        self.Mixed_6d = _MixedC(768, 160)
        self.Mixed_6e = _MixedC(768, 192)
        self.Mixed_7a = _ReduceD(768)
        self.Mixed_7b = _MixedE(1280, pool="avg")
        self.Mixed_7c = _MixedE(2048, pool="max")
        self.fc = nn.Linear(FID_FEATURE_DIM, FID_NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)

    def logits(self, pool3: torch.Tensor) -> torch.Tensor:
        """The 1008-way classifier on pool3 features (not used by FID)."""
        return self.fc(pool3)


# ----- preprocessing --------------------------------------------------------------------------------------
def preprocess_for_fid(images: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Images in [-1, 1] [B, 3, H, W] -> the network input [B, 3, 299, 299] in [-1, 1] (float32).

    Steps: ``(x + 1) / 2`` to [0, 1]; with ``quantize`` (default) rounded to 8 bits,
    ``round(255 (x + 1) / 2) / 255``, which is what pytorch-fid sees when the samples are saved as PNG
    (``real_models.data.to_uint8_images`` uses the same rounding) and read back with ``ToTensor``;
    bilinear resize to 299x299 with ``align_corners=False``; ``2 x - 1``.
    """
    if not isinstance(images, torch.Tensor):
        raise ConfigError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError(f"images must have shape [B, 3, H, W], got {list(images.shape)}")
    if not torch.is_floating_point(images):
        raise ConfigError(f"images must be a floating tensor in [-1, 1], got dtype {images.dtype}")
    x = images.detach().float()
    if not bool(torch.isfinite(x).all()):
        raise ConfigError("images contain NaN or Inf")
    if x.numel() and (float(x.min()) < -1.0 - 1e-3 or float(x.max()) > 1.0 + 1e-3):
        raise ConfigError(f"images must lie in [-1, 1] (got range [{float(x.min()):.4g}, {float(x.max()):.4g}])")
    x = ((x.clamp(-1.0, 1.0) + 1.0) / 2.0)
    if quantize:
        x = torch.round(x * 255.0) / 255.0
    x = F.interpolate(x, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2.0 * x - 1.0


# ----- weights --------------------------------------------------------------------------------------------
def expected_state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """Names and shapes of every parameter and buffer of ``FIDInceptionV3`` (built on the meta device)."""
    with torch.device("meta"):
        model = FIDInceptionV3()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _missing_weights_message(where: str) -> str:
    return (f"standard Inception FID needs the FID Inception weights file {FID_INCEPTION_WEIGHTS} "
            f"(pytorch-fid's PyTorch port of the TensorFlow 2015-12-05 Inception graph); {where}. "
            f"This project does not ship it and cannot download it; get it from {FID_WEIGHTS_SOURCE} "
            f"and pass its path.")


def _summarise(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def load_fid_state_dict(weights_path: str | Path | None) -> dict[str, torch.Tensor]:
    """Read and verify a FID Inception state dict (``.pth`` tensors only, or ``.safetensors``).

    A ``.pth`` file is read only with ``torch.load(path, map_location="cpu", weights_only=True)``, which
    refuses anything but tensors and plain containers. Every expected key must be present with the
    expected shape and a floating dtype (``num_batches_tracked`` buffers may be absent; they are then
    filled with 0), no unexpected key may be present, and floating tensors must be finite; otherwise a
    ``ConfigError`` names the missing / unexpected keys or the shape mismatches. An absent file raises
    ``InceptionWeightsMissing`` naming ``pt_inception-2015-12-05-6726825d.pth`` and where to get it.
    """
    if weights_path is None:
        raise InceptionWeightsMissing(_missing_weights_message("no weights_path given"))
    path = Path(weights_path)
    if not path.is_file():
        raise InceptionWeightsMissing(_missing_weights_message(f"{str(path)!r} does not exist"))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(path))
        except Exception as exc:  # safetensors raises several error types on corrupt files
            raise ConfigError(f"cannot read safetensors file {path}: {exc}") from exc
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling errors, truncated zip, refused (non-tensor) objects
            raise ConfigError(f"cannot read {path} as a tensors-only PyTorch state dict "
                              f"(torch.load weights_only=True): {exc}") from exc
    return check_fid_state_dict(raw, str(path))


def check_fid_state_dict(raw: Any, source: str = "state dict") -> dict[str, torch.Tensor]:
    """Verify a state dict against ``FIDInceptionV3`` (see ``load_fid_state_dict``); return a completed copy.

    ``source`` names the origin (a file) in error messages.
    """
    path = source
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in raw.items()):
        raise ConfigError(f"{path} is not a plain state dict (a mapping of names to tensors); "
                          f"expected the pytorch-fid file {FID_INCEPTION_WEIGHTS}")
    state = dict(raw)
    expected = expected_state_dict_shapes()
    for key in expected:
        if key.endswith(_OPTIONAL_SUFFIX) and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(f"{k}: file {list(state[k].shape)} != expected {list(expected[k])}"
                        for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    problems = []
    if missing:
        problems.append(f"missing keys: {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summarise(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_summarise(mismatched)}")
    if problems:
        raise ConfigError(f"{path} does not match the FID Inception-v3 network "
                          f"(expected {FID_INCEPTION_WEIGHTS}): " + "; ".join(problems))
    for key, value in state.items():
        if key.endswith(_OPTIONAL_SUFFIX):
            continue
        if not torch.is_floating_point(value):
            raise ConfigError(f"{path}: {key} has dtype {value.dtype}, expected a floating tensor")
        if not bool(torch.isfinite(value).all()):
            raise ConfigError(f"{path}: {key} contains NaN or Inf")
    return state


def load_fid_inception(weights_path: str | Path | None, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """Build ``FIDInceptionV3``, load the verified weights (``strict=True``), return it in eval mode on ``device``."""
    state = load_fid_state_dict(weights_path)
    model = FIDInceptionV3()
    model.load_state_dict(state, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device)


@torch.no_grad()
def fid_inception_features(model: FIDInceptionV3, images: torch.Tensor, batch_size: int = 50,
                           quantize: bool = True) -> torch.Tensor:
    """pool3 features [B, 2048] (float64, CPU) of images in [-1, 1] [B, 3, H, W], in batches, eval mode."""
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise ConfigError("images must be a non-empty tensor [B, 3, H, W] in [-1, 1]")
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, images.shape[0], int(batch_size)):
        x = preprocess_for_fid(images[start:start + int(batch_size)], quantize=quantize).to(device)
        out.append(model(x).double().cpu())
    return torch.cat(out, dim=0)
