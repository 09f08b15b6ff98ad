"""The Edge of Stability library: network, data, training modes, toy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dltheory.numerics.data import digits_dataset
from dltheory.numerics.mlp import mlp_init, mlp_num_params, mse_loss_fn
from dltheory.optimization.eos import toy_normalized_gd, train


def test_mlp_shapes_and_init_scale():
    g = torch.Generator().manual_seed(0)
    widths = [64, 64, 64, 10]
    theta = mlp_init(widths, g)
    assert theta.numel() == mlp_num_params(widths) == 8970
    assert theta[: 64 * 64].abs().max() <= 1 / 8


@pytest.mark.parametrize("bad", [[3], [3, 0, 2], [3, -1], [2.5, 3]])
def test_widths_validation(bad):
    with pytest.raises(ValueError, match="widths must be"):
        mlp_num_params(bad)


def test_digits_dataset():
    X, Y = digits_dataset(100, seed=1)
    assert X.shape == (100, 64) and Y.shape == (100, 10)
    assert torch.allclose(Y.sum(1), torch.ones(100, dtype=torch.float64))
    with pytest.raises(ValueError, match="exceeds"):
        digits_dataset(10_000)


def test_train_is_deterministic_and_descends():
    X, Y = digits_dataset(64)
    widths = [64, 16, 10]
    loss_fn = mse_loss_fn(widths)
    out = []
    for _ in range(2):
        g = torch.Generator().manual_seed(0)
        theta0 = mlp_init(widths, g)
        _, h = train(theta0, loss_fn, X, Y, 0.1, 30, eval_every=10, generator=g)
        out.append(h.arrays())
    assert np.array_equal(out[0]["loss"], out[1]["loss"])
    assert np.array_equal(out[0]["sharpness"], out[1]["sharpness"])
    assert out[0]["loss"][-1] < out[0]["loss"][0]


@pytest.mark.parametrize("mode", ["normalized", "sqrt"])
def test_train_modes_run(mode):
    X, Y = digits_dataset(32)
    widths = [64, 8, 10]
    g = torch.Generator().manual_seed(0)
    _, h = train(mlp_init(widths, g), mse_loss_fn(widths), X, Y, 0.05, 12, mode=mode, eval_every=4, generator=g)
    assert len(h.sharpness) == 3 and all(s > 0 for s in h.sharpness)


def test_train_bad_input():
    X, Y = digits_dataset(8)
    widths = [64, 4, 10]
    theta = mlp_init(widths, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="unknown mode"):
        train(theta, mse_loss_fn(widths), X, Y, 0.1, 3, mode="adam")
    with pytest.raises(ValueError, match="eta must be positive"):
        train(theta, mse_loss_fn(widths), X, Y, -0.1, 3)
    with pytest.raises(ValueError, match="steps must be"):
        train(theta, mse_loss_fn(widths), X, Y, 0.1, 0)


def test_gd_diverges_above_threshold_on_quadratic():
    """Sanity check of the library loop on a quadratic: a 1-parameter 'network' with L = a theta^2 / 2."""
    loss_fn = lambda t, X, Y: 0.5 * 3.0 * (t**2).sum() + 0 * X.sum()
    X = torch.zeros(1, 1, dtype=torch.float64)
    theta0 = torch.ones(1, dtype=torch.float64)
    _, h_stable = train(theta0, loss_fn, X, X, 2 / 3 * 0.98, 200, eval_every=50)
    _, h_unstable = train(theta0, loss_fn, X, X, 2 / 3 * 1.05, 2000, eval_every=50)
    assert not h_stable.diverged and h_stable.loss[-1] < 1e-2
    assert h_unstable.diverged
    assert h_stable.sharpness[0] == pytest.approx(3.0)


def test_toy_flow_time_is_eta_squared():
    s1 = toy_normalized_gd(1.0, 0.3, 0.02, 0.5)[0] * 0.02**2
    s2 = toy_normalized_gd(1.0, 0.3, 0.04, 0.5)[0] * 0.04**2
    assert abs(s1 / s2 - 1) < 0.05
    assert abs(s1 - (2 * np.log(2) + 0.75)) < 0.15  # the flow's time from x=1 to x=1/2
    with pytest.raises(ValueError, match="x_target"):
        toy_normalized_gd(1.0, 0.3, 0.02, 2.0)
