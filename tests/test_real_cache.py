"""DeepCache-style caching (real_models.cache) and IEC on cached / quantized UNets.

* at refresh steps the cached UNet is bitwise the full UNet2DModel forward;
* in between, the deep path is not run (counted with hooks) and the result equals the full forward
  with the last up block's input replaced by the cached hidden state;
* iec_theory.sample with IECConfig.official_ddpm() equals a literal re-implementation, written here,
  of the official loop (deepcache_denoising.adaptive_generalized_steps_3 semantics).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iec_theory import ConfigError, IECConfig, Schedule, StepSelection, sample
from real_models.cache import CachedUNet, refresh_steps_for
from real_models.quant import Calibration, quantize_model

torch.set_num_threads(1)


def tiny_unet(attention: bool = True, seed: int = 0, lpb: int = 1):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    down = ("DownBlock2D", "AttnDownBlock2D") if attention else ("DownBlock2D", "DownBlock2D")
    up = ("AttnUpBlock2D", "UpBlock2D") if attention else ("UpBlock2D", "UpBlock2D")
    return UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                       layers_per_block=lpb, down_block_types=down, up_block_types=up, norm_num_groups=8).eval()


def three_level_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(4)
    return UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32, 32),
                       layers_per_block=2, down_block_types=("AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D"), norm_num_groups=8).eval()


def skip_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(6)
    return UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"),
                       up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"), norm_num_groups=8).eval()


class FullEps:
    """The plain (uncached) UNet as an eps_model."""

    def __init__(self, unet):
        self.unet = unet

    @torch.no_grad()
    def __call__(self, x, t):
        return self.unet(x, t).sample


def count_calls(module):
    box = {"n": 0}

    def hook(_m, _inp, _out):
        box["n"] += 1

    handle = module.register_forward_hook(hook)
    return box, handle


# ----- exactness and reuse ------------------------------------------------------------------------
@pytest.mark.parametrize("make,branch", [(lambda: tiny_unet(False), 2), (lambda: tiny_unet(True), 2),
                                         (lambda: tiny_unet(True, lpb=2), 2), (three_level_unet, 2),
                                         (lambda: tiny_unet(True, lpb=2), 1), (three_level_unet, 1), (skip_unet, 1)])
def test_refresh_evaluation_equals_the_full_unet_bitwise(make, branch):
    unet = make()
    cached = CachedUNet(unet, refresh_every=3, branch=branch)
    g = torch.Generator().manual_seed(0)
    for t in (999, 500, 3):
        x = torch.randn(2, 3, 16, 16, generator=g)
        tt = torch.full((2,), t)
        with torch.no_grad():
            ref = unet(x, tt).sample
        assert torch.equal(cached.evaluate(x, tt, refresh=True), ref)
    # a scalar / 0-d timestep is broadcast like UNet2DModel.forward does
    with torch.no_grad():
        assert torch.equal(cached.evaluate(x, 17, refresh=True), unet(x, 17).sample)
        assert torch.equal(cached.evaluate(x, torch.tensor(17), refresh=True), unet(x, torch.tensor(17)).sample)


def test_refresh_every_step_reproduces_the_uncached_trajectory_exactly():
    unet = tiny_unet(True)
    sched = Schedule.linear()
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ref = sample(FullEps(unet), sched, x_T, 5, iec=IECConfig.official_ddpm())
    out = sample(CachedUNet(unet, refresh_every=1), sched, x_T, 5, iec=IECConfig.official_ddpm())
    assert torch.equal(out.xs, ref.xs) and out.nfe == ref.nfe


@pytest.mark.parametrize("make", [lambda: tiny_unet(True), three_level_unet, skip_unet])
def test_branch1_reuse_equals_full_forward_with_the_cached_deep_feature(make):
    unet = make()
    last = unet.up_blocks[-1]
    g = torch.Generator().manual_seed(2)
    x1, x2 = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 16, 16, generator=g)
    t1, t2 = torch.full((2,), 600), torch.full((2,), 540)
    grabbed = {}

    def grab(_m, args):   # the hidden state (and, for skip UNets, the up-path skip sample) entering it
        grabbed["h"] = args[0]
        grabbed["skip"] = args[3] if len(args) > 3 else None

    h = last.register_forward_pre_hook(grab)
    with torch.no_grad():
        unet(x1, t1)
    h.remove()

    def swap(_m, args):
        if len(args) > 3:
            return (grabbed["h"], args[1], args[2], grabbed["skip"], *args[4:])
        return (grabbed["h"], *args[1:])

    h = last.register_forward_pre_hook(swap)
    with torch.no_grad():
        expect = unet(x2, t2).sample
    h.remove()

    cached = CachedUNet(unet, refresh_every=4, branch=1)
    cached.evaluate(x1, t1, refresh=True)
    deep, hd = count_calls(unet.mid_block)
    out = cached.evaluate(x2, t2, refresh=False)
    hd.remove()
    assert deep["n"] == 0                                # the deep path did not run
    assert torch.equal(out, expect)
    with torch.no_grad():
        full = unet(x2, t2).sample
    assert not torch.allclose(out, full, atol=1e-4)      # reuse is real: it differs from a full forward
    assert cached.stats.reuses == 1 and cached.stats.deep_calls == 1


@pytest.mark.parametrize("make", [lambda: tiny_unet(True), three_level_unet])
def test_branch2_reuse_equals_full_forward_with_the_cached_feature_at_the_last_resnet_of_up_blocks_m2(make):
    """Branch 2: the full forward with the input of up_blocks[-2].resnets[-1] (the hidden part of its
    concatenated input) replaced by the cached one; the deep path (mid block) does not run."""
    unet = make()
    target = unet.up_blocks[-2].resnets[-1]
    c_skip = unet.config.block_out_channels[0]
    g = torch.Generator().manual_seed(12)
    x1, x2 = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 16, 16, generator=g)
    t1, t2 = torch.full((2,), 600), torch.full((2,), 540)
    grabbed = {}

    def grab(_m, args):
        grabbed["h"] = args[0][:, :-c_skip]

    h = target.register_forward_pre_hook(grab)
    with torch.no_grad():
        unet(x1, t1)
    h.remove()

    def swap(_m, args):
        return (torch.cat([grabbed["h"], args[0][:, -c_skip:]], dim=1), *args[1:])

    h = target.register_forward_pre_hook(swap)
    with torch.no_grad():
        expect = unet(x2, t2).sample
    h.remove()
    cached = CachedUNet(unet, refresh_every=4)
    assert cached.branch == 2
    cached.evaluate(x1, t1, refresh=True)
    assert torch.equal(cached.cached_feature, grabbed["h"])
    deep, hd = count_calls(unet.mid_block)
    out = cached.evaluate(x2, t2, refresh=False)
    hd.remove()
    assert deep["n"] == 0 and torch.allclose(out, expect, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(out, unet(x2, t2).sample, atol=1e-4)


@pytest.mark.parametrize("N,T", [(3, 7), (2, 6), (1, 4)])
def test_sampling_runs_the_deep_path_only_at_refresh_steps(N, T):
    unet = tiny_unet(True)
    cached = CachedUNet(unet, refresh_every=N)
    mid, h1 = count_calls(unet.mid_block)
    d1, h2 = count_calls(unet.down_blocks[1])
    first, h3 = count_calls(unet.down_blocks[0])
    x_T = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    traj = sample(cached, Schedule.linear(), x_T, T)
    for h in (h1, h2, h3):
        h.remove()
    n_refresh = len(range(0, T, N))
    assert mid["n"] == d1["n"] == cached.stats.deep_calls == n_refresh
    assert first["n"] == traj.nfe == T == cached.stats.evaluations
    assert cached.stats.reuses == T - n_refresh
    assert refresh_steps_for(every=N, T=T) == list(range(0, T, N))


def test_explicit_non_uniform_refresh_steps():
    unet = tiny_unet(False)
    steps = [0, 1, 2, 5, 9]
    cached = CachedUNet(unet, refresh_steps=[np.int64(s) for s in steps])
    mid, h = count_calls(unet.mid_block)
    refreshed = []
    orig = cached.evaluate

    def spy(x, t, refresh):
        refreshed.append(refresh)
        return orig(x, t, refresh)

    cached.evaluate = spy
    sample(cached, Schedule.linear(), torch.randn(1, 3, 16, 16), 10)
    h.remove()
    assert [i for i, r in enumerate(refreshed) if r] == steps and mid["n"] == len(steps)
    assert cached.refresh_selection().resolve(list(range(10))) == frozenset(steps)
    # a list without step 0 still refreshes first (empty cache)
    c2 = CachedUNet(unet, refresh_steps=[3])
    sample(c2, Schedule.linear(), torch.randn(1, 3, 16, 16), 5)
    assert c2.stats.deep_calls == 2


@pytest.mark.parametrize("refresh_all", [True, False])
def test_iec_correction_refreshes_the_cache_only_when_asked(refresh_all):
    unet = tiny_unet(True)
    N, T = 2, 6
    cached = CachedUNet(unet, refresh_every=N, refresh_all_evals=refresh_all)
    iec = IECConfig.official_ddpm(select=cached.refresh_selection())
    traj = sample(cached, Schedule.linear(), torch.randn(2, 3, 16, 16), T, iec=iec)
    n_refresh = len(range(0, T, N))
    assert traj.nfe == T + n_refresh                   # one correction evaluation per refresh step
    assert cached.stats.deep_calls == (2 * n_refresh if refresh_all else n_refresh)
    assert cached.stats.evaluations == traj.nfe


def test_new_trajectory_drops_the_cache():
    unet = tiny_unet(False)
    sched = Schedule.linear()
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(1, 3, 16, 16, generator=g), torch.randn(1, 3, 16, 16, generator=g)
    cached = CachedUNet(unet, refresh_steps=[2])
    sample(cached, sched, a, 4)
    second = sample(cached, sched, b, 4)
    fresh = sample(CachedUNet(unet, refresh_steps=[2]), sched, b, 4)
    assert torch.equal(second.xs, fresh.xs)
    # outside a sampler (no begin_step) every call is a full forward
    cached.reset()
    t = torch.full((1,), 100)
    with torch.no_grad():
        assert torch.equal(cached(a, t), unet(a, t).sample)


def test_bad_cache_inputs_raise():
    unet = tiny_unet(False)
    with pytest.raises(ConfigError, match="exactly one"):
        CachedUNet(unet)
    with pytest.raises(ConfigError, match="exactly one"):
        CachedUNet(unet, refresh_every=2, refresh_steps=[0])
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ConfigError, match="refresh_every"):
            CachedUNet(unet, refresh_every=bad)
    with pytest.raises(ConfigError, match="refresh_steps"):
        CachedUNet(unet, refresh_steps=[0, -2])
    with pytest.raises(ConfigError, match="refresh_steps"):
        CachedUNet(unet, refresh_steps=[])
    with pytest.raises(ConfigError, match="UNet2DModel"):
        CachedUNet(torch.nn.Linear(2, 2), refresh_every=2)
    with pytest.raises(ConfigError, match="refresh_all_evals"):
        CachedUNet(unet, refresh_every=2, refresh_all_evals="yes")
    for bad in (0, 3, True, "2"):
        with pytest.raises(ConfigError, match="branch"):
            CachedUNet(unet, refresh_every=2, branch=bad)
    with pytest.raises(ConfigError, match="branch 2"):
        CachedUNet(skip_unet(), refresh_every=2)
    cached = CachedUNet(unet, refresh_every=2)
    with pytest.raises(ConfigError, match="no cached"):
        cached.evaluate(torch.randn(1, 3, 16, 16), 5, refresh=False)
    cached.evaluate(torch.randn(1, 3, 16, 16), 5, refresh=True)
    with pytest.raises(ConfigError, match="batch"):
        cached.evaluate(torch.randn(2, 3, 16, 16), 5, refresh=False)


def test_cached_quantized_model_forwards_begin_step_to_the_quantizers():
    unet = tiny_unet(True)
    sched = Schedule.linear()
    qm = quantize_model(unet, "W8A8", Calibration(sched, T=4, trajectories=1, batch_size=1, report_evals=0),
                        per_timestep=True)
    cached = CachedUNet(qm, refresh_every=2)
    assert cached.unet is qm.net
    traj = sample(cached, sched, torch.randn(1, 3, 16, 16), 4)
    assert torch.isfinite(traj.x0).all()
    steps = {q._step for q in qm.act_quantizers()}
    assert steps == {(3, traj.timesteps[3])}


# ----- IEC against a literal re-implementation of the official loop -------------------------------
def official_loop(eval_fn, set_time, betas, seq, x, interval_seq, eta=0.0, gen=None, refresh_all=True):
    """adaptive_generalized_steps_3 semantics, written out: seq ascending; at step cur_i (t = i -> j):
    plain step from eps(xt, t); if cur_i in interval_seq, one correction from eps(xhat, t) (timestep
    unchanged), residual ||new - xhat|| / (||xhat|| + 1e-6) over the whole batch tensor, stop if < 1e-3
    keeping xhat, else xhat += 0.5**1 (new - xhat); fresh randn at every iteration. The model is
    refreshed (prv_f=None) exactly when cur_i in interval_seq (and, with refresh_all=False, only at the
    step's first evaluation). Alphas as compute_alpha: cumprod(1 - [0, betas])[t + 1] (float64)."""
    abar = torch.cumprod(1 - torch.cat([torch.zeros(1, dtype=torch.float64), betas]), 0)

    def compute_alpha(t):
        return float(abar[t + 1])

    throwaway = torch.Generator().manual_seed(12345)
    n = x.size(0)
    seq_next = [-1] + list(seq[:-1])
    xs = [x]
    for cur_i, (i, j) in enumerate(zip(reversed(seq), reversed(seq_next))):
        t = (torch.ones(n) * i).long()
        at, at_next = compute_alpha(i), compute_alpha(j)
        xt = xs[-1]
        set_time(cur_i, i)
        max_iter = 2 if cur_i in interval_seq else 1
        tol = 1e-3
        c1 = eta * ((1 - at / at_next) * (1 - at_next) / (1 - at)) ** 0.5
        c2 = ((1 - at_next) - c1**2) ** 0.5

        def randn(c1=c1):
            return torch.randn(x.shape, generator=gen if (gen is not None and c1 != 0) else throwaway)

        for it in range(max_iter):
            if it == 0:
                et = eval_fn(xt, t, cur_i in interval_seq)
                x0_t = (xt - et * (1 - at) ** 0.5) / at**0.5
                xhat = at_next**0.5 * x0_t + c1 * randn() + c2 * et
            else:
                et = eval_fn(xhat, t, cur_i in interval_seq and refresh_all)
                new = at_next**0.5 * ((xt - et * (1 - at) ** 0.5) / at**0.5) + c1 * randn() + c2 * et
                residual = torch.norm(new - xhat) / (torch.norm(xhat) + 1e-6)
                if residual < tol:
                    break
                xhat = xhat + (0.5**it) * (new - xhat)
        xs.append(xhat)
    return torch.stack(xs)


def _close(a, b):
    err = float((a - b).abs().max())
    scale = float(b.abs().max())
    assert err <= 2e-6 * max(scale, 1.0), (err, scale)


def _seq(sched, T):
    return list(reversed(sched.timesteps(T)))


@pytest.mark.parametrize("refresh_all", [True, False])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_iec_on_cached_unet_matches_the_official_loop(refresh_all, eta):
    unet = tiny_unet(True)
    sched = Schedule.linear()
    T, N = 8, 3
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    cached = CachedUNet(unet, refresh_every=N, refresh_all_evals=refresh_all)
    iec = IECConfig.official_ddpm(select=StepSelection.every(N))
    traj = sample(cached, sched, x_T, T, eta=eta, iec=iec, generator=torch.Generator().manual_seed(11))
    ref_model = CachedUNet(unet, refresh_every=N)
    lit = official_loop(ref_model.evaluate, lambda i, t: None, torch.tensor(sched.betas), _seq(sched, T), x_T,
                        interval_seq=list(range(0, T, N)), eta=eta, gen=torch.Generator().manual_seed(11),
                        refresh_all=refresh_all)
    _close(traj.xs, lit)
    assert traj.nfe == T + len(range(0, T, N))          # the correction is evaluated even when it stops
    # the two cache options really differ
    other = CachedUNet(unet, refresh_every=N, refresh_all_evals=not refresh_all)
    traj2 = sample(other, sched, x_T, T, eta=eta, iec=iec, generator=torch.Generator().manual_seed(11))
    assert not torch.allclose(traj2.xs, traj.xs, atol=1e-5)


@pytest.mark.parametrize("cache", [False, True])
def test_iec_on_quantized_unet_matches_the_official_loop(cache):
    unet = tiny_unet(True)
    sched = Schedule.linear()
    T = 6
    qm = quantize_model(unet, "W4A8", Calibration(sched, T=T, trajectories=1, batch_size=2, report_evals=0),
                        per_timestep=True)
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    if cache:
        model = CachedUNet(qm, refresh_every=2)
        iec = IECConfig.official_ddpm(select=model.refresh_selection())
        interval = list(range(0, T, 2))
        ref = CachedUNet(qm, refresh_every=2)
        eval_fn = ref.evaluate
    else:
        model = qm
        iec = IECConfig.official_ddpm()
        interval = list(range(T))

        def eval_fn(x, t, _refresh):
            return qm(x, t)

    traj = sample(model, sched, x_T, T, eta=0.0, iec=iec)
    lit = official_loop(eval_fn, qm.begin_step, torch.tensor(sched.betas), _seq(sched, T), x_T, interval)
    _close(traj.xs, lit)
    assert traj.nfe == T + len(interval)
