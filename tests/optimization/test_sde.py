"""Euler--Maruyama, the RMSprop SDE and its closed forms (``dltheory.optimization.sde``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.optimization.sde import (
    QuadraticNGOS,
    euler_maruyama,
    ou_moments,
    rmsprop_sde_params,
    simulate_rmsprop_discrete,
    simulate_rmsprop_sde,
)

F64 = torch.float64


@pytest.mark.parametrize("theta,mu,sigma,x0", [(1.0, 0.0, 1.0, 2.0), (3.0, -1.0, 0.5, 0.0)])
def test_euler_maruyama_matches_ou_moments(theta, mu, sigma, x0):
    g = torch.Generator().manual_seed(0)
    n_paths, t1, n_steps = 40_000, 1.0, 400
    x = euler_maruyama(lambda t, x: theta * (mu - x), lambda t, x: sigma * torch.ones_like(x),
                       torch.full((n_paths,), x0, dtype=F64), t1, n_steps, g)
    mean, var = ou_moments(theta, mu, sigma, x0, t1)
    se_mean, se_var = math.sqrt(var / n_paths), var * math.sqrt(2 / n_paths)
    # Euler-Maruyama's own bias in the variance is O(theta dt) = O(1e-2) relative; allow it plus 4 SE.
    assert abs(x.mean().item() - mean) < 4 * se_mean + 0.01 * abs(x0 - mu)
    assert abs(x.var().item() - var) < 4 * se_var + 0.5 * theta * (t1 / n_steps) * var


def test_euler_maruyama_records_and_is_deterministic():
    def run():
        g = torch.Generator().manual_seed(1)
        return euler_maruyama(lambda t, x: -x, lambda t, x: torch.ones_like(x), torch.zeros(3, 2, dtype=F64),
                              0.5, 50, g, n_records=5)

    (t_a, a), (_, b) = run(), run()
    assert np.allclose(t_a, [0.1, 0.2, 0.3, 0.4, 0.5]) and a.shape == (5, 3, 2)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="n_steps must be"):
        euler_maruyama(lambda t, x: x, lambda t, x: x, torch.zeros(1), 1.0, 0, torch.Generator())


@settings(max_examples=40, deadline=None)
@given(theta=st.floats(0.1, 5.0), sigma=st.floats(0.1, 3.0), x0=st.floats(-3, 3), t=st.floats(0.0, 10.0))
def test_ou_moments_limits(theta, sigma, x0, t):
    mean, var = ou_moments(theta, 0.5, sigma, x0, t)
    assert 0 <= var <= sigma**2 / (2 * theta) + 1e-12
    assert min(x0, 0.5) - 1e-12 <= mean <= max(x0, 0.5) + 1e-12
    m0, v0 = ou_moments(theta, 0.5, sigma, x0, 0.0)
    assert m0 == pytest.approx(x0, abs=1e-12) and v0 == 0.0


def test_rmsprop_sde_params():
    p = rmsprop_sde_params(0.01, 0.99, 0.05, 2.0)
    assert p["sigma0"] == pytest.approx(0.02) and p["eps0"] == pytest.approx(5e-4)
    assert p["c2"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="sigma must be"):
        rmsprop_sde_params(0.01, 0.99, 0.05, 0.0)
    with pytest.raises(ValueError, match="beta must lie"):
        rmsprop_sde_params(0.01, 1.0, 0.05, 1.0)


def _problem():
    h = torch.linspace(0.5, 2.0, 4, dtype=F64)
    return QuadraticNGOS(h, h.clone())


def test_quadratic_validation():
    with pytest.raises(ValueError, match="same length"):
        QuadraticNGOS(torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="must be positive"):
        QuadraticNGOS(torch.ones(2), torch.zeros(2))


def test_sde_and_discrete_reach_the_closed_form():
    """Both the SDE (Euler-Maruyama, dt = lr^2) and discrete RMSprop settle at the SDE's stationary loss."""
    prob = _problem()
    lr, beta, eps, sigma = 0.02, 0.95, 0.05, 0.7
    p = rmsprop_sde_params(lr, beta, eps, sigma)
    g = torch.Generator().manual_seed(2)
    x0 = torch.zeros(4, dtype=F64)
    steps, R = 800, 1000
    disc = simulate_rmsprop_discrete(prob, x0, lr, beta, eps, sigma, steps, R, g, n_records=20)
    sde = simulate_rmsprop_sde(prob, x0, p["sigma0"], p["eps0"], p["c2"], steps * lr**2, steps, R, g, n_records=20)
    exact = prob.sde_stationary_loss(p["sigma0"], p["eps0"])
    for run in (disc, sde):
        mean, se = run.stationary_mean(0.5)
        assert abs(mean - exact) < 4 * se + 0.03 * exact
    assert np.allclose(disc.time, sde.time)


def test_sde_validation_and_determinism():
    prob = _problem()
    x0 = torch.zeros(4, dtype=F64)
    with pytest.raises(ValueError, match="overshoots"):
        simulate_rmsprop_sde(prob, x0, 0.01, 0.0, 100.0, 1.0, 10, 2, torch.Generator())
    with pytest.raises(ValueError, match="need sigma0 > 0"):
        simulate_rmsprop_sde(prob, x0, 0.0, 0.0, 1.0, 1.0, 10, 2, torch.Generator())
    runs = [simulate_rmsprop_sde(prob, x0, 0.01, 1e-3, 1.0, 0.1, 20, 3, torch.Generator().manual_seed(0),
                                 n_records=4) for _ in range(2)]
    assert np.array_equal(runs[0].loss, runs[1].loss)
