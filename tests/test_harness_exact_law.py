"""Exact output law of affine samplers vs the sampler itself.

eta = 0: the sampler is an affine map x_T -> M x_T + v, so running it on x_T = 0 and x_T = e_j gives v and
M exactly; the law N(v, M M^T) must match the propagated mean/covariance to 1e-10 (float64 rounding).
eta > 0: Monte Carlo with n samples; stated error: every mean coordinate within 5 standard errors
(sqrt(C_ii / n)) and every covariance entry within 5 standard errors (sqrt((C_ii C_jj + C_ij^2) / n)).
"""

from __future__ import annotations

import math

import pytest
import torch

from iec_theory import IECConfig, NoiseSource, Schedule, StepSelection, sample
from iec_theory.baselines import heun, repeat
from iec_theory.errors import ConfigError
from iec_theory.exact_law import exact_output_law, kl_diag, kl_gaussian, law_distances, w2_diag, w2_gaussian
from iec_theory.perturbations import make_perturbation
from toy_models import GaussianToy

torch.set_num_threads(1)
SCH = Schedule.linear()
D = 4
VAR = torch.tensor([1.0, 0.2, 0.01, 1e-4], dtype=torch.float64)
MEAN = torch.tensor([0.5, -1.0, 2.0, 0.1], dtype=torch.float64)


def _full() -> GaussianToy:
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    return GaussianToy(MEAN, (Q * VAR) @ Q.T, SCH)


TOYS = {"full": _full(), "diag": GaussianToy.diagonal(MEAN, VAR, SCH)}
SPECS = {
    "exact": None,
    "bias": {"kind": "bias", "magnitude": 0.05, "direction": "random"},
    "scale": {"kind": "scale", "scale": 0.3},
    "cache_eps": {"kind": "cache", "every": 3},
    "cache_x0_list": {"kind": "cache", "refresh": [2, 5], "mode": "x0"},
    "wquant": {"kind": "affine_wa_quant", "w_bits": 4, "a_bits": "none"},
    "adversarial": {"kind": "adversarial", "magnitude": 0.1},
    "localized": {"kind": "step_localized", "steps": [1, 4], "inner": {"kind": "bias", "magnitude": 0.2}},
    "compose": {"kind": "compose", "layers": [{"kind": "affine_wa_quant", "w_bits": 4, "a_bits": "none"},
                                               {"kind": "cache", "every": 2}]},
}
SCHEMES = {
    "ddim": ("ddim", None),
    "iec_ldm": ("ddim", IECConfig(2, (1.0, 0.5), 0.0)),
    "iec_every3": ("ddim", IECConfig.relaxed(0.7, 2, select=StepSelection.every(3))),
    "heun": ("heun", None),
    "repeat": ("repeat", IECConfig.relaxed(0.5, 2)),
}


def _probe(run) -> tuple[torch.Tensor, torch.Tensor]:
    X = torch.cat([torch.zeros(1, D, dtype=torch.float64), torch.eye(D, dtype=torch.float64)])
    out = run(X)
    v = out[0]
    M = (out[1:] - v).T
    return v, M @ M.T


@pytest.mark.parametrize("toy_name", list(TOYS))
@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("scheme_name", list(SCHEMES))
def test_exact_law_matches_affine_probe_eta0(toy_name, spec_name, scheme_name):
    toy, spec = TOYS[toy_name], SPECS[spec_name]
    scheme, iec = SCHEMES[scheme_name]
    for method in ("auto", "dense"):
        model = make_perturbation(spec, toy)
        law = exact_output_law(model, SCH, 8, 0.0, iec, scheme=scheme, method=method)

        def run(X, model=model):
            if hasattr(model, "reset"):
                model.reset()
            if scheme == "heun":
                return heun(model, SCH, X, 8).x0
            if scheme == "repeat":
                return repeat(model, SCH, X, 8, 0.0, iec).x0
            return sample(model, SCH, X, 8, 0.0, iec).x0

        v, C = _probe(run)
        assert torch.allclose(law.mean_original(), v, atol=1e-10, rtol=0), (method, law.path)
        assert torch.allclose(law.cov_dense(), C, atol=1e-10, rtol=0), (method, law.path)
        if scheme == "ddim":
            ref = sample(make_perturbation(spec, toy), SCH, torch.zeros(1, D, dtype=torch.float64), 8, 0.0, iec)
            assert law.nfe == ref.nfe


def _mc_check(law, x0: torch.Tensor, z: float = 5.0) -> None:
    n = x0.shape[0]
    mean, C = law.mean_original(), law.cov_dense()
    se_m = (torch.diagonal(C) / n).sqrt()
    assert float(((x0.mean(0) - mean).abs() / se_m).max()) < z
    dg = torch.diagonal(C)
    se_c = ((torch.outer(dg, dg) + C**2) / n).sqrt()
    assert float(((torch.cov(x0.T) - C).abs() / se_c).max()) < z


@pytest.mark.parametrize("case", [
    ("full", "exact", 1.0, IECConfig(1, (0.5,), 0.0, "fresh")),
    ("full", "cache_eps", 0.7, IECConfig.relaxed(0.5, 1, noise="fresh")),
    ("full", "wquant", 1.0, IECConfig.relaxed(0.8, 2, noise="shared")),
    ("diag", "compose", 0.5, IECConfig(2, (1.0, 0.5), 0.0, "fresh")),
    ("full", "iid", 0.0, IECConfig.relaxed(0.5, 1)),
    ("diag", "iid", 1.0, None),
])
def test_exact_law_matches_monte_carlo_eta_positive(case):
    toy_name, spec_name, eta, iec = case
    toy = TOYS[toy_name]
    spec = {"kind": "iid_noise", "std": 0.2} if spec_name == "iid" else SPECS[spec_name]
    law = exact_output_law(make_perturbation(spec, toy), SCH, 10, eta, iec)
    n = 4000
    xT = torch.randn(n, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = make_perturbation(spec, toy)
    x0 = sample(model, SCH, xT, 10, eta, iec, generator=torch.Generator().manual_seed(2)).x0
    _mc_check(law, x0)


def test_diag_grouping_and_eigenbasis_paths_agree():
    var = torch.tensor([0.5, 0.01, 0.5, 0.01, 0.5, 1.0], dtype=torch.float64)
    mean = torch.tensor([0.0, 1.0, -1.0, 0.0, 0.0, 2.0], dtype=torch.float64)
    toy = GaussianToy.diagonal(mean, var, SCH)
    spec = {"kind": "bias", "vector": [0.1, -0.2, 0.3, 0.0, 0.05, 0.0]}
    iec = IECConfig.official_ldm()
    a = exact_output_law(make_perturbation(spec, toy), SCH, 12, 0.5, iec, group=True)
    b = exact_output_law(make_perturbation(spec, toy), SCH, 12, 0.5, iec, group=False, chunk=4)
    c = exact_output_law(make_perturbation(spec, toy), SCH, 12, 0.5, iec, method="dense")
    assert a.groups == 3 and b.groups == 6
    assert torch.allclose(a.mean, b.mean, atol=1e-12) and torch.allclose(a.var, b.var, atol=1e-12)
    assert torch.allclose(a.cov_dense(), c.cov, atol=1e-10) and torch.allclose(a.mean, c.mean, atol=1e-10)
    cached = {"kind": "cache", "every": 3}
    e = exact_output_law(make_perturbation(cached, toy), SCH, 12, 0.5, iec, group=False, chunk=1, keep_steps=True)
    f = exact_output_law(make_perturbation(cached, toy), SCH, 12, 0.5, iec, keep_steps=True)
    assert torch.allclose(e.steps_mean, f.steps_mean, atol=1e-12) and torch.allclose(e.steps_var, f.steps_var)
    steps = exact_output_law(toy, SCH, 12, keep_steps=True)
    assert steps.steps_mean.shape == (13, 6) and torch.allclose(steps.steps_var[0], torch.ones(6, dtype=torch.float64))
    assert torch.allclose(steps.steps_var[-1], steps.var)


def test_gaussian_distances_closed_forms():
    m1, m2 = torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([1.0, 1.0], dtype=torch.float64)
    v1, v2 = torch.tensor([1.0, 4.0], dtype=torch.float64), torch.tensor([4.0, 4.0], dtype=torch.float64)
    assert w2_diag(m1, v1, m2, v2) == pytest.approx(math.sqrt(1 + 1))
    assert w2_gaussian(m1, torch.diag(v1), m2, torch.diag(v2)) == pytest.approx(math.sqrt(2), abs=1e-12)
    kl = 0.5 * ((0.25 + 0.25 - 1 - math.log(0.25)) + 0)
    assert kl_diag(m1, v1, m2, v2) == pytest.approx(kl)
    assert kl_gaussian(m1, torch.diag(v1), m2, torch.diag(v2)) == pytest.approx(kl, abs=1e-12)
    toy = TOYS["full"]
    law = exact_output_law(toy, SCH, 1000)          # fine discretization: close to the data law
    dist = law_distances(law, toy)
    assert dist["w2"] < 0.02 and dist["kl"] >= 0


def test_exact_law_rejects_nonaffine_and_dense_requirement():
    toy = TOYS["full"]
    for spec in ({"kind": "output_quant", "bits": 4}, {"kind": "monotone", "magnitude": 0.1},
                 {"kind": "affine_wa_quant", "w_bits": 4, "a_bits": 8}):
        with pytest.raises(ConfigError):
            exact_output_law(make_perturbation(spec, toy), SCH, 5)
    with pytest.raises(ConfigError, match="dense"):
        exact_output_law(make_perturbation(SPECS["wquant"], toy), SCH, 5, method="diag")
    law = exact_output_law(toy, SCH, 5, iec=IECConfig.official_ddpm())
    assert law.tol_ignored and law.nfe == 10


def test_noise_source_keyed_paired_law():
    """Keyed noise gives identical draws for two runs: paired MC errors are exactly reproducible."""
    toy = TOYS["diag"]
    xT = torch.randn(3, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = sample(toy, SCH, xT, 6, 1.0, noise=NoiseSource(seed=3, keyed=True)).x0
    b = sample(toy, SCH, xT, 6, 1.0, noise=NoiseSource(seed=3, keyed=True)).x0
    assert torch.equal(a, b)


@pytest.mark.parametrize("iec", [None, IECConfig.official_ddpm(), IECConfig.official_ldm(), IECConfig.relaxed(0.1, 4),
                                 IECConfig.relaxed(1.5, 3, select=StepSelection.every(3))])
@pytest.mark.parametrize("scale", [0.0, 2.0])
def test_product_form_fast_path_matches_general_path(iec, scale):
    gen = torch.Generator().manual_seed(5)
    var = torch.cat([torch.rand(40, generator=gen, dtype=torch.float64) + 1e-4,
                     10 ** (8 * torch.rand(40, generator=gen, dtype=torch.float64) - 6)])
    mean = torch.zeros(80, dtype=torch.float64) if iec is not None else torch.randn(80, generator=gen,
                                                                                     dtype=torch.float64)
    toy = GaussianToy.diagonal(mean, var, SCH)
    model = make_perturbation({"kind": "scale", "scale": scale} if scale else None, toy)
    for T in (5, 50, 1000):
        a = exact_output_law(model, SCH, T, 0.0, iec, fast="always", chunk=32)
        b = exact_output_law(model, SCH, T, 0.0, iec, fast="never", group=False)
        assert a.info.get("fast") == "product_form" and a.nfe == b.nfe
        assert torch.allclose(a.var, b.var, rtol=1e-8, atol=0)
        assert torch.allclose(a.mean, b.mean, rtol=1e-8, atol=1e-12)
    with pytest.raises(ConfigError, match="fast path"):
        exact_output_law(model, SCH, 5, 0.5, iec, fast="always")
