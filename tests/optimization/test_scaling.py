"""Scaling rules, SVAG and the SDE chapter's replica experiments (``dltheory.optimization.scaling``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.numerics.data import digits_classification
from dltheory.numerics.optimizers import adam_init, adam_update
from dltheory.optimization.scaling import (
    HParams,
    batched_mlp_init,
    batched_xent,
    curve_distance,
    linreg_grad_second_moment,
    linreg_minibatch_grad,
    linreg_rmsprop_replicas,
    scale_linear,
    scale_none,
    scale_sqrt,
    sde_invariants,
    svag_coefficients,
    svag_combine,
    svag_hparams,
    train_adam_svag,
)

F64 = torch.float64


def test_hparams_validation():
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        HParams(lr=0.1, batch=0, steps=10)
    with pytest.raises(ValueError, match="lr must be"):
        HParams(lr=0.0, batch=1, steps=10)
    with pytest.raises(ValueError, match="beta2 must lie"):
        HParams(lr=0.1, batch=1, steps=10, beta2=1.5)
    with pytest.raises(ValueError, match="steps must be"):
        HParams(lr=0.1, batch=1, steps=-1)


@settings(max_examples=50, deadline=None)
@given(lr=st.floats(1e-4, 0.1), beta2=st.floats(0.9, 0.9999), beta1=st.floats(0.5, 0.999),
       eps=st.floats(0.0, 1.0), kappa=st.sampled_from([1, 2, 4, 8]), sigma=st.floats(0.1, 10.0))
def test_sqrt_rule_keeps_the_sde_invariants(lr, beta2, beta1, eps, kappa, sigma):
    hp = HParams(lr=lr, batch=4, steps=800, beta2=beta2, beta1=beta1, eps=eps)
    if kappa * (1 - beta1) >= 1 or kappa * (1 - beta2) >= 1:
        with pytest.raises(ValueError, match="square-root rule breaks"):
            scale_sqrt(hp, kappa)
        return
    new = scale_sqrt(hp, kappa)
    a = sde_invariants(hp, sigma)
    b = sde_invariants(new, sigma / math.sqrt(kappa))  # batch x kappa divides the noise scale by sqrt(kappa)
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key
    assert new.batch == 4 * kappa


def test_linear_and_no_scaling():
    hp = HParams(lr=0.01, batch=2, steps=1000, beta2=0.99, eps=0.1)
    lin, none = scale_linear(hp, 4), scale_none(hp, 4)
    assert (lin.lr, lin.batch, lin.steps, lin.beta2, lin.eps) == (0.04, 8, 250, 0.99, 0.1)
    assert (none.lr, none.batch, none.steps) == (0.01, 8, 250)
    with pytest.raises(ValueError, match="kappa must be"):
        scale_linear(hp, 0.5)
    with pytest.raises(ValueError, match="for adaptive methods"):
        scale_sqrt(HParams(lr=0.1, batch=1, steps=10), 2)


@settings(max_examples=50, deadline=None)
@given(ell=st.floats(1.0, 50.0))
def test_svag_coefficients(ell):
    r1, r2 = svag_coefficients(ell)
    assert r1 + r2 == pytest.approx(1.0)
    assert r1**2 + r2**2 == pytest.approx(ell**2, rel=1e-9)
    s1, s2 = svag_coefficients(ell, adaptive=False)
    assert s1 + s2 == pytest.approx(1.0) and s1**2 + s2**2 == pytest.approx(ell, rel=1e-9)


def test_svag_combine_monte_carlo():
    g = torch.Generator().manual_seed(3)
    n, ell = 200_000, 3.0
    g1 = 0.7 + torch.randn(n, generator=g, dtype=F64)
    g2 = 0.7 + torch.randn(n, generator=g, dtype=F64)
    c = svag_combine(g1, g2, ell)
    se = ell / math.sqrt(n)
    assert abs(c.mean().item() - 0.7) < 5 * se
    assert c.var().item() == pytest.approx(ell**2, rel=0.02)


@settings(max_examples=30, deadline=None)
@given(ell=st.sampled_from([1, 2, 4, 8]), sigma=st.floats(0.1, 10.0))
def test_svag_hparams_keep_the_sde_invariants(ell, sigma):
    hp = HParams(lr=0.01, batch=8, steps=100, beta2=0.999, beta1=0.9, eps=1e-3)
    sv = svag_hparams(hp, ell)
    a, b = sde_invariants(hp, sigma), sde_invariants(sv, sigma * ell)  # SVAG multiplies the noise std by ell
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-9), key
    assert sv.batch == hp.batch


def test_linreg_second_moment_matches_monte_carlo():
    g = torch.Generator().manual_seed(4)
    h = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    w = torch.tensor([0.3, -0.2, 0.1], dtype=F64)
    R, B = 100_000, 3
    grads = linreg_minibatch_grad(w.expand(R, -1).clone(), h, 0.8, B, g)
    mc = (grads**2).mean(0)
    exact = linreg_grad_second_moment(w, h, 0.8, B)
    assert torch.allclose(mc, exact, rtol=0.03)
    assert torch.allclose(grads.mean(0), h * w, atol=0.02)


def _small_linreg(seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.linspace(0.5, 2.0, 4, dtype=F64)
    hp = HParams(lr=0.02, batch=2, steps=300, beta2=0.95, eps=0.05)
    return linreg_rmsprop_replicas(hp, h, 1.0, 0.3 / h.sqrt(), 64, g, n_records=10)


def test_linreg_replicas_deterministic_and_converging():
    a, b = _small_linreg(0), _small_linreg(0)
    assert np.array_equal(a.loss, b.loss) and np.array_equal(a.time, b.time)
    assert a.loss.shape == (10, 64)
    mean, se = a.stationary_mean(0.5)
    assert 0 < mean < a.loss[0].mean() and se > 0
    with pytest.raises(ValueError, match="fraction"):
        a.stationary_mean(0.0)


def test_svag_training_runs_and_is_deterministic():
    X, y = digits_classification()
    X, y = X[:200], y[:200]
    widths = [64, 8, 10]
    hp = HParams(lr=0.01, batch=16, steps=8, beta2=0.99, beta1=0.9, eps=1e-8)
    runs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(0)
        theta0 = batched_mlp_init(widths, 3, g)
        runs.append([train_adam_svag(theta0, X, y, widths, hp, ell, 4, g) for ell in (1, 2)])
    assert np.array_equal(runs[0][1].loss, runs[1][1].loss)
    r1, r2 = runs[0]
    assert np.allclose(r1.time, r2.time) and r1.loss.shape == (5, 3)
    assert r1.loss[-1].mean() < r1.loss[0].mean()
    assert curve_distance(r1, r2) >= 0
    with pytest.raises(ValueError, match="multiple of n_records"):
        train_adam_svag(theta0, X, y, widths, hp, 1, 3, g)


def test_plain_adam_equals_svag_ell_one():
    """With ell = 1 the SVAG trainer is plain Adam on one minibatch per step (adam_update, batched)."""
    X, y = digits_classification()
    widths = [64, 4, 10]
    g = torch.Generator().manual_seed(5)
    theta0 = batched_mlp_init(widths, 2, g)
    hp = HParams(lr=0.05, batch=8, steps=3, beta2=0.99, beta1=0.9, eps=1e-8)
    run = train_adam_svag(theta0, X, y, widths, hp, 1, 3, torch.Generator().manual_seed(7))
    g2 = torch.Generator().manual_seed(7)
    theta, state = theta0.clone(), adam_init(theta0)
    for _ in range(3):
        idx = torch.randint(X.shape[0], (2, 8), generator=g2)
        th = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(batched_xent(th, X[idx], y[idx], widths).sum(), th)
        theta, state = adam_update(theta, grad, state, 0.05, 0.9, 0.99, 1e-8)
    assert np.allclose(run.loss[-1], batched_xent(theta, X, y, widths).detach().numpy(), rtol=1e-5)


def test_batched_mlp_validation():
    with pytest.raises(ValueError, match="widths must be"):
        batched_mlp_init([64, 0, 10], 2, torch.Generator())
