"""What J means for quantized and cached networks (PAPER.md H2), and the S1 / S5 per-step formulas.

References: the models' own forward passes (`QuantizedModel`, `CachedUNet` as run by the sampler), exact zero
derivatives of rounding, and an affine toy error for which first order is exact (S1 residual = 0).
"""

from __future__ import annotations

import torch

from iec_theory.evidence.linalg import Linearization
from iec_theory.evidence.models import Probe, pure_fn
from iec_theory.sampler import sample
from iec_theory.schedules import Schedule

torch.set_num_threads(1)


def _tiny_unet(size: int = 8):
    from real_models.unet import build_unet, tiny_config

    cfg = tiny_config()
    cfg["sample_size"] = size
    torch.manual_seed(0)
    unet = build_unet(cfg).eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    return unet


def test_quantized_pure_fn_is_the_model_and_ste_gives_nonzero_jacobian():
    from real_models.quant import quantize_model

    unet = _tiny_unet()
    g = torch.Generator().manual_seed(1)
    calib = [(torch.randn(2, 3, 8, 8, generator=g), torch.full((2,), t, dtype=torch.long)) for t in (900, 500, 100)]
    qm = quantize_model(unet, "W8A8", calibration=calib)
    x = torch.randn(1, 3, 8, 8, generator=g)
    t = 500
    f, what = pure_fn(qm, 0, t)
    assert "straight-through" in what
    ref = qm(x, torch.full((1,), t, dtype=torch.long))
    assert torch.allclose(f(x), ref, atol=1e-5)
    v = torch.randn(1, 3, 8, 8, generator=g)
    assert float(Linearization(f, x).jvp(v).abs().max()) > 1e-3
    # without the STE the input quantizer's rounding has derivative 0: the true Jacobian vanishes a.e.

    def f_raw(z):
        return qm.net(z, torch.full((1,), t, dtype=torch.long), return_dict=False)[0]
    assert float(Linearization(f_raw, x).jvp(v).abs().max()) == 0.0


def test_cached_pure_fn_reproduces_the_sampler_evaluations():
    from real_models.cache import CachedUNet

    unet = _tiny_unet()
    cached = CachedUNet(unet, refresh_every=3, refresh_all_evals=True)
    sched = Schedule.linear()
    seen: dict[int, torch.Tensor] = {}
    outs: dict[int, torch.Tensor] = {}

    class Rec:
        def __init__(self, inner):
            self.inner, self.step = inner, None

        def begin_step(self, i, t):
            self.inner.begin_step(i, t)
            self.step = i

        def __call__(self, x, tt):
            y = self.inner(x, tt)
            outs.setdefault(self.step, y.clone())
            return y

    def hook(i, t, x, model):
        f, what = pure_fn(model.inner, i, t)
        assert ("reuse" in what) == (i % 3 != 0)
        seen[i] = f(x).detach()

    x_T = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        sample(Probe(Rec(cached), hook), sched, x_T, 7, eta=0.0)
    assert sorted(seen) == list(range(7))
    for i in range(7):
        assert torch.allclose(seen[i], outs[i], atol=1e-5), i


def test_s1_residual_is_zero_for_affine_error_and_grows_with_nonlinear_size():
    from iec_theory.evidence.perstep import LinalgPlan
    from iec_theory.evidence.runner import run_setting
    from iec_theory.evidence.toy import toy_var100
    from iec_theory.perturbations import Bias, NonMonotoneNonlinear

    toy = toy_var100()
    ts = toy.schedule.timesteps(25)
    x_T = torch.randn(1, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    plan = LinalgPlan()

    def med(make):
        r = run_setting("t", toy, make, toy.schedule, x_T, ts, (), plan, None, s2=True)
        v = sorted(x["s1_residual"] for x in r.steps if x.get("s1_residual") is not None)
        return v[len(v) // 2], r

    bias, r = med(lambda: Bias(toy, 0.1))
    assert bias < 1e-10                                           # first order is exact for affine eps~
    assert r.s2["rel_error_correct_order"] < 1e-10                # and so is the unrolled sum (S2)
    small, _ = med(lambda: NonMonotoneNonlinear(toy, 0.01, 1.0, seed=1))
    large, _ = med(lambda: NonMonotoneNonlinear(toy, 0.3, 1.0, seed=1))
    assert 1e-12 < small < large                                  # the remainder grows with the error size


def test_s5_per_step_inequality_on_the_toy_and_incoming_part():
    from iec_theory.evidence.perstep import LinalgPlan
    from iec_theory.evidence.runner import run_setting
    from iec_theory.evidence.toy import toy_var100
    from iec_theory.iec import IECConfig
    from iec_theory.perturbations import MonotoneNonlinear

    toy = toy_var100()
    ts = toy.schedule.timesteps(20)
    x_T = torch.randn(1, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    plan = LinalgPlan((0.5,), power_iter=200, power_tol=1e-10, lanczos_m=3, direct_lambdas=(0.5,))
    r = run_setting("t", toy, lambda: MonotoneNonlinear(toy, 0.05, 1.0, seed=2), toy.schedule, x_T, ts,
                    range(len(ts)), plan, IECConfig.relaxed(0.5, 2), s2=False)
    from iec_theory.ddim import step_coefficients

    assert len(r.s5) == len(ts)
    for i, row in enumerate(r.s5):
        assert row["deltaK"] <= row["bound"] * (1 + 1e-9)       # the PAPER.md S5 per-step inequality
        k = step_coefficients(toy.schedule, ts[i], ts[i + 1] if i + 1 < len(ts) else -1)
        assert abs(row["C_incoming"] - 0.5 * k.a * row["delta_in"]) <= 1e-12 * max(row["C_incoming"], 1.0)
        assert row["C"] <= row["C_incoming"] + row["C_rest"] + 1e-12  # triangle inequality of the split
    assert max(row["incoming_fraction"] for row in r.s5[1:]) > 0.5   # the incoming error dominates C here
