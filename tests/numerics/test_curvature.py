"""Curvature: HVPs against the dense Hessian and gradcheck; Lanczos against eigvalsh."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.numerics.curvature import (
    SharpnessTracker,
    dense_hessian,
    full_grad,
    full_loss,
    hvp,
    hvp_forward_difference,
    hvp_forward_over_reverse,
    lanczos,
)
from dltheory.numerics.mlp import mlp_init, mse_loss_fn

WIDTHS = [5, 7, 6, 3]


@pytest.fixture
def tiny():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 5, dtype=torch.float64, generator=g)
    Y = torch.randn(40, 3, dtype=torch.float64, generator=g)
    theta = mlp_init(WIDTHS, g)
    return mse_loss_fn(WIDTHS), theta, X, Y, g


def test_full_grad_chunked_equals_unchunked(tiny):
    loss_fn, theta, X, Y, _ = tiny
    l1, g1 = full_grad(loss_fn, theta, X, Y, chunk=None)
    l2, g2 = full_grad(loss_fn, theta, X, Y, chunk=7)
    assert torch.allclose(l1, l2) and torch.allclose(g1, g2)
    assert torch.allclose(full_loss(loss_fn, theta, X, Y, chunk=9), l1)


def test_hvp_matches_dense_hessian(tiny):
    loss_fn, theta, X, Y, g = tiny
    H = dense_hessian(loss_fn, theta, X, Y)
    v = torch.randn(theta.shape, dtype=torch.float64, generator=g)
    assert torch.allclose(hvp(loss_fn, theta, X, Y, v, chunk=11), H @ v, atol=1e-10)
    assert torch.allclose(hvp_forward_over_reverse(loss_fn, theta, X, Y, v), H @ v, atol=1e-10)


def test_forward_difference_hvp_matches_double_backward(tiny):
    loss_fn, theta, X, Y, g = tiny
    v = torch.randn(theta.shape, dtype=torch.float64, generator=g)
    exact = hvp(loss_fn, theta, X, Y, v)
    base = full_grad(loss_fn, theta, X, Y)[1]
    for approx in (hvp_forward_difference(loss_fn, theta, X, Y, v, grad=base),
                   hvp_forward_difference(loss_fn, theta, X, Y, v, chunk=13)):
        assert float((approx - exact).norm() / exact.norm()) < 1e-6
    assert torch.equal(hvp_forward_difference(loss_fn, theta, X, Y, torch.zeros_like(theta)), torch.zeros_like(theta))


def test_forward_difference_hvp_rejects_bad_input(tiny):
    loss_fn, theta, X, Y, _ = tiny
    with pytest.raises(ValueError, match="float64"):
        hvp_forward_difference(loss_fn, theta.float(), X.float(), Y.float(), torch.ones_like(theta).float())
    with pytest.raises(ValueError, match="eps must be positive"):
        hvp_forward_difference(loss_fn, theta, X, Y, torch.ones_like(theta), eps=0.0)
    with pytest.raises(ValueError, match="grad has shape"):
        hvp_forward_difference(loss_fn, theta, X, Y, torch.ones_like(theta), grad=torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="v has shape"):
        hvp_forward_difference(loss_fn, theta, X, Y, torch.ones(3, dtype=torch.float64))


def test_gradcheck_of_the_gradient_validates_double_backward(tiny):
    """gradcheck compares the autograd Jacobian of the gradient (i.e. the Hessian via double backward) with
    finite differences."""
    loss_fn, theta, X, Y, _ = tiny

    def grad_fn(t):
        (g,) = torch.autograd.grad(loss_fn(t, X, Y), t, create_graph=True)
        return g

    assert torch.autograd.gradcheck(grad_fn, (theta.clone().requires_grad_(True),), eps=1e-6, atol=1e-5)


def test_lanczos_matches_eigvalsh(tiny):
    loss_fn, theta, X, Y, g = tiny
    H = dense_hessian(loss_fn, theta, X, Y)
    exact = torch.linalg.eigvalsh(H).flip(0)[:3]
    v0 = torch.randn(theta.shape, dtype=torch.float64, generator=g)
    res = lanczos(lambda v: hvp(loss_fn, theta, X, Y, v), v0, k=3, tol=1e-8, max_iter=theta.numel())
    assert torch.allclose(res.values, exact, rtol=1e-6)
    # Ritz vectors are eigenvectors
    for i in range(3):
        assert torch.allclose(H @ res.vectors[:, i], res.values[i] * res.vectors[:, i], atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(5, 40), seed=st.integers(0, 10_000), gap=st.floats(0.01, 0.5))
def test_lanczos_relative_error_bounded_by_tol(n, seed, gap):
    """Property: on random symmetric matrices with a small top gap, the returned top eigenvalue is within
    tol (relative) of the true one."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    eig = torch.rand(n, dtype=torch.float64, generator=g) * (1 - gap)
    eig[0] = 1.0
    A = Q @ torch.diag(eig) @ Q.T
    res = lanczos(lambda v: A @ v, torch.randn(n, dtype=torch.float64, generator=g), k=1, tol=1e-4,
                  max_iter=n)
    assert abs(res.values[0].item() - 1.0) <= 1e-4


def test_warm_start_needs_fewer_products(tiny):
    loss_fn, theta, X, Y, g = tiny
    mv = lambda v: hvp(loss_fn, theta, X, Y, v)
    tracker = SharpnessTracker(tol=1e-6, generator=g)
    tracker(mv, theta)
    cold = tracker.matvecs
    tracker(mv, theta + 1e-4 * torch.randn(theta.shape, dtype=torch.float64, generator=g))
    assert tracker.matvecs - cold < cold


def test_bad_inputs(tiny):
    loss_fn, theta, X, Y, _ = tiny
    with pytest.raises(ValueError, match="positive integer"):
        full_grad(loss_fn, theta, X, Y, chunk=0)
    with pytest.raises(ValueError, match="shape"):
        hvp(loss_fn, theta, X, Y, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="k must be"):
        lanczos(lambda v: v, torch.ones(3), k=0)
    with pytest.raises(ValueError, match="tiny networks"):
        dense_hessian(loss_fn, torch.zeros(6000), X, Y)


def test_lanczos_history_is_the_top_ritz_value_per_step(tiny):
    loss_fn, theta, X, Y, g = tiny
    v0 = torch.randn(theta.shape, dtype=torch.float64, generator=g)
    mv = lambda v: hvp(loss_fn, theta, X, Y, v)  # noqa: E731
    full = lanczos(mv, v0, k=1, max_iter=12, tol=1e-15, min_iter=12, history=True)
    assert len(full.history) == full.matvecs == 12
    assert all(b >= a - 1e-12 for a, b in zip(full.history, full.history[1:]))  # Ritz values rise monotonically
    for m in (3, 7):
        assert lanczos(mv, v0, k=1, max_iter=m, tol=1e-15, min_iter=m).values[0].item() == pytest.approx(
            full.history[m - 1], rel=1e-12)
    assert lanczos(mv, v0, k=1, max_iter=5).history is None
