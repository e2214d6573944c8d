"""Fake quantization (real_models.quant): quantizer round trips and error limits on known tensors,
W4 vs W8, MSE vs min-max scales, activation calibration ranges, the quantized eps model, bad inputs."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from iec_theory import ConfigError, Schedule, sample
from real_models.quant import (
    ActQuantizer,
    Calibration,
    QuantConfig,
    QuantLayer,
    act_params,
    fake_quant_weight,
    quantize_model,
    weight_scales,
)

torch.set_num_threads(1)


def tiny_unet(attention: bool = True, seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    down = ("DownBlock2D", "AttnDownBlock2D") if attention else ("DownBlock2D", "DownBlock2D")
    up = ("AttnUpBlock2D", "UpBlock2D") if attention else ("UpBlock2D", "UpBlock2D")
    return UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                       layers_per_block=1, down_block_types=down, up_block_types=up, norm_num_groups=8).eval()


class TwoLayer(nn.Module):
    """net(x, t): conv -> relu -> global mean -> linear; input ranges are easy to compute by hand."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x + self.fc(self.hidden(x))[:, :, None, None]


# ----- weight quantizer ---------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 3, 4, 8, 16])
def test_weight_round_trip_on_grid_is_exact(bits):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(6, 5, 3, 3, generator=g)
    scale, _ = weight_scales(w, bits, "minmax")
    q = 2 ** (bits - 1) - 1
    ints = torch.randint(-q, q + 1, w.shape, generator=g).float()
    grid = ints * scale.reshape(-1, 1, 1, 1)
    assert torch.equal(fake_quant_weight(grid, scale, bits), grid)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weight_error_at_most_half_a_step_in_range(bits):
    g = torch.Generator().manual_seed(10 + bits)
    w = torch.randn(8, 40, generator=g) * torch.linspace(0.1, 3.0, 8)[:, None]
    scale, ratios = weight_scales(w, bits, "minmax")
    assert torch.all(ratios == 1.0)
    err = (fake_quant_weight(w, scale, bits) - w).abs()
    assert torch.all(err <= scale[:, None] / 2 * (1 + 1e-6))
    # the channel maxima are on the grid
    assert torch.allclose(fake_quant_weight(w, scale, bits).abs().amax(1), w.abs().amax(1), rtol=1e-6)


def test_weight_quantization_of_a_known_tensor():
    w = torch.tensor([[0.0, 0.3, -1.0, 0.74], [2.0, -0.5, 0.26, 1.2]])
    scale, _ = weight_scales(w, 2, "minmax")             # q = 1: levels {-s, 0, s}, s = max|w|
    assert torch.allclose(scale, torch.tensor([1.0, 2.0]))
    assert torch.equal(fake_quant_weight(w, scale, 2), torch.tensor([[0.0, 0.0, -1.0, 1.0], [2.0, 0.0, 0.0, 2.0]]))
    scale3, _ = weight_scales(w, 3, "minmax")            # q = 3: s = max|w| / 3
    out = fake_quant_weight(w, scale3, 3)
    expect = torch.tensor([[0.0, 1 / 3, -1.0, 2 / 3], [2.0, -2 / 3, 0.0, 4 / 3]])
    assert torch.allclose(out, expect, atol=1e-6)
    # a zero channel stays zero
    z = torch.zeros(2, 3)
    s0, _ = weight_scales(z, 4, "mse", grid=10)
    assert torch.equal(fake_quant_weight(z, s0, 4), z)


def test_w4_error_exceeds_w8_error():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(16, 8, 3, 3, generator=g)
    errs = {}
    for bits in (4, 8):
        for method in ("minmax", "mse"):
            s, _ = weight_scales(w, bits, method, grid=50)
            errs[bits, method] = float((fake_quant_weight(w, s, bits) - w).norm() / w.norm())
    for method in ("minmax", "mse"):
        assert errs[4, method] > 4 * errs[8, method]
    # on a network: every layer's relative weight error is larger at W4 than at W8
    unet = tiny_unet(attention=True)
    r4 = quantize_model(unet, config=QuantConfig(w_bits=4, a_bits=None)).report
    r8 = quantize_model(unet, config=QuantConfig(w_bits=8, a_bits=None)).report
    assert [a.name for a in r4.layers] == [b.name for b in r8.layers]
    assert all(a.weight_rel_err > b.weight_rel_err for a, b in zip(r4.layers, r8.layers))


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_mse_scale_search_never_worse_than_minmax(bits):
    g = torch.Generator().manual_seed(bits)
    # heavy tails: min-max scales are dominated by outliers, the search clips them
    w = torch.randn(12, 64, generator=g) ** 3
    s_mm, _ = weight_scales(w, bits, "minmax")
    s_mse, ratios = weight_scales(w, bits, "mse", grid=60)
    e_mm = (fake_quant_weight(w, s_mm, bits) - w).pow(2).sum(1)
    e_mse = (fake_quant_weight(w, s_mse, bits) - w).pow(2).sum(1)
    assert torch.all(e_mse <= e_mm)
    if bits <= 4:   # at low bit widths clipping the outliers pays off
        assert float(e_mse.sum()) < 0.97 * float(e_mm.sum())
    assert torch.all((ratios > 0) & (ratios <= 1))


# ----- activation quantizer -----------------------------------------------------------------------
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [4, 8, 16])
def test_activation_round_trip_and_half_step_error(bits, symmetric):
    p = act_params(-1.3, 3.1, bits, symmetric)
    q = torch.arange(p.qmin, p.qmax + 1, dtype=torch.float32)
    grid = (q - p.zero_point) * p.scale
    assert torch.equal(p.apply(grid), grid)
    x = torch.linspace(-1.3, 3.1, 5001)
    slack = 1e-6   # float32 rounding of x / scale
    assert torch.all((p.apply(x) - x).abs() <= p.scale / 2 + slack)
    assert float(p.apply(torch.zeros(3)).abs().max()) == 0.0   # zero is exactly representable
    big = p.apply(torch.tensor([100.0, -100.0]))                # clamped to the range (+ half a step)
    hi, lo = (3.1, -3.1) if symmetric else (3.1, -1.3)
    assert float(big[0]) <= hi + p.scale / 2 + slack and float(big[1]) >= lo - p.scale / 2 - slack


def test_activation_params_of_a_known_range():
    p = act_params(0.0, 2.55, 8, symmetric=False)
    assert p.zero_point == 0 and p.qmin == 0 and p.qmax == 255
    assert p.scale == pytest.approx(0.01)
    assert torch.allclose(p.apply(torch.tensor([0.004, 0.006, 1.234])), torch.tensor([0.0, 0.01, 1.23]), atol=1e-6)
    s = act_params(-0.5, 1.27, 8, symmetric=True)
    assert (s.qmin, s.qmax, s.zero_point) == (-127, 127, 0) and s.scale == pytest.approx(0.01)


def test_activation_calibration_records_the_input_ranges():
    net = TwoLayer()
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(2, 3, 6, 6, generator=g) * (1 + k) for k in range(3)]
    inputs = [(x, torch.full((2,), 10 * k), k) for k, x in enumerate(xs)]
    qm = quantize_model(net, "W8A8", calibration=inputs, per_timestep=True)
    layers = qm.quant_layers()
    conv_act, fc_act = layers["conv"].act, layers["fc"].act
    allx = torch.cat([x.flatten() for x in xs])
    assert conv_act.observed == (float(allx.min()), float(allx.max()))
    with torch.no_grad():
        hid = torch.cat([net.hidden(x).flatten() for x in xs])
    assert fc_act.observed == pytest.approx((float(hid.min()), float(hid.max())), rel=1e-6)
    for k, x in enumerate(xs):
        assert conv_act.observed_step(k) == (float(x.min()), float(x.max()))
        t_k, params = conv_act.step_params[k]
        assert t_k == 10 * k
        assert params.scale == pytest.approx((float(x.max()) - min(float(x.min()), 0.0)) / 255, rel=1e-6)
    # the global scale covers the union of the ranges
    assert conv_act.params.scale == pytest.approx((float(allx.max()) - float(allx.min())) / 255, rel=1e-6)
    # a step that was not calibrated is an error, not a silent fallback
    qm.begin_step(7, 70)
    with pytest.raises(ConfigError, match="per-timestep"):
        qm(xs[0], torch.full((2,), 70))
    qm.begin_step(1, 10)
    out = qm(xs[1], torch.full((2,), 10))
    assert out.shape == xs[1].shape


def test_activation_mse_search_clips_outliers():
    aq = ActQuantizer(4, method="mse", grid=40)
    aq.mode = "calibrate"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g)
    x[0] = 40.0
    aq(x)
    aq.finalize()
    mm = act_params(*aq.observed, 4, False)
    aq.mode = "quant"
    assert aq.params.hi < 40.0
    assert float((aq(x) - x).pow(2).sum()) < float((mm.apply(x) - x).pow(2).sum())


# ----- the quantized network ----------------------------------------------------------------------
def test_quantize_model_returns_a_copy_and_an_eps_model():
    unet = tiny_unet(attention=True)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    sched = Schedule.linear()
    qm = quantize_model(unet, "W8A8", Calibration(sched, T=4, trajectories=1, batch_size=2, report_evals=3))
    assert not any(isinstance(m, QuantLayer) for m in unet.modules())
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())
    n_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in unet.modules())
    rep = qm.report
    assert len(rep.layers) == n_layers == len(qm.quant_layers())
    assert rep.calibration_evals == 4 and rep.replayed_evals == 3
    assert all(r.act_rel_err is not None and 0 < r.act_rel_err < 0.1 for r in rep.layers)
    assert all(0 < r.weight_rel_err < 0.02 for r in rep.layers)
    assert rep.eps_rel_err is not None and 0 < rep.eps_rel_err < 1.0
    assert "eps relative error" in rep.format() and rep.to_dict()["layers"][0]["name"] == "conv_in"
    # quantized != FP, but close; the sampler accepts it
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.full((2,), 500)
    with torch.no_grad():
        ref = unet(x, t).sample
    out = qm(x, t)
    assert not torch.equal(out, ref)
    assert float((out - ref).norm() / ref.norm()) < 0.5   # a random network amplifies 8-bit noise
    traj = sample(qm, sched, x, 3)
    assert traj.nfe == 3 and torch.isfinite(traj.x0).all()
    # switching quantization off gives the FP network back exactly
    qm.set_mode(weights=False, acts=False)
    assert torch.equal(qm(x, t), ref)


def test_weight_only_w8_is_close_and_w4a8_is_worse_than_w8a8():
    unet = tiny_unet(attention=False)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    t = torch.full((2,), 300)
    inputs = [(x, t)]
    with torch.no_grad():
        ref = unet(x, t).sample
    w8 = quantize_model(unet, config=QuantConfig(w_bits=8, a_bits=None))
    assert float((w8(x, t) - ref).norm() / ref.norm()) < 0.02
    e = {}
    for preset in ("W8A8", "W4A8"):
        e[preset] = float((quantize_model(unet, preset, inputs)(x, t) - ref).norm() / ref.norm())
    assert e["W4A8"] > e["W8A8"] > 0


def test_skip_patterns_keep_layers_in_full_precision():
    unet = tiny_unet(attention=False)
    qm = quantize_model(unet, config=QuantConfig(w_bits=4, a_bits=None, skip=("conv_in", "conv_out")))
    names = set(qm.quant_layers())
    assert "conv_in" not in names and "conv_out" not in names and "down_blocks.0.resnets.0.conv1" in names
    # an eps adapter holding the UNet as .unet (like real_models.unet.UNetEpsModel) is unwrapped
    adapter = types.SimpleNamespace(unet=unet)
    assert len(quantize_model(adapter, config=QuantConfig(a_bits=None)).quant_layers()) == len(names) + 2


@pytest.mark.parametrize("bits", [1, 0, -4, 17, 32, 4.0, 8.5, True, "8"])
def test_bad_bits_raise(bits):
    with pytest.raises(ConfigError, match="w_bits"):
        QuantConfig(w_bits=bits)
    with pytest.raises(ConfigError, match="a_bits"):
        QuantConfig(w_bits=8, a_bits=bits)


def test_bad_inputs_raise():
    unet = tiny_unet(attention=False)
    with pytest.raises(ConfigError, match="w_bits"):
        QuantConfig(w_bits=None)
    with pytest.raises(ConfigError, match="preset"):
        quantize_model(unet, "W3A3")
    with pytest.raises(ConfigError, match="calibration"):
        quantize_model(unet, "W8A8")                     # activations need calibration
    with pytest.raises(ConfigError, match="unknown QuantConfig field"):
        quantize_model(unet, "W8A8", [(torch.zeros(1, 3, 16, 16), 5)], wbits=4)
    with pytest.raises(ConfigError, match="w_bits"):
        quantize_model(unet, "W8A8", [(torch.zeros(1, 3, 16, 16), 5)], w_bits=1)
    with pytest.raises(ConfigError, match="no nn.Conv2d"):
        quantize_model(nn.Sequential(nn.ReLU()), config=QuantConfig(a_bits=None))
    with pytest.raises(ConfigError, match="w_method"):
        QuantConfig(w_method="percentile")
    with pytest.raises(ConfigError, match="bits"):
        weight_scales(torch.ones(2, 2), 1)
    with pytest.raises(ConfigError):
        Calibration(Schedule.linear(), trajectories=0)
    aq = ActQuantizer(8)
    aq.mode = "quant"
    with pytest.raises(ConfigError, match="not calibrated"):
        aq(torch.ones(3))
