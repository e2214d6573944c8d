"""diffusers ``UNet2DModel`` builders, an eps-model adapter for the sampler, and safe folder loading.

``ddpm_cifar10_config()`` is the architecture of the public DDPM CIFAR-10 checkpoint
(Ho et al. 2020; on the Hugging Face hub as ``google/ddpm-cifar10-32``): ch 128, ch_mult (1, 2, 2, 2),
2 res blocks per level, self-attention at 16x16, positional time embedding with freq_shift 1 and no
sin/cos flip, asymmetric-pad downsampling (``downsample_padding=0``), GroupNorm(32, eps 1e-6),
35.7M parameters. ``small_config()`` is the project's CPU-trainable default (see ``SMALL_CONFIG_NOTE``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from iec_theory.errors import ConfigError

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"


class ModelLoadError(ConfigError):
    """A model folder or weights file is missing, incomplete or corrupt."""


def ddpm_cifar10_config() -> dict[str, Any]:
    """UNet2DModel kwargs of google/ddpm-cifar10-32 (the original DDPM CIFAR-10 network)."""
    return {
        "sample_size": 32,
        "in_channels": 3,
        "out_channels": 3,
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "freq_shift": 1,
        "flip_sin_to_cos": False,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [128, 256, 256, 256],
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "downsample_padding": 0,
        "act_fn": "silu",
        "attention_head_dim": None,
        "norm_num_groups": 32,
        "norm_eps": 1e-6,
    }


SMALL_CONFIG_NOTE = (
    "Same family as ddpm_cifar10_config (positional embedding, freq_shift 1, DDPM-style downsampling), "
    "scaled down for 1-thread CPU training: chosen by measured training throughput (see "
    "real_models/weights/ddpm_cifar10_small/metadata.json)."
)


def small_config(block_out_channels: tuple[int, ...] = (32, 64, 64), layers_per_block: int = 1,
                 attention_level: int | None = 1, norm_num_groups: int = 8) -> dict[str, Any]:
    """The project's small default: the DDPM CIFAR-10 design with fewer channels/levels/blocks.

    attention_level: index of the resolution level with self-attention (1 = 16x16), or None for none.
    """
    n = len(block_out_channels)
    if n < 2:
        raise ConfigError("block_out_channels needs at least two levels")
    if attention_level is not None and not 0 <= attention_level < n:
        raise ConfigError(f"attention_level must be in [0, {n - 1}] or None, got {attention_level}")
    down = ["AttnDownBlock2D" if i == attention_level else "DownBlock2D" for i in range(n)]
    up = list(reversed(["AttnUpBlock2D" if i == attention_level else "UpBlock2D" for i in range(n)]))
    cfg = ddpm_cifar10_config()
    cfg.update(block_out_channels=list(block_out_channels), layers_per_block=layers_per_block,
               down_block_types=down, up_block_types=up, norm_num_groups=norm_num_groups)
    return cfg


def tiny_config() -> dict[str, Any]:
    """A very small UNet for tests (2 levels, 16/32 channels, attention at the second level)."""
    return small_config(block_out_channels=(16, 32), layers_per_block=1, attention_level=1, norm_num_groups=8)


def build_unet(config: dict[str, Any]):
    """A freshly initialised UNet2DModel from a config dict (extra diffusers '_' keys are ignored)."""
    from diffusers import UNet2DModel

    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        return UNet2DModel(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"invalid UNet2DModel config: {exc}") from exc


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class UNetEpsModel:
    """Adapter: model(x, t) = unet(x, t).sample under torch.no_grad(); t is a LongTensor [B]."""

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet.eval()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, return_dict=False)[0]

    @property
    def config(self) -> Any:
        return self.unet.config

    def to(self, *args, **kwargs) -> UNetEpsModel:
        self.unet.to(*args, **kwargs)
        return self


def check_model_dir(path: str | os.PathLike) -> Path:
    """Validate a diffusers-format folder (config.json + diffusion_pytorch_model.safetensors)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ModelLoadError(f"model folder {str(p)!r} does not exist (expected a diffusers-format folder with "
                             f"{CONFIG_NAME} and {WEIGHTS_NAME})")
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (p / n).is_file()]
    if missing:
        raise ModelLoadError(f"model folder {str(p)!r} lacks {missing}; a diffusers-format UNet2DModel folder holds "
                             f"{CONFIG_NAME} and {WEIGHTS_NAME} (convert .ckpt/.bin files first, see "
                             "real_models/convert.py)")
    try:
        cfg = json.loads((p / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{str(p / CONFIG_NAME)!r} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict) or cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ModelLoadError(f"{str(p / CONFIG_NAME)!r} does not describe a UNet2DModel")
    check_safetensors(p / WEIGHTS_NAME)
    return p


def check_safetensors(path: str | os.PathLike) -> None:
    """Raise ModelLoadError unless path is a readable safetensors file (header and sizes consistent)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if keys:
                f.get_slice(keys[-1])
        size = path.stat().st_size
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        if 8 + n + (max(ends) if ends else 0) != size:
            raise ValueError(f"file size {size} does not match the header ({8 + n + max(ends, default=0)} expected)")
    except Exception as exc:
        raise ModelLoadError(f"weights file {str(path)!r} is not a valid safetensors file (corrupt or truncated?): "
                             f"{type(exc).__name__}: {exc}") from exc


def load_unet(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """UNet2DModel.from_pretrained on a validated local folder, safetensors only, in eval mode."""
    from diffusers import UNet2DModel

    p = check_model_dir(path)
    try:
        unet = UNet2DModel.from_pretrained(str(p), use_safetensors=True, local_files_only=True,
                                           low_cpu_mem_usage=False)
    except Exception as exc:
        raise ModelLoadError(f"cannot load UNet2DModel from {str(p)!r}: {type(exc).__name__}: {exc}") from exc
    check_all_weights_used(unet, p / WEIGHTS_NAME)
    return unet.to(device).eval()


def _key_summary(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def check_all_weights_used(model: torch.nn.Module, weights_path: str | os.PathLike) -> None:
    """Strict loading: every tensor in the file is a model parameter/buffer and every one was loaded.

    diffusers only warns about unmatched weights (e.g. a config.json without the attention blocks the
    weights have) and leaves the missing parameters randomly initialised; this raises ModelLoadError
    naming the keys instead. Shapes are compared too.
    """
    from safetensors import safe_open

    with safe_open(str(weights_path), framework="pt") as f:
        file_shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    model_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    unused = sorted(set(file_shapes) - set(model_shapes))
    missing = sorted(set(model_shapes) - set(file_shapes))
    wrong = sorted(k for k in set(file_shapes) & set(model_shapes) if file_shapes[k] != model_shapes[k])
    problems = []
    if unused:
        problems.append(f"weights not used by the config's network: {_key_summary(unused)}")
    if missing:
        problems.append(f"parameters with no weights in the file: {_key_summary(missing)}")
    if wrong:
        problems.append(f"shape mismatches: {_key_summary(wrong)}")
    if problems:
        raise ModelLoadError(f"{str(weights_path)!r} does not match its config.json ({'; '.join(problems)}); "
                             "the config must describe exactly the saved network")


def load_eps_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> UNetEpsModel:
    return UNetEpsModel(load_unet(path, device))
