"""DeepCache-style feature caching for a diffusers `UNet2DModel` (issue 6, item 2).

The UNet is split at its shallowest level:

* shallow path, run at every evaluation: input centring, time embedding, `conv_in`, the first down
  block, and the last up block followed by `conv_norm_out`, `conv_act`, `conv_out`;
* deep path, run only at refresh steps: the remaining down blocks, the mid block and every up block
  except the last. Its result (the hidden state entering the last up block, plus the up-path skip
  sample of skip-connection UNets) is cached and reused by the evaluations in between.

At a refresh step the output is exactly `UNet2DModel.forward` (same operations in the same order).
Between refresh steps the last up block combines the fresh shallow skip features (`conv_in` output
and the first down block's resnet outputs) with the cached deep feature, as in DeepCache.

Refresh steps are step indices i (0-based, as passed by the sampler to `begin_step(i, t)`): every
N-th (`i % N == 0`, the official convention) or an explicit, possibly non-uniform list. With
`refresh_all_evals=True` (default, as in the official IEC/DeepCache DDPM code) every evaluation
of a refresh step, IEC's correction evaluations included, recomputes the deep path and refreshes
the cache; with False only the step's first evaluation refreshes and the corrections reuse it.
Outside a sampler (no `begin_step` call since construction or `reset()`), every call is a full
forward. `begin_step(0, t)` starts a new trajectory and drops the cache.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from iec_theory.errors import ConfigError, require
from iec_theory.iec import StepSelection

__all__ = ["CacheStats", "CachedUNet", "refresh_steps_for"]


@dataclass
class CacheStats:
    """Counters: network evaluations, deep-path runs (refreshes) and cache reuses."""

    evaluations: int = 0
    deep_calls: int = 0
    reuses: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"evaluations": self.evaluations, "deep_calls": self.deep_calls, "reuses": self.reuses}


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
    """

    def __init__(
        self,
        unet: nn.Module,
        refresh_every: int | None = None,
        refresh_steps: Iterable[int] | None = None,
        refresh_all_evals: bool = True,
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
        self.refresh_all_evals = refresh_all_evals
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
        self._last_slice: tuple[int, int] | None = None
        self._step: int | None = None
        self._evals_in_step = 0

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
        last = unet.up_blocks[-1]

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
            for block in unet.up_blocks[:-1]:
                n = len(block.resnets)
                res_samples, res = res[-n:], res[:-n]
                if hasattr(block, "skip_conv"):
                    sample, up_skip = block(sample, res_samples, emb, up_skip)
                else:
                    sample = block(sample, res_samples, emb)
            n_last = len(last.resnets)
            lo, hi = len(res) - n_last, len(res)
            require(lo >= 0 and hi <= n_shallow,
                    f"the last up block consumes skip features {lo}..{hi - 1} but only the first {n_shallow} "
                    "come from the shallow path; this UNet cannot be cached at this depth")
            self._last_slice = (lo, hi)
            self._cache = (sample, up_skip)
            last_res = res[lo:hi]
        else:
            require(self._cache is not None and self._last_slice is not None,
                    "no cached deep features: the first evaluation must refresh")
            assert self._cache is not None and self._last_slice is not None
            sample, up_skip = self._cache
            require(sample.shape[0] == x.shape[0],
                    f"cached features have batch {sample.shape[0]} but the input has batch {x.shape[0]}")
            self.stats.reuses += 1
            lo, hi = self._last_slice
            last_res = res[lo:hi]
        self.stats.evaluations += 1

        if hasattr(last, "skip_conv"):
            sample, up_skip = last(sample, last_res, emb, up_skip)
        else:
            sample = last(sample, last_res, emb)
        sample = unet.conv_norm_out(sample)
        sample = unet.conv_act(sample)
        sample = unet.conv_out(sample)
        if up_skip is not None:
            sample += up_skip
        if cfg.time_embedding_type == "fourier":
            sample = sample / timesteps.reshape((sample.shape[0], *([1] * len(sample.shape[1:]))))
        return sample
