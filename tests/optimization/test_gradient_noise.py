"""Is the noise of SGD Gaussian? Cumulants and their B^(1-r) law, Shapiro-Wilk rates, the tail-index estimator and
its pooling bias, the training run."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.numerics.mlp import mlp_init
from dltheory.numerics.pergrad import mlp_per_example_grads
from dltheory.optimization import gradient_noise as gn


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ cumulants


def test_sample_cumulants_match_scipy():
    x = torch.randn(500, 3, generator=_gen(), dtype=torch.float64).exp()
    a = x.numpy()
    c = gn.sample_cumulants(x)
    assert np.allclose(c["var"], a.var(0, ddof=1))
    assert np.allclose(c["skew"], scipy.stats.skew(a, bias=False))
    assert np.allclose(c["exkurt"], scipy.stats.kurtosis(a, bias=False))
    b = gn.sample_cumulants(x, unbiased=False)
    assert np.allclose(b["skew"], scipy.stats.skew(a)) and np.allclose(b["exkurt"], scipy.stats.kurtosis(a))
    with pytest.raises(ValueError, match="at least 4 samples"):
        gn.sample_cumulants(torch.ones(3))


@settings(max_examples=20, deadline=None)
@given(values=st.lists(st.floats(-5, 5), min_size=4, max_size=6, unique=True), b=st.integers(2, 3))
def test_cumulant_law_is_exact_for_iid_draws_from_the_empirical_distribution(values, b):
    """Enumerate all N^B equally likely minibatches (with replacement): the cumulants of their mean are exactly
    kappa_r / B^(r-1), i.e. variance / B, skewness / sqrt(B), excess kurtosis / B."""
    z = torch.tensor(values, dtype=torch.float64)
    if float(z.var()) < 1e-3:
        return
    means = torch.tensor([sum(t) / b for t in itertools.product(values, repeat=b)], dtype=torch.float64)
    one = gn.sample_cumulants(z, unbiased=False)
    exact = gn.sample_cumulants(means, unbiased=False)
    pred = gn.cumulant_prediction(one, b)
    for k in ("var", "skew", "exkurt"):
        assert torch.allclose(exact[k], pred[k], atol=1e-9), k


def test_ratio_through_origin():
    p = torch.tensor([1.0, -2.0, 0.5])
    assert gn.ratio_through_origin(3 * p, p) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="undefined"):
        gn.ratio_through_origin(p, torch.zeros(3))
    with pytest.raises(ValueError, match="same non-zero length"):
        gn.ratio_through_origin(p, p[:2])


def test_cumulant_check_recovers_the_law_on_a_skewed_population():
    g = _gen(1)
    P = -torch.log(torch.rand(400, 4, generator=g, dtype=torch.float64))  # exponential: skewness 2, exkurt 6
    out = gn.cumulant_check(P, 4, 8192, g)
    assert out["var"] == pytest.approx(1.0, abs=0.05)
    assert out["skew"] == pytest.approx(1.0, abs=0.15)
    assert out["exkurt"] == pytest.approx(1.0, abs=0.3)
    assert all(out[f"{k}_se"] > 0 for k in ("var", "skew", "exkurt"))
    with pytest.raises(ValueError, match="equal groups"):
        gn.cumulant_check(P, 4, 100, g, groups=8)


# ------------------------------------------------------------------------------------------------ Gaussianity tests


def test_shapiro_rates_gaussian_vs_exponential():
    g = _gen(2)
    gauss = torch.randn(500, 200, generator=g, dtype=torch.float64)
    expo = -torch.log(torch.rand(500, 20, generator=g, dtype=torch.float64))
    assert gn.rejection_rate(gn.shapiro_pvalues(gauss)) < 0.12
    assert gn.rejection_rate(gn.shapiro_pvalues(expo)) == 1.0
    p = gn.shapiro_pvalues(gauss[:, :5])
    ref = [scipy.stats.shapiro(gauss[:, j].numpy()).pvalue for j in range(5)]
    assert np.allclose(p, ref)
    with pytest.raises(ValueError, match="3 to 5000"):
        gn.shapiro_pvalues(torch.randn(6000, 1))
    with pytest.raises(ValueError, match="no p-values"):
        gn.rejection_rate([])


def test_gaussian_threshold():
    assert gn.gaussian_threshold([1, 2, 4, 8], [1.0, 0.6, 0.2, 0.1]) == 4
    assert gn.gaussian_threshold([8, 1, 4, 2], [0.1, 1.0, 0.25, 0.6]) == 4  # order-free, <= 0.25 passes
    assert gn.gaussian_threshold([1, 2], [0.9, 0.8]) is None
    with pytest.raises(ValueError, match="level must be"):
        gn.gaussian_threshold([1], [0.0], level=0)


# ------------------------------------------------------------------------------------------------ tail index


def _reference_alpha_estimator(m, X):
    """The reference code's utils.alpha_estimator (abhishekpanigrahi1996/SGD_noise), re-typed for comparison."""
    n = len(X) // m
    Y = torch.sum(X.view(n, m, -1), 1)
    eps = np.spacing(1)
    diff = (torch.log(Y.norm(dim=1) + eps).mean() - torch.log(X.norm(dim=1) + eps).mean()) / math.log(m)
    return 1 / diff


def test_tail_index_matches_the_reference_estimator_and_block_size():
    x = torch.randn(1024, generator=_gen(3), dtype=torch.float64)
    assert gn.block_size(1024) == 32 and gn.block_size(1000) == 25 and gn.block_size(97) == 1
    assert float(gn.tail_index(x)[0]) == pytest.approx(float(_reference_alpha_estimator(32, x.view(-1, 1))), rel=1e-12)
    with pytest.raises(ValueError, match="divide"):
        gn.tail_index(torch.randn(97))


@pytest.mark.parametrize("alpha", [1.2, 1.6, 2.0])
def test_tail_index_recovers_alpha_on_stable_samples(alpha):
    x = gn.symmetric_stable(alpha, (65536,), _gen(4))
    assert float(gn.tail_index(x)[0]) == pytest.approx(alpha, abs=0.08)


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(1e-3, 1e3), seed=st.integers(0, 50))
def test_tail_index_is_scale_free(scale, seed):
    x = torch.randn(256, 2, generator=_gen(seed), dtype=torch.float64)
    assert torch.allclose(gn.tail_index(scale * x), gn.tail_index(x), rtol=1e-6)


def test_symmetric_stable_special_cases():
    g = _gen(5)
    assert float(gn.symmetric_stable(2.0, 200000, g).var()) == pytest.approx(2.0, rel=0.02)   # N(0, 2)
    assert float(gn.symmetric_stable(1.0, 200000, g).abs().median()) == pytest.approx(1.0, rel=0.02)  # Cauchy
    with pytest.raises(ValueError, match=r"\(0, 2\]"):
        gn.symmetric_stable(2.5, 10, g)


def test_pooling_equal_scales_gives_2_and_heterogeneous_scales_match_the_prediction():
    g = _gen(6)
    equal = torch.randn(256, 400, generator=g, dtype=torch.float64)
    a_equal, _ = gn.pooled_tail_index(equal, g)
    assert a_equal == pytest.approx(2.0, abs=0.05)
    assert gn.pooled_tail_index_prediction(torch.ones(400), 100, g) == pytest.approx(2.0, abs=1e-12)
    scales = torch.logspace(-2, 1, 400, dtype=torch.float64)
    het = torch.randn(256, 400, generator=g, dtype=torch.float64) * scales
    a_het, m = gn.pooled_tail_index(het, g)
    pred = gn.pooled_tail_index_prediction(scales**2, m, g)
    assert pred < 1.6 and a_het == pytest.approx(pred, abs=0.05)
    with pytest.raises(ValueError, match="always-zero"):
        gn.pooled_tail_index_prediction(torch.tensor([1.0, 0.0]), 10, g)


# ------------------------------------------------------------------------------------------------ the experiment


def _small_problem():
    g = _gen(7)
    X = torch.randn(60, 6, generator=g, dtype=torch.float64)
    X[:, 0] = 0.0  # an always-zero "pixel"
    y = torch.randint(3, (60,), generator=g)
    widths = [6, 5, 3]
    return X, y, widths, mlp_init(widths, g)


def test_train_sgd_is_deterministic_and_descends():
    X, y, widths, theta0 = _small_problem()
    runs = [gn.train_sgd(theta0, X, y, widths, 0.2, 8, [0, 30, 60], _gen(0)) for _ in range(2)]
    assert torch.equal(runs[0][60], runs[1][60]) and torch.equal(runs[0][0], theta0)
    assert gn.full_xent(runs[0][60], X, y, widths) < gn.full_xent(theta0, X, y, widths)
    with pytest.raises(ValueError, match="checkpoint"):
        gn.train_sgd(theta0, X, y, widths, 0.1, 8, [], _gen(0))
    with pytest.raises(ValueError, match="lr must be"):
        gn.train_sgd(theta0, X, y, widths, -0.1, 8, [1], _gen(0))


def test_always_zero_pixels_give_always_zero_gradient_coordinates():
    X, y, widths, theta = _small_problem()
    G = mlp_per_example_grads(theta, X, y, widths)
    keep = gn.nonconstant_coordinates(G)
    first_layer = keep[: widths[0] * widths[1]].view(widths[1], widths[0])
    assert not first_layer[:, 0].any() and first_layer[:, 1:].all()
    assert int((~keep).sum()) == widths[1]


def test_noise_statistics_is_deterministic_and_shaped():
    X, y, widths, theta = _small_problem()
    G = mlp_per_example_grads(theta, X, y, widths)
    G = G[:, gn.nonconstant_coordinates(G)]
    U = gn.random_directions(G.shape[1], 6, _gen(1))
    assert torch.allclose(U.norm(dim=0), torch.ones(6, dtype=torch.float64))
    coords = torch.arange(4)
    a = gn.noise_statistics(G, [1, 4, 16], 64, U, coords, _gen(2))
    b = gn.noise_statistics(G, [1, 4, 16], 64, U, coords, _gen(2))
    assert a.reject_dir == b.reject_dir and a.alpha_dir == b.alpha_dir and a.reject_coord == b.reject_coord
    assert len(a.measured) == 3 and all(0 <= r <= 1 for r in a.reject_dir)
    assert a.ratio("var", 16) == pytest.approx(1.0, abs=0.3)
    with pytest.raises(ValueError, match="not measured"):
        a.at(2)
