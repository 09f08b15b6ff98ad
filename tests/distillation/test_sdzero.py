"""The self-distillation toy (dltheory.distillation.sdzero): task, sampler, reviser, GRPO and self-distillation
updates, batched training. Chapter: chapters/distillation/self-distillation-zero.md."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.distillation import sdzero as Z

F64 = torch.float64


def _rand(shape, seed):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ---------------------------------------------------------------------------------------------------------------
# Task and policy
# ---------------------------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.floats(0.01, 0.99), st.integers(2, 50))
def test_head_start_logit_gives_p_head(p, V):
    h = Z.head_start_logit(p, V)
    logits = torch.zeros(V, dtype=F64)
    logits[0] = h
    assert math.isclose(float(torch.softmax(logits, 0)[0]), p, rel_tol=1e-12)


def test_make_task_shapes_and_exact_head_start():
    task, theta = Z.make_task([1, 2], prompts=3, length=5, vocab=4, p_head=0.6, init_noise=0.0)
    assert task.targets.shape == (2, 3, 5) and theta.shape == (2, 3, 5, 4) and task.policy == "tabular"
    p1 = Z.pass_at_1(torch.softmax(theta, -1), task.targets)
    torch.testing.assert_close(p1, torch.full((2, 3), 0.6**5, dtype=F64))


def test_seeds_do_not_depend_on_their_neighbours():
    a_task, a = Z.make_task([3, 7], 4, 3, 5, 0.5, 0.3)
    b_task, b = Z.make_task([7], 4, 3, 5, 0.5, 0.3)
    assert torch.equal(a[1], b[0]) and torch.equal(a_task.targets[1], b_task.targets[0])
    arms = [Z.Arm("g", "grpo", 4.0), Z.Arm("s", "sd", 4.0, 0.5)]
    ha = Z.train_arms(a_task, a, arms, [3, 7], 32, 4)
    hb = Z.train_arms(b_task, b, arms, [7], 32, 4)
    np.testing.assert_array_equal(ha.pass1[:, 1], hb.pass1[:, 0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompts=0), "prompts must"), (dict(vocab=1), "vocab must"), (dict(p_head=1.0), "p_head must"),
    (dict(init_noise=-1.0), "init_noise must"), (dict(policy="mlp"), "policy must"), (dict(seeds=[]), "seeds"),
    (dict(policy="linear", dim=0), "dim must"),
])
def test_make_task_rejects_bad_arguments(kwargs, match):
    args = dict(seeds=[0], prompts=2, length=3, vocab=4, p_head=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Z.make_task(**args)


def test_linear_head_start_is_calibrated():
    task, W = Z.make_task([4], prompts=40, length=3, vocab=5, p_head=0.3, init_noise=0.0, policy="linear", dim=6)
    probs = torch.softmax(Z.policy_logits(task, W), -1)
    mean_p = probs.gather(-1, task.targets.unsqueeze(-1)).mean()
    assert math.isclose(float(mean_p), 0.3, rel_tol=1e-9)


def test_linear_policy_chain_rule_matches_autograd():
    task, W = Z.make_task([0, 1], prompts=6, length=3, vocab=4, p_head=0.5, init_noise=0.1, policy="linear", dim=5)
    assert task.policy == "linear" and W.shape == (2, 3, 4, 5) and task.features.shape == (2, 6, 5)
    W = W.unsqueeze(0).repeat(2, 1, 1, 1, 1).requires_grad_()        # an arm axis in front
    logits = Z.policy_logits(task, W)
    assert logits.shape == (2, 2, 6, 3, 4)
    G = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    auto, = torch.autograd.grad((logits * G).sum(), W)
    torch.testing.assert_close(Z.logit_grad_to_params(task, G), auto)


def test_sample_answers_follows_the_policy():
    probs = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], dtype=F64)
    y = Z.sample_answers(probs, _rand((200_000, 2), 0).unsqueeze(0))       # (1, G, T)
    for t in range(2):
        freq = torch.bincount(y[0, :, t], minlength=3).to(F64) / y.shape[1]
        torch.testing.assert_close(freq, probs[t], atol=5e-3, rtol=0)
    assert torch.equal(Z.sample_answers(probs, torch.ones(1, 1, 2, dtype=F64)), torch.tensor([[[2, 2]]]))


def test_exact_match_and_pass_at_1():
    tgt = torch.tensor([[1, 2, 0]])
    y = torch.tensor([[[1, 2, 0], [1, 2, 1], [0, 2, 0]]])
    assert Z.exact_match(y, tgt).tolist() == [[1.0, 0.0, 0.0]]
    probs = torch.softmax(torch.randn((1, 3, 4), generator=torch.Generator().manual_seed(1), dtype=F64), -1)
    expect = probs[0, 0, 1] * probs[0, 1, 2] * probs[0, 2, 0]
    torch.testing.assert_close(Z.pass_at_1(probs, tgt)[0], expect)


# ---------------------------------------------------------------------------------------------------------------
# The reviser
# ---------------------------------------------------------------------------------------------------------------


def _bayes(c, wrong, inspected, reward_known):
    """P(token t wrong | observations) by enumerating every right/wrong pattern (z = 1: right)."""
    T = len(c)
    r = int(not any(wrong))
    out = []
    for t in range(T):
        num = den = 0.0
        for z in itertools.product((0, 1), repeat=T):
            if reward_known and int(all(z)) != r:
                continue
            if any(z[s] != (0 if wrong[s] else 1) for s in range(T) if inspected[s]):
                continue
            pz = math.prod(c[s] if z[s] else 1 - c[s] for s in range(T))
            den += pz
            num += pz * (1 - z[t])
        out.append(num / den)
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.02, 0.98), min_size=4, max_size=4), st.lists(st.booleans(), min_size=4, max_size=4),
       st.lists(st.booleans(), min_size=4, max_size=4), st.booleans())
def test_posterior_is_bayes_rule(c, wrong, inspected, reward_known):
    exact = _bayes(c, wrong, inspected, reward_known)
    r = torch.tensor(float(not any(wrong)), dtype=F64)
    w = Z.reviser_posterior(torch.tensor(c, dtype=F64), torch.tensor(wrong), torch.tensor(inspected),
                            r if reward_known else None)
    np.testing.assert_allclose(w.numpy(), exact, rtol=1e-10, atol=1e-12)


def _batch(seed, S=2, K=3, G=6, T=4, V=5, force=2):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(1.5 * torch.randn((S, K, T, V), generator=g, dtype=F64), -1)
    tgt = torch.randint(V, (S, K, T), generator=g)
    y = Z.sample_answers(probs, torch.rand((S, K, G, T), generator=g, dtype=F64))
    y[:, :, :force] = tgt.unsqueeze(2)
    return probs, tgt, y, Z.exact_match(y, tgt), torch.rand((S, K, G, T), generator=g, dtype=F64)


def test_reviser_targets_are_distributions_with_the_right_limits():
    probs, tgt, y, r, u = _batch(0)
    for kappa in (0.0, 0.5, 1.0):
        w, q, wrong = Z.reviser_step(probs, y, tgt, r, kappa, u)
        assert (q >= 0).all()
        torch.testing.assert_close(q.sum(-1), torch.ones_like(w))
        torch.testing.assert_close(q.gather(-1, y.unsqueeze(-1)).squeeze(-1), 1 - w)
    q0 = Z.reviser_targets(probs, y, torch.zeros(y.shape, dtype=F64))
    torch.testing.assert_close(q0, torch.nn.functional.one_hot(y, probs.shape[-1]).to(F64))


def test_kappa1_reviser_knows_exactly_and_ignores_the_reward():
    probs, tgt, y, r, u = _batch(1)
    w, _, wrong = Z.reviser_step(probs, y, tgt, r, 1.0, u)
    w_nr, _, _ = Z.reviser_step(probs, y, tgt, r, 1.0, u, use_reward=False)
    assert torch.equal(w, wrong.to(F64)) and torch.equal(w_nr, w)
    st_ = Z.localization(w, wrong, r)
    assert st_["precision"] == 1.0 and st_["recall"] == 1.0 and 0 < st_["wrong_share"] <= 1


def test_kappa0_without_reward_targets_are_the_policy():
    probs, tgt, y, r, u = _batch(2)
    _, q, _ = Z.reviser_step(probs, y, tgt, r, 0.0, u, use_reward=False)
    torch.testing.assert_close(q, probs.unsqueeze(-3).expand_as(q))


def test_per_arm_reward_flags_broadcast():
    probs, tgt, y, r, u = _batch(3)
    flags = torch.tensor([True, False]).view(2, 1, 1, 1, 1)
    w2, _, _ = Z.reviser_step(probs.expand(2, *probs.shape), y.expand(2, *y.shape), tgt, r.expand(2, *r.shape),
                              0.5, u, use_reward=flags)
    w_r, _, _ = Z.reviser_step(probs, y, tgt, r, 0.5, u, use_reward=True)
    w_n, _, _ = Z.reviser_step(probs, y, tgt, r, 0.5, u, use_reward=False)
    torch.testing.assert_close(w2[0], w_r)
    torch.testing.assert_close(w2[1], w_n)


# ---------------------------------------------------------------------------------------------------------------
# The updates
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kappa0_self_distillation_gradient_is_reinforce(seed):
    probs, tgt, y, r, u = _batch(seed, G=8)
    assert 0 < r.mean() < 1
    theta = probs.log().clone().requires_grad_()
    logp = torch.log_softmax(theta, -1)
    _, q, _ = Z.reviser_step(probs, y, tgt, r, 0.0, u)
    kl = (torch.special.xlogy(q, q) - q * logp.unsqueeze(-3)).sum((-1, -2)).mean(-1).sum()
    g_kl, = torch.autograd.grad(kl, theta, retain_graph=True)
    torch.testing.assert_close(Z.sd_logit_grad(probs, q), g_kl, rtol=0, atol=1e-13)
    logp_y = logp.unsqueeze(-3).expand(*y.shape, probs.shape[-1]).gather(-1, y.unsqueeze(-1)).squeeze(-1).sum(-1)
    A = Z.kappa0_advantage(r, logp_y.exp().detach())
    g_pg, = torch.autograd.grad(-(A * logp_y).mean(-1).sum(), theta)
    torch.testing.assert_close(g_kl, g_pg, rtol=0, atol=1e-13)
    torch.testing.assert_close(Z.pg_logit_grad(probs, y, A), g_pg, rtol=0, atol=1e-13)


def test_kappa_positive_is_not_reinforce():
    probs, tgt, y, r, u = _batch(4, G=8)
    _, q, _ = Z.reviser_step(probs, y, tgt, r, 1.0, u)
    prob_y = probs.unsqueeze(-3).expand(*y.shape, 5).gather(-1, y.unsqueeze(-1)).squeeze(-1).prod(-1)
    A = Z.kappa0_advantage(r, prob_y)
    assert (Z.sd_logit_grad(probs, q) - Z.pg_logit_grad(probs, y, A)).abs().max() > 1e-3


def _reference_grpo(rewards, G, leave_one_out, eps=1e-6):
    """A loop transcription of the reference's calculate_baseline_and_std_per_prompt + GRPOAdvantageEstimator
    (princeton-pli/Self-Distillation-Zero, self-distillation/nemo_rl/algorithms/{utils,advantage_estimator}.py)."""
    out = []
    for grp in rewards.reshape(-1, G):
        n = len(grp)
        if n <= 1:
            out.extend([0.0] * n)
            continue
        M = (1 - torch.eye(n, dtype=F64)) if leave_one_out else torch.ones((n, n), dtype=F64)
        nv = n - int(leave_one_out)
        base, sq = M @ grp / nv, M @ grp**2 / nv
        std = ((sq - base**2) * (nv / (nv - 1))).sqrt().nan_to_num(0)
        adv = grp - base
        adv = torch.where(std > 0, adv / (std + eps), adv)
        out.extend(adv.tolist())
    return torch.tensor(out, dtype=F64).reshape(rewards.shape)


@pytest.mark.parametrize("leave_one_out", [True, False])
@pytest.mark.parametrize("G", [3, 4, 8])
def test_grpo_advantages_match_the_reference(leave_one_out, G):
    g = torch.Generator().manual_seed(G)
    r = (torch.rand((5, 7, G), generator=g) < 0.3).to(F64)
    r[0, 0] = 0.0
    r[0, 1] = 1.0
    r[0, 2] = 0.0
    r[0, 2, 0] = 1.0
    torch.testing.assert_close(Z.grpo_advantages(r, leave_one_out), _reference_grpo(r, G, leave_one_out),
                               rtol=1e-12, atol=1e-12)


def test_grpo_small_groups():
    assert torch.equal(Z.grpo_advantages(torch.ones(3, 1, dtype=F64)), torch.zeros(3, 1, dtype=F64))
    a = Z.grpo_advantages(torch.tensor([[1.0, 0.0]], dtype=F64))
    torch.testing.assert_close(a, torch.tensor([[1.0, -1.0]], dtype=F64))
    assert torch.isfinite(Z.grpo_advantages(torch.tensor([[1.0, 0.0]], dtype=F64), leave_one_out=False)).all()


def test_pg_logit_grad_matches_autograd():
    probs, tgt, y, r, u = _batch(5, G=8)
    A = Z.grpo_advantages(r)
    theta = probs.log().clone().requires_grad_()
    logp = torch.log_softmax(theta, -1).unsqueeze(-3).expand(*y.shape, probs.shape[-1])
    logp_y = logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).sum(-1)
    auto, = torch.autograd.grad(-(A * logp_y).mean(-1).sum(), theta)
    torch.testing.assert_close(Z.pg_logit_grad(probs, y, A), auto, rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


ARMS = [Z.Arm("grpo", "grpo", 8.0), Z.Arm("k0", "sd", 4.0, 0.0), Z.Arm("k1", "sd", 4.0, 1.0),
        Z.Arm("nr", "sd", 4.0, 0.5, reward=False)]


def test_training_is_deterministic_and_learns():
    task, theta = Z.make_task([0, 1, 2], 4, 4, 5, 0.5, 0.3)
    h1 = Z.train_arms(task, theta, ARMS, [0, 1, 2], 64, 4)
    h2 = Z.train_arms(task, theta, ARMS, [0, 1, 2], 64, 4)
    np.testing.assert_array_equal(h1.pass1, h2.pass1)
    assert h1.pass1.shape == (4, 3, 4, 17) and h1.samples[-1] == 64
    assert h1.curve("k1")[-1] > 0.8 > h1.curve("k1")[0]
    assert h1.curve("k1")[-1] > h1.curve("k0")[-1]
    assert Z.best_arm(h1, ["grpo", "k0", "k1"]) == "k1"
    with pytest.raises(ValueError, match="no arm named"):
        h1.curve("nope")


def test_linear_policy_trains():
    task, W = Z.make_task([0, 1], 12, 3, 4, 0.5, 0.05, policy="linear", dim=4)
    h = Z.train_arms(task, W, ARMS, [0, 1], 48, 4, eval_every=3)
    assert h.final_params.shape == (4, 2, 3, 4, 4)
    assert h.curve("k1")[-1] > h.curve("k1")[0]
    assert list(h.samples) == [0, 12, 24, 36, 48]


def test_train_arms_rejects_bad_arguments():
    task, theta = Z.make_task([0], 2, 3, 4, 0.5)
    with pytest.raises(ValueError, match="at least one group"):
        Z.train_arms(task, theta, ARMS, [0], 3, 4)
    with pytest.raises(ValueError, match="group must"):
        Z.train_arms(task, theta, ARMS, [0], 8, 1)
    with pytest.raises(ValueError, match="must match"):
        Z.train_arms(task, theta, ARMS, [0, 1], 8, 4)
    with pytest.raises(ValueError, match="at least one Arm"):
        Z.train_arms(task, theta, [], [0], 8, 4)
    with pytest.raises(ValueError, match="method"):
        Z.Arm("x", "ppo", 1.0)
    with pytest.raises(ValueError, match="kappa"):
        Z.Arm("x", "sd", 1.0, 1.5)
    with pytest.raises(ValueError, match="lr must"):
        Z.Arm("x", "sd", 0.0)


def test_samples_to():
    s = np.array([0, 4, 8, 12])
    assert Z.samples_to(np.array([0.1, 0.4, 0.6, 0.9]), s, 0.5, 13) == 8.0
    assert Z.samples_to(np.array([0.1, 0.2, 0.3, 0.4]), s, 0.5, 13) == 13.0


def test_reviser_localization_on_a_task():
    task, theta = Z.make_task([0, 1], 8, 6, 6, 0.5, 0.5)
    g = lambda: torch.Generator().manual_seed(5)
    k0 = Z.reviser_localization(task, theta, 0.0, True, 32, g())
    k1 = Z.reviser_localization(task, theta, 1.0, True, 32, g())
    assert k1["precision"] == 1.0 and k1["recall"] == 1.0
    assert k0["wrong_share"] == k1["wrong_share"]                  # same answers
    assert k0["wrong_share"] < k0["precision"] < 1.0


# ---------------------------------------------------------------------------------------------------------------
# Signal-to-noise (derivation (3))
# ---------------------------------------------------------------------------------------------------------------


def test_snr_formulas():
    assert math.isclose(Z.snr_reinforce(0.5, 4), 1 / 15)
    assert math.isclose(Z.snr_kappa1(0.5, 6), 25 / 16)
    assert Z.snr_kappa1(0.3, 2) == math.inf
    probs = Z.symmetric_probs(0.4, 3, 5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="p must"):
        Z.snr_reinforce(1.0, 3)
    with pytest.raises(ValueError, match="length must"):
        Z.snr_reinforce(0.5, 0)


def test_kappa1_gradient_takes_two_values():
    """The kappa = 1 gradient on the target logit is 1 - p (token right) or p u / (1 - u) (token wrong)."""
    p, T, V = 0.5, 3, 6
    probs = Z.symmetric_probs(p, T, V)
    tgt = torch.zeros(T, dtype=torch.long)
    y = Z.sample_answers(probs, _rand((4000, 1, T), 0))
    _, q, _ = Z.reviser_step(probs, y, tgt, Z.exact_match(y, tgt), 1.0, torch.zeros((4000, 1, T), dtype=F64))
    d = -Z.sd_logit_grad(probs, q)[:, 0, 0]
    u = (1 - p) / (V - 1)
    right = y[:, 0, 0] == 0
    torch.testing.assert_close(d[right], torch.full_like(d[right], 1 - p))
    torch.testing.assert_close(d[~right], torch.full_like(d[~right], p * u / (1 - u)))
