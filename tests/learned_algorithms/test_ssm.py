"""Attention to state-space models (dltheory.learned_algorithms.ssm): the recall task, the mixers and their
identities, the students built from the shared transformer's weights, and the distillation loops.
Chapter: chapters/learned-algorithms/attention-to-ssm.md."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.learned_algorithms import ssm as S
from dltheory.numerics.transformer import Transformer

F64 = torch.float64


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _setup(replicas=2, dtype=torch.float32, pairs=4, d=16, heads=2):
    task = S.make_recall_task(pairs, 12, 5, d, _g(1), dtype)
    cfg = S.teacher_config(task, heads, n_layers=1, replicas=replicas)
    return task, cfg, Transformer(cfg, _g(2), dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------------------------


def test_recall_batch_shapes_and_determinism():
    task = S.make_recall_task(5, 9, 4, 8, _g(0), F64)
    assert task.length == 6 and task.d_model == 8
    x, y = S.recall_batch(task, 64, _g(3))
    assert x.shape == (64, 6, 8) and y.shape == (64,) and x.dtype == F64
    x2, y2 = S.recall_batch(task, 64, _g(3))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert int(y.min()) >= 0 and int(y.max()) < 4


def test_recall_batch_answer_is_the_querys_value():
    task = S.make_recall_task(3, 6, 4, 8, _g(0), F64)
    E_k, E_v, e_q = task.codes
    x, y = S.recall_batch(task, 32, _g(5))
    for i in range(32):
        key = int(((x[i, -1] - e_q)[None] - E_k).norm(dim=-1).argmin())
        hits = [j for j in range(3) if ((x[i, j] - E_k[key])[None] - E_v).norm(dim=-1).min() < 1e-12]
        assert len(hits) == 1
        assert int(((x[i, hits[0]] - E_k[key])[None] - E_v).norm(dim=-1).argmin()) == int(y[i])


@pytest.mark.parametrize("kwargs, match", [
    (dict(pairs=0), "pairs must"), (dict(n_keys=1), "n_keys must"), (dict(n_values=1), "n_values must"),
    (dict(pairs=20), "at most n_keys"), (dict(d_model=0), "d_model must"),
])
def test_make_recall_task_rejects_bad_arguments(kwargs, match):
    args = dict(pairs=4, n_keys=10, n_values=5, d_model=8, generator=_g())
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        S.make_recall_task(**args)


def test_recall_batch_rejects_bad_arguments():
    task = S.make_recall_task(2, 4, 3, 4, _g())
    with pytest.raises(ValueError, match="n must"):
        S.recall_batch(task, 0, _g())
    with pytest.raises(ValueError, match="RecallTask"):
        S.recall_batch("task", 4, _g())


# ---------------------------------------------------------------------------------------------------------------
# Mixers and their identities
# ---------------------------------------------------------------------------------------------------------------


def test_segsum_matches_the_definition():
    log_a = torch.randn(2, 5, generator=_g(), dtype=F64)
    s = S.segsum(log_a)
    for i in range(5):
        for j in range(5):
            want = log_a[:, j + 1:i + 1].sum(-1) if j <= i else torch.full((2,), -math.inf, dtype=F64)
            torch.testing.assert_close(s[:, i, j], want)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.integers(1, 4), st.integers(0, 10_000), st.booleans())
def test_masked_form_equals_recurrence(T, N, P, seed, decay):
    g = _g(seed)
    C, B = torch.randn((2, T, N), generator=g, dtype=F64), torch.randn((2, T, N), generator=g, dtype=F64)
    X = torch.randn((2, T, P), generator=g, dtype=F64)
    log_a = torch.log(torch.rand((2, T), generator=g, dtype=F64) * 0.9 + 0.1) if decay else None
    torch.testing.assert_close(S.ssd_masked(C, B, X, log_a), S.ssd_recurrent(C, B, X, log_a), rtol=1e-12,
                               atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.integers(1, 4), st.integers(0, 10_000))
def test_linear_attention_is_the_ssm_with_a_ones_channel(T, N, P, seed):
    g = _g(seed)
    C, B = torch.rand((3, T, N), generator=g, dtype=F64) + 0.01, torch.rand((3, T, N), generator=g, dtype=F64) + 0.01
    X = torch.randn((3, T, P), generator=g, dtype=F64)
    la = S.linear_attention_weights(C, B) @ X
    ssm = S.normalize_by_ones_channel(S.ssd_recurrent(C, B, S.with_ones_channel(X)))
    torch.testing.assert_close(la, ssm, rtol=1e-12, atol=1e-12)


def test_linear_attention_weights_are_causal_distributions():
    phi = torch.rand((2, 6, 3), generator=_g(), dtype=F64) + 0.1
    a = S.linear_attention_weights(phi, phi.flip(-2))
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 6, dtype=F64))
    assert torch.all(a.triu(1) == 0) and torch.all(a >= 0)


def test_hedgehog_features_are_positive_and_normalized_halves():
    x = torch.randn((1, 2, 3, 4, 5), generator=_g(), dtype=F64)
    W = torch.randn((1, 3, 5, 5), generator=_g(1), dtype=F64)
    phi = S.hedgehog_features(x, W)
    assert phi.shape == (1, 2, 3, 4, 10) and torch.all(phi > 0)
    torch.testing.assert_close(phi.sum(-1), torch.full((1, 2, 3, 4), 2.0, dtype=F64))


def test_masked_form_gradcheck():
    g = _g(7)
    C = torch.randn((1, 4, 2), generator=g, dtype=F64, requires_grad=True)
    B = torch.randn((1, 4, 2), generator=g, dtype=F64, requires_grad=True)
    X = torch.randn((1, 4, 3), generator=g, dtype=F64, requires_grad=True)
    log_a = (-torch.rand((1, 4), generator=g, dtype=F64)).requires_grad_()
    assert torch.autograd.gradcheck(S.ssd_masked, (C, B, X, log_a))
    gm = torch.autograd.grad(S.ssd_masked(C, B, X, log_a).sum(), (C, log_a))
    gr = torch.autograd.grad(S.ssd_recurrent(C, B, X, log_a).sum(), (C, log_a))
    for u, w in zip(gm, gr):
        torch.testing.assert_close(u, w, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Students
# ---------------------------------------------------------------------------------------------------------------


def test_softmax_student_is_the_teacher():
    task, cfg, teacher = _setup(dtype=F64)
    x, _ = S.recall_batch(task, 8, _g(4))
    params = S.linattn_from_teacher(teacher, F64)
    torch.testing.assert_close(S.student_forward(params, x, "softmax", cfg), teacher(x).detach(), rtol=1e-12,
                               atol=1e-12)
    with torch.no_grad():
        _, (w_t,) = S.student_forward(params, x, "softmax", cfg, return_weights=True)
        torch.testing.assert_close(w_t, teacher.attention_weights(x)[0], rtol=1e-12, atol=1e-12)


def test_ssm_init_reproduces_linear_attention_exactly_in_float64():
    task, cfg, teacher = _setup(dtype=F64)
    la = S.linattn_from_teacher(teacher, F64)
    for n in la:                                                        # feature maps away from the identity
        if ".fmap_" in n:
            la[n] = la[n] + 0.3 * torch.randn(la[n].shape, generator=_g(9), dtype=F64)
    x, _ = S.recall_batch(task, 16, _g(4))
    ssm = S.ssm_from_linattn(la, cfg)
    diff = (S.student_forward(la, x, "linattn", cfg) - S.student_forward(ssm, x, "ssm", cfg)).abs().max()
    assert float(diff) < 1e-12
    _, (w_la,) = S.student_forward(la, x, "linattn", cfg, return_weights=True)
    _, (w_ssm,) = S.student_forward(ssm, x, "ssm", cfg, return_weights=True)
    torch.testing.assert_close(w_la, w_ssm, rtol=1e-12, atol=1e-12)
    # a decay below one breaks it
    A, dtb = S.mamba2_decay_init(2, cfg.n_heads, _g(1))
    decayed = S.ssm_from_linattn(la, cfg, A=A, dt_bias=dtb)
    assert float((S.student_forward(decayed, x, "ssm", cfg) - S.student_forward(la, x, "linattn", cfg)).abs().max()) \
        > 1e-6


def test_mamba2_decay_init_ranges():
    A, dtb = S.mamba2_decay_init(3, 4, _g())
    dt = torch.nn.functional.softplus(dtb)
    assert A.shape == dt.shape == (3, 4)
    assert torch.all((A >= 1) & (A <= 16)) and torch.all((dt >= 1e-3 - 1e-12) & (dt <= 0.1 + 1e-12))


def test_randomize_mixer_keeps_the_backbone():
    _, cfg, teacher = _setup()
    ssm = S.ssm_from_linattn(S.linattn_from_teacher(teacher), cfg)
    rnd = S.randomize_mixer(ssm, cfg, _g(5))
    rnd2 = S.randomize_mixer(ssm, cfg, _g(5))
    assert set(rnd) == set(ssm)
    for n in ssm:
        same = torch.equal(rnd[n], ssm[n])
        assert torch.equal(rnd[n], rnd2[n])
        if any(p in n for p in ("C_proj.weight", "B_proj.weight", "x_proj.weight", "out_proj.weight")):
            assert not same
        elif ".fmap_" not in n:
            assert same, n


def test_stack_params_and_bad_kinds():
    _, cfg, teacher = _setup()
    la = S.linattn_from_teacher(teacher)
    ssm = S.ssm_from_linattn(la, cfg)
    st_ = S.stack_params([ssm, ssm])
    assert st_["head.weight"].shape[0] == 4
    with pytest.raises(ValueError, match="same parameter names"):
        S.stack_params([la, ssm])
    x = torch.zeros(2, 5, 16)
    with pytest.raises(ValueError, match="unknown mixer kind"):
        S.student_forward(la, x, "mamba", cfg)


def test_kl_to_teacher():
    lp = torch.log_softmax(torch.randn((2, 5, 4), generator=_g(), dtype=F64), -1)
    lq = torch.log_softmax(torch.randn((2, 5, 4), generator=_g(1), dtype=F64), -1)
    assert torch.allclose(S.kl_to_teacher(lp, lp), torch.zeros(2, dtype=F64))
    assert torch.all(S.kl_to_teacher(lp, lq) > 0)


def test_attention_transfer_loss_is_at_least_the_teachers_entropy():
    task, cfg, teacher = _setup()
    x, _ = S.recall_batch(task, 8, _g(4))
    la = S.linattn_from_teacher(teacher)
    loss = S.attention_transfer_loss(la, teacher, x)
    a = teacher.attention_weights(x)[0].detach()
    ent = -(torch.where(a > 0, a * torch.log(a.clamp_min(1e-30)), 0.0)).sum(-1).mean((1, 2, 3))
    assert loss.shape == (2,) and torch.all(loss >= ent - 1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Training loops: determinism, independence of replicas, bad input
# ---------------------------------------------------------------------------------------------------------------


def test_pipeline_is_deterministic_and_stage1_lowers_its_loss():
    def once():
        task, cfg, teacher = _setup()
        S.train_teacher(teacher, task, 30, 32, 3e-3, _g(11))
        la, losses = S.train_stage1(S.linattn_from_teacher(teacher), teacher, task, 30, 16, 1e-2, _g(12))
        ev = S.recall_batch(task, 64, _g(13))
        ssm = S.stack_params([S.ssm_from_linattn(la, cfg)] * 2)
        _, cur = S.distill(ssm, "ssm", teacher, task, 6, 16, 1e-3, _g(14), ev, 3)
        return losses, cur

    (l1, c1), (l2, c2) = once(), once()
    assert l1 == l2 and torch.equal(c1.acc, c2.acc) and torch.equal(c1.kl, c2.kl)
    assert sum(l1[-5:]) < sum(l1[:5])
    assert c1.steps == [0, 3, 6] and c1.kl.shape == (3, 4)
    assert torch.all(torch.isfinite(c1.kl)) and torch.all(c1.kl >= 0)


def test_distill_replicas_are_independent():
    task, cfg, teacher = _setup(replicas=1)
    ssm = S.ssm_from_linattn(S.linattn_from_teacher(teacher), cfg)
    other = S.randomize_mixer(ssm, cfg, _g(3))
    ev = S.recall_batch(task, 32, _g(13))
    alone, _ = S.distill(ssm, "ssm", teacher, task, 4, 16, 1e-3, _g(14), ev, 2)
    both, _ = S.distill(S.stack_params([ssm, other]), "ssm", teacher, task, 4, 16, 1e-3, _g(14), ev, 2)
    for n in alone:
        torch.testing.assert_close(both[n][:1], alone[n], rtol=1e-5, atol=1e-6)


def test_training_rejects_bad_arguments():
    task, cfg, teacher = _setup()
    ssm = S.ssm_from_linattn(S.linattn_from_teacher(teacher), cfg)
    ev = S.recall_batch(task, 8, _g())
    with pytest.raises(ValueError, match="steps must"):
        S.train_teacher(teacher, task, 0, 8, 1e-3, _g())
    with pytest.raises(ValueError, match="lr must"):
        S.train_stage1(S.linattn_from_teacher(teacher), teacher, task, 2, 8, -1.0, _g())
    with pytest.raises(ValueError, match="multiple of the teacher replicas"):
        S.distill({n: v[:1] for n, v in ssm.items()}, "ssm", teacher, task, 1, 8, 1e-3, _g(), ev, 1)
    with pytest.raises(ValueError, match="eval_every must"):
        S.distill(ssm, "ssm", teacher, task, 1, 8, 1e-3, _g(), ev, 0)
