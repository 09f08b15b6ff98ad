"""Batched MLPs, (progressive) distillation loss and training on sparse parity (dltheory.distillation.distill)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dltheory.distillation.distill import (
    MLP,
    Checkpoints,
    ParityStream,
    Plan,
    _one_hot,
    _softmax,
    checkpoint_accuracy,
    checkpoint_probs,
    distill_loss,
    init_mlp,
    loss_and_grads,
    mlp_logits,
    steps_to_accuracy,
    teacher_target,
    train,
    train_students,
)
from dltheory.distillation.parity import sample_parity


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


def test_mlp_logits_in_chunks_and_on_shared_inputs():
    p = init_mlp([1, 2, 3], 6, 5)
    x = sample_parity((50,), 6, [0, 1], torch.Generator().manual_seed(0))[0]
    whole = mlp_logits(p, x, chunk=1024)
    torch.testing.assert_close(mlp_logits(p, x, chunk=7), whole)
    torch.testing.assert_close(mlp_logits(p, x.expand(3, *x.shape)), whole)
    manual = torch.relu(x @ p.W1[2].T + p.b1[2]) @ p.W2[2].T + p.b2[2]
    torch.testing.assert_close(whole[2], manual)
    with pytest.raises(ValueError, match="expected"):
        mlp_logits(p, x[:, :5])


def test_two_label_softmax_and_one_hot_match_torch():
    z = torch.randn(4, 9, 2, generator=torch.Generator().manual_seed(1)) * 5
    torch.testing.assert_close(_softmax(z), torch.softmax(z, -1))
    y = torch.tensor([[0, 1, 1], [1, 0, 0]])
    assert torch.equal(_one_hot(y, 2, torch.float32), torch.nn.functional.one_hot(y, 2).float())
    q, logq = teacher_target(torch.tensor([[[0.3, -0.2], [-1.0, 2.0]]]), 0.0, torch.float32)
    assert q.tolist() == [[[1.0, 0.0], [0.0, 1.0]]] and logq is None


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


def test_subsample_keeps_the_final_checkpoint():
    ck = Checkpoints(steps=[10, 20, 30], params=[None, None, None])
    assert ck.subsample(2).steps == [20, 30] and ck.subsample(5).steps == [30]


def test_steps_to_accuracy_censors_unreached_seeds():
    acc = np.array([[0.5, 0.99, 1.0], [0.5, 0.6, 0.7]])
    steps, reached = steps_to_accuracy(np.array([0, 10, 20]), acc, 0.99, budget=50)
    assert steps.tolist() == [10, 50] and reached.tolist() == [True, False]
    with pytest.raises(ValueError):
        steps_to_accuracy(np.array([0, 10]), acc, 0.99, budget=50)


def _teacher_run(n=6, S=(0, 1), seeds=(0, 1)):
    xt, yt = sample_parity((256,), n, list(S), torch.Generator().manual_seed(5))
    _, hist, ck = train(init_mlp(list(seeds), n, 16), ParityStream(list(seeds), n, list(S), 16), 0.1, 40, xt, yt,
                        eval_every=10, save_every=10)
    return n, list(S), list(seeds), xt, yt, hist, ck


def test_train_saves_checkpoints_and_rejects_bad_input():
    n, S, seeds, xt, yt, hist, ck = _teacher_run()
    assert ck.steps == [10, 20, 30, 40] and hist.eval_steps == [0, 10, 20, 30, 40]
    assert checkpoint_probs(ck, xt).shape == (4, 2, 256)
    assert checkpoint_accuracy(ck, xt, S).shape == (4, 2)
    with pytest.raises(ValueError, match="lr"):
        train(init_mlp(seeds, n, 4), ParityStream(seeds, n, S, 16), -0.1, 5, xt, yt, 5)
    with pytest.raises(ValueError, match="save_every"):
        train(init_mlp(seeds, n, 4), ParityStream(seeds, n, S, 16), 0.1, 5, xt, yt, 5, save_every=0)


def test_plans_follow_the_progressive_rule():
    """At student step t the first listed checkpoint at or after t (reference ``teacher_ckpt_step``)."""
    n, S, seeds, xt, yt, _, ck = _teacher_run()
    plans = [Plan.ce(), Plan.from_teacher("progressive", ck.steps, 2), Plan.from_teacher("oneshot", [40], 2),
             Plan.from_teacher("two_shot", [[20, 40], [30, 40]], 2, temperature=1.0)]
    h = train_students(init_mlp(seeds, n, 4), plans, ck, ParityStream(seeds, n, S, 16), 0.1, 25, xt, yt, 5)
    assert h["progressive"].eval_steps == [0, 5, 10, 15, 20, 25]
    assert [int(v[0]) for v in h["progressive"].teacher_steps] == [10, 10, 10, 20, 20, 30]
    assert {int(v[1]) for v in h["oneshot"].teacher_steps} == {40}
    assert [v.tolist() for v in h["two_shot"].teacher_steps] == [[20, 30]] * 5 + [[40, 30]]
    assert all((v == -1).all() for v in h["ce"].teacher_steps)
    assert h["ce"].params.num_seeds == 2


def test_students_side_by_side_match_students_alone():
    """A plan's students do not depend on the plans trained beside them, and the CE plan is plain training."""
    n, S, seeds, xt, yt, _, ck = _teacher_run()
    prog = Plan.from_teacher("p", ck.steps, 2, temperature=1.0)
    alone = train_students(init_mlp(seeds, n, 4), [prog], ck, ParityStream(seeds, n, S, 16), 0.1, 30, xt, yt, 10)
    both = train_students(init_mlp(seeds, n, 4), [Plan.ce(), prog], ck, ParityStream(seeds, n, S, 16), 0.1, 30,
                          xt, yt, 10)
    for u, v in zip(alone["p"].params.tensors(), both["p"].params.tensors()):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)
    ce_params = train(init_mlp(seeds, n, 4), ParityStream(seeds, n, S, 16), 0.1, 30, xt, yt, 10)[0]
    for u, v in zip(ce_params.tensors(), both["ce"].params.tensors()):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)


def test_one_student_step_is_the_distillation_gradient_step():
    n, S, seeds, xt, yt, _, ck = _teacher_run()
    s0 = init_mlp(seeds, n, 4)
    plan = Plan.from_teacher("p", [20], 2, temperature=1.5, alpha=0.3)
    got = train_students(s0, [plan], ck, ParityStream(seeds, n, S, 16), 0.1, 1, xt, yt, 1)["p"].params
    x, y = ParityStream(seeds, n, S, 16).next()
    _, grads = loss_and_grads(s0, x, y, mlp_logits(ck.params[1], x), alpha=0.3, temperature=1.5)
    for t, g, u in zip(s0.tensors(), grads, got.tensors()):
        torch.testing.assert_close(t - 0.1 * g, u)


def test_median_stop_rule_and_bad_plans():
    n, S, seeds, xt, yt, _, ck = _teacher_run()
    stream = ParityStream(seeds, n, S, 16)
    h = train_students(init_mlp(seeds, n, 4), [Plan.ce()], ck, stream, 0.1, 50, xt, yt, 5, stop_at=0.0)
    assert h["ce"].eval_steps == [0, 5]
    with pytest.raises(ValueError, match="not saved"):
        train_students(init_mlp(seeds, n, 4), [Plan.from_teacher("p", [15], 2)], ck, stream, 0.1, 5, xt, yt, 5)
    with pytest.raises(ValueError, match="distinct names"):
        train_students(init_mlp(seeds, n, 4), [Plan.ce(), Plan.ce()], ck, stream, 0.1, 5, xt, yt, 5)
    with pytest.raises(ValueError, match="stop_rule"):
        train_students(init_mlp(seeds, n, 4), [Plan.ce()], ck, stream, 0.1, 5, xt, yt, 5, stop_rule="mean")
    with pytest.raises(ValueError, match="for 3 seeds"):
        Plan.from_teacher("p", [[10], [20], [30]], 2)
    with pytest.raises(ValueError, match="no teacher checkpoint"):
        Plan.from_teacher("p", [[10], []], 2)
    with pytest.raises(ValueError, match="temperature"):
        Plan.from_teacher("p", [10], 2, temperature=-1.0)


def test_training_is_deterministic_on_cpu():
    n, S = 6, [0, 1]
    xt, yt = sample_parity((64,), n, S, torch.Generator().manual_seed(5))
    a = train(init_mlp([4], n, 8), ParityStream([4], n, S, 8), 0.1, 20, xt, yt, 10)[0]
    b = train(init_mlp([4], n, 8), ParityStream([4], n, S, 8), 0.1, 20, xt, yt, 10)[0]
    assert all(torch.equal(u, v) for u, v in zip(a.tensors(), b.tensors()))
