"""The paper's argument as statements S1-S5 with its implicit hypotheses H1-H6 (PAPER.md sections 2 and 5).

Each statement has its text (as the paper makes it, reconstructed in PAPER.md), typst math, the hypotheses
it relies on without stating them, and the project theorem (THEORY.md T1-T6, docs/PROOFS.md) that proves,
corrects or refutes it. `PAPER_VS_CODE` lists every difference between the paper and the official
CIFAR-10 code (PAPER.md section 3) with whether it changes a verdict here. Pure data: no computation.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "HYPOTHESES",
    "PAPER_VS_CODE",
    "STATEMENTS",
    "Hypothesis",
    "Statement",
    "statement",
]


@dataclass(frozen=True)
class Hypothesis:
    """An assumption the paper uses without stating it (PAPER.md section 5)."""

    id: str
    text: str
    check: str        # how it is checked per setting here


@dataclass(frozen=True)
class Statement:
    """One step of the paper's argument, with the hypotheses it uses and the project theorem that settles it."""

    id: str
    title: str
    text: str
    typst: str
    hypotheses: tuple[str, ...]
    theorems: str     # THEORY.md theorem(s) that prove / correct / refute it
    relation: str     # "proves", "corrects", "refutes", ... in words


HYPOTHESES: dict[str, Hypothesis] = {h.id: h for h in (
    Hypothesis("H1", "First-order Taylor validity: delta_t is small enough that eps~(x_t + delta_t) - eps~(x_t) "
                     "= J_t delta_t up to a negligible remainder.",
               "met at a step when the S1 linearisation residual is below 0.1 (relative)"),
    Hypothesis("H2", "eps~ is differentiable, so J_t exists (quantized and cached networks are piecewise constant "
                     "in x or depend on earlier states).",
               "met for exact toys and the FP network; not met for fake-quantized networks (J is a "
               "straight-through surrogate); met for the cache only with the cached features held fixed"),
    Hypothesis("H3", "A contraction L < 1 holds uniformly on the region the iteration visits (checked by the paper "
                     "at points, for lambda in [0.1, 0.7]); nothing is required of J_t.",
               "met when L(lambda) < 1 at every step for the lambda used (0.5) and the secant contraction over "
               "the segment travelled is < 1"),
    Hypothesis("H4", "k -> infinity (convergence to the fixed point), while the experiments use K = 1.",
               "never met in the official CIFAR-10 setting (K = 1); the finite-K form of S5 is checked instead"),
    Hypothesis("H5", "C is a bounded constant independent of past errors, although it contains A_t ||delta_t||.",
               "met when the incoming part lambda A_t ||delta_t|| is below half of C at every step"),
    Hypothesis("H6", "Per-step spectral norms above 1 imply exponential growth of the product (and of the error).",
               "met when the measured growth of the propagated error is within a factor 2 of the running "
               "product of per-step norms"),
)}


STATEMENTS: tuple[Statement, ...] = (
    Statement(
        "S1", "One-step error recursion (first order)",
        "delta_{t-1} ~= (A_t + B_t J_t) delta_t + B_t eps^delta, with J_t the Jacobian of the efficient network at "
        "the ideal point x_t (first-order Taylor expansion; an approximation, not an inequality).",
        "delta_(t-1) approx (A_t I + B_t J_t) delta_t + B_t epsilon^delta_theta",
        ("H1", "H2"), "T2 (exact identity for affine eps~), T1 (inequality for any eps~)",
        "T2 proves it exactly for affine eps~; T1 replaces the approximation by an inequality with the Lipschitz "
        "constant on the segment (no smallness needed)"),
    Statement(
        "S2", "Accumulated error at t = 0",
        "delta_0 = sum_i (prod_j (A_j + B_j J_j)) B_i eps^delta: unrolling S1 from delta_T = 0. The product must run "
        "over the steps executed AFTER step i in reverse time (j = 1..i-1 in the paper's indexing); the "
        "transcribed range j = i+1..T (steps before i) is wrong unless all factors commute.",
        "delta_0 = sum_(i=1)^T (product_(j=1)^(i-1) (A_j I + B_j J_j)) B_i epsilon^delta_i",
        ("H1", "H2"), "T1 (unrolled discrete Gronwall), T2 (exact for affine eps~)",
        "corrects: T1/T2 use the factors of the later steps; the transcribed product range is refuted numerically"),
    Statement(
        "S3", "Exponential accumulation from per-step norms above 1",
        "The spectral norm ||A_t + B_t J_t||_2 is the worst-case one-step amplification; it exceeds 1 at every "
        "step, hence errors accumulate exponentially.",
        "norm(A_t I + B_t J_t)_2 > 1 quad forall t quad => quad norm(delta_0) tilde e^(c T)",
        ("H2", "H6"), "T1m (xbar), T6 (lower bound), toy counterexample of PAPER.md 5(iv)",
        "refutes the inference: norms > 1 in x are mostly the factor A_t > 1 of the flow itself (xbar norms are "
        "<= 1 for the exact Gaussian score); T6 gives exponential growth only in stiff or expansive directions"),
    Statement(
        "S4", "Convergence of IEC (Banach fixed point)",
        "G(x) = (1 - lambda) x + lambda (A_t x_t + B_t eps(x, t)) is a contraction with L = ||(1 - lambda) I + "
        "lambda B_t J_t||_2 < 1 for lambda in [0.1, 0.7] (measured), since B_t < 0.",
        "L(lambda) = norm((1 - lambda) I + lambda B_t J_t)_2 < 1 quad lambda in [0.1, 0.7]",
        ("H2", "H3"), "T3 (linear: iff lambda < 2/(1+u) and 1 + u > 0), T5 (monotone + Lipschitz)",
        "proves it under monotonicity (T5) and gives the exact lambda range in the linear case (T3); B_t < 0 alone "
        "is not enough: an eigenvalue mu of the symmetric part with B_t mu >= 1 rules out every lambda"),
    Statement(
        "S5", "Per-step bound C/(1-L) and 'linear' total",
        "||delta^(k)|| <= L^k ||delta^(0)|| + C (1 - L^k)/(1 - L) with C = lambda(||B_t(eps(x_{t-1}) - eps(x_t))|| + "
        "||A_t delta_t + B_t eps^delta||) a bounded constant; the total error is a sum of per-step terms (linear).",
        "norm(delta^((k))) <= L^k norm(delta^((0))) + C (1 - L^k)/(1 - L), quad "
        "C = lambda (norm(B_t (epsilon(x_(t-1)) - epsilon(x_t))) + norm(A_t delta_t + B_t epsilon^delta))",
        ("H3", "H4", "H5"), "T4 (fixed point, monotone), T4+T5 (finite K)",
        "corrects: the per-step bound holds under H3, but C contains A_t ||delta_t||, so the incoming error still "
        "propagates with factor ~A_t/(1+|B_t| m) (T4); 'linear' holds in xbar under monotonicity only"),
)


def statement(sid: str) -> Statement:
    """The statement with id sid (S1..S5)."""
    for s in STATEMENTS:
        if s.id == sid:
            return s
    raise KeyError(f"unknown statement {sid!r}; choose one of {[s.id for s in STATEMENTS]}")


# (difference, paper, official code, changes a verdict here?)
PAPER_VS_CODE: tuple[dict[str, str], ...] = (
    {"item": "early stop", "paper": "absolute ||x^(k+1) - x^(k)|| < 1e-5",
     "code": "relative ||yhat - y|| / (||y|| + 1e-6) < 1e-3, checked before the update (keeps x^(0))",
     "verdict_effect": "not for S1-S5 (checked with tol = 0, every correction applied); it matters for the "
                       "method comparison: a correction whose relative residual is below 1e-3 is skipped but its "
                       "evaluation is still spent (on toy_var100 every correction was skipped: the official "
                       "preset returned plain DDIM at twice the NFE)"},
    {"item": "which steps", "paper": "every step (quantization)",
     "code": "only cache-refresh steps (every 10th with --replicate_interval 10); all steps without cache",
     "verdict_effect": "S5 on the cached model is evaluated at refresh steps only; the error injected at "
                       "non-refresh steps propagates uncorrected"},
    {"item": "K and lambda", "paper": "k -> infinity (analysis), K = 1 and lambda = 0.5 (experiments)",
     "code": "CIFAR: max_iter = 2 -> K = 1, lambda_1 = 0.5; LDM: K = 2, lambdas (1, 0.5)",
     "verdict_effect": "yes for S5: H4 (k -> infinity) is never met; the finite-K bound is checked"},
    {"item": "spacing", "paper": "DDIM, T = 100 (spacing not stated)",
     "code": "quadratic skip: int(linspace(0, sqrt(800), 100)^2), 4 repeated timesteps (0, 0, 0, 0)",
     "verdict_effect": "no: a repeated timestep is a step with A = 1, B = 0 (identity, norm 1, L = 1 - lambda); "
                       "the per-step arrays list them with their exact values"},
    {"item": "Jacobian helper", "paper": "spectral norm of A_t + B_t J_t measured",
     "code": "compute_spectral_radius detaches the network output, so it sees only (1/sqrt(abar) - 1) I; not "
             "called by the sampler",
     "verdict_effect": "yes for S3: the official helper cannot measure ||A + B J||; here J comes from autograd"},
    {"item": "correction cache", "paper": "not discussed",
     "code": "the correction evaluation refreshes the cache reused by later steps",
     "verdict_effect": "reproduced by real_models.cache (refresh_all_evals=True)"},
    {"item": "noise", "paper": "eta = 0 (DDIM)", "code": "fresh randn per iteration",
     "verdict_effect": "no: irrelevant at eta = 0"},
)
