"""Cache-feature correction h -> a*h + b (real_models.calibrate_cache): least squares recovers a planted affine
relation, the step bookkeeping pairs each reuse step with its last refresh, the fitted correction lowers the
cache error on a real (random) UNet, and the command writes a loadable file."""

from __future__ import annotations

import pytest
import torch

from iec_theory import ConfigError, Schedule
from real_models.cache import CacheCorrection, CachedUNet
from real_models.calibrate_cache import calibrate_correction, fit_affine, fit_from_features, last_refresh

torch.set_num_threads(1)


def test_fit_affine_recovers_a_planted_relation():
    g = torch.Generator().manual_seed(0)
    C = 6
    x = torch.randn(8, C, 5, 5, generator=g) * torch.linspace(0.5, 3, C).view(1, C, 1, 1) + 2.0
    a_true, b_true = torch.randn(C, generator=g), torch.randn(C, generator=g)
    y = a_true.view(1, C, 1, 1) * x + b_true.view(1, C, 1, 1)
    a, b, st = fit_affine(x, y)
    assert torch.allclose(a, a_true, atol=1e-5) and torch.allclose(b, b_true, atol=1e-5)
    assert st["mse_fitted"] < 1e-9 < st["mse_identity"]
    # with noise: unbiased within the least-squares standard error (n = 8*25 values per channel)
    y2 = y + 0.1 * torch.randn(y.shape, generator=g)
    a2, b2, _ = fit_affine(x, y2)
    assert torch.allclose(a2, a_true, atol=0.05) and torch.allclose(b2, b_true, atol=0.15)
    # a constant channel: a = 1, b = the mean difference
    xc = torch.ones(4, 1, 3, 3)
    a3, b3, _ = fit_affine(xc, xc + 0.5)
    assert float(a3) == 1.0 and abs(float(b3) - 0.5) < 1e-6


def test_fit_from_features_pairs_each_reuse_step_with_its_last_refresh():
    g = torch.Generator().manual_seed(1)
    T, refresh, C = 7, [0, 3], 4
    planted = {i: (1 + 0.1 * i * torch.ones(C), 0.01 * i * torch.arange(C, dtype=torch.float32)) for i in range(T)}
    trajs = []
    for _ in range(2):
        f = {r: torch.randn(3, C, 4, 4, generator=g) for r in refresh}
        for i in range(T):
            if i not in refresh:
                r = last_refresh(i, refresh)
                a, b = planted[i]
                f[i] = a.view(1, C, 1, 1) * f[r] + b.view(1, C, 1, 1)
        trajs.append(f)
    corr = fit_from_features(trajs, refresh, T)
    assert corr.steps == [1, 2, 4, 5, 6]
    for k, i in enumerate(corr.steps):
        assert torch.allclose(corr.a[k], planted[i][0], atol=1e-5) and torch.allclose(corr.b[k], planted[i][1],
                                                                                        atol=1e-5)
    assert last_refresh(2, [0, 3]) == 0 and last_refresh(3, [0, 3]) == 3 and last_refresh(6, [3]) == 3


def test_calibrated_correction_lowers_the_cache_error_and_round_trips(tmp_path):
    from tests.test_real_cache import tiny_unet

    unet = tiny_unet(True, lpb=2)
    sched = Schedule.linear()
    corr = calibrate_correction(unet, sched, T=8, spacing="quad", refresh_every=4, n=4, batch_size=2, seed=3,
                                shape=(3, 16, 16))
    assert corr.steps == [1, 2, 3, 5, 6, 7] and corr.meta["branch"] == 2
    assert all(f <= i + 1e-12 for f, i in zip(corr.meta["mse_fitted"], corr.meta["mse_identity"]))
    path = corr.save(tmp_path / "c.safetensors")
    back = CacheCorrection.load(path)
    assert back.steps == corr.steps and torch.equal(back.a, corr.a) and back.meta["T"] == 8
    cached = CachedUNet(unet, refresh_every=4, correction=back)
    assert cached.correction is back
    with pytest.raises(ConfigError, match="safetensors"):
        CacheCorrection.load(tmp_path / "missing.bin")
    with pytest.raises(ConfigError, match="a and b"):
        CacheCorrection([1, 2], torch.ones(1, 3), torch.ones(1, 3))
