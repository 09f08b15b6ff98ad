"""Skill localization by grafting (dltheory.transfer.grafting): data splits, the batched body, fine-tuning, grafts,
the reference's mask relaxation and hand-computed mask gradient. Chapter: chapters/transfer/skill-localization.md."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.numerics.mlp import mlp_apply
from dltheory.transfer import grafting as G

F64 = torch.float64
W = [6, 5, 4]


def _gen(s=0):
    return torch.Generator().manual_seed(s)


def _toy(R=3, N=12, seed=0, dtype=F64):
    body, head = G.init_models(W, 10, list(range(seed, seed + R)), dtype=dtype)
    x = torch.randn((R, N, W[0]), generator=_gen(seed + 100), dtype=dtype)
    y = torch.randint(2, (R, N), generator=_gen(seed + 101))
    words = torch.tensor([[1, 8]] * R)
    return body, head, x, y, words


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def test_tasks_and_label_words():
    d = torch.arange(10)
    assert G.task_labels("ge5", d).tolist() == [0] * 5 + [1] * 5
    assert G.task_labels("odd", d).tolist() == [0, 1] * 5
    assert G.task_labels("ge4", d).tolist() == [0] * 4 + [1] * 6
    for t in G.TASKS:
        no, yes = G.label_words(t)
        assert G.task_labels(t, torch.tensor([no, yes])).tolist() == [0, 1]   # one label word of each class
    words = [w for t in G.TASKS for w in G.label_words(t)]
    assert len(set(words)) == len(words)                                       # distinct, for the multi-task model
    with pytest.raises(ValueError, match="unknown task"):
        G.task_labels("even", d)


def test_split_and_few_shot():
    a, b, c = G.split_indices(100, 50, 30, _gen())
    assert len(a) == 50 and len(c) == 30 and len(b) == 20
    assert len(set(torch.cat([a, b, c]).tolist())) == 100
    labels = torch.tensor([0] * 10 + [1] * 7)
    idx = G.few_shot_indices(labels, 5, _gen())
    assert labels[idx].tolist() == [0] * 5 + [1] * 5 and len(set(idx.tolist())) == 10
    with pytest.raises(ValueError, match="lower n_pretrain"):
        G.split_indices(100, 70, 30, _gen())
    with pytest.raises(ValueError, match="lower k"):
        G.few_shot_indices(labels, 8, _gen())
    with pytest.raises(ValueError, match="k must"):
        G.few_shot_indices(labels, 0, _gen())


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------


def test_body_forward_matches_the_shared_mlp():
    body, head, x, _, _ = _toy()
    h = G.body_forward(body, x, W)
    assert h.shape == (3, 12, W[-1])
    for r in range(3):
        # the shared MLP applies no activation after its last layer; the body applies a ReLU after every layer
        ref = torch.relu(mlp_apply(body[r], x[r], W, activation="relu"))
        torch.testing.assert_close(h[r], ref)
    shared = G.body_forward(body, x[0], W)
    torch.testing.assert_close(shared[1], torch.relu(mlp_apply(body[1], x[0], W, activation="relu")))
    assert G.body_num_params(W) == body.shape[1] == 6 * 5 + 5 + 5 * 4 + 4
    with pytest.raises(ValueError, match="parameters but widths"):
        G.body_forward(body[:, :-1], x, W)


def test_binary_logits_read_the_label_words():
    body, head, x, _, words = _toy()
    h = G.body_forward(body, x, W)
    full = h @ head.w.transpose(1, 2) + head.b.unsqueeze(1)
    z = G.binary_logits(body, head, x, words, W)
    torch.testing.assert_close(z, full[..., [1, 8]])
    per_example = words.unsqueeze(1).expand(-1, 12, -1).clone()
    per_example[:, ::2] = torch.tensor([0, 7])
    z2 = G.binary_logits(body, head, x, per_example, W)
    torch.testing.assert_close(z2[:, ::2], full[:, ::2][..., [0, 7]])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=4, max_size=40), st.integers(0, 10_000))
def test_ece_bounds_and_perfect_calibration(ps, s):
    p = torch.tensor(ps, dtype=F64)
    y = torch.randint(2, (len(ps),), generator=_gen(s))
    e = float(G.expected_calibration_error(p, y))
    assert 0.0 <= e <= 1.0 + 1e-12
    # the weighted gap never exceeds the weighted confidence
    conf = torch.maximum(p, 1 - p)
    assert e <= float(conf.mean()) + 1e-12
    # a predictor that is always right with confidence 1 is perfectly calibrated
    assert float(G.expected_calibration_error(y.to(F64), y)) == 0.0


def test_ece_by_hand():
    p = torch.tensor([0.9, 0.9, 0.6, 0.2], dtype=F64)
    y = torch.tensor([1, 0, 1, 0])
    # bins: conf 0.9 (x2, one right) -> |0.5 - 0.9| * 2/4; conf 0.6 right -> |1 - 0.6| / 4; conf 0.8 right -> 0.2 / 4
    expect = 0.4 * 2 / 4 + 0.4 / 4 + 0.2 / 4
    assert math.isclose(float(G.expected_calibration_error(p, y)), expect, rel_tol=1e-12)
    with pytest.raises(ValueError, match="bins must"):
        G.expected_calibration_error(p, y, bins=0)


# ---------------------------------------------------------------------------------------------------------------
# Pretraining and fine-tuning
# ---------------------------------------------------------------------------------------------------------------


def test_pretrain_l1_sparsifies_and_is_deterministic():
    x = torch.randn((200, W[0]), generator=_gen(3))
    d = torch.randint(10, (200,), generator=_gen(4))
    args = (x, d, W, [0.1, 0.0], [5, 6], 150, 1e-2, 32)
    b1, h1 = G.pretrain(*args)
    b2, h2 = G.pretrain(*args)
    assert torch.equal(b1, b2) and torch.equal(h1.w, h2.w)
    af = G.active_fraction(b1, x, W)
    assert af[0] < af[1]
    with pytest.raises(ValueError, match="one entry per replica"):
        G.pretrain(x, d, W, [0.1], [5, 6], 10, 1e-2, 8)
    with pytest.raises(ValueError, match="l1 must"):
        G.pretrain(x, d, W, [-0.1, 0.0], [5, 6], 10, 1e-2, 8)


def test_finetune_sgd_step_is_plain_gradient_descent_and_adam_matches_torch():
    body, head, x, y, words = _toy(R=2)
    lr = 0.1
    ft = G.finetune(body, head, x, y, words, W, ["sgd", "adam"], [lr, 1e-2], 1)
    p = body.clone().requires_grad_()
    g, = torch.autograd.grad(G.binary_loss(p, head, x, y, words, W).sum(), p)
    torch.testing.assert_close(ft[0], body[0] - lr * g[0])
    # Adam, three steps, against torch.optim.Adam on replica 1
    ft3 = G.finetune(body, head, x, y, words, W, ["sgd", "adam"], [lr, 1e-2], 3)
    q = body[1:2].clone().requires_grad_()
    opt = torch.optim.Adam([q], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        G.binary_loss(q, head.take([1]), x[1:2], y[1:2], words[1:2], W).sum().backward()
        opt.step()
    torch.testing.assert_close(ft3[1], q.detach()[0])


def test_finetune_rejects_bad_arguments():
    body, head, x, y, words = _toy(R=2)
    with pytest.raises(ValueError, match="'sgd' or 'adam'"):
        G.finetune(body, head, x, y, words, W, ["sgd", "lion"], [0.1, 0.1], 1)
    with pytest.raises(ValueError, match="one entry per replica"):
        G.finetune(body, head, x, y, words, W, ["sgd"], [0.1], 1)
    with pytest.raises(ValueError, match="lr must"):
        G.finetune(body, head, x, y, words, W, ["sgd", "sgd"], [0.1, 0.0], 1)
    with pytest.raises(ValueError, match="steps must"):
        G.finetune(body, head, x, y, words, W, ["sgd", "sgd"], [0.1, 0.1], 0)


# ---------------------------------------------------------------------------------------------------------------
# Grafts
# ---------------------------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 200), st.floats(0.001, 1.0), st.integers(0, 10_000))
def test_top_fraction_mask_keeps_the_largest(P, frac, s):
    sc = torch.rand((2, P), generator=_gen(s), dtype=F64)
    m = G.top_fraction_mask(sc, frac)
    k = max(1, round(frac * P))
    assert (m.sum(-1) == k).all()
    for r in range(2):
        assert sc[r][m[r]].min() >= sc[r][~m[r]].max() if k < P else True


def test_graft_endpoints_and_overlap():
    pre = torch.randn((2, 7), generator=_gen(1), dtype=F64)
    delta = torch.randn((2, 7), generator=_gen(2), dtype=F64)
    torch.testing.assert_close(G.graft(pre, delta, torch.zeros(2, 7)), pre)
    torch.testing.assert_close(G.graft(pre, delta, torch.ones(2, 7)), pre + delta)
    a = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[0, 1, 1, 0]], dtype=torch.bool)
    assert float(G.overlap(a, b)) == 0.5 and float(G.overlap(a, a)) == 1.0
    with pytest.raises(ValueError, match="frac must"):
        G.top_fraction_mask(pre, 1.5)


def test_recovered_gain():
    assert G.recovered_gain(0.8, 0.6, 1.0) == pytest.approx(0.5)
    assert G.recovered_gain(0.6, 0.6, 1.0) == 0.0
    with pytest.raises(ValueError, match="did not change"):
        G.recovered_gain(0.7, 0.6, 0.6)


def test_integrated_scores_sum_to_the_loss_change():
    body, head, x, y, words = _toy(R=2)
    delta = 0.5 * torch.randn(body.shape, generator=_gen(9), dtype=F64)
    change = G.binary_loss(body + delta, head, x, y, words, W) - G.binary_loss(body, head, x, y, words, W)
    # the midpoint rule along the path; ReLU kinks make the error shrink like 1/points rather than 1/points^2
    sc = G.integrated_scores(body, delta, head, x, y, words, W, points=256)
    assert (-sc.sum(-1) - change).abs().max() <= 1e-2 * change.abs().max()
    with pytest.raises(ValueError, match="points must"):
        G.integrated_scores(body, delta, head, x, y, words, W, points=0)


def test_evaluate_grafts_matches_one_by_one():
    body, head, x, y, words = _toy(R=2)
    delta = 0.1 * torch.randn(body.shape, generator=_gen(5), dtype=F64)
    masks = torch.rand((2, 3, body.shape[1]), generator=_gen(6)) < 0.3
    out = G.evaluate_grafts(body, delta, masks, head, x, words, W, chunk=4)
    for r in range(2):
        for m in range(3):
            th = G.graft(body[r:r + 1], delta[r:r + 1], masks[r, m])
            ref = G.p_yes(th, head.take([r]), x[r:r + 1], words[r:r + 1], W)[0]
            torch.testing.assert_close(out[r, m], ref)


# ---------------------------------------------------------------------------------------------------------------
# The reference's mask optimization
# ---------------------------------------------------------------------------------------------------------------


def test_relaxed_mask_limits():
    base = torch.tensor([0, 1, 0, 1], dtype=torch.bool)
    S = torch.tensor([0.0, 0.0, 30.0, 30.0], dtype=F64)
    g = G.relaxed_mask(S, base, 10.0)
    torch.testing.assert_close(g.round(), torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=F64))
    assert abs(float(g[0]) - 1 / (1 + math.exp(10))) < 1e-15


def test_mask_logit_grad_matches_autograd():
    body, head, x, y, words = _toy(R=2)
    delta = 0.1 * torch.randn(body.shape, generator=_gen(7), dtype=F64)
    base = torch.rand(body.shape, generator=_gen(8)) < 0.2
    S = (torch.rand(body.shape, generator=_gen(9), dtype=F64) * 20).requires_grad_()
    loss = G.binary_loss(G.graft(body, delta, G.relaxed_mask(S, base)), head, x, y, words, W).sum()
    auto, = torch.autograd.grad(loss, S)
    th = G.graft(body, delta, G.relaxed_mask(S.detach(), base)).requires_grad_()
    g, = torch.autograd.grad(G.binary_loss(th, head, x, y, words, W).sum(), th)
    torch.testing.assert_close(G.mask_logit_grad(g, delta, S.detach(), base), auto, rtol=1e-10, atol=1e-14)


def test_mask_gradient_gradcheck():
    body, head, x, y, words = _toy(R=1, N=6)
    delta = 0.1 * torch.randn(body.shape, generator=_gen(11), dtype=F64)
    base = torch.rand(body.shape, generator=_gen(12)) < 0.2
    S0 = torch.rand(body.shape, generator=_gen(13), dtype=F64) * 20

    def f(S):
        return G.binary_loss(G.graft(body, delta, G.relaxed_mask(S, base)), head, x, y, words, W)

    assert torch.autograd.gradcheck(f, (S0.clone().requires_grad_(),))


def test_optimize_mask_deterministic_and_keeps_the_best():
    body, head, x, y, words = _toy(R=2)
    ft = G.finetune(body, head, x, y, words, W, ["sgd", "sgd"], [0.5, 0.5], 20)
    delta = ft - body
    base = G.top_fraction_mask(delta.abs(), 0.1)
    args = (body, delta, base, head, x, y, x, y, words, W, 1e5, 5)
    m1, h1 = G.optimize_mask(*args, _gen(0))
    m2, h2 = G.optimize_mask(*args, _gen(0))
    assert torch.equal(m1, m2) and torch.equal(h1["score"], h2["score"])
    best = h1["score"].max(-1).values
    th = G.graft(body, delta, m1)
    got = 2 * G.accuracy(G.p_yes(th, head, x, words, W), y)
    torch.testing.assert_close(got, best)
    with pytest.raises(ValueError, match="epochs must"):
        G.optimize_mask(*args[:-1], 0, _gen(0))
