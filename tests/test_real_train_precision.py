"""train-ddpm --precision bf16 / --init-from (issue 13 item 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iec_theory.errors import ConfigError
from real_models.train import TrainConfig, Trainer
from real_models.unet import tiny_config


def _images(n: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def test_bf16_trains_with_float32_master_weights(tmp_path) -> None:
    cfg = TrainConfig(unet_config=tiny_config(), batch_size=8, max_steps=3, precision="bf16", seed=0)
    tr = Trainer(_images(), cfg, tmp_path / "run", resume=False, progress=False)
    losses = [tr.train_step() for _ in range(3)]
    assert all(np.isfinite(losses))
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())
    assert all(p.dtype == torch.float32 for p in tr.ema.parameters())


def test_bf16_loss_close_to_fp32_at_the_same_weights(tmp_path) -> None:
    """The same weights, batch, t and noise: bf16 autocast changes the loss by well under its batch noise."""
    from real_models.train import ddpm_loss

    cfg = TrainConfig(unet_config=tiny_config(), batch_size=16, max_steps=1, seed=0)
    tr = Trainer(_images(), cfg, tmp_path / "run", resume=False, progress=False)
    x0 = torch.from_numpy(_images(16)).permute(0, 3, 1, 2).float() / 127.5 - 1
    vals = {}
    for prec in ("fp32", "bf16"):
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            vals[prec] = float(ddpm_loss(tr.model, x0, tr.sqrt_abar, tr.sqrt_1m_abar, g, prec))
    assert abs(vals["bf16"] - vals["fp32"]) <= 0.02 * vals["fp32"], vals


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(unet_config=tiny_config(), max_steps=1, precision="fp8").validate()


def test_init_from_loads_every_weight_and_is_recorded_repo_relative(tmp_path) -> None:
    from real_models.unet import build_unet

    src = build_unet(tiny_config())
    torch.manual_seed(123)
    for p in src.parameters():
        p.data.normal_()
    src.save_pretrained(str(tmp_path / "init"), safe_serialization=True)
    cfg = TrainConfig(unet_config=tiny_config(), batch_size=8, max_steps=1, init_from=str(tmp_path / "init"))
    tr = Trainer(_images(), cfg, tmp_path / "run", resume=False, progress=False)
    for a, b in zip(tr.model.parameters(), src.parameters()):
        torch.testing.assert_close(a, b)
    from iec_theory.provenance import repo_relative

    assert repo_relative("real_models/weights/ddpm_cifar10_small") == "real_models/weights/ddpm_cifar10_small"
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert repo_relative(root / "real_models" / "weights") == "real_models/weights"
