"""Tests for dltheory.overparametrization.activations (chapter overparametrization/activation-gram)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.numerics.kernels import relu_ntk_gram
from dltheory.overparametrization import activations as A

HYP = settings(max_examples=25, deadline=None)


def data(n, d_sub, seed, d=8, min_sep=0.0):
    return A.subspace_sphere_data(n, d, d_sub, torch.Generator().manual_seed(seed), min_sep=min_sep)


# --------------------------------------------------------------------------------------------- quadrature


def test_gauss_hermite_rule_matches_numpy_and_moments():
    for order in (1, 5, 40, 120):
        x, w = A.gauss_hermite_rule(order)
        xn, wn = np.polynomial.hermite_e.hermegauss(order)
        np.testing.assert_allclose(x.numpy(), xn, atol=1e-12)
        np.testing.assert_allclose(w.numpy(), wn / math.sqrt(2 * math.pi), rtol=1e-9, atol=1e-300)
    x, w = A.gauss_hermite_rule(400)  # beyond numpy's range: moments E[u^2j] = (2j-1)!!
    for j in range(1, 30):
        assert float((w * x ** (2 * j)).sum()) == pytest.approx(math.prod(range(2 * j - 1, 0, -2)), rel=1e-10)


def test_normalized_hermite_orthonormal():
    x, w = A.gauss_hermite_rule(60)
    h = A.normalized_hermite(40, x)
    gram = (h * w) @ h.T
    torch.testing.assert_close(gram, torch.eye(41, dtype=torch.float64), atol=1e-10, rtol=0)


def test_relu_coefficients_exact():
    c = A.activation_hermite_coefficients("relu", 40)
    exact = [0.5] + [
        (0.0 if (k - 1) % 2 else (-1) ** ((k - 1) // 2) * math.prod(range(k - 2, 0, -2)))
        / math.sqrt(2 * math.pi * math.factorial(k)) for k in range(1, 41)]
    np.testing.assert_allclose(c.numpy(), exact, atol=1e-13)


@HYP
@given(coeffs=st.lists(st.floats(-2, 2), min_size=2, max_size=9), seed=st.integers(0, 2**16))
def test_hermite_series_of_polynomial_is_exact(coeffs, seed):
    """Property: the Hermite series of a polynomial terminates at its degree and reproduces it exactly."""
    if all(abs(c) < 1e-3 for c in coeffs[1:]):
        coeffs = [coeffs[0], 1.0]
    act = A.polynomial_activation(coeffs)
    p = len(act.poly_coeffs) - 1
    c = A.hermite_coefficients(act.phi, p + 4, order=20)
    assert float(c[p + 1:].abs().max()) < 1e-10 * (1 + float(c.abs().max()))
    u = torch.randn(50, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
    torch.testing.assert_close(A.hermite_series(c, u), act.phi(u), atol=1e-9, rtol=1e-9)


@HYP
@given(coeffs=st.lists(st.floats(-2, 2), min_size=2, max_size=6), seed=st.integers(0, 2**16),
       d_sub=st.integers(1, 4))
def test_polynomial_gram_series_exact(coeffs, seed, d_sub):
    """Property: for a polynomial phi the finite Hermite series equals the Gram computed by 2-D quadrature."""
    if all(abs(c) < 1e-3 for c in coeffs[1:]):
        coeffs = [coeffs[0], 1.0]
    act = A.polynomial_activation(coeffs)
    x = data(6, d_sub, seed)
    g_series = A.gram_inf(x, act)
    g_quad = A.quadrature_gram(x, act.dphi, order_theta=32, order_r=64)
    torch.testing.assert_close(g_series, g_quad, atol=1e-9 * (1 + float(g_quad.abs().max())), rtol=1e-9)


def test_series_reconstructs_smooth_activation():
    u = torch.linspace(-3, 3, 201, dtype=torch.float64)
    for name in ("tanh", "swish"):
        act = A.ACTIVATIONS[name]
        for derivative, f in ((True, act.dphi), (False, act.phi)):
            c = A.activation_hermite_coefficients(act, 300, derivative=derivative)
            assert float((A.hermite_series(c, u) - f(u)).abs().max()) < 1e-8, (name, derivative)


def test_series_reconstructs_kinked_activation_in_l2():
    """For ReLU' (a step) the series converges in L2(N(0,1)); the L2 error equals the Parseval tail."""
    f = A.ACTIVATIONS["relu"].dphi
    nodes, weights = A.split_gauss_rule(800, half_width=40.0)  # (S_K f)^2 e^{-u^2/2} lives up to 2 sqrt(K)
    tails = []
    for k in (10, 40, 160):
        c = A.activation_hermite_coefficients("relu", k)
        l2 = float(((A.hermite_series(c, nodes) - f(nodes)) ** 2 * weights).sum())
        tail = A.hermite_tail(f, c, rule="split")
        assert l2 == pytest.approx(tail, rel=1e-6)
        tails.append(tail)
    assert tails[0] > tails[1] > tails[2] > 0


def test_custom_derivatives_match_autograd():
    u = torch.linspace(-4, 4, 401, dtype=torch.float64)
    u = u[u.abs() > 1e-6]
    for name, act in A.ACTIVATIONS.items():
        uu = u.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(act.phi(uu).sum(), uu)
        torch.testing.assert_close(act.dphi(u), g, atol=1e-12, rtol=1e-12, msg=name)
    for name in ("tanh", "swish", "poly"):
        assert torch.autograd.gradcheck(A.ACTIVATIONS[name].phi, (torch.randn(7, dtype=torch.float64,
                                                                               requires_grad=True),))


# --------------------------------------------------------------------------------------------- Grams


@HYP
@given(n=st.integers(2, 10), d_sub=st.integers(1, 5), seed=st.integers(0, 2**16),
       name=st.sampled_from(sorted(A.ACTIVATIONS)))
def test_grams_symmetric_psd(n, d_sub, seed, name):
    """Property: the infinite-width and the finite-width Gram matrices are symmetric PSD."""
    x = data(n, d_sub, seed)
    for g in (A.gram_inf(x, name, k_max=100),
              A.empirical_gram(x, name, 64, torch.Generator().manual_seed(seed))):
        torch.testing.assert_close(g, g.T, atol=1e-12, rtol=0)
        ev = torch.linalg.eigvalsh(g)
        assert float(ev[0]) >= -1e-10 * max(1.0, float(ev[-1]))


def test_relu_routes_agree():
    x = data(12, 3, 1, min_sep=0.1)
    g = relu_ntk_gram(x)
    torch.testing.assert_close(A.quadrature_gram(x, A.ACTIVATIONS["relu"].dphi), g, atol=1e-13, rtol=0)
    c = A.activation_hermite_coefficients("relu", 200)
    tail = A.hermite_tail(A.ACTIVATIONS["relu"].dphi, c, rule="split")
    diff = g - A.hermite_gram(x, c)
    assert float(diff.min()) >= -1e-7  # ReLU: only odd k > K survive, so the dropped rho^{k+1} are >= 0
    assert float(diff.abs().max()) <= tail + 1e-7
    # on the diagonal the error is the tail; arccos has a square-root singularity at 1, so rows that are unit
    # norm only to 1e-16 shift the closed form by ~1e-8 there
    expected_diag = torch.full((12,), tail, dtype=torch.float64)
    torch.testing.assert_close(diff.diagonal(), expected_diag, atol=1e-7, rtol=0)
    assert A.lambda_min(A.hermite_gram(x, c)) <= A.lambda_min(g) + 1e-14  # truncation is a lower bound


def test_polar_kernel_limits():
    act = A.ACTIVATIONS["tanh"]
    nodes, weights = A.gauss_hermite_rule(200)
    e1 = float((act.dphi(nodes) * weights).sum())
    e2 = float((act.dphi(nodes) ** 2 * weights).sum())
    k = A.polar_kernel(torch.tensor([0.0, 1.0], dtype=torch.float64), act.dphi, order_theta=48, order_r=96)
    assert float(k[0]) == pytest.approx(e1**2, abs=1e-12)
    assert float(k[1]) == pytest.approx(e2, abs=1e-12)


def test_tanh_series_vs_quadrature():
    x = data(10, 2, 3, min_sep=0.15)
    g_series = A.gram_inf(x, "tanh")
    g_quad = A.quadrature_gram(x, A.ACTIVATIONS["tanh"].dphi, order_theta=48, order_r=96)
    torch.testing.assert_close(g_series, g_quad, atol=1e-12, rtol=0)


def test_empirical_gram_matches_closed_form_in_mean_square():
    x = data(10, 2, 0, min_sep=0.1)
    g = relu_ntk_gram(x)
    h = A.empirical_gram(x, "relu", 2048, torch.Generator().manual_seed(0), replicas=64)
    assert h.shape == (64, 10, 10)
    rms = float(((h - g).flatten(1).norm(dim=1) / g.norm()).pow(2).mean().sqrt())
    assert rms == pytest.approx(A.relu_mc_rel_err_rms(x, 2048), rel=0.2)
    assert A.relu_mc_rel_err_rms(x, 4 * 2048) == pytest.approx(A.relu_mc_rel_err_rms(x, 2048) / 2, rel=1e-12)


def test_smooth_collapses_at_low_dimension():
    x2, x16 = data(16, 2, 0, d=16, min_sep=0.1), data(16, 16, 0, d=16)
    assert A.lambda_min(A.gram_inf(x2, "tanh")) < 1e-3 * A.lambda_min(A.gram_inf(x2, "relu"))
    assert A.lambda_min(A.gram_inf(x16, "tanh")) > 0.1 * A.lambda_min(A.gram_inf(x16, "relu"))


# --------------------------------------------------------------------------------------------- ranks


def test_poly_rank_formulas():
    assert A.poly_rank_bound(3, 2) == 9
    assert A.poly_rank_bound(2, 3) == 2 + 3 + 4
    for d_sub in range(1, 7):
        for p in range(1, 6):
            assert A.poly_rank_bound(d_sub, p) == math.comb(d_sub + p, p) - 1
            assert A.poly_rank_sphere(d_sub, range(1, p + 1)) <= A.poly_rank_bound(d_sub, p)
        assert A.poly_rank_sphere(d_sub, [1, 2]) == A.poly_rank_bound(d_sub, 2)
    assert A.poly_rank_sphere(3, [1, 2, 3]) == 10 + 6
    assert A.poly_rank_sphere(3, [2]) == 6


@pytest.mark.parametrize("d_sub,coeffs", [(2, (0, 1, 0.5)), (3, (0, 1, 0.5)), (3, (0, 1, 0.5, 1 / 6)),
                                          (2, (0, 1, 0.5, 1 / 6, 1 / 24)), (3, (0, 0, 1)), (4, (0, 1, 0, 1))])
def test_numerical_rank_equals_sphere_count(d_sub, coeffs):
    act = A.polynomial_activation(coeffs)
    p = len(act.poly_coeffs) - 1
    c = A.activation_hermite_coefficients(act, p - 1)
    powers = [k + 1 for k, ck in enumerate(c) if abs(float(ck)) > 1e-12]
    x = data(40, d_sub, 7)
    assert A.numerical_rank(A.gram_inf(x, act)) == A.poly_rank_sphere(d_sub, powers)


# --------------------------------------------------------------------------------------------- data


def test_subspace_sphere_data():
    x = data(20, 3, 5, d=10, min_sep=0.2)
    assert x.shape == (20, 10)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(20, dtype=torch.float64))
    assert int(torch.linalg.matrix_rank(x)) == 3
    assert A.separation(x) >= 0.2
    torch.testing.assert_close(x, data(20, 3, 5, d=10, min_sep=0.2), atol=0, rtol=0)  # deterministic


def test_separation_counts_antipodes():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.6, -0.8]], dtype=torch.float64)
    assert A.separation(x) == pytest.approx(min(math.sqrt(2), math.sqrt(2 - 2 * 0.8), math.sqrt(2 - 2 * 0.6)))


def test_validation_errors():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="d_sub must be <= d"):
        A.subspace_sphere_data(4, 2, 3, g)
    with pytest.raises(ValueError, match="n must be a positive integer, got -3"):
        A.subspace_sphere_data(-3, 4, 2, g)
    with pytest.raises(RuntimeError, match="lower min_sep"):
        A.subspace_sphere_data(20, 2, 2, g, min_sep=1.0, max_tries=500)
    with pytest.raises(ValueError, match="unknown activation"):
        A.get_activation("gelu")
    with pytest.raises(ValueError, match="unknown quadrature rule"):
        A.hermite_coefficients(torch.tanh, 3, rule="simpson")
    with pytest.raises(ValueError, match="unit norm"):
        A.gram_inf(torch.ones(3, 2, dtype=torch.float64), "tanh")
    with pytest.raises(ValueError, match="width must be"):
        A.empirical_gram(data(3, 2, 0), "relu", 0, g)
    with pytest.raises(ValueError, match="rtol"):
        A.numerical_rank(torch.eye(3), rtol=2.0)
    with pytest.raises(ValueError, match="non-constant"):
        A.polynomial_activation((1.0, 0.0))
    params, fwd = A.two_layer_net("tanh", 2, 8, g)
    x, y = data(3, 2, 0, d=2), torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="lr_scale"):
        A.train_gd(fwd, params, x, y, 5, lr_scale=2.5)
    with pytest.raises(ValueError, match="output_scale"):
        A.train_gd(fwd, params, x, y, 5, output_scale=0.0)


# --------------------------------------------------------------------------------------------- training


def test_empirical_ntk_of_two_layer_net_is_empirical_gram():
    x = data(6, 2, 0, d=4)
    params, fwd = A.two_layer_net("tanh", 4, 256, torch.Generator().manual_seed(1))
    h = A.empirical_ntk(fwd, params, x)
    w = params["W1"]
    d = A.ACTIVATIONS["tanh"].dphi(x @ w.T)
    torch.testing.assert_close(h, d @ d.T / 256 * (x @ x.T), atol=1e-12, rtol=1e-12)


def test_linearized_losses_exact_for_linear_model():
    """For a model linear in its parameters the kernel never moves: GD equals the prediction exactly."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(5, 7, generator=g, dtype=torch.float64)
    y = torch.randn(5, generator=g, dtype=torch.float64)
    params = {"theta": torch.zeros(7, dtype=torch.float64)}

    def fwd(p, x):
        return x @ p["theta"]

    out = A.train_gd(fwd, params, feats, y, 50, lr_scale=0.9)
    torch.testing.assert_close(out["losses"], out["predicted"], atol=1e-12, rtol=1e-10)


def test_training_deterministic_and_lazy_follows_kernel():
    x = data(8, 2, 2, d=4, min_sep=0.2)
    y = torch.tensor([1.0, -1, 1, -1, -1, 1, 1, -1], dtype=torch.float64)

    def once():
        params, fwd = A.two_layer_net("tanh", 4, 128, torch.Generator().manual_seed(3))
        return A.train_gd(fwd, params, x, y, 100, output_scale=100.0, center=True)

    a, b = once(), once()
    torch.testing.assert_close(a["losses"], b["losses"], atol=0, rtol=0)
    assert float(a["losses"][-1]) < float(a["losses"][0])
    torch.testing.assert_close(a["losses"], a["predicted"], rtol=1e-2, atol=1e-8)
    params, fwd = A.three_layer_net("tanh", 4, 32, torch.Generator().manual_seed(3), gain=4.0)
    c = A.train_gd(fwd, params, x, y, 50, output_scale=100.0, center=True)
    assert float(c["losses"][-1]) < float(c["losses"][0])
