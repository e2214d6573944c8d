"""Per-step linear algebra of `iec evidence` against dense Jacobians (issue 12, acceptance 1).

References: the exact Jacobian formed by reverse-mode autograd (`torch.func.jacrev`, float64 for the MLP),
`torch.linalg.matrix_norm(., 2)` and `torch.linalg.eigvalsh`. A tiny diffusers UNet on 8x8 inputs checks the
JVP-as-VJP-of-VJP used for the real network.
"""

from __future__ import annotations

import math

import pytest
import torch

from iec_theory.evidence.linalg import Linearization, dense_jacobian, lanczos_extremes, power_norm
from iec_theory.evidence.perstep import contraction_on_subspace

torch.set_num_threads(1)


def _mlp(d: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W1 = torch.randn(24, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    W2 = torch.randn(d, 24, generator=g, dtype=torch.float64) / math.sqrt(24)

    def f(x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(x @ W1.T) @ W2.T   # a non-symmetric, nonlinear eps model
    return f


def test_linearization_matches_dense_jacobian_mlp():
    f = _mlp()
    x = torch.randn(1, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    J = dense_jacobian(f, x)
    lin = Linearization(f, x)
    v = torch.randn(1, 12, dtype=torch.float64)
    assert torch.allclose(lin.jvp(v).reshape(-1), J @ v.reshape(-1), atol=1e-12)
    assert torch.allclose(lin.vjp(v).reshape(-1), J.T @ v.reshape(-1), atol=1e-12)
    assert not torch.allclose(J, J.T)   # the test would miss a transposed JVP on a symmetric J


@pytest.mark.parametrize("A,B", [(1.05, -0.3), (1.0, -2.0), (1.2, 0.0)])
def test_power_iteration_matches_dense_spectral_norm(A, B):
    f = _mlp(seed=3)
    x = torch.randn(1, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    J = dense_jacobian(f, x)
    M = A * torch.eye(12, dtype=torch.float64) + B * J
    exact = float(torch.linalg.matrix_norm(M, 2))
    lin = Linearization(f, x)
    res = power_norm(lambda v: A * v + B * lin.jvp(v), lambda u: A * u + B * lin.vjp(u),
                     torch.ones(1, 12, dtype=torch.float64), max_iter=5000, tol=1e-12)
    assert res.converged
    assert abs(res.value - exact) <= 1e-6 * exact
    assert all(h <= exact * (1 + 1e-12) for h in res.history)   # every iterate is a lower estimate


def test_power_iteration_residual_criterion_is_not_fooled_by_a_flat_start():
    # M = I + e e1 e1^T: from a start nearly orthogonal to e1, ||Mv|| barely moves at first
    n = 400
    d = torch.ones(n, dtype=torch.float64)
    d[0] = 1.15
    v0 = torch.ones(n, dtype=torch.float64)
    v0[0] = 1e-3
    res = power_norm(lambda v: d * v, lambda u: d * u, v0, max_iter=500, tol=1e-6)
    assert abs(res.value - 1.15) < 1e-6


def test_lanczos_extremes_and_ritz_contraction_against_dense():
    f = _mlp(seed=5)
    x = torch.randn(1, 12, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    J = dense_jacobian(f, x)
    S = 0.5 * (J + J.T)
    ev = torch.linalg.eigvalsh(S)
    lin = Linearization(f, x)
    store = []

    def symvec(v):
        jv = lin.jvp(v)
        store.append((v.reshape(-1), jv.reshape(-1)))
        return 0.5 * (jv + lin.vjp(v))
    lo, hi, _ = lanczos_extremes(symvec, torch.ones(1, 12, dtype=torch.float64), m=12)
    assert abs(lo - float(ev[0])) < 1e-9 and abs(hi - float(ev[-1])) < 1e-9
    Q = torch.stack([q for q, _ in store], 1)
    JQ = torch.stack([j for _, j in store], 1)
    B = -0.7
    sub = contraction_on_subspace(Q, JQ, B, [0.1, 0.5, 1.0])
    for lam, val in zip([0.1, 0.5, 1.0], sub):
        exact = float(torch.linalg.matrix_norm((1 - lam) * torch.eye(12, dtype=torch.float64) + lam * B * J, 2))
        assert abs(val - exact) < 1e-9   # the Krylov space is the whole space here (m = n)


def test_tiny_unet_power_iteration_agrees_with_dense_jacobian():
    from real_models.unet import build_unet, tiny_config

    cfg = tiny_config()
    cfg["sample_size"] = 8
    torch.manual_seed(0)
    unet = build_unet(cfg).eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.full((1,), 500, dtype=torch.long)

    def f(z):
        return unet(z, t, return_dict=False)[0]
    J = dense_jacobian(f, x).double()
    A, B = 1.02, -0.5
    M = A * torch.eye(J.shape[0], dtype=torch.float64) + B * J
    exact = float(torch.linalg.matrix_norm(M, 2))
    lin = Linearization(f, x)
    v = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    jv = lin.jvp(v).reshape(-1).double()
    assert torch.allclose(jv, J @ v.reshape(-1).double(), atol=1e-4 * float(jv.abs().max()))
    res = power_norm(lambda w: A * w + B * lin.jvp(w), lambda u: A * u + B * lin.vjp(u), v, max_iter=300, tol=1e-5)
    assert abs(res.value - exact) <= 1e-3 * exact
