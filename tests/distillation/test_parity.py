"""Sparse parity: data, exact Fourier–Walsh coefficients and the degree-1 probe (dltheory.distillation.parity)."""

from __future__ import annotations

import pytest
import sympy as sp
import torch

from dltheory.distillation.parity import (
    all_inputs,
    check_nk,
    default_support,
    degree1_probe,
    labels_from_parity,
    parity,
    random_signs,
    sample_parity,
    walsh_coefficient_exact,
    walsh_coefficients,
)


def test_check_nk_rejects_bad_sizes():
    assert check_nk(5, 3) == (5, 3)
    with pytest.raises(ValueError, match="cannot exceed"):
        check_nk(3, 4)
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            check_nk(bad, 1)
        with pytest.raises(ValueError, match="positive integer"):
            check_nk(4, bad)


def test_samples_are_signs_with_parity_labels():
    g = torch.Generator().manual_seed(0)
    x, y = sample_parity((3, 50), 11, [0, 4, 7], g)
    assert x.shape == (3, 50, 11) and y.shape == (3, 50) and y.dtype == torch.long
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(y, (x[..., 0] * x[..., 4] * x[..., 7] < 0).long())
    assert torch.equal(labels_from_parity(torch.tensor([1.0, -1.0])), torch.tensor([0, 1]))


def test_random_signs_are_balanced_and_deterministic():
    a = random_signs((4000,), 9, torch.Generator().manual_seed(1))
    b = random_signs((4000,), 9, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert a.mean(0).abs().max() < 0.06
    with pytest.raises(ValueError):
        random_signs((2,), 0, torch.Generator())


def test_parity_rejects_out_of_range_support():
    with pytest.raises(ValueError, match="outside"):
        parity(torch.ones(2, 3), [0, 3])
    assert torch.equal(parity(torch.ones(2, 3), []), torch.ones(2))


def test_exact_walsh_coefficients_of_parity_vanish_on_proper_subsets():
    k = 3
    chi = lambda x: x[0] * x[1] * x[2]  # noqa: E731
    assert walsh_coefficient_exact(chi, k, [0, 1, 2]) == 1
    for T in ([], [0], [1], [0, 1], [1, 2]):
        assert walsh_coefficient_exact(chi, k, T) == 0


def test_exact_walsh_coefficient_of_relu_sum():
    # ReLU(x1 + x2) on {+-1}^2 takes 2 at (1, 1), 0 elsewhere: hat f({0}) = 2/4 = 1/2.
    c = walsh_coefficient_exact(lambda x: sp.Max(0, sum(x)), 2, [0])
    assert c == sp.Rational(1, 2)
    with pytest.raises(ValueError):
        walsh_coefficient_exact(lambda x: 1, 3, [3])
    with pytest.raises(ValueError):
        walsh_coefficient_exact(lambda x: 1, 0, [])


def test_walsh_coefficients_exact_on_the_full_cube():
    x = all_inputs(4)
    assert x.shape == (16, 4)
    f = parity(x, [1, 3]) + 0.5 * x[:, 0]
    c = walsh_coefficients(f, x, [[1, 3], [0], [2], []])
    assert torch.allclose(c, torch.tensor([1.0, 0.5, 0.0, 0.0], dtype=x.dtype))
    with pytest.raises(ValueError):
        walsh_coefficients(f[:3], x, [[0]])
    with pytest.raises(ValueError, match="too large"):
        all_inputs(23)


def test_degree1_probe_splits_support_and_rest():
    x = all_inputs(5)
    p = 0.5 + 0.1 * x[:, 0] - 0.2 * x[:, 3]
    ins, off = degree1_probe(p.expand(2, -1), x, [0, 1])
    assert ins.shape == (2, 2) and off.shape == (2, 3)
    assert torch.allclose(ins[0], torch.tensor([0.1, 0.0], dtype=x.dtype))
    assert torch.allclose(off[0], torch.tensor([0.0, 0.2, 0.0], dtype=x.dtype))
    with pytest.raises(ValueError):
        degree1_probe(p, x, [7])


def test_default_support():
    assert default_support(6, 3) == (0, 1, 2)
    with pytest.raises(ValueError):
        default_support(2, 3)
