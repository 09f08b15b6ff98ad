"""The skill-targeted training toy (dltheory.distillation.skills): the tabular analysis, the world, the student,
the missing-skill profile, STAT-Sel / STAT-Syn data and batched training.
Chapter: chapters/distillation/skill-targeted-training.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.distillation import skills as Sk

F64 = torch.float64


def _small_world(seeds=(0, 1), **kw):
    args = dict(skills=6, vocab=5, missing=2, code_dim=8, pool=64, n_val=48, n_test=48)
    args.update(kw)
    return Sk.make_world(list(seeds), **args)


# ---------------------------------------------------------------------------------------------------------------
# Tabular analysis
# ---------------------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.floats(-5, 15), st.integers(2, 40))
def test_grad_sq_norm_matches_autograd(m, V):
    z = torch.zeros(V, dtype=F64)
    z[0] = m
    z.requires_grad_()
    g, = torch.autograd.grad(F.cross_entropy(z[None], torch.zeros(1, dtype=torch.long)), z)
    assert math.isclose(float(g.pow(2).sum()), float(Sk.grad_sq_norm_at_margin(m, V)), rel_tol=1e-9, abs_tol=1e-300)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.05, 1.0), st.floats(0.05, 1.0), st.integers(2, 30), st.floats(0.5, 6.0))
def test_margin_time_is_inverse_in_share(s1, s2, V, m1):
    t1, t2 = Sk.margin_time(0.0, m1, s1, 1.0, V), Sk.margin_time(0.0, m1, s2, 1.0, V)
    assert math.isclose(t1 / t2, s2 / s1, rel_tol=1e-12)


@pytest.mark.parametrize("share", [0.1, 0.4])
def test_recursion_close_to_closed_form(share):
    m1 = math.log(0.9 * 15 / 0.1)
    n = Sk.margin_recursion(0.0, m1, share, 0.5, 16)
    assert abs(n / Sk.margin_time(0.0, m1, share, 0.5, 16) - 1) < 0.01


def test_table_gd_follows_recursion():
    g = torch.Generator().manual_seed(0)
    perm = torch.stack([torch.randperm(7, generator=g) for _ in range(3)])
    table = torch.zeros(3, 7, 7, dtype=F64)
    shares = torch.tensor([0.1, 0.3, 0.6], dtype=F64)
    m = torch.zeros(3, dtype=F64)
    for _ in range(50):
        table = Sk.tabular_gd_margin(table, perm, shares, 2.0)
        m = m + 2.0 * shares / (m.exp() + 6)
    corr = table.gather(-1, perm.unsqueeze(-1)).squeeze(-1)
    others = (table.sum(-1) - corr) / 6
    torch.testing.assert_close(corr - others, m.unsqueeze(-1).expand(3, 7))


def test_tabular_gd_is_the_gradient():
    g = torch.Generator().manual_seed(1)
    perm = torch.stack([torch.randperm(4, generator=g) for _ in range(2)])
    table = torch.randn(2, 4, 4, generator=g, dtype=F64).requires_grad_()
    shares = torch.tensor([0.3, 0.7], dtype=F64)
    loss = (shares[:, None] * F.cross_entropy(table.transpose(1, 2), perm, reduction="none")).mean(-1).sum()
    grad, = torch.autograd.grad(loss, table)
    torch.testing.assert_close(Sk.tabular_gd_margin(table.detach(), perm, shares, 1.0), table.detach() - grad)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.01, 50))
def test_adam_snr_factor(lam):
    assert math.isclose(float(Sk.adam_snr_factor(lam)), lam / math.sqrt(lam + lam**2), rel_tol=1e-12)


def test_tabular_bad_inputs():
    with pytest.raises(ValueError, match="share must"):
        Sk.margin_time(0, 1, 0.0, 1.0, 5)
    with pytest.raises(ValueError, match="vocab must"):
        Sk.margin_recursion(0, 1, 0.5, 1.0, 1)
    with pytest.raises(ValueError, match="lam must"):
        Sk.adam_snr_factor(-1.0)


# ---------------------------------------------------------------------------------------------------------------
# World and student
# ---------------------------------------------------------------------------------------------------------------


def test_world_shapes_and_chain():
    w = _small_world()
    assert w.perms.shape == (2, 6, 5) and w.codes.shape == (2, 6, 8) and w.pool.shape == (2, 64, 3)
    assert (w.missing.sum(-1) == 2).all() and torch.allclose(w.freq[w.missing], torch.zeros(4))
    xs = Sk.chain(w.perms, w.pool, w.pool_x0)
    s, n = 1, 7
    x = int(w.pool_x0[s, n])
    for i in range(3):
        x = int(w.perms[s, w.pool[s, n, i], x])
        assert int(xs[s, n, i]) == x


def test_world_seeds_do_not_depend_on_neighbours():
    a, b = _small_world((3, 5)), _small_world((5,))
    assert torch.equal(a.perms[1], b.perms[0]) and torch.equal(a.pool[1], b.pool[0])
    sa, sb = Sk.pretrain(a, 16, 5, 8, 0.01), Sk.pretrain(b, 16, 5, 8, 0.01)
    torch.testing.assert_close(sa.W1[1], sb.W1[0])


def test_token_shares():
    pool = torch.tensor([[[0, 0, 1], [2, 2, 2]]])
    sh = Sk.token_shares(pool, None, 3)
    torch.testing.assert_close(sh, torch.tensor([[2 / 6, 1 / 6, 3 / 6]], dtype=F64))
    sh = Sk.token_shares(pool, torch.tensor([[1.0, 0.0]]), 3)
    torch.testing.assert_close(sh, torch.tensor([[2 / 3, 1 / 3, 0.0]], dtype=F64))


@pytest.mark.parametrize("kw, match", [
    (dict(skills=1), "skills must"), (dict(vocab=1), "vocab must"), (dict(missing=6), "missing must"),
    (dict(missing=0), "missing must"), (dict(pool=0), "pool must"), (dict(zipf=-1.0), "zipf must"),
])
def test_make_world_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        _small_world(**kw)


def test_make_world_rejects_bad_seeds():
    with pytest.raises(ValueError, match="seeds"):
        _small_world(seeds=())


def test_pretraining_learns_known_skills_only():
    w = _small_world((0,), skills=6, vocab=6, missing=2)
    s = Sk.pretrain(w, 64, 300, 32, 0.01)
    acc = Sk.skill_accuracy(s, w)[0]
    assert float(acc[~w.missing[0]].min()) == 1.0
    assert float(acc[w.missing[0]].max()) < 1.0


def test_zipf_world_marks_unlearned_skills():
    w = _small_world((0,), skills=8, vocab=6, missing=0, zipf=2.0)
    assert not w.missing.any() and float(w.freq.sum()) == pytest.approx(1.0)
    s = Sk.pretrain(w, 32, 60, 16, 0.01)
    w2 = Sk.mark_missing(w, s, 0.5)
    torch.testing.assert_close(w2.missing, Sk.skill_accuracy(s, w) < 0.5)


def test_step_errors_judge_each_step_on_its_own_input():
    w = _small_world((0,))
    sk, x0 = w.val[:, :4], w.val_x0[:, :4]
    preds = Sk.chain(w.perms, sk, x0).clone()
    assert not Sk.step_errors(w, sk, x0, preds).any()
    preds[0, 0, 0] = (preds[0, 0, 0] + 1) % w.vocab               # a wrong first step; later steps now wrong too
    err = Sk.step_errors(w, sk, x0, preds)
    assert err[0, 0, 0]
    # re-derive steps 2 and 3 from the wrong step 1: only step 1 is blamed
    preds[0, 0, 1] = w.perms[0, sk[0, 0, 1], preds[0, 0, 0]]
    preds[0, 0, 2] = w.perms[0, sk[0, 0, 2], preds[0, 0, 1]]
    assert Sk.step_errors(w, sk, x0, preds)[0, 0].tolist() == [True, False, False]


def test_logit_grad_sq_matches_autograd():
    w = _small_world((0, 1))
    s = Sk.init_student(w, 16)
    k, a, y = Sk._cot_tokens(w, w.pool[:, :5], w.pool_x0[:, :5])
    z = Sk.logits(s, Sk.features(w, k, a, 2)).detach().requires_grad_()
    g, = torch.autograd.grad(F.cross_entropy(z.reshape(-1, w.vocab), y.reshape(-1), reduction="sum"), z)
    torch.testing.assert_close(Sk.logit_grad_sq(s, w, k, a, y), g.pow(2).sum(-1))


# ---------------------------------------------------------------------------------------------------------------
# Profile, STAT-Sel, STAT-Syn
# ---------------------------------------------------------------------------------------------------------------


def test_profile_counts_wrong_steps_of_difficult_tasks():
    w = _small_world((0,), skills=6, vocab=6, missing=2)
    s = Sk.pretrain(w, 64, 300, 32, 0.01)
    prof, diff = Sk.missing_skill_profile(w, s)
    assert float(prof.sum()) == pytest.approx(1.0)
    assert float(prof[0][w.missing[0]].sum()) == pytest.approx(1.0)      # known skills are perfect here
    uses_missing = w.missing[0][w.val[0]].any(-1).double().mean()
    assert 0 < float(diff[0]) <= float(uses_missing)


def test_profile_rejects_wrong_replica_count():
    w = _small_world((0, 1))
    with pytest.raises(ValueError, match="one student per seed"):
        Sk.missing_skill_profile(w, Sk.init_student(w, 8).repeat(2))


def test_sel_weights_spread_profile_over_tasks_using_the_skill():
    pool = torch.tensor([[[0, 1, 1], [0, 2, 2], [1, 1, 1], [2, 2, 2]]])
    w = Sk.stat_sel_weights(pool, torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(w, torch.tensor([[0.5, 0.5, 0.0, 0.0]], dtype=F64))
    w = Sk.stat_sel_weights(pool, torch.tensor([[0.5, 0.5, 0.0]]))
    torch.testing.assert_close(w, torch.tensor([[0.25 + 0.25, 0.25, 0.25, 0.0]], dtype=F64))
    with pytest.raises(ValueError, match="enlarge the pool"):
        Sk.stat_sel_weights(pool, torch.tensor([[0.0, 0.0, 0.0, 1.0]]))        # no pool task uses skill 3


def test_syn_tasks_use_a_profiled_skill():
    w = _small_world((0,))
    prof = torch.zeros(6)
    prof[2] = 1.0
    sk, x0 = Sk.stat_syn_tasks(w.pool[0], prof, 200, w.vocab, torch.Generator().manual_seed(0))
    assert sk.shape == (200, 3) and x0.shape == (200,)
    assert (sk == 2).any(-1).all()
    with pytest.raises(ValueError, match="n must"):
        Sk.stat_syn_tasks(w.pool[0], prof, 0, w.vocab, torch.Generator())


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


def test_arm_rejects_bad_values():
    with pytest.raises(ValueError, match="data must"):
        Sk.Arm("x", "mixed", "sgd", 1.0)
    with pytest.raises(ValueError, match="opt must"):
        Sk.Arm("x", "uniform", "rmsprop", 1.0)
    with pytest.raises(ValueError, match="lr must"):
        Sk.Arm("x", "uniform", "sgd", 0.0)


def _train(seeds, steps=6):
    w = _small_world(seeds)
    s0 = Sk.pretrain(w, 16, 20, 16, 0.01)
    prof, _ = Sk.missing_skill_profile(w, s0)
    arms = [Sk.Arm("u", "uniform", "sgd", 0.5), Sk.Arm("s", "sel", "adam", 0.01), Sk.Arm("y", "syn", "sgd", 0.5)]
    return Sk.train_students(w, s0, arms, steps, 8, prof, eval_every=2), w, s0, prof


def test_training_is_deterministic_and_seeds_independent():
    h1, _, _, _ = _train((0, 4))
    h2, _, _, _ = _train((0, 4))
    np.testing.assert_array_equal(h1.acc, h2.acc)
    torch.testing.assert_close(h1.final.W1, h2.final.W1, rtol=0, atol=0)
    h3, _, _, _ = _train((4,))
    np.testing.assert_allclose(h1.acc[:, 1], h3.acc[:, 0])
    assert h1.steps.tolist() == [0, 2, 4, 6] and h1.acc.shape == (3, 2, 4)


def test_sgd_arm_matches_a_manual_sgd_step():
    w = _small_world((0,))
    s0 = Sk.pretrain(w, 16, 10, 16, 0.01)
    prof, _ = Sk.missing_skill_profile(w, s0)
    h = Sk.train_students(w, s0, [Sk.Arm("u", "uniform", "sgd", 0.3)], 1, 8, prof, eval_every=1)
    gens = [torch.Generator().manual_seed(3 * s + 100) for s in w.seeds]
    sk, x0 = Sk.sample_tasks(w, "uniform", gens, 8)
    k, a, y = Sk._cot_tokens(w, sk, x0)
    params = [t.clone().requires_grad_() for t in s0.tensors()]
    grads = torch.autograd.grad(Sk.loss_per_replica(Sk.Student(*params), w, k, a, y).sum(), params)
    torch.testing.assert_close(h.final.W1, s0.W1 - 0.3 * grads[0])
    torch.testing.assert_close(h.final.b2, s0.b2 - 0.3 * grads[3])


def test_train_rejects_bad_arguments():
    w = _small_world((0,))
    s0 = Sk.init_student(w, 8)
    prof = torch.full((1, 6), 1 / 6, dtype=F64)
    with pytest.raises(ValueError, match="arms must"):
        Sk.train_students(w, s0, [], 2, 4, prof, 1)
    with pytest.raises(ValueError, match="steps must"):
        Sk.train_students(w, s0, [Sk.Arm("u", "uniform", "sgd", 1.0)], 0, 4, prof, 1)
    with pytest.raises(ValueError, match="one replica per seed"):
        Sk.train_students(w, s0.repeat(2), [Sk.Arm("u", "uniform", "sgd", 1.0)], 2, 4, prof, 1)


def test_history_helpers():
    h, _, _, _ = _train((0,), steps=4)
    assert h.at("u", 2) == pytest.approx(float(h.acc[0, :, 1].mean()))
    with pytest.raises(ValueError, match="not evaluated"):
        h.at("u", 3)
    assert Sk.steps_to(np.array([0.1, 0.5, 0.95]), np.array([0, 2, 4]), 0.9, 99) == 4.0
    assert Sk.steps_to(np.array([0.1, 0.5]), np.array([0, 2]), 0.9, 99) == 99.0
    with pytest.raises(ValueError, match="split must"):
        Sk.task_accuracy(h.final, _small_world((0,)), "train")
