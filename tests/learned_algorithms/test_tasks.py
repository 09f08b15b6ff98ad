"""Tests of the additions to dltheory.learned_algorithms.tasks for the Celo2 recipe: per-entry parameter
scales, per-tensor scale augmentation, the bias mask of the layout and the scaled-up tasks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.learned_algorithms import tasks

SPEC = tasks.TaskSpec("t", 5, (7, 4), 3, "relu", 8)


def test_layout_marks_bias_entries():
    lay = tasks.layout(SPEC)
    assert lay.is_bias.shape == (lay.n_params,) and lay.is_bias.dtype == torch.bool
    n_bias = sum(s[0] for s in lay.shapes if len(s) == 1)
    assert int(lay.is_bias.sum()) == n_bias == 7 + 4 + 3


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 1.0), st.floats(1.0, 10.0))
def test_tensor_scale_is_constant_per_tensor_and_in_range(seed, low, high):
    lay = tasks.layout(SPEC)
    s = tasks.sample_tensor_scale(3, lay, torch.Generator().manual_seed(seed), low, high)
    assert s.shape == (3, lay.n_params)
    assert float(s.min()) >= low * (1 - 1e-6) and float(s.max()) <= high * (1 + 1e-6)
    for o, shp in zip(lay.offsets, lay.shapes):
        n = torch.tensor(shp).prod().item()
        block = s[:, o:o + n]
        assert torch.equal(block, block[:, :1].expand_as(block))


def test_per_entry_scale_does_not_change_the_function_and_scales_the_gradient():
    g = torch.Generator().manual_seed(0)
    lay = tasks.layout(SPEC)
    w = tasks.init_params(SPEC, 2, g, dtype=torch.float64)
    s = tasks.sample_tensor_scale(2, lay, g, 0.3, 3.0, dtype=torch.float64)
    u = w / s
    X = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.randint(3, (6,), generator=g)
    torch.testing.assert_close(tasks.forward(SPEC, u, X, param_scale=s), tasks.forward(SPEC, w, X))
    _, gw = tasks.loss_and_grad(SPEC, w, X, y, lay=lay)
    _, gu = tasks.loss_and_grad(SPEC, u, X, y, param_scale=s, lay=lay)
    torch.testing.assert_close(gu, gw * s)  # chain rule through w = s u, entry by entry


def test_scaling_tasks_and_determinism():
    a = tasks.scaling_tasks(64, 3)
    b = tasks.scaling_tasks(64, 3)
    assert [t.spec.hidden for t in a] == [(64,), (32, 32, 32)]
    assert all(t.spec.activation == "relu" and t.spec.in_dim == 16 and t.spec.n_classes == 10 for t in a)
    assert torch.equal(a[0].X, b[0].X) and torch.equal(a[0].y, b[0].y)
    assert tasks.SCALING_WIDTH == 32 * max(tasks.TRAIN_WIDTHS) and tasks.SCALING_DEPTH == 8


def test_bad_input():
    lay = tasks.layout(SPEC)
    with pytest.raises(ValueError, match="one per entry"):
        tasks.init_params(SPEC, 2, torch.Generator(), param_scale=torch.ones(2, 3))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        tasks.sample_tensor_scale(0, lay, torch.Generator())
    with pytest.raises(ValueError, match="need 0 < low <= high"):
        tasks.sample_tensor_scale(2, lay, torch.Generator(), 2.0, 1.0)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        tasks.scaling_tasks(0, 2)
