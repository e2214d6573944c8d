"""Helpers shared by the theorem modules."""

from __future__ import annotations

from typing import Any

import torch

from ..constants import SegmentConstants, segment_constants
from ..perturbations import Perturbation, unwrap


def batch_segment_constants(model: Any, x0: torch.Tensor, x1: torch.Tensor, t: int) -> SegmentConstants | None:
    """Worst case over the per-sample segments [x0_b, x1_b] of a batch (the batched map is block diagonal)."""
    out: SegmentConstants | None = None
    for b in range(x0.shape[0]):
        c = segment_constants(model, x0[b], x1[b], t)
        if c is None:
            return None
        if out is None:
            out = c
        else:
            out = SegmentConstants(min(out.m, c.m), max(out.L, c.L), out.exact and c.exact, out.points + c.points,
                                  out.certified and c.certified)
    return out


def is_affine(model: Any) -> bool:
    """An exact model with affine(t) -> (C, c) (a Gaussian toy or the stiff construction)."""
    return not isinstance(model, Perturbation) and callable(getattr(model, "affine", None))


def eigenbasis(model: Any) -> torch.Tensor:
    """The fixed eigenbasis V (columns) of C_t of an affine symmetric toy (identity when diagonal)."""
    V = getattr(model, "cov_eigvecs", None)
    if V is None:
        return torch.eye(model.dim, dtype=torch.float64)
    return torch.as_tensor(V, dtype=torch.float64)


def is_deterministic(model: Any) -> bool:
    """False for wrappers whose output depends on call history (iid noise, cache) anywhere in the chain."""
    from ..perturbations import Cache, Compose, IIDNoise, StepLocalized

    m = model
    while isinstance(m, Perturbation):
        if isinstance(m, (IIDNoise, Cache, Compose, StepLocalized)):
            return False
        m = m.base
    return True


__all__ = ["batch_segment_constants", "eigenbasis", "is_affine", "is_deterministic", "unwrap"]
