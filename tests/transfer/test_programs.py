"""TinT's linear modules, first-order backward rules, stop-gradient, and in-context regression
(dltheory.transfer.programs). Chapter: chapters/transfer/transformers-as-programs.md."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.numerics.fitting import loglog_slope
from dltheory.transfer import programs as P

F64 = torch.float64


def _data(B, T, d_in, d_out, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, d_out, d_in, generator=g, dtype=F64), torch.randn(B, T, d_in, generator=g, dtype=F64),
            torch.randn(B, T, d_out, generator=g, dtype=F64))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 5), st.sampled_from([(4, 1), (4, 2), (4, 4), (6, 3), (8, 2)]), st.integers(1, 6),
       st.integers(0, 10_000))
def test_linear_modules_match_autograd(d_in, shape, T, seed):
    d_out, stack = shape
    lay = P.make_layout(d_in, d_out, stack)
    W, X, Y = _data(2, T, d_in, d_out, seed)
    out = P.tint_sgd_step(lay, W, X, Y, 0.3)
    Wr, Xr = W.clone().requires_grad_(), X.clone().requires_grad_()
    y = torch.einsum("bod,btd->bto", Wr, Xr)
    loss = 0.5 * ((y - Y) ** 2).sum(-1).mean(-1).sum()
    gW, gX = torch.autograd.grad(loss, [Wr, Xr])
    torch.testing.assert_close(out["y"], y.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(out["dx"], gX, atol=1e-12, rtol=0)
    torch.testing.assert_close(out["grad_W"], gW, atol=1e-11, rtol=0)
    torch.testing.assert_close(out["W_new"], W - 0.3 * gW, atol=1e-12, rtol=0)
    assert lay.n_prefix == d_out // stack


def test_softmax_forward_is_second_order_in_eps():
    lay = P.make_layout(3, 4, 2)
    W, X, _ = _data(2, 5, 3, 4, 9)
    eps = [0.03, 0.01, 0.003]
    y = P.tint_softmax_forward(lay, W, X, eps)
    err = (y - torch.einsum("bod,btd->bto", W, X)).abs().amax((1, 2, 3))
    assert abs(loglog_slope(eps, err) - 2) < 0.1
    with pytest.raises(ValueError, match="eps"):
        P.tint_softmax_forward(lay, W, X, [])


def test_encode_decode_roundtrip_and_prefix_untouched():
    lay = P.make_layout(3, 6, 3)
    W, X, _ = _data(2, 4, 3, 6)
    h = P.encode(lay, W, X)
    assert torch.equal(P.decode_weights(lay, h), W)
    h2 = P.linear_attention(h, *P.forward_weights(lay))
    assert torch.equal(h2[:, :lay.n_prefix], h[:, :lay.n_prefix])      # prefix queries are zero


def test_linear_attention_matches_explicit_formula():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 5, 4, generator=g, dtype=F64)
    wq, wk, wv = (torch.randn(1, 4, 3, generator=g, dtype=F64) for _ in range(3))
    wo = torch.randn(1, 3, 4, generator=g, dtype=F64)
    a = (h @ wq[0]) @ (h @ wk[0]).transpose(1, 2)
    ref = h + a @ (h @ wv[0]) @ wo[0]
    torch.testing.assert_close(P.linear_attention(h, wq, wk, wv, wo), ref)


@pytest.mark.parametrize("kwargs, match", [(dict(d_in=0, d_out=4, stack=1), "d_in"),
                                           (dict(d_in=2, d_out=4, stack=3), "stack"),
                                           (dict(d_in=2, d_out=4, stack=0), "stack")])
def test_make_layout_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        P.make_layout(**kwargs)


def test_bad_inputs():
    lay = P.make_layout(2, 4, 2)
    W, X, Y = _data(1, 3, 2, 4)
    with pytest.raises(ValueError, match="lr"):
        P.tint_sgd_step(lay, W, X, Y, -1.0)
    with pytest.raises(ValueError, match="W must"):
        P.encode(lay, W[:, :3], X)
    with pytest.raises(ValueError, match="N must"):
        P.fd_backward(P.normalize, X, X, 0)
    with pytest.raises(ValueError, match="beta"):
        P.attention_layer([0.0], 4, 3, 0)


@pytest.mark.parametrize("f", [P.normalize, torch.nn.functional.gelu])
def test_fd_backward_is_first_order(f):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 8, generator=g, dtype=F64)
    dy = torch.randn(3, 8, generator=g, dtype=F64)
    Ns = [2.0**k for k in range(4, 12)]
    err = P.fd_backward_errors(f, x, dy, Ns)
    assert abs(loglog_slope(Ns, err) + 1) < 0.05


def test_layer_norm_jacobian_is_symmetric():
    x = torch.randn(7, generator=torch.Generator().manual_seed(3), dtype=F64)
    J = torch.autograd.functional.jacobian(P.normalize, x)
    torch.testing.assert_close(J, J.T)


def test_stopgrad_exact_at_tiny_beta_and_worse_when_sharp():
    model = P.attention_layer([1e-4, 1.0], 8, 6, 0)
    g = torch.Generator().manual_seed(4)
    x, dy = torch.randn(4, 6, 8, generator=g, dtype=F64), torch.randn(4, 6, 8, generator=g, dtype=F64)
    r = P.stopgrad_attention_cosines(model, x, dy)
    assert r["cos"][0] > 0.9999 and r["cos"][1] < r["cos"][0]
    assert r["max_attn"][1] > r["max_attn"][0]


def test_stopgrad_gradient_matches_autograd_with_detached_attention():
    """The stop-gradient formula equals autograd when the attention probabilities are held fixed."""
    model = P.attention_layer([0.7], 5, 4, 1)
    g = torch.Generator().manual_seed(5)
    x, dy = torch.randn(2, 4, 5, generator=g, dtype=F64), torch.randn(2, 4, 5, generator=g, dtype=F64)
    A = model.attention_weights(x)[0].detach()[0, :, 0]
    Vw, Ow = model.get_weight("blocks.0.attn.v.weight", 0), model.get_weight("blocks.0.attn.o.weight", 0)
    xr = x.clone().requires_grad_()
    y = torch.einsum("bij,bjd->bid", A, xr @ Vw.T) @ Ow.T
    ref, = torch.autograd.grad((y * dy).sum(), xr)
    sg = torch.einsum("bij,bie->bje", A, dy) @ Ow @ Vw
    torch.testing.assert_close(sg, ref)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 50), st.integers(1, 10))
def test_optimal_step_minimizes_risk(N, d):
    risk = lambda eta: d * (eta**2 * N * (N + d + 1) - 2 * eta * N + 1)  # noqa: E731
    e = P.optimal_step(N, d)
    assert math.isclose(risk(e), P.optimal_risk(N, d), rel_tol=1e-12)
    assert risk(e * 1.01) > risk(e) and risk(e * 0.99) > risk(e)


def test_lsa_with_gd_weights_is_one_gd_step():
    d, N, eta = 3, 7, 0.05
    t = P.icl_tasks(64, N, d, torch.Generator().manual_seed(6))
    Pm, Qm = torch.zeros(d + 1, d + 1, dtype=F64), torch.zeros(d + 1, d + 1, dtype=F64)
    Pm[d, d], Qm[:d, :d] = eta, torch.eye(d, dtype=F64)
    torch.testing.assert_close(P.lsa_predict({"P": Pm, "Q": Qm}, t["X"], t["y"], t["xq"]),
                               P.gd_one_step_prediction(t["X"], t["y"], t["xq"], eta))
    assert math.isclose(float(P.lsa_effective_step(Pm, Qm, d)), eta)


def test_gd_risk_matches_theory_by_simulation():
    N, d = 10, 3
    t = P.icl_tasks(100_000, N, d, torch.Generator().manual_seed(7))
    pred = P.gd_one_step_prediction(t["X"], t["y"], t["xq"], P.optimal_step(N, d))
    assert abs(float(((pred - t["yq"]) ** 2).mean()) / P.optimal_risk(N, d) - 1) < 0.03


def test_train_lsa_is_deterministic_and_learns():
    a = P.train_lsa(8, 2, 150, 64, 1e-2, [0, 1])
    b = P.train_lsa(8, 2, 150, 64, 1e-2, [0, 1])
    assert torch.equal(a["P"], b["P"]) and torch.equal(a["losses"], b["losses"])
    assert a["P"].shape == (2, 3, 3)
    assert float(a["losses"][-20:].mean()) < float(a["losses"][:5].mean())
    with pytest.raises(ValueError, match="seeds"):
        P.train_lsa(8, 2, 10, 8, 1e-2, [])
