"""GRACE and the teacher-pool toy (dltheory.distillation.grace). Chapter: chapters/distillation/teacher-selection.md."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.distillation import grace as GR
from dltheory.distillation.distill import init_mlp

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _reference_grace(gradients, n_gen, test_fraction=0.1, n_splits=10, nu=1e-3, eps=1e-12):
    """A line-by-line numpy transcription of ``grace`` in the reference ``GRACE/GRACE_computation.py``."""
    n_prompts = gradients.shape[0] // n_gen
    n_test = max(1, int(n_prompts * test_fraction))
    grouped = gradients.reshape(n_prompts, n_gen, -1)
    scores = []
    for seed in range(n_splits):
        sh = grouped[np.random.default_rng(seed).permutation(n_prompts)]
        tr = sh[:n_prompts - n_test].reshape(-1, gradients.shape[1])
        te = sh[n_prompts - n_test:].reshape(-1, gradients.shape[1])
        tr = tr / np.clip(np.linalg.norm(tr, axis=-1, keepdims=True), eps, None)
        w, v = np.linalg.eigh(tr.T @ tr / len(tr))
        w = np.clip(w, eps, None)
        w = np.clip((1 - nu) * w + nu * w.sum() / len(w), eps, None)
        scores.append(np.trace(((v * (1 / w)) @ v.T) @ (te.T @ te / len(te))))
    return float(np.mean(scores))


def test_grace_matches_the_reference_transcription():
    g = torch.randn(3, 40, 4, 6, generator=_gen(0), dtype=F64)
    ours = GR.grace_score(g)
    for t in range(3):
        ref = _reference_grace(g[t].reshape(-1, 6).numpy(), 4)
        assert math.isclose(float(ours[t]), ref, rel_tol=1e-10)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 7), st.floats(0.0, 1.0), st.integers(0, 10_000))
def test_smoothing_is_mixing_with_the_scaled_identity(D, nu, seed):
    A = torch.randn(D, D + 3, generator=_gen(seed), dtype=F64)
    K = A @ A.T / (D + 3) + 1e-3 * torch.eye(D, dtype=F64)
    target = (1 - nu) * K + nu * torch.trace(K) / D * torch.eye(D, dtype=F64)
    torch.testing.assert_close(GR.smoothed_inverse(K, nu), torch.linalg.inv(target), rtol=1e-8, atol=1e-8)


def test_trace_form_is_mean_mahalanobis_norm():
    G = torch.randn(2, 9, 5, generator=_gen(1), dtype=F64)
    A = torch.randn(2, 5, 5, generator=_gen(2), dtype=F64)
    Kinv = A @ A.transpose(1, 2)
    tr = torch.einsum("tij,tji->t", Kinv, GR.second_moment(G))
    torch.testing.assert_close(GR.mahalanobis_mean(Kinv, G), tr)


def test_splits_are_by_prompt():
    g = torch.randn(30, 4, 5, generator=_gen(3), dtype=F64)
    shuffled = g[:, torch.tensor([2, 0, 3, 1])]            # reorder the responses within each prompt
    torch.testing.assert_close(GR.grace_score(shuffled), GR.grace_score(g))
    assert not torch.allclose(GR.grace_score(g, by_prompt=False), GR.grace_score(g))


def test_score_is_invariant_to_the_scale_of_held_in_gradients_only():
    g = torch.randn(30, 2, 5, generator=_gen(4), dtype=F64)
    torch.testing.assert_close(GR.grace_score(3.0 * g), 9.0 * GR.grace_score(g))   # held-out rows are not normalized


def test_binary_labels_at_a_symmetric_init_are_invisible():
    """Two classes and equal output rows: p = 1/2, g(x, 1) = -g(x, 0), so g g^T and the score ignore the labels."""
    p = init_mlp([0], 6, 8, 2, dtype=F64)
    p.W2[:, 1] = p.W2[:, 0]
    p.b2[:, 1] = p.b2[:, 0]
    x = GR.sample_bits(40, 6, _gen(5))
    cg = GR.class_gradients(p, x)
    torch.testing.assert_close(cg[:, 1], -cg[:, 0])
    labels = torch.randint(0, 2, (5, 40, 3), generator=_gen(6))
    s = GR.grace_score(GR.gather_responses(cg, labels))
    assert float((s.max() - s.min()) / s.mean()) < 1e-10
    p4 = init_mlp([0], 6, 8, 4, dtype=F64)
    s4 = GR.grace_score(GR.gather_responses(GR.class_gradients(p4, x), torch.randint(0, 4, (5, 40, 3),
                                                                                       generator=_gen(6))))
    assert float((s4.max() - s4.min()) / s4.mean()) > 1e-3


def test_class_gradients_match_autograd():
    p = init_mlp([1], 5, 7, 3, dtype=F64)
    x = GR.sample_bits(4, 5, _gen(7))
    cg = GR.class_gradients(p, x)
    for i in range(4):
        for c in range(3):
            ts = [t[0].clone().requires_grad_() for t in p.tensors()]
            h = (x[i] @ ts[0].T + ts[1]).relu()
            loss = torch.nn.functional.cross_entropy((h @ ts[2].T + ts[3]).unsqueeze(0), torch.tensor([c]))
            flat = torch.cat([d.reshape(-1) for d in torch.autograd.grad(loss, ts)])
            torch.testing.assert_close(cg[i, c], flat)


def test_projection_scale_and_entries():
    R = GR.rademacher_projection(50, 7, _gen(8))
    assert set(R.unique().tolist()) == {-1.0, 1.0}
    g = torch.randn(3, 50, generator=_gen(9), dtype=F64)
    torch.testing.assert_close(GR.project_gradients(g, R), g @ R / math.sqrt(50))


def test_gaussian_kl_closed_form_and_monte_carlo():
    A = torch.randn(3, 3, generator=_gen(10), dtype=F64)
    S = A @ A.T + 0.5 * torch.eye(3, dtype=F64)
    d = torch.tensor([0.3, -0.2, 0.5], dtype=F64)
    exact = torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(d, S),
                                              torch.distributions.MultivariateNormal(torch.zeros(3, dtype=F64), S))
    torch.testing.assert_close(GR.gaussian_shift_kl(d, S), exact)
    mc = GR.gaussian_shift_kl_mc(d, S, 200_000, _gen(11))
    se = math.sqrt(2 * float(exact) / 200_000)               # the log-ratio has variance 2 KL
    assert abs(float(mc - exact)) < 5 * se


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=3, max_size=20), st.integers(0, 1000))
def test_spearman_matches_scipy_with_ties(xs, seed):
    ys = np.random.default_rng(seed).integers(0, 4, len(xs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                      # scipy warns (and returns nan) for constant input
        ref = scipy.stats.spearmanr(xs, ys).statistic
    ours = GR.spearman(xs, ys)
    if np.isnan(ref):
        assert ours == 0.0
    else:
        assert math.isclose(ours, ref, abs_tol=1e-12)
    np.testing.assert_allclose(GR.ranks(xs), scipy.stats.rankdata(xs))


def test_regret():
    assert GR.regret([0.1, 0.9, 0.3], [0.5, 0.6, 0.8]) == pytest.approx(0.2)
    assert GR.regret([1, 2, 3], [0.1, 0.2, 0.3]) == 0.0


def test_teachers_and_sampling():
    task = GR.make_task(8, 4, 3, 2.0, 3.0, _gen(12))
    x = GR.sample_bits(64, 8, _gen(13))
    lt = GR.teacher_logits(task, x, [1.0, 0.0], [0.0, 0.0])
    assert torch.equal(lt[0].argmax(-1), GR.true_labels(task, x))
    y = GR.sample_labels(lt, [0.0, 1.0], 5, _gen(14))
    assert y.shape == (2, 64, 5)
    assert torch.equal(y[0], lt[0].argmax(-1, keepdim=True).expand(64, 5))       # tau = 0 is greedy
    # tau > 0 follows softmax(logits / tau): one prompt, many responses
    one = torch.tensor([[[0.0, 1.0, -1.0, 0.5]]], dtype=F64)
    draws = GR.sample_labels(one, [2.0], 40_000, _gen(15))[0, 0]
    freq = torch.bincount(draws, minlength=4).double() / 40_000
    torch.testing.assert_close(freq, torch.softmax(one[0, 0] / 2.0, -1), atol=0.01, rtol=0)


def test_distillation_is_batched_and_deterministic():
    task = GR.make_task(8, 3, 3, 2.0, 3.0, _gen(16))
    st0 = GR.pretrain_student(task, 8, 10, 16, 0.1, 0)
    x = GR.sample_bits(32, 8, _gen(17))
    lab = GR.sample_labels(GR.teacher_logits(task, x, [1.0, 1.0, 0.0], [0.0, 0.0, 0.5]), [0.0, 0.0, 1.0], 2,
                           _gen(18))
    a = GR.distill_from_teachers(st0, x, lab, 2, 2, 8, 0.1, 3)
    b = GR.distill_from_teachers(st0, x, lab, 2, 2, 8, 0.1, 3)
    assert all(torch.equal(u, v) for u, v in zip(a.tensors(), b.tensors()))
    assert torch.equal(a.W1[0], a.W1[2]) and not torch.equal(a.W1[0], a.W1[1])   # same labels, same replica
    c = GR.distill_from_teachers(st0, x, lab[2:], 2, 2, 8, 0.1, 3)               # a teacher alone = beside others
    assert torch.equal(c.W1[0], a.W1[4])
    acc = GR.student_accuracy(a, x, GR.true_labels(task, x), 2)
    assert acc.shape == (3,)


@pytest.mark.parametrize("call, match", [
    (lambda: GR.smooth_eigenvalues(torch.ones(3), nu=1.5), "nu must"),
    (lambda: GR.make_task(4, 3, 5, 1.0, 1.0, _gen(0)), "k must"),
    (lambda: GR.make_task(4, 1, 2, 1.0, 1.0, _gen(0)), "classes must"),
    (lambda: GR.grace_score(torch.ones(1, 2, 3)), "not enough prompts"),
    (lambda: GR.grace_score(torch.ones(4, 3)), "grads must"),
    (lambda: GR.prompt_splits(10, 2, 1.5), "test_fraction"),
    (lambda: GR.sample_labels(torch.zeros(2, 3, 4), [1.0], 2, _gen(0)), "temperature"),
    (lambda: GR.teacher_logits(GR.make_task(4, 3, 2, 1.0, 1.0, _gen(0)), torch.ones(2, 4), [1.5], [0.0]), "know"),
    (lambda: GR.rademacher_projection(0, 3, _gen(0)), "grad_dim must"),
    (lambda: GR.spearman([1.0], [2.0]), "same length"),
])
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
