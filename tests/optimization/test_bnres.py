"""Batch norm and residual connections: the three-arm residual MLP, its statistics, the mean-field theory and fits
(chapters/optimization/batchnorm-residual.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.optimization import bnres as br


def _data(n=48, d=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    return X, y


def _params(width=16, depth=4, d=8, classes=3, seed=0, arms=br.ARMS):
    return br.init_params(width, depth, d, classes, torch.Generator().manual_seed(seed), arms)


def test_init_shapes_scales_and_shared_weights():
    p = br.init_params(64, 3, 8, 5, torch.Generator().manual_seed(0))
    assert p["W_in"].shape == (3, 64, 8) and p["W1"].shape == (3, 3, 64, 64) and p["W_out"].shape == (3, 5, 64)
    for k in p:
        assert torch.equal(p[k][0], p[k][1]) and torch.equal(p[k][0], p[k][2])
    assert abs(float(p["W1"][0].var()) * 64 - 2) < 0.1 and abs(float(p["W2"][0].var()) * 64 - 1) < 0.05


@pytest.mark.parametrize("kwargs, match", [({"width": 0}, "width must be"), ({"depth": 1.5}, "depth must be"),
                                           ({"arms": ("bnres", "nope")}, "arms must be"),
                                           ({"arms": ("res", "res")}, "arms must be")])
def test_init_rejects_bad_arguments(kwargs, match):
    args = {"width": 8, "depth": 2, "d_in": 4, "n_classes": 3, "generator": torch.Generator(), **kwargs}
    with pytest.raises(ValueError, match=match):
        br.init_params(**args)


def test_batch_norm_matches_torch():
    z = torch.randn(3, 40, 7, dtype=torch.float64)
    ref = torch.stack([torch.nn.functional.batch_norm(z[a], None, None, training=True, eps=br.BN_EPS)
                       for a in range(3)])
    assert torch.allclose(br.batch_norm(z), ref, atol=1e-12)
    bn = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64).view(-1, 1, 1)
    mixed = br._maybe_bn(z, bn, br.BN_EPS)
    assert torch.allclose(mixed[0], ref[0], atol=1e-12) and torch.equal(mixed[1], z[1])


def test_forward_blocks_match_the_definitions():
    X, y = _data()
    p = _params()
    logits, stream = br.forward(p, X)
    assert logits.shape == (3, 48, 3) and len(stream) == 5
    x, W1, W2 = stream[1], p["W1"][:, 1], p["W2"][:, 1]
    bn = br.batch_norm
    # bnres: x + BN(W2 relu(BN(W1 x))); res: x + W2 relu(W1 x); bnplain: BN(W2 relu(BN(W1 x)))
    assert torch.allclose(stream[2][0], x[0] + bn(torch.relu(bn(x[0] @ W1[0].T)) @ W2[0].T), atol=1e-10)
    assert torch.allclose(stream[2][1], x[1] + torch.relu(x[1] @ W1[1].T) @ W2[1].T, atol=1e-10)
    assert torch.allclose(stream[2][2], bn(torch.relu(bn(x[2] @ W1[2].T)) @ W2[2].T), atol=1e-10)
    assert torch.allclose(stream[-1][2].var(0, unbiased=False), torch.ones(16, dtype=torch.float64), atol=1e-3)


def test_forward_is_differentiable_gradcheck():
    X, _ = _data(n=10, d=3)
    p = _params(width=4, depth=2, d=3)
    W1 = p["W1"].clone().requires_grad_()

    def f(w):
        return br.forward({**p, "W1": w}, X)[0]

    assert torch.autograd.gradcheck(f, (W1,), eps=1e-6, atol=1e-5)


def test_block_statistics_match_retained_gradients_and_are_deterministic():
    X, y = _data()
    p = _params()
    stats = br.block_statistics(p, X, y)
    q = {k: w.clone().requires_grad_() for k, w in p.items()}
    logits, stream = br.forward(q, X)
    for s in stream:
        s.retain_grad()
    br.arm_losses(logits, y).sum().backward()
    G = np.stack([(s.grad**2).mean((1, 2)).numpy() for s in stream], 1) * 48**2
    assert np.allclose(stats["G"], G, rtol=1e-10)
    Gm = np.stack([(s.grad.mean(1) ** 2).mean(-1).numpy() for s in stream], 1) * 48**2
    assert np.allclose(stats["G_mean"], Gm, rtol=1e-10) and np.all(stats["G_mean"] <= stats["G"] * (1 + 1e-12))
    gw = torch.sqrt((q["W1"].grad**2).sum((-1, -2)) + (q["W2"].grad**2).sum((-1, -2))).numpy()
    assert np.allclose(stats["gradw"], gw, rtol=1e-10)
    again = br.block_statistics(p, X, y)
    assert all(np.array_equal(stats[k], again[k]) for k in stats)


def test_constant_gradient_loss_gives_bn_branches_nothing():
    X, y = _data()
    p = _params()
    ce = br.block_statistics(p, X, y, loss="ce")["gradw"]
    const = br.block_statistics(p, X, y, loss="constant")["gradw"]
    assert const[0].max() < 1e-12 * ce[0].max() and const[2].max() < 1e-12 * ce[2].max()
    assert const[1].max() > 1e-3 * ce[1].max()
    with pytest.raises(ValueError, match="unknown loss"):
        br.block_statistics(p, X, y, loss="mse")


def test_forward_rejects_mismatched_inputs():
    X, y = _data()
    with pytest.raises(ValueError, match="X must be"):
        br.forward(_params(d=5), X)
    with pytest.raises(ValueError, match="params hold"):
        br.forward(_params(arms=("bnres",)), X)


def test_theory_profiles():
    assert np.array_equal(br.forward_variance_theory(3), [1.0, 2.0, 3.0, 4.0])
    prof = br.bnres_profile_theory(br.forward_variance_theory(32))
    assert prof[-1] == 1.0 and np.all(np.diff(prof) < 0)
    assert math.isclose(math.log(prof[0]), br.bnres_log_ratio_theory(32), rel_tol=1e-12)
    assert math.isclose(br.KAPPA, 1.4669422069, rel_tol=1e-9)
    with pytest.raises(ValueError, match="v must be"):
        br.bnres_profile_theory([1.0])
    with pytest.raises(ValueError, match="depth must be"):
        br.bnres_log_ratio_theory(0)


@settings(max_examples=40, deadline=None)
@given(depth=st.integers(1, 300), kappa=st.floats(0.0, 4.0))
def test_rising_factorial_equals_product(depth, kappa):
    prod = float(np.sum(np.log1p(kappa / np.arange(1, depth + 1))))
    assert math.isclose(br.bnres_log_ratio_theory(depth, kappa), prod, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=40, deadline=None)
@given(depth=st.integers(2, 64), kappa=st.floats(0.05, 3.0), v1=st.floats(0.5, 3.0))
def test_fit_kappa_recovers_the_recursion(depth, kappa, v1):
    v = br.forward_variance_theory(depth, v1)
    G = br.bnres_profile_theory(v, kappa) * 3.7
    assert math.isclose(br.fit_kappa(v, G), kappa, rel_tol=1e-8)


@settings(max_examples=30, deadline=None)
@given(a=st.floats(-5, 5), b=st.floats(-5, 5), n=st.integers(2, 50))
def test_linear_slope_is_exact_on_lines(a, b, n):
    x = np.arange(n, dtype=float)
    assert math.isclose(br.linear_slope(x, a * x + b), a, abs_tol=1e-9)


def test_fits_reject_bad_input():
    with pytest.raises(ValueError, match="positive and finite"):
        br.fit_kappa([1.0, 2.0], [1.0, float("nan")])
    with pytest.raises(ValueError, match="distinct x"):
        br.linear_slope([1.0, 1.0], [0.0, 1.0])


def test_summarize_on_the_theory_returns_the_predictions():
    L = 12
    l = np.arange(1, L + 2, dtype=float)
    v = br.forward_variance_theory(L)
    G_bnres = br.bnres_profile_theory(v)
    stats = {"v": np.stack([v, 2.0 ** (l - 1), np.ones(L + 1)]),
             "q": np.stack([v, 2.0 ** (l - 1), np.ones(L + 1)]),
             "G": np.stack([G_bnres, 2.0 ** (L + 1 - l), br.KAPPA ** (L + 1 - l)]),
             "gradw": np.stack([np.sqrt(G_bnres[1:]), np.ones(L), br.KAPPA ** ((L - l[:-1]) / 2)])}
    s = br.summarize(stats)
    for name in ("fwd_var_slope_bnres", "fwd_var_final_bnres", "bwd_kappa_hat_bnres", "bwd_log_ratio_bnres",
                 "bwd_profile_slope_bnres", "bwd_last4_gain_bnres", "fwd_log2_q_slope_res", "bwd_log2_g_slope_res",
                 "bwd_log_ratio_res", "bwd_log_gain_bnplain", "bwd_log_ratio_bnplain",
                 "gradw_ratio_first_last_bnres", "gradw_ratio_first_last_res", "gradw_ratio_first_last_bnplain"):
        assert math.isclose(s[name], s[name + "_pred"], rel_tol=1e-9), name
    bad = {**stats, "G": stats["G"] * np.inf}
    with pytest.raises(ValueError, match="not finite"):
        br.summarize(bad)


def test_measure_is_deterministic_and_bn_variance_is_linear():
    X, y = _data(n=64)
    a = br.measure(32, 6, 64, X, y, torch.Generator().manual_seed(3))
    b = br.measure(32, 6, 64, X, y, torch.Generator().manual_seed(3))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert abs(br.linear_slope(np.arange(7), a["v"][0]) - 1) < 0.3
    with pytest.raises(ValueError, match="exceeds"):
        br.measure(8, 2, 65, X, y, torch.Generator())


def test_kappa_ladder_shapes():
    X, y = _data(n=64)
    out = br.kappa_ladder([8, 16], [32, 64], 4, [3, 2], X, y, torch.Generator().manual_seed(0))
    assert [e.shape for e in out["bnres"]] == [(3,), (2,)] and [e.shape for e in out["bnplain"]] == [(3,), (2,)]
    assert all(np.all(np.isfinite(e)) for e in out["bnres"])
    assert [e.shape for e in br.kappa_ladder([8], [32], 4, 2, X, y, torch.Generator())["bnres"]] == [(2,)]
    with pytest.raises(ValueError, match="equal length"):
        br.kappa_ladder([8], [32, 64], 4, 1, X, y, torch.Generator())
    with pytest.raises(ValueError, match="one per rung"):
        br.kappa_ladder([8, 16], [32, 64], 4, [1], X, y, torch.Generator())


def test_kappa_monte_carlo():
    k, se = br.kappa_monte_carlo(2**18, torch.Generator().manual_seed(0))
    assert 0 < se < 0.02 and abs(k - br.KAPPA) < 5 * se
    with pytest.raises(ValueError, match="at least"):
        br.kappa_monte_carlo(10, torch.Generator())


def test_train_arms_flags_divergence_and_trains_bnres():
    X, y = _data(n=96)
    p = _params(width=16, depth=12, d=8)
    a = br.train_arms(p, X, y, 15, 0.05, 32, torch.Generator().manual_seed(1))
    b = br.train_arms(p, X, y, 15, 0.05, 32, torch.Generator().manual_seed(1))
    assert np.array_equal(a["loss"], b["loss"], equal_nan=True)
    assert not a["diverged"][0] and a["final_loss"][0] < a["loss"][0, 0]
    live = ~a["diverged"]
    assert np.all(np.isfinite(a["final_loss"][live])) and np.all(np.isnan(a["final_loss"][~live]))
    hot = br.train_arms(p, X, y, 5, 1e4, 32, torch.Generator().manual_seed(1))
    assert hot["diverged"][1] and hot["diverged_step"][1] >= 0 and np.isnan(hot["loss"][-1, 1])
    with pytest.raises(ValueError, match="lr must be"):
        br.train_arms(p, X, y, 5, 0.0, 32, torch.Generator())
    with pytest.raises(ValueError, match="exceeds"):
        br.train_arms(p, X, y, 5, 0.1, 97, torch.Generator())
