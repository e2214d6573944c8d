"""Training of the real DDPM: a short run reduces the loss, resume is exact, export loads and samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from iec_theory.errors import ConfigError
from real_models.checkpoint import CKPT_NAME, load_checkpoint
from real_models.train import TrainConfig, Trainer, ddpm_loss, export_run
from real_models.unet import ModelLoadError, tiny_config

torch.set_num_threads(1)


def _images(n: int = 32, size: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth synthetic images: a random colour per image plus a horizontal ramp (easy to denoise)."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(40, 216, (n, 1, 1, 3))
    ramp = np.linspace(-30, 30, size)[None, None, :, None]
    return np.clip(colour + ramp, 0, 255).astype(np.uint8).repeat(size, axis=1)[:, :size]


def _cfg(steps: int, **kw) -> TrainConfig:
    base = dict(unet_config=tiny_config(), batch_size=8, lr=2e-3, warmup_steps=5, max_steps=steps, log_every=5,
                ema_decay=0.9)
    base.update(kw)
    return TrainConfig(**base)


def _fixed_eval_loss(model: torch.nn.Module, trainer: Trainer) -> float:
    x0 = trainer.data[:16].float() / 127.5 - 1
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        return float(np.mean([float(ddpm_loss(model, x0, trainer.sqrt_abar, trainer.sqrt_1m_abar, g))
                              for _ in range(4)]))


def test_short_training_reduces_loss(tmp_path):
    tr = Trainer(_images(), _cfg(50), tmp_path / "run", progress=False)
    before = _fixed_eval_loss(tr.model, tr)
    tr.run()
    after = _fixed_eval_loss(tr.model, tr)
    log = [json.loads(line) for line in (tmp_path / "run" / "training_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 50 and len(log) == 10
    assert after < 0.7 * before, (before, after)
    assert np.mean([r["loss"] for r in log[-3:]]) < np.mean([r["loss"] for r in log[:2]])


def test_resume_continues_exactly(tmp_path):
    imgs = _images(20)
    a = Trainer(imgs, _cfg(6), tmp_path / "a", progress=False)
    a.run()
    b = Trainer(imgs, _cfg(3), tmp_path / "b", progress=False)
    b.run()
    b2 = Trainer(imgs, _cfg(6), tmp_path / "b", progress=False)  # resumes from step 3 (crosses an epoch)
    assert b2.resumed_from == 3
    b2.run()
    for part in ("model", "ema"):
        sa, sb = getattr(a, part).state_dict(), getattr(b2, part).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), part
    assert (a.step, a.epoch, a.pos, a.images_seen) == (b2.step, b2.epoch, b2.pos, b2.images_seen)
    ta, _ = load_checkpoint(tmp_path / "a")
    tb, _ = load_checkpoint(tmp_path / "b")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_resume_rejects_other_architecture_and_corrupt_checkpoint(tmp_path):
    imgs = _images(16)
    Trainer(imgs, _cfg(1), tmp_path / "r", progress=False).run()
    other = tiny_config() | {"layers_per_block": 2}
    with pytest.raises(ConfigError, match="different UNet config"):
        Trainer(imgs, _cfg(2, unet_config=other), tmp_path / "r", progress=False)
    ck = tmp_path / "r" / CKPT_NAME
    ck.write_bytes(ck.read_bytes()[:1000])  # truncated
    with pytest.raises(ModelLoadError, match="not a valid safetensors"):
        Trainer(imgs, _cfg(2), tmp_path / "r", progress=False)


def test_budget_is_required_and_bad_images_rejected(tmp_path):
    with pytest.raises(ConfigError, match="budget"):
        Trainer(_images(4), _cfg(None), tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="uint8"):
        Trainer(np.zeros((4, 16, 16, 3), np.float32), _cfg(1), tmp_path / "x", progress=False)


def test_export_then_load_and_sample_cli(tmp_path):
    from iec_theory.cli import main
    from real_models.pretrained import load_default_model

    Trainer(_images(16), _cfg(2), tmp_path / "run", progress=False).run()
    out = export_run(tmp_path / "run", tmp_path / "export")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["steps"] == 2 and meta["images_seen"] == 16 and meta["weights"] == "ema"
    assert (out / "training_log.jsonl").is_file()
    model, schedule = load_default_model(out)
    assert schedule.num_train_steps == 1000
    x = torch.randn(2, 3, 16, 16)
    assert model(x, torch.tensor([999, 0])).shape == x.shape
    grid = tmp_path / "g.png"
    assert main(["sample", "--model-dir", str(out), "--n", "4", "--steps", "2", "--out", str(grid)]) == 0
    rec = json.loads(grid.with_suffix(".json").read_text())
    assert grid.stat().st_size > 0 and rec["n"] == 4 and rec["steps"] == 2 and rec["provenance"]["seed"] == 0
    # quad spacing with repeated official timesteps runs the distinct ones (a repeated t -> t step is the identity)
    from real_models.experiment.grids import official_quad_sequence

    qgrid = tmp_path / "q.png"
    assert main(["sample", "--model-dir", str(out), "--n", "2", "--steps", "100", "--spacing", "quad",
                 "--out", str(qgrid), "--quiet"]) == 0
    q = json.loads(qgrid.with_suffix(".json").read_text())
    assert q["steps_run"] == len(set(official_quad_sequence(1000, 100))) == 96 and q["nfe_per_batch_total"] == 96


def test_sample_records_repo_relative_paths(tmp_path, monkeypatch):
    from iec_theory.cli import main
    from real_models.pretrained import DEFAULT_MODEL_DIR

    monkeypatch.chdir(tmp_path)          # the default model given by an absolute path, output outside the repo
    assert main(["sample", "--model-dir", str(DEFAULT_MODEL_DIR.resolve()), "--n", "1", "--steps", "2",
                 "--out", "g.png", "--quiet"]) == 0
    rec = json.loads((tmp_path / "g.json").read_text())
    assert rec["model_dir"] == "real_models/weights/ddpm_cifar10_small" and rec["out"] == "g.png"
