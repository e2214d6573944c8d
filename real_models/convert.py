"""Convert DDPM/DDIM PyTorch-port checkpoints to a diffusers ``UNet2DModel`` folder (and back).

The original naming is that of the ``Model`` class in pesser/pytorch_diffusion and ermongroup/ddim
(a port of Ho et al.'s TensorFlow DDPM)::

    temb.dense.{0,1}                      -> time_embedding.linear_{1,2}
    conv_in, norm_out, conv_out           -> conv_in, conv_norm_out, conv_out
    down.{i}.block.{j}.{norm1,conv1,temb_proj,norm2,conv2,nin_shortcut}
        -> down_blocks.{i}.resnets.{j}.{norm1,conv1,time_emb_proj,norm2,conv2,conv_shortcut}
    down.{i}.attn.{j}.{norm,q,k,v,proj_out}
                                          -> down_blocks.{i}.attentions.{j}.{group_norm,to_q,to_k,to_v,to_out.0}
    down.{i}.downsample.conv              -> down_blocks.{i}.downsamplers.0.conv
    mid.block_1, mid.attn_1, mid.block_2  -> mid_block.resnets.0, mid_block.attentions.0, mid_block.resnets.1
    up.{i}.block.{j}, up.{i}.attn.{j}     -> up_blocks.{n-1-i}.resnets.{j}, up_blocks.{n-1-i}.attentions.{j}
    up.{i}.upsample.conv                  -> up_blocks.{n-1-i}.upsamplers.0.conv

(the original ``up`` list is indexed by resolution level, diffusers' ``up_blocks`` by order of use).
Attention q/k/v/proj_out are 1x1 convolutions ``[C, C, 1, 1]`` in the original and linear layers
``[C, C]`` in diffusers. A leading ``module.`` (DataParallel) is stripped.

Input is read ONLY from ``.safetensors``. To convert a ``.ckpt``/``.pth`` you trust, load it yourself
with torch's restricted loader and re-save it, e.g.::

    import torch, safetensors.torch
    sd = torch.load("model-790000.ckpt", map_location="cpu", weights_only=True)
    # ermongroup/ddim saves a list [model, optimizer, epoch, step, ema]: take sd[0] (or sd[-1] for EMA)
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, "model.safetensors")
    python -m real_models.convert model.safetensors out_dir --config ddpm-cifar10

``weights_only=True`` refuses arbitrary pickled objects, so this step cannot execute code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from iec_theory.errors import ConfigError

from .unet import ModelLoadError, build_unet, check_safetensors, ddpm_cifar10_config, small_config, tiny_config

_RESNET = {"norm1": "norm1", "conv1": "conv1", "temb_proj": "time_emb_proj", "norm2": "norm2", "conv2": "conv2",
           "nin_shortcut": "conv_shortcut"}
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_ATTN_LINEAR = {"to_q", "to_k", "to_v", "to_out.0"}


def _levels(config: dict[str, Any]) -> tuple[int, int, list[bool], list[bool]]:
    down = list(config["down_block_types"])
    up = list(config["up_block_types"])
    n = len(down)
    if len(up) != n or len(config["block_out_channels"]) != n:
        raise ConfigError("down_block_types, up_block_types and block_out_channels must have the same length")
    down_attn = [t.startswith("Attn") for t in down]
    up_attn = [t.startswith("Attn") for t in up]  # indexed by diffusers up_block order
    for t in down + up:
        if t not in ("DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D"):
            raise ConfigError(f"block type {t!r} has no counterpart in the original DDPM Model")
    return n, int(config["layers_per_block"]), down_attn, up_attn


def key_map(config: dict[str, Any]) -> dict[str, str]:
    """Original module prefix -> diffusers module prefix (parameter suffixes .weight/.bias are kept)."""
    n, L, down_attn, up_attn = _levels(config)
    m = {"temb.dense.0": "time_embedding.linear_1", "temb.dense.1": "time_embedding.linear_2",
         "conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out": "conv_out"}

    def resnet(src: str, dst: str) -> None:
        for a, b in _RESNET.items():
            m[f"{src}.{a}"] = f"{dst}.{b}"

    def attn(src: str, dst: str) -> None:
        for a, b in _ATTN.items():
            m[f"{src}.{a}"] = f"{dst}.{b}"

    for i in range(n):
        for j in range(L):
            resnet(f"down.{i}.block.{j}", f"down_blocks.{i}.resnets.{j}")
            if down_attn[i]:
                attn(f"down.{i}.attn.{j}", f"down_blocks.{i}.attentions.{j}")
        if i != n - 1:
            m[f"down.{i}.downsample.conv"] = f"down_blocks.{i}.downsamplers.0.conv"
    resnet("mid.block_1", "mid_block.resnets.0")
    attn("mid.attn_1", "mid_block.attentions.0")
    resnet("mid.block_2", "mid_block.resnets.1")
    for k in range(n):
        i = n - 1 - k
        for j in range(L + 1):
            resnet(f"up.{i}.block.{j}", f"up_blocks.{k}.resnets.{j}")
            if up_attn[k]:
                attn(f"up.{i}.attn.{j}", f"up_blocks.{k}.attentions.{j}")
        if i != 0:
            m[f"up.{i}.upsample.conv"] = f"up_blocks.{k}.upsamplers.0.conv"
    present = {name.rpartition(".")[0] for name in _expected(config)}
    return {a: b for a, b in m.items() if b in present}  # shortcuts exist only where channels change


def _split(name: str) -> tuple[str, str]:
    prefix, _, suffix = name.rpartition(".")
    return prefix, suffix


def _expected(config: dict[str, Any]) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = build_unet(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def original_to_diffusers(state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Rename (and reshape attention 1x1 convs) an original-format state dict for UNet2DModel(**config)."""
    fwd = key_map(config)
    expected = _expected(config)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in state_dict.items():
        name = name[len("module."):] if name.startswith("module.") else name
        prefix, suffix = _split(name)
        if prefix not in fwd:
            unknown.append(name)
            continue
        dst_prefix = fwd[prefix]
        dst = f"{dst_prefix}.{suffix}"
        t = tensor
        if dst_prefix.rsplit(".", 1)[-1] in _ATTN_LINEAR or dst_prefix.endswith("to_out.0"):
            if suffix == "weight" and t.ndim == 4:
                t = t.reshape(t.shape[0], t.shape[1])
        out[dst] = t
    if unknown:
        raise ConfigError(f"{len(unknown)} keys of the original checkpoint have no place in this architecture, "
                          f"e.g. {unknown[:5]}; wrong --config?")
    _check_complete(out, expected, "converted")
    return out


def diffusers_to_original(state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Inverse of original_to_diffusers (attention linear weights become [C, C, 1, 1] convs)."""
    inv = {v: k for k, v in key_map(config).items()}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        prefix, suffix = _split(name)
        if prefix not in inv:
            raise ConfigError(f"diffusers key {name!r} has no counterpart in the original DDPM Model")
        t = tensor
        if (prefix.rsplit(".", 1)[-1] in _ATTN_LINEAR or prefix.endswith("to_out.0")) and suffix == "weight" \
                and t.ndim == 2:
            t = t.reshape(t.shape[0], t.shape[1], 1, 1)
        out[f"{inv[prefix]}.{suffix}"] = t
    return out


def _check_complete(sd: dict[str, torch.Tensor], expected: dict[str, torch.Size], what: str) -> None:
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    if missing or extra:
        raise ConfigError(f"{what} state dict does not match the UNet2DModel: missing {missing[:5]} "
                          f"({len(missing)}), unexpected {extra[:5]} ({len(extra)})")
    bad = [(k, tuple(sd[k].shape), tuple(expected[k])) for k in expected if tuple(sd[k].shape) != tuple(expected[k])]
    if bad:
        raise ConfigError(f"{what} state dict has {len(bad)} tensors of the wrong shape, e.g. {bad[:3]}")


CONFIGS = {"ddpm-cifar10": ddpm_cifar10_config, "small": small_config, "tiny": tiny_config}


def convert_file(src: str | os.PathLike, out_dir: str | os.PathLike, config: dict[str, Any] | str = "ddpm-cifar10"):
    """Original-format .safetensors -> diffusers folder (config.json + diffusion_pytorch_model.safetensors)."""
    from safetensors.torch import load_file

    src = Path(src)
    if src.suffix != ".safetensors":
        raise ModelLoadError(f"{str(src)!r}: only .safetensors input is read; convert a trusted .ckpt first with "
                             "torch.load(path, weights_only=True) and safetensors.torch.save_file (see module doc)")
    check_safetensors(src)
    cfg = CONFIGS[config]() if isinstance(config, str) else dict(config)
    sd = original_to_diffusers(load_file(str(src)), cfg)
    unet = build_unet(cfg)
    unet.load_state_dict(sd, strict=True)
    unet.save_pretrained(str(out_dir), safe_serialization=True)
    return unet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m real_models.convert", description=__doc__.split("\n")[0])
    p.add_argument("src", help="original-format state dict as .safetensors")
    p.add_argument("out_dir", help="diffusers-format output folder")
    p.add_argument("--config", default="ddpm-cifar10", help=f"{sorted(CONFIGS)} or a path to a config.json")
    a = p.parse_args(argv)
    cfg: Any = a.config
    if a.config not in CONFIGS:
        cfg = {k: v for k, v in json.loads(Path(a.config).read_text()).items() if not k.startswith("_")}
    try:
        convert_file(a.src, a.out_dir, cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {a.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
