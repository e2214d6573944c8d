"""Every injector of iec_theory.perturbations checked against its written definition."""

from __future__ import annotations

import math

import pytest
import torch

from iec_theory import IECConfig, NoiseSource, Schedule, StepSelection, sample
from iec_theory.errors import ConfigError
from iec_theory.perturbations import (
    Adversarial,
    AffineWeightActQuant,
    Bias,
    Cache,
    Compose,
    IIDNoise,
    MonotoneNonlinear,
    NonMonotoneNonlinear,
    OutputQuantization,
    Scale,
    StepLocalized,
    make_perturbation,
    quantize_symmetric,
)
from toy_models import GaussianToy

torch.set_num_threads(1)
D = 6
SCH = Schedule.linear()


@pytest.fixture(scope="module")
def toy() -> GaussianToy:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(D, D, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(A)
    var = torch.tensor([2.0, 1.0, 0.5, 0.1, 1e-2, 1e-3], dtype=torch.float64)
    return GaussianToy(torch.randn(D, generator=g, dtype=torch.float64), (Q * var) @ Q.T, SCH)


def _x(n: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _t(t: int, n: int = 5) -> torch.Tensor:
    return torch.full((n,), t, dtype=torch.long)


class Counting:
    """An eps model that records begin_step calls and evaluations."""

    def __init__(self, inner):
        self.inner = inner
        self.schedule = inner.schedule
        self.steps: list[tuple[int, int]] = []
        self.calls = 0

    def begin_step(self, i, t):
        self.steps.append((i, t))

    def __call__(self, x, t):
        self.calls += 1
        return self.inner(x, t)


def test_bias_definition(toy):
    x, t = _x(), _t(400)
    m = Bias(toy, magnitude=0.03)
    assert torch.allclose(m.error(x, t), torch.full_like(x, 0.03), atol=1e-15)
    v = torch.arange(D, dtype=torch.float64)
    assert torch.allclose(Bias(toy, vector=v).error(x, t), v.expand_as(x), atol=1e-14)
    r = Bias(toy, magnitude=0.5, direction="random", seed=3).error(x, t)
    assert torch.allclose(r.norm(dim=1), torch.full((5,), 0.5 * math.sqrt(D), dtype=torch.float64), rtol=1e-12)
    assert m.base is toy
    with pytest.raises(ConfigError):
        Bias(toy)


def test_scale_definition(toy):
    x, t = _x(), _t(700)
    e = Scale(toy, scale=-0.2).error(x, t)
    assert torch.allclose(e, -0.2 * toy(x, t), atol=1e-14)


def test_output_quantization_definition(toy):
    x, t = _x(50), _t(300, 50)
    m = OutputQuantization(toy, bits=5, range=1.5)
    out, ref = m(x, t), toy(x, t)
    delta = 3.0 / 31
    k = (out + 1.5) / delta
    assert torch.allclose(k, k.round(), atol=1e-9)                 # on the grid lo + k Delta
    inside = ref.abs() <= 1.5
    assert bool(((out - ref).abs()[inside] <= delta / 2 + 1e-12).all())   # round to nearest
    assert bool((out[~inside].abs() <= 1.5 + 1e-12).all())          # clamped
    assert m.delta == pytest.approx(delta)
    dyn = OutputQuantization(toy, bits=8, range="dynamic")(x, t)
    assert float((dyn - ref).abs().max()) <= (float(ref.max() - ref.min()) / 255) / 2 + 1e-12
    lohi = OutputQuantization(toy, bits=3, range=(-1.0, 3.0))(x, t)
    assert float(lohi.min()) >= -1.0 - 1e-12 and float(lohi.max()) <= 3.0 + 1e-12


def test_affine_weight_activation_quant_definition(toy):
    x, tv = _x(7), 250
    t = _t(tv, 7)
    C, c = toy.affine(tv)
    for wb, ab in ((4, 8), (8, 8)):
        m = AffineWeightActQuant(toy, w_bits=wb, a_bits=ab)
        qw = 2 ** (wb - 1) - 1
        sw = C.abs().amax(1, keepdim=True) / qw                         # per-row scale
        Cq = torch.clamp(torch.round(C / sw), -qw, qw) * sw
        qa = 2 ** (ab - 1) - 1
        sa = x.abs().max() / qa                                          # per-tensor scale
        xq = torch.clamp(torch.round(x / sa), -qa, qa) * sa
        expect = xq @ Cq.T + c
        assert torch.allclose(m(x, t), expect, atol=1e-12)
        assert torch.allclose(m.error(x, t), expect - (x @ C.T + c), atol=1e-12)
        Cm, _ = m.quantized_affine(tv)
        ints = Cm / sw
        assert torch.allclose(ints, ints.round(), atol=1e-9) and float(ints.abs().max()) <= qw + 1e-9
    e4 = AffineWeightActQuant(toy, 4, 8).error(x, t).norm()
    e8 = AffineWeightActQuant(toy, 8, 8).error(x, t).norm()
    assert e8 < e4
    assert float(AffineWeightActQuant(toy, None, None).error(x, t).abs().max()) < 1e-12
    assert torch.equal(quantize_symmetric(torch.zeros(3), 4, 0.0), torch.zeros(3))


def _drive(model, T, evals_per_step, xs):
    """Call begin_step(i, t) then evaluate `evals_per_step` times; returns outputs[i][j]."""
    outs = []
    for i in range(T):
        model.begin_step(i, 900 - 40 * i)
        row = []
        for j in range(evals_per_step):
            row.append(model(xs[i][j], _t(900 - 40 * i, xs[i][j].shape[0])))
        outs.append(row)
    return outs


def test_cache_refresh_rule_and_reuse(toy):
    T, N = 12, 5
    xs = [[_x(3, 100 * i + j) for j in range(2)] for i in range(T)]
    m = Cache(toy, every=N)
    outs = _drive(m, T, 2, xs)
    assert m.refresh_steps(T) == [i for i in range(T) if i % N == 0] == [0, 5, 10]
    last = None
    for i in range(T):
        for j in range(2):
            exact = toy(xs[i][j], _t(900 - 40 * i, 3))
            if i % N == 0:                      # every evaluation of a refresh step recomputes
                assert torch.allclose(outs[i][j], exact)
                last = exact
            else:                               # reuse the LAST computed eps (the IEC correction's)
                assert torch.allclose(outs[i][j], last)
    assert m.computed == 2 * 3 and m.reused == 2 * (T - 3)


def test_cache_nonuniform_and_x0_mode(toy):
    m = Cache(toy, refresh=[3, 4, 9])
    assert m.refresh_steps(12) == [0, 3, 4, 9]
    mx = Cache(toy, every=3, mode="x0")
    x0, x1 = _x(3, 1), _x(3, 2)
    mx.begin_step(0, 800)
    eps0 = mx(x0, _t(800, 3))
    mx.begin_step(1, 600)
    out = mx(x1, _t(600, 3))
    a8, a6 = SCH.abar(800), SCH.abar(600)
    x0hat = (x0 - math.sqrt(1 - a8) * eps0) / math.sqrt(a8)
    assert torch.allclose(out, (x1 - math.sqrt(a6) * x0hat) / math.sqrt(1 - a6), atol=1e-12)


def test_cache_in_sampler_with_iec_refreshes_on_corrections(toy):
    counting = Counting(toy)
    m = Cache(counting, every=5)
    T = 10
    iec = IECConfig.relaxed(0.5, 1, select=StepSelection.explicit(m.refresh_steps(T)))
    tr = sample(m, SCH, _x(2), T, iec=iec)
    assert tr.nfe == T + 2
    assert counting.calls == m.computed == 4          # 2 refresh steps x (plain + correction)
    assert [i for i, _ in counting.steps] == list(range(T))   # begin_step forwarded


def test_iid_noise_keyed_and_std(toy):
    x = torch.zeros(2000, D, dtype=torch.float64)
    t = _t(500, 2000)
    a, b = IIDNoise(toy, std=0.3, seed=4), IIDNoise(toy, std=0.3, seed=4)
    a.begin_step(2, 500)
    b.begin_step(2, 500)
    e1 = a.error(x, t)   # error() draws once for eps~ (the base is deterministic)
    assert torch.allclose(e1, b(x, t) - toy(x, t))
    assert abs(float(e1.std()) - 0.3) < 0.3 * 5 / math.sqrt(2 * e1.numel())
    assert abs(float(e1.mean())) < 0.3 * 5 / math.sqrt(e1.numel())
    e2 = a.error(x, t)
    assert not torch.allclose(e1, e2)   # a second call in the same step draws afresh
    a.begin_step(2, 500)
    assert torch.allclose(a.error(x, t), e1)   # same (step, call) -> same draw


def test_monotone_is_gradient_of_convex(toy):
    m = MonotoneNonlinear(toy, magnitude=0.4, length=0.7, seed=2)
    u, v = _x(200, 5) * 2, _x(200, 6) * 2
    t = _t(300, 200)
    du = m.error(u, t) - m.error(v, t)
    assert bool(((du * (u - v)).sum(1) >= -1e-12).all())
    xj = _x(1, 7).requires_grad_(True)
    J = torch.autograd.functional.jacobian(lambda z: m.error_fn(z)[0], xj)[:, 0, :]
    assert torch.allclose(J, J.T, atol=1e-12)
    ev = torch.linalg.eigvalsh(J)
    assert float(ev.min()) >= -1e-12 and float(ev.max()) <= m.lipschitz + 1e-12
    assert torch.allclose(m.error_fn(u), m.error(u, t), atol=1e-12)


def test_nonmonotone_has_negative_directions(toy):
    m = NonMonotoneNonlinear(toy, magnitude=0.4, length=0.3, seed=2)
    u, v = _x(400, 5) * 2, _x(400, 6) * 2
    t = _t(300, 400)
    inner = ((m.error(u, t) - m.error(v, t)) * (u - v)).sum(1)
    assert bool((inner < 0).any()) and bool((inner > 0).any())
    w = (m.error(u, t) @ m.W(D).T).abs()
    assert float(w.max()) <= 0.4 + 1e-12


def test_adversarial_top_eigvec(toy):
    tv = 600
    m = Adversarial(toy, magnitude=0.2)
    x, t = _x(3), _t(tv, 3)
    e = m.error(x, t)
    C, _ = toy.affine(tv)
    w, V = torch.linalg.eigh(C)
    top = V[:, -1]
    assert torch.allclose(e.norm(dim=1), torch.full((3,), 0.2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose((e @ top).abs(), torch.full((3,), 0.2, dtype=torch.float64), atol=1e-10)
    ts = SCH.timesteps(10)
    amp = Adversarial(toy, magnitude=1.0, target="amplified", timesteps=ts)
    t0 = ts[0]
    from iec_theory import step_coefficients
    k = step_coefficients(SCH, t0, ts[1])
    mu = toy.affine_eigvals(t0)
    j = int(torch.argmax((k.a + k.b * mu).abs()))
    v = amp.error(_x(1), _t(t0, 1))[0]
    assert float(abs(v @ toy.cov_eigvecs[:, j])) == pytest.approx(1.0, abs=1e-10)
    given = Adversarial(toy, magnitude=3.0, direction=[1.0] + [0.0] * (D - 1)).error(x, t)
    assert torch.allclose(given[:, 0], torch.full((3,), 3.0, dtype=torch.float64))
    assert float(given[:, 1:].abs().max()) == 0.0


def test_step_localized_and_compose(toy):
    inner = Bias(toy, magnitude=0.5)
    m = StepLocalized(toy, inner, steps=[1, 3])
    for i in range(5):
        m.begin_step(i, 500)
        e = m.error(_x(2), _t(500, 2))
        assert torch.allclose(e, torch.full_like(e, 0.5 if i in (1, 3) else 0.0))
    comp = Compose(toy, [{"kind": "affine_wa_quant", "w_bits": 4, "a_bits": 8}, {"kind": "cache", "every": 2}])
    manual = Cache(AffineWeightActQuant(toy, 4, 8), every=2)
    xs = [[_x(3, 10 * i + j) for j in range(2)] for i in range(5)]
    a, b = _drive(comp, 5, 2, xs), _drive(manual, 5, 2, xs)
    for i in range(5):
        for j in range(2):
            assert torch.allclose(a[i][j], b[i][j])
    chain = Compose(toy, [{"kind": "scale", "scale": 0.1}, {"kind": "bias", "magnitude": 0.01}])
    x, t = _x(), _t(100)
    assert torch.allclose(chain(x, t), 1.1 * toy(x, t) + 0.01)


def test_begin_step_forwarded_through_every_wrapper(toy):
    specs = [{"kind": "bias", "magnitude": 0.1}, {"kind": "scale", "scale": 0.1}, {"kind": "output_quant", "bits": 6},
             {"kind": "cache", "every": 3}, {"kind": "iid_noise", "std": 0.1}, {"kind": "monotone", "magnitude": 0.1},
             {"kind": "nonmonotone", "magnitude": 0.1},
             {"kind": "adversarial", "magnitude": 0.1, "direction": [1.0] * D},
             {"kind": "step_localized", "steps": [0], "inner": {"kind": "bias", "magnitude": 1.0}},
             {"kind": "compose", "layers": [{"kind": "scale", "scale": 0.1}, {"kind": "cache", "every": 2}]}]
    for spec in specs:
        base = Counting(toy)
        m = make_perturbation(spec, base)
        assert m.base is base
        sample(m, SCH, _x(2), 4, noise=NoiseSource(seed=0, keyed=True))
        assert [i for i, _ in base.steps] == [0, 1, 2, 3], spec["kind"]


def test_make_perturbation_errors_name_the_field(toy):
    with pytest.raises(ConfigError, match="perturbation.kind"):
        make_perturbation({"kind": "teleport"}, toy)
    with pytest.raises(ConfigError, match="perturbation.magnitud"):
        make_perturbation({"kind": "bias", "magnitud": 1.0}, toy)
    with pytest.raises(ConfigError, match="perturbation.scale"):
        make_perturbation({"kind": "scale"}, toy)
    with pytest.raises(ConfigError, match="bits"):
        make_perturbation({"kind": "output_quant", "bits": 1}, toy)
    with pytest.raises(ConfigError, match=r"compose.layers\[1\]"):
        make_perturbation({"kind": "compose", "layers": [{"kind": "scale", "scale": 0.1}, {"kind": "oops"}]}, toy)
    assert make_perturbation({"kind": "none"}, toy) is toy
    assert make_perturbation(None, toy) is toy
