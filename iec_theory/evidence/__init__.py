"""The paper's own argument (PAPER.md S1-S5) checked on toys and on the real network (issue 12).

Modules: `statements` (S1-S5, H1-H6, paper vs official code), `linalg` (JVP/VJP, power iteration,
Lanczos, dense Jacobians), `perstep` (per-step S1-S5 quantities), `models` (pure eps~ per step; what J
means for quantized and cached networks), `runner` (one setting through the sampler), `toy`
(toy_var100 closed forms), `real` (real-network settings), `verdicts` (verdicts per statement and
setting), `prescribe` (the theory's IEC prescription), `compare` (prescription vs official preset, DDIM
at equal NFE, Heun), `document` (the evidence.json document of `iec evidence`).
"""

from __future__ import annotations

from .statements import HYPOTHESES, PAPER_VS_CODE, STATEMENTS

__all__ = ["HYPOTHESES", "PAPER_VS_CODE", "STATEMENTS"]
