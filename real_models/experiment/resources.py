"""Memory estimate of a real-model run, checked before any allocation (issue 13, item 3).

Per image (``s`` = C*H*W float32 bytes of one state, ``c0`` = channels of the first UNet level):

* FP references, kept for the whole run: each distinct reference (plain DDIM, IEC per refresh selection,
  DDIM at each matched NFE, Heun) keeps its states and each step's first evaluation (input and output):
  ``3 * s * (steps + 1)`` each;
* the row being measured: its states and every evaluation's input and output, ``s * (steps + 1 + 2 NFE)``;
* activations of one network evaluation: ``24 * H * W * c0 * 4`` bytes (about two dozen full-resolution
  feature maps alive at once; a deliberately rough figure for the DDPM UNet family).

The limit is the memory available now (``MemAvailable`` of /proc/meminfo, else the physical memory).
Both are estimates: the check refuses only runs that clearly cannot fit (estimate above the limit).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from iec_theory.errors import ConfigError

__all__ = ["available_memory_bytes", "check_memory", "estimate_memory_bytes"]


def available_memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _model_config(model_dir: str | Path | None) -> dict[str, Any]:
    """config.json of the model folder (only the JSON is read), or DDPM-CIFAR-10-like defaults."""
    from ..pretrained import DEFAULT_MODEL_DIR

    d = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
    try:
        return json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def estimate_memory_bytes(spec: Any, config: dict[str, Any]) -> int:
    from .configurations import _matched_nfe

    size = int(config.get("sample_size", 32) or 32)
    chans = int(config.get("in_channels", 3) or 3)
    c0 = int((config.get("block_out_channels") or [128])[0])
    s = chans * size * size * 4
    refs: dict[tuple, int] = {("ddim",): spec.T}
    for c in spec.configs:
        for use in c.iec:
            refs[("iec", c.cache) if use else ("ddim",)] = spec.T
        for b in c.baselines:
            if b == "ddim_matched":
                nfe = _matched_nfe(spec, c)
                refs[("ddim_matched", nfe)] = nfe
            else:
                refs[("heun",)] = spec.T
    states_refs = sum(steps + 1 for steps in refs.values())
    max_steps = max(refs.values())
    per_image = s * (3 * states_refs + max_steps + 1 + 2 * 2 * max_steps) + 24 * size * size * c0 * 4
    return int(spec.batch) * per_image


def check_memory(spec: Any, model_dir: str | Path | None = None) -> int:
    """Raise ConfigError (one line, naming sampler.batch) when the estimate exceeds the available memory."""
    need = estimate_memory_bytes(spec, _model_config(model_dir if model_dir is not None else spec.model_dir))
    have = available_memory_bytes()
    if need > have:
        raise ConfigError(f"sampler.batch: {spec.batch} images need about {need / 2**30:.3g} GiB (estimate: stored "
                          f"FP reference trajectories at T={spec.T}, one row's evaluations, network activations), "
                          f"more than the {have / 2**30:.3g} GiB of memory available; lower sampler.batch")
    return need
