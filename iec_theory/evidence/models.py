"""Efficient-model settings as pure functions of x at one step, and what J means for each (PAPER.md H2).

The sampler (`iec_theory.sampler.sample`) runs the stateful eps models (quantizers, caches); the analysis
needs eps~(., t) at the state of step i as a pure, differentiable function of x. `pure_fn(model, i, t)`:

* exact toy / FP network: the network itself (J is the true Jacobian);
* fake-quantized network (`real_models.quant.QuantizedModel`): the quantized copy with a
  straight-through estimator (STE): every activation quantizer returns x + (Q(x) - x).detach(), so its
  value is Q(x) and its derivative the identity; weights are the (constant) quantized weights. The
  true derivative is 0 almost everywhere (H2 not met); J here is the STE surrogate, checked against
  finite differences at stated scales;
* cached network (`real_models.cache.CachedUNet`): at a refresh step the full network (the cache
  output equals the FP forward); between refreshes the shallow path with the cached deep features held
  fixed (J is the derivative with respect to the current state only; the cached features' dependence on
  the earlier state is part of eps^delta).

`Probe` wraps a model for `sample` and calls a hook at the first evaluation of every step, with the state
and the pure function of that step, so the analysis sees the cache exactly as the sampler left it.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["Probe", "pure_fn", "ste_quantizers"]

Op = Callable[[torch.Tensor], torch.Tensor]


def _tt(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)


def _ste_forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.mode != "quant":
        return x
    q = self.current_params().apply(x.detach())
    return x + (q - x.detach())


@contextmanager
def ste_quantizers(net: torch.nn.Module):
    """Within the context, every ActQuantizer of net uses the straight-through forward."""
    from real_models.quant import ActQuantizer

    qs = [m for m in net.modules() if isinstance(m, ActQuantizer)]
    for q in qs:
        q.forward = types.MethodType(_ste_forward, q)
    try:
        yield
    finally:
        for q in qs:
            del q.forward


def _unet_out(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return out[0]
    return out.sample


def pure_fn(model: Any, step_index: int, t: int) -> tuple[Op, str]:
    """(x -> eps~(x, t) at step step_index, description of J). Must be called while the sampler is at that step."""
    try:
        from real_models.cache import CachedUNet
        from real_models.quant import QuantizedModel
        from real_models.unet import UNetEpsModel
    except ImportError:  # toys only
        CachedUNet = QuantizedModel = UNetEpsModel = ()  # type: ignore[assignment,misc]
    if CachedUNet and isinstance(model, CachedUNet):
        inner = model.unet
        if model.is_refresh_step(step_index) or model._cache is None:
            def f_full(x: torch.Tensor) -> torch.Tensor:
                return _unet_out(inner(x, _tt(x, t), return_dict=False))
            return f_full, "cache (refresh step): exact Jacobian of the full network"
        evaluate = inspect.unwrap(type(model).evaluate)

        def f_cached(x: torch.Tensor) -> torch.Tensor:
            return evaluate(model, x, _tt(x, t), False)
        return f_cached, "cache (reuse step): Jacobian of the shallow path, cached deep features held fixed"
    if QuantizedModel and isinstance(model, QuantizedModel):
        net = model.net

        def f_q(x: torch.Tensor) -> torch.Tensor:
            with ste_quantizers(net):
                return _unet_out(net(x, _tt(x, t), return_dict=False))
        return f_q, "fake-quantized: straight-through Jacobian (activation rounding has derivative 1)"
    if UNetEpsModel and isinstance(model, UNetEpsModel):
        unet = model.unet

        def f_u(x: torch.Tensor) -> torch.Tensor:
            return _unet_out(unet(x, _tt(x, t), return_dict=False))
        return f_u, "full precision: exact Jacobian (autograd)"
    if isinstance(model, torch.nn.Module) and hasattr(model, "down_blocks"):
        def f_m(x: torch.Tensor) -> torch.Tensor:
            return _unet_out(model(x, _tt(x, t), return_dict=False))
        return f_m, "full precision: exact Jacobian (autograd)"

    def f(x: torch.Tensor) -> torch.Tensor:
        return model(x, _tt(x, t))
    return f, "exact Jacobian (autograd)"


class Probe:
    """eps_model wrapper: calls hook(step_index, t, x, model) at the first evaluation of each step."""

    def __init__(self, model: Any, hook: Callable[[int, int, torch.Tensor, Any], None]):
        self.model = model
        self.hook = hook
        self._step: tuple[int, int] | None = None
        self._fresh = False

    def begin_step(self, step_index: int, t: int) -> None:
        fn = getattr(self.model, "begin_step", None)
        if fn is not None:
            fn(step_index, t)
        self._step = (int(step_index), int(t))
        self._fresh = True

    def __call__(self, x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        if self._fresh and self._step is not None:
            self._fresh = False
            self.hook(self._step[0], self._step[1], x, self.model)
        return self.model(x, tt)
