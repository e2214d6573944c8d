"""The cache split against an independent reference of the official cached forward (issue 13, item 4).

The reference below is written from the original DDPM ``Model`` layout (pesser/pytorch_diffusion, the
layout of the official IEC code's ``mainddpm/ddpm/models/deepcache_diffusion.py``): ``down[i].block[j]``,
``mid.block_1/attn_1/block_2``, ``up[i].block[j]`` with ``up`` indexed by resolution level (0 = full
resolution) and built from the lowest resolution upwards. Its cached forward follows the official
semantics: ``--branch b`` selects ``select_layer, select_block = b // 3, b % 3``; with ``select_block == 2``
the cached feature is the input of ``up[select_layer + 1].block[2]``, otherwise of
``up[select_layer].block[1 - select_block]``; the quick path recomputes the down path up to the selected
block (and the selected level's downsample when the whole level was run) and the up path from the cached
block on, popping skips from that fresh list; the optional correction ``h = a * h + b`` is applied to the
cached feature before the first recomputed block. The random network is built in the original layout,
saved as safetensors and converted with ``real_models.convert``; ``real_models.cache.CachedUNet`` must agree
with the reference to a relative error of 1e-5 (float32).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from iec_theory import IECConfig, Schedule, StepSelection, sample
from real_models.cache import CacheCorrection, CachedUNet
from real_models.unet import small_config

torch.set_num_threads(1)

CH, CH_MULT, L, RES, ATTN_RES, GROUPS = 16, (1, 2, 2), 2, 16, (8,), 8
TOL = 1e-5


# ----- the original layout --------------------------------------------------------------------------
def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, c, eps=1e-6)


class Res(nn.Module):
    def __init__(self, cin: int, cout: int, tch: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(tch, cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class Attn(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        h = self.norm(x)
        b, c, hh, ww = x.shape
        q = self.q(h).reshape(b, c, -1).permute(0, 2, 1)
        k = self.k(h).reshape(b, c, -1)
        w = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)
        out = torch.bmm(self.v(h).reshape(b, c, -1), w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class OriginalModel(nn.Module):
    """The original DDPM Model (no dropout, conv resampling), with the official cached forward."""

    def __init__(self):
        super().__init__()
        tch, n = CH * 4, len(CH_MULT)
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(CH, tch), nn.Linear(tch, tch)])
        self.conv_in = nn.Conv2d(3, CH, 3, padding=1)
        in_mult = (1,) + CH_MULT
        self.down = nn.ModuleList()
        res, block_in = RES, CH
        for i in range(n):
            lvl = nn.Module()
            lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = CH * in_mult[i], CH * CH_MULT[i]
            for _ in range(L):
                lvl.block.append(Res(block_in, block_out, tch))
                block_in = block_out
                if res in ATTN_RES:
                    lvl.attn.append(Attn(block_in))
            if i != n - 1:
                lvl.downsample = nn.Module()
                lvl.downsample.conv = nn.Conv2d(block_in, block_in, 3, stride=2)
                res //= 2
            self.down.append(lvl)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = Res(block_in, block_in, tch), Attn(block_in), \
            Res(block_in, block_in, tch)
        self.up = nn.ModuleList()
        for i in reversed(range(n)):
            lvl = nn.Module()
            lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
            block_out = CH * CH_MULT[i]
            for j in range(L + 1):
                skip = CH * (in_mult[i] if j == L else CH_MULT[i])
                lvl.block.append(Res(block_in + skip, block_out, tch))
                block_in = block_out
                if res in ATTN_RES:
                    lvl.attn.append(Attn(block_in))
            if i != 0:
                lvl.upsample = nn.Module()
                lvl.upsample.conv = nn.Conv2d(block_in, block_in, 3, padding=1)
                res *= 2
            self.up.insert(0, lvl)
        self.norm_out, self.conv_out = _norm(block_in), nn.Conv2d(block_in, 3, 3, padding=1)

    def _temb(self, t):
        half = CH // 2
        f = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
        e = t.float()[:, None] * f[None, :]
        e = torch.cat([torch.sin(e), torch.cos(e)], dim=1)
        return self.temb.dense[1](F.silu(self.temb.dense[0](e)))

    @staticmethod
    def _downsample(lvl, h):
        return lvl.downsample.conv(F.pad(h, (0, 1, 0, 1)))

    def _up_block(self, i, j, h, hs, temb):
        h = self.up[i].block[j](torch.cat([h, hs.pop()], dim=1), temb)
        return self.up[i].attn[j](h) if len(self.up[i].attn) else h

    def _out(self, h):
        return self.conv_out(F.silu(self.norm_out(h)))

    @staticmethod
    def split(branch: int) -> tuple[int, int, int, int]:
        """(select_layer, select_block, up_layer, up_block) of the official --branch."""
        sl, sb = branch // 3, branch % 3
        return (sl, sb, sl + 1, 2) if sb == 2 else (sl, sb, sl, 1 - sb)

    def full(self, x, t, branch):
        """Full forward; returns (eps, the input of up[up_layer].block[up_block])."""
        _, _, ul, ub = self.split(branch)
        temb, n = self._temb(t), len(CH_MULT)
        hs = [self.conv_in(x)]
        for i in range(n):
            for j in range(L):
                h = self.down[i].block[j](hs[-1], temb)
                hs.append(self.down[i].attn[j](h) if len(self.down[i].attn) else h)
            if i != n - 1:
                hs.append(self._downsample(self.down[i], hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        feature = None
        for i in reversed(range(n)):
            for j in range(L + 1):
                if (i, j) == (ul, ub):
                    feature = h
                h = self._up_block(i, j, h, hs, temb)
            if i != 0:
                h = self.up[i].upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self._out(h), feature

    def quick(self, x, t, prv_f, branch, ab=None):
        """Official quick path: fresh down path up to the selected block, cached feature, fresh up path."""
        sl, sb, ul, ub = self.split(branch)
        temb, n = self._temb(t), len(CH_MULT)
        hs = [self.conv_in(x)]
        done = False
        for i in range(n):
            for j in range(L):
                h = self.down[i].block[j](hs[-1], temb)
                hs.append(self.down[i].attn[j](h) if len(self.down[i].attn) else h)
                if (i, j) == (sl, sb):
                    done = True
                    break
            if done:
                break
            if i != n - 1:
                hs.append(self._downsample(self.down[i], hs[-1]))
            if i == sl:
                break
        h = prv_f if ab is None else ab[0].view(1, -1, 1, 1) * prv_f + ab[1].view(1, -1, 1, 1)
        for i in reversed(range(ul + 1)):
            for j in range(ub if i == ul else 0, L + 1):
                h = self._up_block(i, j, h, hs, temb)
            if i != 0:
                h = self.up[i].upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        assert not hs, "every fresh skip is consumed"
        return self._out(h)


def diffusers_config() -> dict:
    return small_config(block_out_channels=tuple(CH * m for m in CH_MULT), layers_per_block=L, attention_level=1,
                        norm_num_groups=GROUPS) | {"sample_size": RES}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(original-layout reference, converted diffusers UNet2DModel) with the same random weights."""
    from safetensors.torch import save_file

    from real_models.convert import convert_file

    torch.manual_seed(0)
    ref = OriginalModel().eval()
    with torch.no_grad():
        for p in ref.parameters():          # randomise norms and biases too
            p.add_(0.05 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("orig")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(d / "orig.safetensors"))
    unet = convert_file(d / "orig.safetensors", d / "conv", diffusers_config()).eval()
    return ref, unet


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 3, RES, RES, generator=g), torch.randn(3, 3, RES, RES, generator=g)


def test_reference_full_forward_matches_the_converted_unet(pair):
    ref, unet = pair
    x, _ = inputs(0)
    t = torch.tensor([5, 400, 999])
    with torch.no_grad():
        assert rel(unet(x, t).sample, ref.full(x, t, 2)[0]) <= TOL


def test_branch_maps_to_the_diffusers_blocks():
    """Official up[i].block[j] is diffusers up_blocks[n - 1 - i].resnets[j]: branch 2 caches the input of
    up[1].block[2] = up_blocks[-2].resnets[-1]; branch 1 the input of up[0].block[0] = up_blocks[-1]."""
    assert OriginalModel.split(2) == (0, 2, 1, 2) and OriginalModel.split(1) == (0, 1, 0, 0)
    from real_models.convert import key_map

    km = key_map(diffusers_config())
    n = len(CH_MULT)
    assert km["up.1.block.2.conv1"] == f"up_blocks.{n - 2}.resnets.2.conv1"
    assert km["up.0.block.0.conv1"] == f"up_blocks.{n - 1}.resnets.0.conv1"


@pytest.mark.parametrize("branch", [2, 1])
def test_cached_forward_matches_the_official_reference(pair, branch):
    ref, unet = pair
    x1, x2 = inputs(1)
    t1, t2 = torch.tensor([620, 620, 620]), torch.tensor([560, 560, 560])
    cached = CachedUNet(unet, refresh_every=10, branch=branch)
    with torch.no_grad():
        full1, feat = ref.full(x1, t1, branch)
        expect = ref.quick(x2, t2, feat, branch)
        full2, _ = ref.full(x2, t2, branch)
    out1 = cached.evaluate(x1, t1, refresh=True)
    assert rel(out1, full1) <= TOL and rel(cached.cached_feature, feat) <= TOL
    out2 = cached.evaluate(x2, t2, refresh=False)
    err = rel(out2, expect)
    print(f"branch {branch}: relative error vs the official reference {err:.2e}")
    assert err <= TOL
    assert rel(out2, full2) > 100 * TOL          # the reuse is real: not the full forward
    # the two branches are different approximations
    other = CachedUNet(unet, refresh_every=10, branch=3 - branch)
    other.evaluate(x1, t1, refresh=True)
    assert rel(other.evaluate(x2, t2, refresh=False), out2) > 100 * TOL


def test_correction_matches_the_official_affine_map(pair):
    ref, unet = pair
    x1, x2 = inputs(2)
    t1, t2 = torch.full((3,), 300), torch.full((3,), 250)
    with torch.no_grad():
        _, feat = ref.full(x1, t1, 2)
    C = feat.shape[1]
    g = torch.Generator().manual_seed(3)
    a, b = 1 + 0.3 * torch.randn(C, generator=g), 0.2 * torch.randn(C, generator=g)
    corr = CacheCorrection([4], a[None], b[None])
    cached = CachedUNet(unet, refresh_every=4, branch=2, correction=corr)
    cached.begin_step(0, 300)
    cached(x1, t1)
    cached.begin_step(1, 250)                    # step 1 has no fitted pair: identity
    with torch.no_grad():
        assert rel(cached(x2, t2), ref.quick(x2, t2, feat, 2)) <= TOL
    cached.begin_step(4, 250)                    # a refresh step: the correction is not used
    with torch.no_grad():
        assert rel(cached(x2, t2), ref.full(x2, t2, 2)[0]) <= TOL
    cached.begin_step(5, 250)
    with torch.no_grad():
        _, feat2 = ref.full(x2, t2, 2)
        x3 = x2.flip(0)
        corr.steps, corr._row = [5], {5: 0}
        assert rel(cached(x3, t2), ref.quick(x3, t2, feat2, 2, ab=(a, b))) <= TOL
        assert rel(cached(x3, t2), ref.quick(x3, t2, feat2, 2)) > 100 * TOL


def test_iec_trajectory_on_branch2_cache_matches_official_loop_on_the_reference(pair):
    """Whole IEC trajectories (official DDPM preset, IEC at refresh steps): our sampler on CachedUNet(branch=2)
    vs the official loop (tests/test_real_cache.official_loop) driving the original-layout reference."""
    from tests.test_real_cache import official_loop

    ref, unet = pair
    sched, T, N = Schedule.linear(), 10, 4
    x_T = torch.randn(2, 3, RES, RES, generator=torch.Generator().manual_seed(9))
    cached = CachedUNet(unet, refresh_every=N, branch=2)
    traj = sample(cached, sched, x_T, T, iec=IECConfig.official_ddpm(select=StepSelection.every(N)))
    box = {}

    def eval_fn(x, t, refresh):
        with torch.no_grad():
            if refresh or "f" not in box:
                out, box["f"] = ref.full(x, t, 2)
                return out
            return ref.quick(x, t, box["f"], 2)

    lit = official_loop(eval_fn, lambda i, t: None, torch.tensor(sched.betas), list(reversed(sched.timesteps(T))),
                        x_T, interval_seq=list(range(0, T, N)))
    err = rel(traj.xs[-1], lit[-1])
    print(f"IEC trajectory, final state relative error {err:.2e}")
    assert err <= TOL
