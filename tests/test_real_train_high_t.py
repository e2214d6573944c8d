"""High-noise emphasis of the DDPM loss (real_models/train.py: HighT, draw_timesteps, ddpm_loss)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from iec_theory.errors import ConfigError
from real_models.train import HighT, TrainConfig, Trainer, ddpm_loss, draw_timesteps
from real_models.unet import build_unet, tiny_config

torch.set_num_threads(1)


def _tables(n: int = 1000):
    betas = torch.linspace(1e-4, 0.02, n, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    return abar.sqrt().float(), (1 - abar).sqrt().float()


def _plain_reference(model, x0, sa, s1, g):
    """The plain DDPM loss written out independently: t ~ U{0..N-1}, then the noise, then the eps MSE."""
    t = torch.randint(0, sa.numel(), (x0.shape[0],), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    xt = sa[t].view(-1, 1, 1, 1) * x0 + s1[t].view(-1, 1, 1, 1) * noise
    return torch.mean((model(xt, t, return_dict=False)[0] - noise) ** 2)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_unet(tiny_config()).eval()


def test_default_is_the_plain_loss_and_consumes_the_same_random_stream(net):
    sa, s1 = _tables()
    x0 = torch.rand(6, 3, 16, 16) * 2 - 1
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    with torch.no_grad():
        a = ddpm_loss(net, x0, sa, s1, g1)
        b = _plain_reference(net, x0, sa, s1, g2)
    assert float(a) == float(b)
    assert torch.equal(g1.get_state(), g2.get_state())       # resumed old runs stay bit-exact
    assert not HighT().active


def test_share_draws_the_first_items_from_the_high_range():
    g = torch.Generator().manual_seed(3)
    draws = torch.stack([draw_timesteps(10, 1000, g, HighT(share=0.5, t0=900)) for _ in range(400)])
    assert int(draws[:, :5].min()) >= 900 and int(draws[:, :5].max()) <= 999
    assert int(draws[:, 5:].min()) < 100                       # the rest is still U{0..N-1}
    share_high = float((draws >= 900).double().mean())
    assert abs(share_high - (0.5 + 0.5 * 0.1)) < 0.02          # 0.55 expected; 4,000 draws, sd 0.008
    assert torch.equal(draw_timesteps(10, 1000, torch.Generator().manual_seed(1), HighT(share=0.04)),
                       draw_timesteps(10, 1000, torch.Generator().manual_seed(1)))   # round(0.4) = 0 items


def test_weight_gives_the_weighted_batch_mean(net):
    sa, s1 = _tables()
    x0 = torch.rand(8, 3, 16, 16) * 2 - 1
    ht = HighT(share=0.5, t0=700, weight=5.0)
    g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    with torch.no_grad():
        loss = float(ddpm_loss(net, x0, sa, s1, g1, high_t=ht))
        t = draw_timesteps(8, 1000, g2, ht)
        noise = torch.randn(x0.shape, generator=g2)
        xt = sa[t].view(-1, 1, 1, 1) * x0 + s1[t].view(-1, 1, 1, 1) * noise
        per = ((net(xt, t, return_dict=False)[0] - noise) ** 2).mean(dim=(1, 2, 3)).double().numpy()
    w = np.where(t.numpy() >= 700, 5.0, 1.0)
    assert (t[:4] >= 700).all()
    assert loss == pytest.approx(float((w * per).sum() / w.sum()), rel=1e-5)
    assert loss != pytest.approx(float(per.mean()), rel=1e-3)


@pytest.mark.parametrize("kw, msg", [({"high_t_share": 1.5}, "high_t_share"), ({"high_t_share": -0.1}, "high_t_share"),
                                     ({"high_t_from": 1000}, "high_t_from"), ({"high_t_weight": 0.0}, "high_t_weight"),
                                     ({"high_t_weight": float("nan")}, "high_t_weight")])
def test_bad_settings_are_refused(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        TrainConfig(unet_config=tiny_config(), max_steps=1, **kw).validate()


def test_sessions_record_the_emphasis(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 255, (16, 16, 16, 3)).astype(np.uint8)
    base = dict(unet_config=tiny_config(), batch_size=4, lr=1e-3, warmup_steps=1, log_every=1)
    Trainer(imgs, TrainConfig(max_steps=2, **base), tmp_path / "r", progress=False).run()
    Trainer(imgs, TrainConfig(max_steps=4, high_t_share=0.5, high_t_weight=3.0, **base), tmp_path / "r",
            progress=False).run()
    sessions = json.loads((tmp_path / "r" / "state.json").read_text())["sessions"]
    assert "high_t" not in sessions[0]
    assert sessions[1]["high_t"] == {"share": 0.5, "t0": 800, "weight": 3.0} and sessions[1]["start_step"] == 2
