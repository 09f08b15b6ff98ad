"""Batched MLPs, (progressive) distillation loss and training on sparse parity (dltheory.distill)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dltheory.distill import (
    MLP,
    Checkpoints,
    ParityStream,
    checkpoint_accuracy,
    checkpoint_probs,
    distill_loss,
    init_mlp,
    loss_and_grads,
    mlp_logits,
    steps_to_accuracy,
    train,
)
from dltheory.parity import sample_parity


def test_init_rejects_bad_sizes():
    with pytest.raises(ValueError, match="width"):
        init_mlp([0], 5, -3)
    with pytest.raises(ValueError, match="n must"):
        init_mlp([0], 0, 4)
    with pytest.raises(ValueError, match="seeds"):
        init_mlp([], 5, 4)
    with pytest.raises(ValueError, match="seeds"):
        init_mlp([-1], 5, 4)


def test_seeds_are_independent_of_their_neighbours():
    a = init_mlp([3, 7], 6, 5)
    b = init_mlp([7], 6, 5)
    assert torch.equal(a.W1[1], b.W1[0]) and torch.equal(a.b2[1], b.b2[0])
    s1, s2 = ParityStream([3, 7], 6, [0, 1], 4), ParityStream([7], 6, [0, 1], 4)
    x1, y1 = s1.next()
    x2, y2 = s2.next()
    assert x1.shape == (2, 4, 6) and y1.shape == (2, 4)
    assert torch.equal(x1[1], x2[0]) and torch.equal(y1[1], y2[0])


def test_distill_loss_matches_a_hand_computation():
    s = torch.tensor([[[1.0, -1.0]]])           # one seed, one example, two classes
    t = torch.tensor([[[0.0, math.log(3.0)]]])  # teacher probabilities (1/4, 3/4) at tau = 1
    y = torch.tensor([[0]])
    ps = [1 / (1 + math.exp(-2)), math.exp(-2) / (1 + math.exp(-2))]
    q = [0.25, 0.75]
    ce = -math.log(ps[0])
    kl = sum(qi * math.log(qi / pi) for qi, pi in zip(q, ps))
    for alpha in (0.0, 0.3, 1.0):
        got = distill_loss(s, y, t, alpha=alpha, temperature=1.0).item()
        assert got == pytest.approx(alpha * ce + (1 - alpha) * kl, rel=1e-6)
    assert distill_loss(s, y, None).item() == pytest.approx(ce, rel=1e-6)
    # temperature 0: the teacher's argmax (class 1) as a one-hot target
    assert distill_loss(s, y, t, temperature=0.0).item() == pytest.approx(-math.log(ps[1]), rel=1e-6)
    with pytest.raises(ValueError):
        distill_loss(s, y, t, alpha=1.5)
    with pytest.raises(ValueError):
        distill_loss(s, y, t, temperature=-1.0)


def test_hand_gradients_match_autograd():
    torch.manual_seed(0)
    p = init_mlp([0, 1], 5, 7, dtype=torch.float64)
    x = torch.randint(0, 2, (2, 9, 5)).double() * 2 - 1
    y = torch.randint(0, 2, (2, 9))
    t = torch.randn(2, 9, 2, dtype=torch.float64)
    for teacher, alpha, tau in ((None, 0.0, 1.0), (t, 0.0, 1.0), (t, 0.4, 2.0), (t, 0.2, 0.0)):
        loss, grads = loss_and_grads(p, x, y, teacher, alpha, tau)
        leaves = [v.clone().requires_grad_(True) for v in p.tensors()]
        ref = distill_loss(mlp_logits(MLP(*leaves), x), y, teacher, alpha, tau)
        ref.backward()
        assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
        for g, leaf in zip(grads, leaves):
            assert torch.allclose(g, leaf.grad, atol=1e-12)


def test_gradcheck_of_the_distillation_loss():
    s = torch.randn(1, 4, 2, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 4, 2, dtype=torch.float64)
    y = torch.tensor([[0, 1, 1, 0]])
    assert torch.autograd.gradcheck(lambda z: distill_loss(z, y, t, alpha=0.3, temperature=1.5), (s,))


def test_progressive_picks_the_first_checkpoint_at_or_after_the_step():
    ck = Checkpoints(steps=[10, 20, 30], params=[None, None, None])
    assert [ck.index_for_step(s) for s in (0, 1, 10, 11, 20, 21, 30, 31, 999)] == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert ck.final().steps == [30]
    assert ck.subsample(2).steps == [20, 30]
    with pytest.raises(ValueError):
        Checkpoints().index_for_step(3)


def test_steps_to_accuracy_censors_unreached_seeds():
    acc = np.array([[0.5, 0.99, 1.0], [0.5, 0.6, 0.7]])
    steps, reached = steps_to_accuracy(np.array([0, 10, 20]), acc, 0.99, budget=50)
    assert steps.tolist() == [10, 50] and reached.tolist() == [True, False]
    with pytest.raises(ValueError):
        steps_to_accuracy(np.array([0, 10]), acc, 0.99, budget=50)


def test_train_checkpoints_and_distillation_run():
    n, S, seeds = 6, [0, 1], [0, 1]
    xt, yt = sample_parity((256,), n, S, torch.Generator().manual_seed(5))
    _, hist, ck = train(init_mlp(seeds, n, 16), ParityStream(seeds, n, S, 16), 0.1, 40, xt, yt, eval_every=10,
                        save_every=10)
    assert ck.steps == [10, 20, 30, 40] and hist.eval_steps == [0, 10, 20, 30, 40]
    assert checkpoint_probs(ck, xt).shape == (4, 2, 256)
    assert checkpoint_accuracy(ck, xt, S).shape == (4, 2)
    _, hp, _ = train(init_mlp(seeds, n, 4), ParityStream(seeds, n, S, 16), 0.1, 25, xt, yt, eval_every=5,
                     method="progressive", teacher=ck)
    assert hp.teacher_steps == [10, 10, 10, 20, 20, 30]
    _, ho, _ = train(init_mlp(seeds, n, 4), ParityStream(seeds, n, S, 16), 0.1, 10, xt, yt, eval_every=5,
                     method="oneshot", teacher=ck)
    assert set(ho.teacher_steps) == {40}
    with pytest.raises(ValueError, match="unknown method"):
        train(init_mlp(seeds, n, 4), ParityStream(seeds, n, S, 16), 0.1, 5, xt, yt, 5, method="soft")
    with pytest.raises(ValueError, match="needs teacher"):
        train(init_mlp(seeds, n, 4), ParityStream(seeds, n, S, 16), 0.1, 5, xt, yt, 5, method="progressive")
    with pytest.raises(ValueError, match="lr"):
        train(init_mlp(seeds, n, 4), ParityStream(seeds, n, S, 16), -0.1, 5, xt, yt, 5)


def test_training_is_deterministic_on_cpu():
    n, S = 6, [0, 1]
    xt, yt = sample_parity((64,), n, S, torch.Generator().manual_seed(5))
    a = train(init_mlp([4], n, 8), ParityStream([4], n, S, 8), 0.1, 20, xt, yt, 10)[0]
    b = train(init_mlp([4], n, 8), ParityStream([4], n, S, 8), 0.1, 20, xt, yt, 10)[0]
    assert all(torch.equal(u, v) for u, v in zip(a.tensors(), b.tensors()))
