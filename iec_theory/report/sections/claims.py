"""Claims C1 and C2: hypotheses, pinned toy instances inside and outside them, and the verdicts
(`ClaimVerdict` objects of iec_theory.claims; page 1 summarises them)."""

from __future__ import annotations

from . import claims_adapter


def compute(ctx) -> None:
    """Evaluate the claims once per build (ctx.shared["claim_verdicts"]); NotAvailable without the module."""
    claims_adapter.compute(ctx, ctx.module("iec_theory.claims", "CLAIMS", "bias_reduction"))


def section(ctx) -> str:
    return claims_adapter.render(ctx, ctx.module("iec_theory.claims", "CLAIMS", "bias_reduction"))
