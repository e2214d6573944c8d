"""Stage 4, the metrics of a row: FD/KID_cifarnet with bootstrap intervals against the CIFAR-10 test
statistics, the real-data floor at the same n, PSNR/SSIM against the FP samples from the same noise, the
share of pixel values outside [-1, 1], and the no-ranking rule across rows (real_models.intervals)."""

from __future__ import annotations

import math
from typing import Any

import torch

from .spec import RealSpec

__all__ = ["_comparisons", "_floor", "_quality"]


def _quality(x0: torch.Tensor, fp_x0: torch.Tensor, spec: RealSpec, extractor: Any) -> dict[str, Any]:
    """Quality of the final samples x0 [n, C, H, W] (clamped to [-1, 1] before scoring; the unclamped
    share of values outside [-1, 1] is ``out_of_range``)."""
    from ..metrics import fd_kid_intervals_vs_cifar_test, psnr, ssim

    q: dict[str, Any] = {"n": int(x0.shape[0]), "out_of_range": float((x0.float().abs() > 1).double().mean())}
    img = x0.float().clamp(-1, 1)
    if spec.metrics["fd_kid"] and extractor is not None and tuple(img.shape[1:]) == (3, 32, 32):
        m = spec.metrics
        r = fd_kid_intervals_vs_cifar_test(feats=extractor(img).numpy(), extractor=extractor, B=m["bootstrap"],
                                           seed=spec.seed, level=m["level"])
        q.update(FD_cifarnet=r["FD_cifarnet"], FD_cifarnet_ci=r["FD_cifarnet_ci"], KID_cifarnet=r["KID_cifarnet"],
                 KID_cifarnet_ci=r["KID_cifarnet_ci"])
    if spec.metrics["psnr_ssim"]:
        ref = fp_x0.float().clamp(-1, 1)
        p = psnr(img, ref)["mean"]
        q.update(PSNR=p if math.isfinite(p) else None,
                 SSIM=ssim(img, ref)["mean"] if img.shape[-1] >= 11 else None)
    return q


def _floor(n: int, spec: RealSpec, extractor: Any) -> dict[str, Any] | None:
    """FD/KID and intervals of n real CIFAR-10 images (metrics.real_data_floor), None when off/unavailable."""
    from ..metrics import real_data_floor

    if not (spec.metrics["fd_kid"] and spec.metrics["floor"]) or extractor is None:
        return None
    m = spec.metrics
    r = real_data_floor(n, extractor=extractor, B=m["bootstrap"], seed=spec.seed, level=m["level"])
    return {"FD_cifarnet": r["FD_cifarnet"], "FD_cifarnet_ci": r["FD_cifarnet_ci"], "KID_cifarnet": r["KID_cifarnet"],
            "KID_cifarnet_ci": r["KID_cifarnet_ci"], "n": r["n"], "source": r["source"]}


def _comparisons(rows: list[dict[str, Any]], floor: dict[str, Any] | None, spec: RealSpec,
                 n: int | None = None) -> dict[str, Any]:
    """Which rows can be told apart: per metric, the pairs whose intervals overlap ("not distinguishable at
    n"; never ranked), and per row the labels it is not distinguishable from (also written into each row's
    quality as ``<metric>_not_distinguishable_from`` and ``<metric>_distinguishable_from_real``)."""
    from ..intervals import BOOTSTRAP_METHOD, distinguishable, indistinguishable_pairs

    out: dict[str, Any] = {"n": spec.batch if n is None else n, "B": spec.metrics["bootstrap"],
                           "level": spec.metrics["level"], "seed": spec.seed, "method": BOOTSTRAP_METHOD,
                           "rule": "intervals overlap -> not distinguishable at this n (never ranked)"}
    for metric in ("FD_cifarnet", "KID_cifarnet"):
        cis = {r["label"]: r["quality"].get(f"{metric}_ci") for r in rows if r["quality"].get(f"{metric}_ci")}
        if not cis:
            continue
        pairs = indistinguishable_pairs(cis)
        out[metric] = {"not_distinguishable": pairs}
        for r in rows:
            lab = r["label"]
            if lab not in cis:
                continue
            r["quality"][f"{metric}_not_distinguishable_from"] = sorted(
                {b for a, b in pairs if a == lab} | {a for a, b in pairs if b == lab})
            if floor is not None:
                r["quality"][f"{metric}_distinguishable_from_real"] = distinguishable(cis[lab],
                                                                                      floor[f"{metric}_ci"])
    return out
