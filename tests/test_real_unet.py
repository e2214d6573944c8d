"""UNet builders, the eps adapter, safe folder loading and the original-DDPM checkpoint converter."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from real_models.convert import convert_file, diffusers_to_original, key_map, original_to_diffusers
from real_models.unet import (
    ModelLoadError,
    UNetEpsModel,
    build_unet,
    check_safetensors,
    count_parameters,
    ddpm_cifar10_config,
    load_unet,
    small_config,
    tiny_config,
)

torch.set_num_threads(1)


def _scaled_ddpm_config() -> dict:
    """The DDPM CIFAR-10 design scaled down: 4 levels, attention at 16x16 only, fewer channels."""
    return ddpm_cifar10_config() | {"block_out_channels": [16, 32, 32, 32], "norm_num_groups": 8}


def _randomized(config: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_unet(config).eval()
    with torch.no_grad():  # also randomise the zero/one-initialised norms and biases
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_ddpm_cifar10_config_matches_public_architecture():
    cfg = ddpm_cifar10_config()
    assert cfg["block_out_channels"] == [128, 256, 256, 256] and cfg["layers_per_block"] == 2
    assert cfg["down_block_types"][1] == "AttnDownBlock2D" and cfg["up_block_types"][2] == "AttnUpBlock2D"
    assert (cfg["freq_shift"], cfg["flip_sin_to_cos"], cfg["downsample_padding"]) == (1, False, 0)
    with torch.device("meta"):
        model = build_unet(cfg)
    assert count_parameters(model) == 35_746_307  # google/ddpm-cifar10-32 (35.7M)
    sd = model.state_dict()
    assert len(sd) == 328 and len(key_map(cfg)) * 2 == len(sd)  # every module has weight + bias


def test_original_names_have_the_original_models_shapes():
    """Shapes the original DDPM CIFAR-10 Model (ch 128, ch_mult (1,2,2,2)) has under these names."""
    cfg = ddpm_cifar10_config()
    with torch.device("meta"):
        orig = diffusers_to_original(build_unet(cfg).state_dict(), cfg)
    shapes = {k: tuple(v.shape) for k, v in orig.items()}
    assert shapes["temb.dense.0.weight"] == (512, 128) and shapes["temb.dense.1.weight"] == (512, 512)
    assert "down.0.block.0.nin_shortcut.weight" not in shapes
    assert shapes["down.1.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    assert shapes["down.0.downsample.conv.weight"] == (128, 128, 3, 3) and "down.3.downsample.conv.weight" not in shapes
    assert shapes["up.0.block.0.conv1.weight"] == (128, 384, 3, 3)  # 256 from below + 128 skip
    assert shapes["up.0.block.2.conv1.weight"] == (128, 256, 3, 3)  # 128 + conv_in's 128 skip
    assert shapes["up.3.block.0.conv1.weight"] == (256, 512, 3, 3)
    assert shapes["up.1.attn.2.q.weight"] == (256, 256, 1, 1) and "up.0.attn.0.q.weight" not in shapes
    assert shapes["up.1.upsample.conv.weight"] == (256, 256, 3, 3) and "up.0.upsample.conv.weight" not in shapes
    assert shapes["norm_out.weight"] == (128,) and shapes["conv_out.weight"] == (3, 128, 3, 3)


def test_small_config_is_small():
    with torch.device("meta"):
        model = build_unet(small_config())
    assert count_parameters(model) * 4 < 20 * 2**20


def test_converter_round_trip_identical_tensors_and_outputs(tmp_path):
    cfg = _scaled_ddpm_config()
    model = _randomized(cfg)
    sd = model.state_dict()
    orig = diffusers_to_original(sd, cfg)
    assert "temb.dense.0.weight" in orig and "up.1.attn.2.q.weight" in orig and "mid.attn_1.proj_out.bias" in orig
    assert orig["down.1.attn.0.k.weight"].shape == (32, 32, 1, 1)  # 1x1 conv in the original
    assert "up.0.upsample.conv.weight" not in orig and "up.3.upsample.conv.weight" in orig
    src = tmp_path / "orig.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in orig.items()}, str(src))  # DataParallel prefix
    back = convert_file(src, tmp_path / "conv", cfg).eval()
    sd2 = back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.equal(model(x, t).sample, back(x, t).sample)
    loaded = load_unet(tmp_path / "conv")
    with torch.no_grad():
        assert torch.equal(model(x, t).sample, loaded(x, t).sample)


def test_converter_rejects_wrong_architecture_and_pickles(tmp_path):
    cfg = _scaled_ddpm_config()
    orig = diffusers_to_original(_randomized(cfg).state_dict(), cfg)
    with pytest.raises(ValueError, match="no place|does not match"):
        original_to_diffusers(orig, ddpm_cifar10_config() | {"block_out_channels": [16, 32, 32, 32],
                                                             "layers_per_block": 1, "norm_num_groups": 8})
    del orig["conv_out.bias"]
    with pytest.raises(ValueError, match="missing"):
        original_to_diffusers(orig, cfg)
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not read")
    with pytest.raises(ModelLoadError, match="only .safetensors"):
        convert_file(ckpt, tmp_path / "out", cfg)


def test_eps_adapter_shape_and_no_grad():
    model = UNetEpsModel(_randomized(tiny_config()))
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    out = model(x, torch.tensor([0, 500, 999]))
    assert out.shape == x.shape and not out.requires_grad and not model.unet.training


def test_load_errors_missing_and_corrupt(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_unet(tmp_path / "nope")
    folder = tmp_path / "m"
    _randomized(tiny_config()).save_pretrained(str(folder), safe_serialization=True)
    weights = folder / "diffusion_pytorch_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ModelLoadError, match="not a valid safetensors"):
        load_unet(folder)
    weights.write_bytes(b"\x00" * 64)  # garbage header
    with pytest.raises(ModelLoadError, match="not a valid safetensors"):
        check_safetensors(weights)
    weights.write_bytes(good)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_unet(folder)
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ModelLoadError, match="UNet2DModel"):
        load_unet(folder)
    weights.unlink()
    with pytest.raises(ModelLoadError, match="lacks"):
        load_unet(folder)
