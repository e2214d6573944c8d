"""DeepCache-style feature caching for a diffusers `UNet2DModel` (issue 6 item 2, issue 13 item 4).

Two split points, named by the official IEC/DeepCache DDPM code's ``--branch`` (``Model.set_cache_para``:
``select_layer, select_block = branch // 3, branch % 3``; the original DDPM ``up`` list is indexed by
resolution level, level 0 = full resolution, and original ``up[i].block[j]`` is diffusers
``up_blocks[n - 1 - i].resnets[j]``, see real_models/convert.py):

* ``branch=2`` (DEFAULT; the official CIFAR-10 runs): the cached feature is the hidden state entering
  original ``up[1].block[L]`` (L = layers per block; ``L = 2`` in the DDPM CIFAR-10 network), i.e. diffusers
  ``up_blocks[-2].resnets[-1]``. Every evaluation recomputes the shallow path: ``conv_in`` and the whole
  first down block (its resnets and its downsampler, whose output is the skip of ``up[1].block[L]``), then
  ``up_blocks[-2].resnets[-1]`` (+ its attention) and ``up_blocks[-2]``'s upsampler with that fresh skip,
  then the last up block and the output layers.
* ``branch=1``: the cached feature is the hidden state entering original ``up[0].block[0]``, i.e. the
  input of the last diffusers up block (the split used here before issue 13). The shallow path is
  ``conv_in``, the first down block, the last up block and the output layers.

The deep path (everything between the shallow parts) runs only at refresh steps; its result (the
cached feature, plus the up-path skip sample of skip-connection UNets, branch 1 only) is reused by the
evaluations in between. At a refresh step the output is exactly `UNet2DModel.forward` (same operations
in the same order).

Optional cached-feature correction (CacheQuant style, as ``a_list`` / ``b_list`` in the official
``Model.forward``): at a reuse evaluation of step i the cached feature h is replaced by
``a_i[c] * h[:, c] + b_i[c]`` per channel c (``CacheCorrection``; fitted by real_models.calibrate_cache).
Refresh evaluations never use it.

Refresh steps are step indices i (0-based, as passed by the sampler to `begin_step(i, t)`): every
N-th (`i % N == 0`, the official convention) or an explicit, possibly non-uniform list. With
`refresh_all_evals=True` (default, as in the official IEC/DeepCache DDPM code) every evaluation
of a refresh step, IEC's correction evaluations included, recomputes the deep path and refreshes
the cache; with False only the step's first evaluation refreshes and the corrections reuse it.
Outside a sampler (no `begin_step` call since construction or `reset()`), every call is a full
forward. `begin_step(0, t)` starts a new trajectory and drops the cache.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from iec_theory.errors import ConfigError, require
from iec_theory.iec import StepSelection

__all__ = ["BRANCHES", "CacheCorrection", "CacheStats", "CachedUNet", "DEFAULT_BRANCH", "refresh_steps_for"]

BRANCHES = (1, 2)
DEFAULT_BRANCH = 2


@dataclass
class CacheStats:
    """Counters: network evaluations, deep-path runs (refreshes) and cache reuses."""

    evaluations: int = 0
    deep_calls: int = 0
    reuses: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"evaluations": self.evaluations, "deep_calls": self.deep_calls, "reuses": self.reuses}


class CacheCorrection:
    """Per-step, per-channel affine correction of the cached feature: ``h -> a[i, c] * h + b[i, c]``.

    ``steps``: the step indices i with a fitted pair (other steps: identity); ``a``, ``b``: [len(steps), C]
    float32. ``meta``: provenance (branch, refresh schedule, T, spacing, seed, n, fit residuals).
    Stored as safetensors (tensors ``steps``, ``a``, ``b``; ``meta`` as JSON in the header metadata).
    """

    def __init__(self, steps: Iterable[int], a: torch.Tensor, b: torch.Tensor, meta: dict | None = None) -> None:
        steps = [int(s) for s in steps]
        a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
        require(a.ndim == 2 and a.shape == b.shape and a.shape[0] == len(steps),
                f"CacheCorrection: a and b must be [len(steps), C], got {list(a.shape)}, {list(b.shape)} "
                f"for {len(steps)} steps")
        require(bool(torch.isfinite(a).all() and torch.isfinite(b).all()), "CacheCorrection: non-finite a or b")
        require(len(set(steps)) == len(steps), "CacheCorrection: repeated step index")
        self.steps, self.a, self.b, self.meta = steps, a, b, dict(meta or {})
        self._row = {s: k for k, s in enumerate(steps)}

    @property
    def channels(self) -> int:
        return int(self.a.shape[1])

    def apply(self, h: torch.Tensor, step: int | None) -> torch.Tensor:
        """``a[step] * h + b[step]`` per channel (h [B, C, H, W]); h itself when step has no pair."""
        k = self._row.get(step) if step is not None else None
        if k is None:
            return h
        require(h.shape[1] == self.channels,
                f"CacheCorrection has {self.channels} channels, the cached feature {h.shape[1]}")
        a = self.a[k].to(h.device, h.dtype).view(1, -1, 1, 1)
        b = self.b[k].to(h.device, h.dtype).view(1, -1, 1, 1)
        return a * h + b

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"steps": torch.tensor(self.steps, dtype=torch.int64), "a": self.a.contiguous(),
                   "b": self.b.contiguous()}, str(path), metadata={"meta": json.dumps(self.meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> CacheCorrection:
        from safetensors import safe_open

        path = Path(path)
        require(path.is_file() and path.suffix == ".safetensors",
                f"cache correction {str(path)!r}: not a .safetensors file (write one with python -m "
                "real_models.calibrate_cache)")
        try:
            with safe_open(str(path), framework="pt") as f:
                t = {k: f.get_tensor(k) for k in f.keys()}
                meta = json.loads((f.metadata() or {}).get("meta", "{}"))
        except Exception as exc:
            raise ConfigError(f"cache correction {str(path)!r} is not readable: {type(exc).__name__}: {exc}") from exc
        require({"steps", "a", "b"} <= set(t), f"cache correction {str(path)!r} lacks steps/a/b")
        return cls(t["steps"].tolist(), t["a"], t["b"], meta)


def _unwrap_unet(model: nn.Module) -> nn.Module:
    """The UNet2DModel itself, or the one held by an eps adapter (`.unet`) or a quantized model (`.net`)."""
    for attr in ("unet", "net"):
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module) and hasattr(inner, "down_blocks"):
            return inner
    return model


def refresh_steps_for(every: int | None = None, steps: Iterable[int] | None = None, T: int | None = None) -> list[int]:
    """The refresh step indices in [0, T): `i % every == 0`, or the explicit list (sorted)."""
    require(T is not None and int(T) >= 1, f"T must be an integer >= 1, got {T!r}")
    if every is not None:
        return list(range(0, int(T), int(every)))
    require(steps is not None, "give either every or steps")
    return sorted(i for i in {int(s) for s in steps} if i < int(T))


def _run_resnets(block: nn.Module, h: torch.Tensor, res: tuple[torch.Tensor, ...], emb: torch.Tensor,
                 start: int, stop: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Resnets start..stop-1 (with their attentions) of a diffusers UpBlock2D / AttnUpBlock2D, popping skip
    features from the end of `res` exactly as the block's forward does; returns (h, the rest of res)."""
    attns = getattr(block, "attentions", None)
    for k in range(start, stop):
        h = torch.cat([h, res[-1]], dim=1)
        res = res[:-1]
        h = block.resnets[k](h, emb)
        if attns is not None:
            h = attns[k](h)
    return h, res


def _run_upsamplers(block: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    if block.upsamplers is not None:
        for up in block.upsamplers:
            h = up(h, temb=emb) if getattr(block, "upsample_type", None) == "resnet" else up(h)
    return h


class CachedUNet(nn.Module):
    """An eps_model (x, t) -> eps that caches the deep features of a diffusers UNet2DModel.

    Args:
        unet: a `diffusers.UNet2DModel` (or an adapter holding it as `.unet`, or a quantized model
            from `real_models.quant` holding it as `.net`). It is used in place, not copied.
        refresh_every: refresh at steps with `i % refresh_every == 0`.
        refresh_steps: explicit refresh step indices (non-uniform schedules); exclusive with
            refresh_every. Step 0 need not be listed: an empty cache always forces a refresh.
        refresh_all_evals: True (official) = every evaluation of a refresh step recomputes and
            refreshes the cache; False = only the first evaluation of a refresh step does.
        branch: split point, 2 (default, official CIFAR-10) or 1 (input of the last up block); module doc.
        correction: optional CacheCorrection applied to the cached feature at reuse evaluations.
    """

    def __init__(
        self,
        unet: nn.Module,
        refresh_every: int | None = None,
        refresh_steps: Iterable[int] | None = None,
        refresh_all_evals: bool = True,
        branch: int = DEFAULT_BRANCH,
        correction: CacheCorrection | None = None,
    ) -> None:
        super().__init__()
        unet = _unwrap_unet(unet)
        for attr in ("conv_in", "time_proj", "time_embedding", "down_blocks", "up_blocks", "conv_out"):
            require(hasattr(unet, attr),
                    f"CachedUNet needs a diffusers UNet2DModel; {type(unet).__name__} has no {attr!r}")
        require(len(unet.down_blocks) >= 2 and len(unet.up_blocks) >= 2,
                f"caching needs at least 2 down and 2 up blocks, got {len(unet.down_blocks)} and {len(unet.up_blocks)}")
        require((refresh_every is None) != (refresh_steps is None),
                "give exactly one of refresh_every or refresh_steps")
        if refresh_every is not None:
            require(isinstance(refresh_every, numbers.Integral) and not isinstance(refresh_every, bool)
                    and refresh_every >= 1,
                    f"refresh_every must be an integer >= 1, got {refresh_every!r}")
            self.refresh_every: int | None = int(refresh_every)
            self.refresh_steps: frozenset[int] | None = None
        else:
            assert refresh_steps is not None
            raw = list(refresh_steps)
            require(all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in raw),
                    f"refresh_steps must be non-negative integers, got {raw}")
            require(len(raw) >= 1, "refresh_steps must not be empty")
            self.refresh_every = None
            self.refresh_steps = frozenset(int(s) for s in raw)
        require(isinstance(refresh_all_evals, bool), f"refresh_all_evals must be a bool, got {refresh_all_evals!r}")
        require(branch in BRANCHES and not isinstance(branch, bool),
                f"branch must be one of {BRANCHES}, got {branch!r}")
        if branch == 2:
            blk = unet.up_blocks[-2]
            require(not hasattr(blk, "skip_conv") and type(blk).__name__ in ("UpBlock2D", "AttnUpBlock2D"),
                    f"branch 2 splits inside up_blocks[-2], which must be an UpBlock2D or AttnUpBlock2D "
                    f"(got {type(blk).__name__}); use branch=1")
            require(not getattr(blk, "s1", None), "branch 2 does not support FreeU; use branch=1")
        require(correction is None or isinstance(correction, CacheCorrection),
                f"correction must be a CacheCorrection or None, got {type(correction).__name__}")
        self.refresh_all_evals = refresh_all_evals
        self.branch = int(branch)
        self.correction = correction
        self.unet = unet
        self._step_hooks = [m for m in unet.modules() if callable(getattr(m, "begin_step", None))]
        self.stats = CacheStats()
        self.reset()

    # ----- schedule ---------------------------------------------------------------------------------
    def is_refresh_step(self, i: int) -> bool:
        if self.refresh_every is not None:
            return i % self.refresh_every == 0
        assert self.refresh_steps is not None
        return i in self.refresh_steps

    def refresh_selection(self) -> StepSelection:
        """The refresh steps as an IEC StepSelection (IEC only at refresh steps, as in the official code)."""
        if self.refresh_every is not None:
            return StepSelection.every(self.refresh_every)
        assert self.refresh_steps is not None
        return StepSelection.explicit(sorted(self.refresh_steps))

    def reset(self) -> None:
        """Drop the cache and forget the step: later calls are full forwards until begin_step."""
        self._cache: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._n_fresh: int | None = None
        self._step: int | None = None
        self._evals_in_step = 0

    @property
    def cached_feature(self) -> torch.Tensor | None:
        """The cached feature (the split point's input at the last refresh), None before the first refresh."""
        return None if self._cache is None else self._cache[0]

    def begin_step(self, step_index: int, t: int) -> None:
        """Called by the sampler before the first evaluation of step `step_index` (timestep t)."""
        step_index = int(step_index)
        require(step_index >= 0, f"step_index must be >= 0, got {step_index}")
        if step_index == 0:
            self._cache = None
        self._step = step_index
        self._evals_in_step = 0
        for m in self._step_hooks:
            m.begin_step(step_index, t)

    # ----- evaluation -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        if self._step is None:
            refresh = True
        elif self.is_refresh_step(self._step):
            refresh = self.refresh_all_evals or self._evals_in_step == 0
        else:
            refresh = False
        if self._cache is None:
            refresh = True
        self._evals_in_step += 1
        return self.evaluate(x, t, refresh)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, t: torch.Tensor | int, refresh: bool) -> torch.Tensor:
        """One evaluation; refresh=True runs the deep path and stores its output, False reuses it."""
        unet = self.unet
        cfg = unet.config
        sample = x
        if cfg.center_input_sample:
            sample = 2 * sample - 1.0
        timesteps = t
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor([timesteps], dtype=torch.long, device=sample.device)
        elif timesteps.ndim == 0:
            timesteps = timesteps[None].to(sample.device)
        timesteps = timesteps * torch.ones(sample.shape[0], dtype=timesteps.dtype, device=timesteps.device)
        t_emb = unet.time_proj(timesteps).to(dtype=unet.dtype)
        emb = unet.time_embedding(t_emb)
        if unet.class_embedding is not None:
            raise ConfigError("CachedUNet does not support class-conditional UNet2DModel (class_embedding is set)")

        # shallow down path: conv_in and the first down block (every evaluation)
        skip_sample = sample
        sample = unet.conv_in(sample)
        res: tuple[torch.Tensor, ...] = (sample,)
        first = unet.down_blocks[0]
        if hasattr(first, "skip_conv"):
            sample, res_samples, skip_sample = first(hidden_states=sample, temb=emb, skip_sample=skip_sample)
        else:
            sample, res_samples = first(hidden_states=sample, temb=emb)
        res += res_samples
        n_shallow = len(res)
        last, second = unet.up_blocks[-1], unet.up_blocks[-2]

        if refresh:
            self.stats.deep_calls += 1
            for block in unet.down_blocks[1:]:
                if hasattr(block, "skip_conv"):
                    sample, res_samples, skip_sample = block(hidden_states=sample, temb=emb, skip_sample=skip_sample)
                else:
                    sample, res_samples = block(hidden_states=sample, temb=emb)
                res += res_samples
            if unet.mid_block is not None:
                sample = unet.mid_block(sample, emb)
            up_skip = None
            for block in unet.up_blocks[:-1] if self.branch == 1 else unet.up_blocks[:-2]:
                n = len(block.resnets)
                res_samples, res = res[-n:], res[:-n]
                if hasattr(block, "skip_conv"):
                    sample, up_skip = block(sample, res_samples, emb, up_skip)
                else:
                    sample = block(sample, res_samples, emb)
            if self.branch == 2:      # the deep part of up_blocks[-2]: every resnet but the last
                sample, res = _run_resnets(second, sample, res, emb, 0, len(second.resnets) - 1)
            n_fresh = len(res)        # skip features the fresh part consumes: res[:n_fresh] of the shallow path
            require(n_fresh <= n_shallow,
                    f"the fresh part consumes skip features 0..{n_fresh - 1} but only the first {n_shallow} come "
                    "from the shallow path; this UNet cannot be cached at this depth")
            self._n_fresh = n_fresh
            self._cache = (sample, up_skip)
        else:
            require(self._cache is not None and self._n_fresh is not None,
                    "no cached deep features: the first evaluation must refresh")
            assert self._cache is not None and self._n_fresh is not None
            sample, up_skip = self._cache
            require(sample.shape[0] == x.shape[0],
                    f"cached features have batch {sample.shape[0]} but the input has batch {x.shape[0]}")
            if self.correction is not None:
                sample = self.correction.apply(sample, self._step)
            self.stats.reuses += 1
            res = res[:self._n_fresh]
        self.stats.evaluations += 1

        if self.branch == 2:          # up_blocks[-2]'s last resnet (+ attention) and upsampler, fresh skip
            sample, res = _run_resnets(second, sample, res, emb, len(second.resnets) - 1, len(second.resnets))
            sample = _run_upsamplers(second, sample, emb)
        if hasattr(last, "skip_conv"):
            sample, up_skip = last(sample, res, emb, up_skip)
        else:
            sample = last(sample, res, emb)
        sample = unet.conv_norm_out(sample)
        sample = unet.conv_act(sample)
        sample = unet.conv_out(sample)
        if up_skip is not None:
            sample += up_skip
        if cfg.time_embedding_type == "fourier":
            sample = sample / timesteps.reshape((sample.shape[0], *([1] * len(sample.shape[1:]))))
        return sample
