"""The transformer variant of progressive distillation (dltheory.distillation.gpt_distill): tokens, schedule, losses,
checkpoint rule, teacher and student training side by side.
Chapter: chapters/distillation/progressive-distillation.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.distillation import gpt_distill as G
from dltheory.distillation.distill import ParityStream
from dltheory.distillation.parity import all_inputs, labels_from_parity, parity

N, SUPPORT = 4, (0, 1)


def _cube():
    x = all_inputs(N).float()
    return x, labels_from_parity(parity(x, SUPPORT))


def test_tokens_follow_the_reference_encoding():
    x = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    assert G.to_tokens(x).tolist() == [[0, 1, 1, 0]]
    with pytest.raises(ValueError, match="entries"):
        G.to_tokens(torch.tensor([[0.5, 1.0]]))


def test_parity_gpt_shapes_and_last_position():
    m = G.parity_gpt(N, n_heads=2, head_dim=4, replicas=3, seed=0)
    assert m.config.d_model == 8 and m.config.n_heads == 2 and m.config.out_dim == 2 and m.replicas == 3
    tok = G.to_tokens(_cube()[0])
    out = G.last_logits(m, tok)
    assert out.shape == (3, 2 ** N, 2)
    torch.testing.assert_close(out, m(tok)[:, :, -1, :])


@settings(max_examples=30, deadline=None)
@given(st.integers(10, 500), st.floats(0.0, 0.5), st.floats(1e-4, 1.0))
def test_lr_schedule_warms_up_then_decays_to_zero(total, ratio, lr):
    vals = np.array([G.lr_at(s, lr, total, ratio) for s in range(total + 1)])
    assert vals.max() <= lr * (1 + 1e-12) and vals.min() >= -1e-12
    w = total * ratio
    if w >= 1:
        assert np.all(np.diff(vals[: int(w)]) > 0)         # linear warm-up
    assert math.isclose(vals[-1], 0.0, abs_tol=1e-12)        # cosine reaches 0 at the end
    assert np.all(np.diff(vals[int(math.ceil(w)):]) <= 1e-12)


def test_soft_cross_entropy_matches_cross_entropy_and_kl():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 5), generator=g)
    ce = G.soft_cross_entropy(logits, torch.nn.functional.one_hot(y, 3).double())
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), y.reshape(-1), reduction="none").view(2, 5).mean(1)
    torch.testing.assert_close(ce, ref)
    q = torch.softmax(torch.randn(2, 5, 3, generator=g, dtype=torch.float64), -1)
    kl = (q * (q.log() - torch.log_softmax(logits, -1))).sum(-1).mean(-1)
    torch.testing.assert_close(G.soft_cross_entropy(logits, q), kl - (q * q.log()).sum(-1).mean(-1))
    with pytest.raises(ValueError, match="shape"):
        G.soft_cross_entropy(logits, q[:, :4])


def test_teacher_probs_temperature():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    torch.testing.assert_close(G.teacher_probs(logits, 0.0), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    torch.testing.assert_close(G.teacher_probs(logits, 2.0), torch.softmax(logits / 2, -1))
    with pytest.raises(ValueError, match="temperature"):
        G.teacher_probs(logits, -1.0)


def test_checkpoint_index_is_the_first_checkpoint_at_or_after_the_step():
    idx = G.checkpoint_index([10, 20, 30], 40)
    assert idx[0] == 0 and idx[10] == 0 and idx[11] == 1 and idx[20] == 1 and idx[21] == 2 and idx[39] == 2
    with pytest.raises(ValueError, match="increasing"):
        G.checkpoint_index([10, 10], 5)


def test_stream_seeds_are_independent_of_their_neighbours():
    a = G.take(ParityStream([3, 7], N, SUPPORT, 5), 2)
    b = G.take(ParityStream([7], N, SUPPORT, 5), 2)
    assert torch.equal(a[0][:, 1], b[0][:, 0]) and torch.equal(a[1][:, 1], b[1][:, 0])
    assert torch.equal(a[1], labels_from_parity(parity(a[0], SUPPORT)))


def _pipeline():
    x, y = _cube()
    t = G.parity_gpt(N, 2, 4, 2, seed=1)
    ev, acc, ck = G.train_teacher(t, ParityStream([10, 11], N, SUPPORT, 16), 3e-3, 30, x, y, eval_every=10,
                                  save_every=10)
    s = G.parity_gpt(N, 1, 4, 2, seed=2)
    r = G.train_students(s, t, ck, ParityStream([20, 21], N, SUPPORT, 16), 3e-3, 25, x, y, eval_every=5,
                         stop_at=None)
    probs = G.checkpoint_probs(t, ck, x)
    return ev, acc, ck, r, probs


def test_training_shapes_and_cpu_determinism():
    ev, acc, ck, r, probs = _pipeline()
    assert ev.tolist() == [10, 20, 30] and acc.shape == (2, 3) and ck.steps == [10, 20, 30]
    assert r.eval_steps.tolist() == [5, 10, 15, 20, 25] and r.acc["ce"].shape == (2, 5) and r.stopped_at == 25
    assert probs.shape == (3, 2, 2 ** N) and bool(((probs > 0) & (probs < 1)).all())
    ev2, acc2, ck2, r2, probs2 = _pipeline()
    np.testing.assert_array_equal(acc, acc2)
    np.testing.assert_array_equal(r.acc["progressive"], r2.acc["progressive"])
    assert torch.equal(probs, probs2)


def test_final_checkpoint_is_the_trained_teacher():
    x, y = _cube()
    t = G.parity_gpt(N, 2, 4, 2, seed=1)
    _, acc, ck = G.train_teacher(t, ParityStream([10, 11], N, SUPPORT, 16), 3e-3, 12, x, y, eval_every=12,
                                 save_every=5)
    assert ck.steps == [5, 10, 12]
    np.testing.assert_array_equal(G.accuracy(t, x, y), acc[:, -1])
    torch.testing.assert_close(G.checkpoint_probs(t, ck, x)[-1], torch.softmax(G.last_logits(t, G.to_tokens(x)), -1)
                               [..., 1].detach())


def test_bad_inputs_raise_with_a_fix():
    x, y = _cube()
    t = G.parity_gpt(N, 2, 4, 2, seed=1)
    with pytest.raises(ValueError, match="seeds"):
        G.train_teacher(t, ParityStream([1], N, SUPPORT, 4), 1e-3, 5, x, y, 5, 5)
    with pytest.raises(ValueError, match="warmup_ratio"):
        G.train_teacher(t, ParityStream([1, 2], N, SUPPORT, 4), 1e-3, 5, x, y, 5, 5, warmup_ratio=1.0)
    with pytest.raises(ValueError, match="lr"):
        G.train_teacher(t, ParityStream([1, 2], N, SUPPORT, 4), 0.0, 5, x, y, 5, 5)
    with pytest.raises(ValueError, match="checkpoints"):
        G.train_students(G.parity_gpt(N, 1, 4, 2, 0), t, G.GPTCheckpoints(), ParityStream([1, 2], N, SUPPORT, 4),
                         1e-3, 5, x, y, 5)
    with pytest.raises(ValueError, match="same number of seeds"):
        G.train_students(G.parity_gpt(N, 1, 4, 3, 0), t, G.GPTCheckpoints([1], [{}]),
                         ParityStream([1, 2], N, SUPPORT, 4), 1e-3, 5, x, y, 5)
    with pytest.raises(ValueError, match="n_heads"):
        G.parity_gpt(N, 0, 4, 1, 0)
    with pytest.raises(ValueError, match="support size"):
        ParityStream([1], 2, (0, 1, 2), 4)


def test_eval_points_exact_cube_or_antithetic_sample():
    x, y = G.eval_points(N, SUPPORT, 100, seed=0)
    assert x.shape == (2 ** N, N) and torch.equal(y, labels_from_parity(parity(x, SUPPORT)))
    xs, _ = G.eval_points(14, SUPPORT, 10, seed=0)
    assert xs.shape == (10, 14) and torch.equal(xs[5:], -xs[:5])


def test_schedule_steps_stretches_the_warm_up():
    assert G.lr_at(10, 1.0, 8_000_000, 0.06) < 1e-4                       # the reference's run ends in its warm-up
    x, y = _cube()
    runs = []
    for total in (None, 10_000):
        t = G.parity_gpt(N, 2, 4, 1, seed=1)
        runs.append(G.train_teacher(t, ParityStream([10], N, SUPPORT, 8), 1e-2, 5, x, y, 5, 5,
                                    schedule_steps=total)[2].weights[-1]["head.weight"])
    assert not torch.equal(runs[0], runs[1])


def test_chunked_evaluation_equals_one_pass():
    m = G.parity_gpt(N, 2, 4, 2, seed=3)
    tok = G.to_tokens(_cube()[0])
    torch.testing.assert_close(G._eval_logits(m, tok, chunk=5), G.last_logits(m, tok).detach())
