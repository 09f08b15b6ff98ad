"""Tests of dltheory.learned_algorithms.es: antithetic ES, truncated ES / PES, and the symbolic Gaussian
expectations."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.learned_algorithms import es


def _quadratic(d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(d, d, generator=g, dtype=torch.float64)
    A = M @ M.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    theta = torch.randn(d, generator=g, dtype=torch.float64)

    def f(X):
        return 0.5 * ((X @ A) * X).sum(-1) + X @ b + 0.3

    return f, A, b, theta


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 6), seed=st.integers(0, 10_000), sigma=st.floats(1e-3, 3.0))
def test_antithetic_sample_is_exact_directional_derivative_on_quadratics(d, seed, sigma):
    # For a quadratic, (f(t + s e) - f(t - s e)) / (2 s) = grad f . e exactly: each sample is e e^T grad f.
    f, A, b, theta = _quadratic(d, seed)
    g = torch.Generator().manual_seed(seed + 1)
    s = es.es_samples(f, theta, sigma, 7, g, kind="antithetic")
    eps = torch.randn(7, d, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    grad = A @ theta + b
    torch.testing.assert_close(s, eps * (eps @ grad)[:, None], rtol=1e-9, atol=1e-9)


def test_antithetic_mean_is_unbiased_monte_carlo():
    d, n = 4, 40_000
    f, A, b, theta = _quadratic(d, 3)
    g = torch.Generator().manual_seed(0)
    est = es.antithetic_es_grad(f, theta, 0.7, n, g)
    grad = A @ theta + b
    # standard error of the mean: sqrt((d + 1) |grad|^2 / n)
    se = math.sqrt((d + 1) / n) * float(grad.norm())
    assert float((est - grad).norm()) < 5 * se


@pytest.mark.parametrize("kind", es.ESTIMATORS)
def test_all_estimators_unbiased_and_variances_ordered(kind):
    d, n, sigma = 3, 40_000, 0.5
    f, A, b, theta = _quadratic(d, 5)
    grad = A @ theta + b
    s = es.es_samples(f, theta, sigma, n, torch.Generator().manual_seed(1), kind=kind)
    sd = s.std(0) / math.sqrt(n)
    assert bool(((s.mean(0) - grad).abs() < 5 * sd).all())
    tr = float(s.var(0).sum())
    anti = (d + 1) * float(grad @ grad)
    if kind == "antithetic":
        assert abs(tr / anti - 1) < 0.05
    else:
        assert tr > anti


def test_forward_difference_matches_samples_mean():
    f, _, _, theta = _quadratic(3, 2)
    a = es.forward_difference_es_grad(f, theta, 0.1, 50, torch.Generator().manual_seed(4))
    b = es.es_samples(f, theta, 0.1, 50, torch.Generator().manual_seed(4), kind="forward").mean(0)
    torch.testing.assert_close(a, b)


def test_antithetic_population_layout():
    theta = torch.tensor([1.0, 2.0])
    eps = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pop = es.antithetic_population(theta, eps, 0.5)
    assert pop.shape == (6, 2)
    torch.testing.assert_close(pop[:3] + pop[3:], 2 * theta.expand(3, 2))


def test_pes_accumulates_and_truncated_es_does_not():
    eps = torch.ones(2, 3)
    acc = torch.full((2, 3), 2.0)
    lp, ln = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])
    g_pes, acc_pes = es.pes_estimate(lp, ln, eps, acc, sigma=0.5)
    g_tes, acc_tes = es.pes_estimate(lp, ln, eps, acc, sigma=0.5, persistent=False)
    torch.testing.assert_close(acc_pes, torch.full((2, 3), 3.0))
    torch.testing.assert_close(acc_tes, eps)
    torch.testing.assert_close(g_pes, torch.full((3,), 3.0 * 1.5 / 1.0))
    torch.testing.assert_close(g_tes, torch.full((3,), 1.5))
    reset = es.reset_rows(acc_pes, torch.tensor([True, False]))
    assert float(reset[0].abs().sum()) == 0 and bool((reset[1] == 3).all())


def _unroll(theta, x0, T):
    """A toy unrolled system: x_{t+1} = a x_t + c with (a, c) = theta, per-step loss (x_t - 1)^2."""
    a, c = theta[..., 0], theta[..., 1]
    x, losses = x0, []
    for _ in range(T):
        x = a * x + c
        losses.append((x - 1.0) ** 2)
    return x, torch.stack(losses, -1)


def test_pes_is_unbiased_over_truncations_while_truncated_es_is_biased():
    # Two truncations of K steps; PES estimates, summed over truncations, average to the gradient of the
    # total loss of the whole unroll; truncated ES misses the effect of the first truncation on the second.
    theta = torch.tensor([0.6, 0.3], dtype=torch.float64)
    K, N, sigma, x0 = 3, 100_000, 1e-3, torch.tensor(0.0, dtype=torch.float64)
    th = theta.clone().requires_grad_(True)
    _, l1 = _unroll(th, x0, K)
    x1 = _unroll(th, x0, K)[0]
    _, l2 = _unroll(th, x1, K)
    true = torch.autograd.grad(l1.sum() + l2.sum(), th)[0]

    g = torch.Generator().manual_seed(1)
    out = {}
    for persistent in (True, False):
        acc = torch.zeros(N, 2, dtype=torch.float64)
        xp = xn = x0.expand(N)
        total = torch.zeros(2, dtype=torch.float64)
        for _ in range(2):
            eps = torch.randn(N, 2, generator=g, dtype=torch.float64)
            xp, lp = _unroll(theta + sigma * eps, xp, K)
            xn, ln = _unroll(theta - sigma * eps, xn, K)
            est, acc = es.pes_estimate(lp.sum(-1), ln.sum(-1), eps, acc, sigma, persistent=persistent)
            total = total + est
        out[persistent] = total
    assert float((out[True] - true).norm() / true.norm()) < 0.05
    assert float((out[False] - true).norm() / true.norm()) > 0.1  # misses the carried-over effect


def test_outer_adam_first_step_is_lr_times_sign():
    opt = es.OuterAdam(0.1)
    theta = torch.zeros(3)
    new = opt.step(theta, torch.tensor([2.0, -0.5, 1e-3]))
    torch.testing.assert_close(new, torch.tensor([-0.1, 0.1, -0.1]), rtol=1e-4, atol=1e-4)


def test_gaussian_moments_and_expectation():
    assert [es.gaussian_moment(k) for k in range(7)] == [1, 0, 1, 0, 3, 0, 15]
    e1, e2, a = sp.symbols("e1 e2 a", real=True)
    assert es.gaussian_expectation(e1**4 * e2**2 + a * e1, [e1, e2]) == 3
    assert sp.simplify(es.gaussian_expectation((a + e1) ** 2, [e1]) - (a**2 + 1)) == 0


def test_symbolic_antithetic_unbiased_one_dimension():
    a, b, t, e = sp.symbols("a b theta epsilon", real=True)
    s = sp.symbols("sigma", positive=True)
    f = lambda x: a * x**2 / 2 + b * x + x**3 / 7  # a cubic: smoothing adds sigma^2 * f'''/2 to the gradient
    est = e * (f(t + s * e) - f(t - s * e)) / (2 * s)
    smooth = es.gaussian_expectation(f(t + s * e), [e])
    assert sp.simplify(es.gaussian_expectation(est, [e]) - sp.diff(smooth, t)) == 0


def test_validation_errors_name_the_fix():
    f, _, _, theta = _quadratic(2, 0)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="sigma must be a positive"):
        es.antithetic_es_grad(f, theta, -1.0, 3, g)
    with pytest.raises(ValueError, match="n_pairs must be a positive integer"):
        es.antithetic_es_grad(f, theta, 0.1, 0, g)
    with pytest.raises(ValueError, match="kind must be one of"):
        es.es_samples(f, theta, 0.1, 3, g, kind="bogus")
    with pytest.raises(ValueError, match="must have the shape"):
        es.pes_estimate(torch.zeros(2), torch.zeros(2), torch.zeros(2, 3), torch.zeros(3, 3), 0.1)
    with pytest.raises(ValueError, match="k must be a non-negative integer"):
        es.gaussian_moment(-1)
    with pytest.raises(ValueError, match="lr must be positive"):
        es.OuterAdam(0.0)


def test_determinism_same_seed_same_numbers():
    f, _, _, theta = _quadratic(3, 0)
    a = es.antithetic_es_grad(f, theta, 0.2, 100, torch.Generator().manual_seed(7))
    b = es.antithetic_es_grad(f, theta, 0.2, 100, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_population_and_estimates_batch_over_leading_replica_axes():
    g = torch.Generator().manual_seed(3)
    theta, eps = torch.randn(3, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    acc, lp, ln = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    pop = es.antithetic_population(theta, eps, 0.1)
    est, new_acc = es.pes_estimate(lp, ln, eps, acc, 0.1)
    for r in range(3):
        assert torch.equal(pop[r], es.antithetic_population(theta[r], eps[r], 0.1))
        e_r, a_r = es.pes_estimate(lp[r], ln[r], eps[r], acc[r], 0.1)
        torch.testing.assert_close(est[r], e_r)
        assert torch.equal(new_acc[r], a_r)
    with pytest.raises(ValueError, match="eps must have shape"):
        es.antithetic_population(theta, eps[0], 0.1)
    with pytest.raises(ValueError, match="must agree"):
        es.antithetic_estimate(lp[0], ln[0], eps, 0.1)
