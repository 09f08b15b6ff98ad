"""Tests for dltheory.overparametrization.rnn (chapter overparametrization/rnn-learning)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.numerics.fitting import loglog_slope
from dltheory.numerics.kernels import relu_kernel
from dltheory.overparametrization import languages as lang
from dltheory.overparametrization import rnn

HYP = settings(max_examples=25, deadline=None)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def naive_hidden(W, A, x):
    """Reference: one sequence at a time, one step at a time, vector operations only."""
    out = []
    for seq in x:
        h = torch.zeros(W.shape[0], dtype=x.dtype)
        for tok in seq:
            h = torch.relu(W @ h + A @ tok)
        out.append(h)
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------- model


def test_init_scales_and_shapes():
    net = rnn.init_elman(3, 400, 2, gen(), sigma_w=1.5, sigma_a=0.7, sigma_b=2.0, dtype=torch.float64)
    assert net.W.shape == (400, 400) and net.A.shape == (400, 3) and net.B.shape == (2, 400)
    assert float(net.W.var()) * 400 == pytest.approx(1.5**2, rel=0.02)
    assert float(net.A.var()) == pytest.approx(0.7**2, rel=0.1)
    assert float(net.B.var()) * 400 == pytest.approx(4.0, rel=0.1)
    batched = rnn.init_elman(1, 8, 1, gen(), replicas=5)
    assert batched.W.shape == (5, 8, 8) and batched.width == 8


def test_init_errors_name_the_fix():
    with pytest.raises(ValueError, match="width must be a positive integer, got -3"):
        rnn.init_elman(1, -3, 1, gen())
    with pytest.raises(ValueError, match="sigma_w"):
        rnn.init_elman(1, 4, 1, gen(), sigma_w=0.0)
    with pytest.raises(ValueError, match="embed integer strings"):
        rnn.hidden_states(torch.eye(3), torch.ones(3, 1), torch.zeros(2, 4, dtype=torch.long))


def test_hidden_states_match_naive_loop_and_batching():
    g = gen(1)
    net = rnn.init_elman(2, 16, 1, g, replicas=3, dtype=torch.float64)
    x = lang.embed(lang.sample_strings(5, 6, 3, g), 3, torch.float64)
    h = rnn.hidden_states(net.W, net.A, x)
    assert h.shape == (3, 5, 16)
    for r in range(3):
        torch.testing.assert_close(h[r], naive_hidden(net.W[r], net.A[r], x), rtol=1e-12, atol=1e-12)
    hs = rnn.hidden_states(net.W, net.A, x, all_steps=True)
    assert hs.shape == (6, 3, 5, 16)
    torch.testing.assert_close(hs[-1], h)


@HYP
@given(st.floats(0.1, 10.0), st.integers(0, 1000))
def test_hidden_state_is_positively_homogeneous_in_A(c, seed):
    g = gen(seed)
    net = rnn.init_elman(1, 12, 1, g, dtype=torch.float64)
    x = lang.embed(lang.sample_strings(4, 5, 2, g), 2, torch.float64)
    torch.testing.assert_close(rnn.hidden_states(net.W, c * net.A, x), c * rnn.hidden_states(net.W, net.A, x))


# ------------------------------------------------------------------------------------------------ kernel


def test_kernel_one_step_is_arccos():
    x = lang.embed(lang.all_strings(1, 3), 3, torch.float64)  # three unit tokens at 120 degrees
    K = rnn.kernel_recursion(x, sigma_a=1.3)
    torch.testing.assert_close(K, 1.3**2 * relu_kernel(x[:, 0] @ x[:, 0].T))


@HYP
@given(st.floats(0.3, 1.9), st.floats(0.2, 2.0), st.integers(1, 12))
def test_kernel_diagonal_solves_the_variance_recursion(sigma_w, sigma_a, L):
    x = torch.ones(1, L, 1, dtype=torch.float64)
    q = float(rnn.kernel_recursion(x, sigma_w=sigma_w, sigma_a=sigma_a)[0, 0])
    r = sigma_w**2 / 2  # q_t = (sigma_w^2 q_{t-1} + sigma_a^2)/2, q_0 = 0
    expected = sigma_a**2 / 2 * L if abs(r - 1) < 1e-12 else sigma_a**2 / 2 * (1 - r**L) / (1 - r)
    assert q == pytest.approx(expected, rel=1e-10)


def test_kernel_diagonal_is_L_at_he_scale():
    K = rnn.kernel_recursion(lang.embed(lang.all_strings(5, 2), 2, torch.float64))
    torch.testing.assert_close(torch.diagonal(K), torch.full((32,), 5.0, dtype=torch.float64))
    torch.testing.assert_close(K, K.T)


@HYP
@given(st.integers(2, 9), st.integers(0, 10_000))
def test_kernel_separates_distinct_sequences(L, seed):
    s = torch.unique(lang.sample_strings(12, L, 3, gen(seed)), dim=0)
    C = rnn.correlation(rnn.kernel_recursion(lang.embed(s, 3, torch.float64)))
    off = ~torch.eye(len(s), dtype=torch.bool)
    assert bool((C[off] < 1 - 1e-12).all())


def test_kernel_cross_and_all_steps_consistent():
    g = gen(2)
    x1 = lang.embed(lang.sample_strings(4, 6, 2, g), 2, torch.float64)
    x2 = lang.embed(lang.sample_strings(3, 6, 2, g), 2, torch.float64)
    full = rnn.kernel_recursion(torch.cat([x1, x2]))
    torch.testing.assert_close(rnn.kernel_recursion(x1, x2), full[:4, 4:])
    steps = rnn.kernel_recursion(x1, all_steps=True)
    assert steps.shape == (6, 4, 4)
    torch.testing.assert_close(steps[-1], rnn.kernel_recursion(x1))
    torch.testing.assert_close(steps[2], rnn.kernel_recursion(x1[:, :3]))


def test_finite_width_kernel_converges_to_recursion():
    g = gen(3)
    x = lang.embed(lang.sample_strings(8, 3, 2, g), 2, torch.float64)
    K = rnn.kernel_recursion(x)
    errs = []
    for m in (64, 4096):
        net = rnn.init_elman(1, m, 1, g, replicas=8, dtype=torch.float64)
        kh = rnn.empirical_kernel(rnn.hidden_states(net.W, net.A, x))
        errs.append(float(rnn.relative_error(kh, K).median()))
    assert errs[1] < 0.1 and errs[1] < errs[0] / 3


def test_first_token_gap_approaches_9pi2_over_8L2():
    L = 3000
    x = torch.ones(2, L, 1, dtype=torch.float64)
    x[1, 0, 0] = -1.0
    K = rnn.kernel_recursion(x)
    eps = float(1 - K[0, 1] / K[0, 0])
    assert eps * L**2 == pytest.approx(9 * math.pi**2 / 8, rel=0.1)


# ------------------------------------------------------------------------------------------------- ridge


def test_ridge_recovers_affine_map():
    g = gen(4)
    X = torch.randn(200, 5, generator=g, dtype=torch.float64)
    B = torch.randn(5, 2, generator=g, dtype=torch.float64)
    Y = X @ B + torch.tensor([1.0, -2.0], dtype=torch.float64)
    beta = rnn.ridge_fit(X, Y, lam=1e-12)
    torch.testing.assert_close(beta[:-1], B, atol=1e-8, rtol=0)
    torch.testing.assert_close(rnn.ridge_predict(X, beta), Y, atol=1e-8, rtol=0)
    with pytest.raises(ValueError, match="lam"):
        rnn.ridge_fit(X, Y, lam=-1.0)


def test_decode_errors_perfect_and_useless_features():
    g = gen(5)
    s = lang.all_strings(6, 2)
    x = lang.embed(s, 2, torch.float64)
    perm = torch.randperm(64, generator=g)
    tr, te = perm[:48], perm[48:]
    with pytest.raises(ValueError, match="split the strings at random"):
        rnn.decode_errors(x.flatten(1)[:48], x[:48], x.flatten(1)[48:], x[48:])
    perfect = rnn.decode_errors(x.flatten(1)[tr], x[tr], x.flatten(1)[te], x[te], lam=1e-10)
    assert float(perfect.max()) < 1e-6
    noise = torch.randn(64, 4, generator=g, dtype=torch.float64)
    useless = rnn.decode_errors(noise[tr], x[tr], noise[te], x[te])
    assert float(useless.mean()) > 0.8


# ---------------------------------------------------------------------------------------------- training


def test_ntk_lambda_max_matches_explicit_jacobian():
    g = gen(6)
    net = rnn.init_elman(1, 6, 2, g, dtype=torch.float64)
    x = lang.embed(lang.all_strings(3, 2), 2, torch.float64)
    w = torch.rand(8, generator=g, dtype=torch.float64)
    w = w / w.sum()
    J = torch.autograd.functional.jacobian(lambda W: rnn.hidden_states(W, net.A, x) @ net.B.T, net.W)
    J = J.reshape(16, -1)
    sw = w.repeat_interleave(2).sqrt()
    explicit = float(torch.linalg.eigvalsh(sw[:, None] * (J @ J.T) * sw[None, :])[-1])
    assert float(rnn.ntk_lambda_max(net, x, w, iters=200)) == pytest.approx(explicit, rel=1e-6)


def _tiny_problem(seed=7, R=2):
    g = gen(seed)
    s, c = lang.unique_with_counts(lang.sample_strings(40, 4, 2, g))
    x = lang.embed(s, 2, torch.float64).expand(R, -1, -1, -1)
    y = (torch.nn.functional.one_hot(lang.parity_labels(s), 2).double() - 0.5).expand(R, -1, -1)
    w = (c.double() / c.sum()).expand(R, -1)
    net = rnn.init_elman(1, 32, 2, g, replicas=R, dtype=torch.float64)
    return net, x, y, w


def test_train_gd_decreases_loss_and_is_deterministic():
    net, x, y, w = _tiny_problem()
    a = rnn.train_gd(net, x, y, w, steps=60)
    b = rnn.train_gd(net, x, y, w, steps=60)
    assert torch.equal(a["W"], b["W"]) and torch.equal(a["losses"], b["losses"])
    assert bool((a["losses"][-1] < 0.5 * a["losses"][0]).all())
    assert torch.equal(rnn.centred_scores(net, net.W, x), torch.zeros_like(y))


def test_train_gd_step_is_plain_gradient_descent():
    net, x, y, w = _tiny_problem(R=1)
    res = rnn.train_gd(net, x, y, w, steps=1, lr_scale=0.5)
    W = net.W.clone().requires_grad_(True)
    f0 = rnn.hidden_states(net.W, net.A, x) @ net.B.transpose(-1, -2)
    f = rnn.hidden_states(W, net.A, x) @ net.B.transpose(-1, -2) - f0
    (grad,) = torch.autograd.grad((0.5 * w * (f - y).pow(2).sum(-1)).sum(), W)
    torch.testing.assert_close(res["W"], net.W - float(res["lr"][0]) * grad)


def test_train_gd_rejects_unnormalized_weights():
    net, x, y, w = _tiny_problem()
    with pytest.raises(ValueError, match="sum to 1"):
        rnn.train_gd(net, x, y, 2 * w, steps=1)


# ------------------------------------------------------------------------------------- additive models


def test_fit_additive_recovers_additive_targets_exactly():
    s = lang.all_strings(5, 3)
    g = gen(8)
    table = torch.randn(5, 3, generator=g, dtype=torch.float64)
    target = table[torch.arange(5), s].sum(1)  # sum_t g_t(s_t)
    phi = rnn.additive_features(s, 3)
    coef = torch.linalg.pinv(torch.cat([phi, torch.ones(len(s), 1, dtype=torch.float64)], 1)) @ target
    torch.testing.assert_close(phi @ coef[:-1] + coef[-1], target)


def test_best_additive_parity_constant_majority_perfect():
    s = lang.all_strings(6, 2)
    coef = rnn.fit_additive(s, lang.parity_labels(s), 2, 2)
    scores = rnn.additive_scores(s, coef, 2)
    torch.testing.assert_close(scores, torch.full_like(scores, 0.5))
    assert rnn.best_additive_accuracy("parity", 6) == 0.5
    for L in (3, 4, 6, 7):
        assert rnn.best_additive_accuracy("majority", L) == 1.0


def test_expected_accuracy_splits_ties():
    scores = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [3.0, 3.0, 3.0]])
    labels = torch.tensor([0, 1, 2])
    assert rnn.expected_accuracy(scores, labels) == pytest.approx((0.5 + 1 + 1 / 3) / 3)
    assert rnn.expected_accuracy(scores, labels, torch.tensor([0.0, 1.0, 0.0])) == 1.0


def test_loglog_slope_exact_for_power_law():
    xs = [1.0, 2.0, 4.0, 8.0]
    assert loglog_slope(xs, [3 * v**-0.7 for v in xs]) == pytest.approx(-0.7)


def test_learning_curve_smoke_and_determinism():
    kw = dict(task="substring", length=4, samples=[8, 32], width=16, steps=20, lr_scale=1.0, n_test=200)
    a = rnn.learning_curve(generator=gen(9), **kw)
    b = rnn.learning_curve(generator=gen(9), **kw)
    assert a["rnn"] == b["rnn"] and a["additive"] == b["additive"]
    assert len(a["rnn"]) == 2 and all(0 <= v <= 1 for v in a["rnn"] + a["seen"])
    assert a["unique"][0] <= 8 and a["seen"][1] >= a["seen"][0]


def test_decoding_and_kernel_curves_shapes():
    g = gen(10)
    s = lang.all_strings(5, 2)
    x = lang.embed(s, 2)
    perm = torch.randperm(32, generator=g)
    d = rnn.decoding_curve(x, perm[:24], perm[24:], [8, 16], 2, g)
    assert d["per_position"].shape == (2, 2, 5) and d["mean"].shape == (2,)
    k = rnn.kernel_error_curve(x[:6], [8, 16], 3, g)
    assert k["errors"].shape == (2, 3) and bool((k["median"] > 0).all())
