"""Per-example gradients in one batched call, and minibatch noise as a count matrix times them."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.numerics.mlp import mlp_apply, mlp_init, mlp_num_params
from dltheory.numerics.pergrad import (
    minibatch_counts,
    minibatch_noise,
    mlp_example_loss,
    mlp_per_example_grads,
    per_example_grads,
    sample_minibatch_noise,
)

WIDTHS = [5, 7, 3]


def _data(n=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, WIDTHS[0], generator=g, dtype=torch.float64)
    y = torch.randint(WIDTHS[-1], (n,), generator=g)
    return X, y, mlp_init(WIDTHS, g)


@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_per_example_grads_match_one_backward_pass_per_example(loss):
    X, y, theta = _data()
    Y = torch.nn.functional.one_hot(y, WIDTHS[-1]).double() if loss == "mse" else y
    G = mlp_per_example_grads(theta, X, Y, WIDTHS, loss=loss)
    assert G.shape == (X.shape[0], mlp_num_params(WIDTHS))
    one = mlp_example_loss(WIDTHS, loss)
    for i in range(X.shape[0]):
        th = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(one(th, X[i], Y[i]), th)
        assert torch.allclose(G[i], g, atol=1e-12)


def test_per_example_grads_average_to_the_full_gradient_and_chunking_agrees():
    X, y, theta = _data(n=13)
    G = mlp_per_example_grads(theta, X, y, WIDTHS)
    th = theta.clone().requires_grad_(True)
    full = torch.nn.functional.cross_entropy(mlp_apply(th, X, WIDTHS), y)
    (g,) = torch.autograd.grad(full, th)
    assert torch.allclose(G.mean(0), g, atol=1e-12)
    assert torch.allclose(mlp_per_example_grads(theta, X, y, WIDTHS, chunk_size=4), G, atol=1e-14)


def test_minibatch_noise_is_the_gradient_of_the_minibatch_loss_minus_the_full_gradient():
    X, y, theta = _data(n=9)
    G = mlp_per_example_grads(theta, X, y, WIDTHS)
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(9, (4, 6), generator=g)       # 4 minibatches of 6 draws with replacement
    counts = torch.zeros(4, 9, dtype=torch.float64).scatter_add_(1, idx, torch.ones(4, 6, dtype=torch.float64))
    noise = minibatch_noise(counts, G)
    for k in range(4):
        th = theta.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(mlp_apply(th, X[idx[k]], WIDTHS), y[idx[k]])
        (gb,) = torch.autograd.grad(loss, th)
        assert torch.allclose(noise[k], gb - G.mean(0), atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 12), p=st.integers(1, 6), b=st.integers(1, 20), k=st.integers(1, 5), seed=st.integers(0, 99))
def test_count_matrix_noise_is_linear_and_matches_explicit_means(n, p, b, k, seed):
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(n, p, generator=g, dtype=torch.float64)
    U = torch.randn(p, 3, generator=g, dtype=torch.float64)
    counts = minibatch_counts(n, b, k, g)
    assert torch.all(counts.sum(1) == b) and torch.all(counts >= 0)
    noise = minibatch_noise(counts, G)
    explicit = (counts @ G) / b - G.mean(0)
    assert torch.allclose(noise, explicit, atol=1e-12)
    assert torch.allclose(minibatch_noise(counts, G @ U), noise @ U, atol=1e-10)


def test_without_replacement_counts_are_subsets_and_the_whole_set_has_no_noise():
    g = torch.Generator().manual_seed(0)
    counts = minibatch_counts(10, 4, 50, g, replace=False)
    assert set(counts.unique().tolist()) <= {0.0, 1.0} and torch.all(counts.sum(1) == 4)
    G = torch.randn(10, 3, generator=g, dtype=torch.float64)
    everything = minibatch_counts(10, 10, 3, g, replace=False)
    assert torch.allclose(minibatch_noise(everything, G), torch.zeros(3, 3, dtype=torch.float64), atol=1e-14)


def test_with_replacement_counts_are_multinomial_on_average():
    g = torch.Generator().manual_seed(1)
    counts = minibatch_counts(5, 8, 20000, g)
    assert torch.allclose(counts.mean(0), torch.full((5,), 8 / 5, dtype=torch.float64), atol=0.03)
    # multinomial variance B (1/N)(1 - 1/N)
    assert torch.allclose(counts.var(0), torch.full((5,), 8 * 0.2 * 0.8, dtype=torch.float64), atol=0.06)


def test_sample_minibatch_noise_is_deterministic_and_chunked():
    G = torch.randn(20, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = sample_minibatch_noise(G, 3, 10, torch.Generator().manual_seed(5), chunk=4)
    b = sample_minibatch_noise(G, 3, 10, torch.Generator().manual_seed(5), chunk=4)
    assert a.shape == (10, 4) and torch.equal(a, b)


def test_bad_input():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        minibatch_counts(5, 0, 3, g)
    with pytest.raises(ValueError, match="replace=True"):
        minibatch_counts(5, 6, 3, g, replace=False)
    with pytest.raises(ValueError, match="same N"):
        minibatch_noise(torch.ones(2, 3), torch.ones(4, 2))
    with pytest.raises(ValueError, match="same positive size"):
        minibatch_noise(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.ones(2, 2))
    with pytest.raises(ValueError, match="unknown loss"):
        mlp_example_loss(WIDTHS, "hinge")
    X, y, theta = _data()
    with pytest.raises(ValueError, match="flat parameter vector"):
        per_example_grads(mlp_example_loss(WIDTHS), theta.view(1, -1), X, y)
    with pytest.raises(ValueError, match="same, non-zero number"):
        mlp_per_example_grads(theta, X, y[:3], WIDTHS)


@pytest.mark.parametrize("batch", [2, 15])  # the sparse path (batch < N/4) and the dense one
def test_sample_minibatch_noise_equals_count_matrix_times_gradients(batch):
    G = torch.randn(30, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = sample_minibatch_noise(G, batch, 7, torch.Generator().manual_seed(9), chunk=3)
    g = torch.Generator().manual_seed(9)
    counts = torch.cat([minibatch_counts(30, batch, k, g) for k in (3, 3, 1)])
    assert torch.allclose(noise, minibatch_noise(counts, G), atol=1e-12)
