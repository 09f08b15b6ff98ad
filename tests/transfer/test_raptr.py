"""Random-path training (dltheory.transfer.raptr): the expected-path identity, scales and schedules, the batched
pre-LN residual MLP, the masked Adam, the FLOP ledger and the batched training of every arm.
Chapter: chapters/transfer/progressive-subnetworks.md."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.numerics.optimizers import adam_init, adam_update
from dltheory.transfer import raptr as R


def _mats(L, d, seed, scale=0.5):
    return np.random.default_rng(seed).standard_normal((L, d, d)) * scale


# ---------------------------------------------------------------------------------------------------------------
# Derivation
# ---------------------------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000), st.floats(0.1, 3.0))
def test_elementary_sum_equals_enumeration(L, seed, c):
    W = _mats(L, 3, seed)
    for p in range(1, L + 1):
        np.testing.assert_allclose(R.elementary_path_sum(W, p, c), R.expected_path_product(W, p, c),
                                   atol=1e-10, rtol=1e-10)


def test_ordered_elementary_respects_order():
    W = _mats(3, 2, 1)
    e2 = W[1] @ W[0] + W[2] @ W[0] + W[2] @ W[1]
    np.testing.assert_allclose(R.ordered_elementary(W, 2), e2, atol=1e-14)
    np.testing.assert_allclose(R.ordered_elementary(W, 3), W[2] @ W[1] @ W[0], atol=1e-14)


def test_full_path_is_the_full_network_and_gap_orders():
    W = _mats(8, 3, 2)
    np.testing.assert_allclose(R.expected_path_product(W, 8, 1.0), R.path_product(W, range(8), 1.0), atol=1e-12)
    eps = np.array([1e-3, 1e-2])
    s = [R.expected_output_gap(e * W, 4, 2.0) for e in eps]
    u = [R.expected_output_gap(e * W, 4, 1.0) for e in eps]
    assert abs(math.log(s[1] / s[0]) / math.log(10) - 2) < 0.05
    assert abs(math.log(u[1] / u[0]) / math.log(10) - 1) < 0.05


def test_predicted_drop_matches_enumeration_near_identity():
    W = 0.005 * _mats(8, 3, 3)
    target = R.path_product(W, range(8), 1.0)
    exact = R.expected_path_loss(W, target, 4, 2.0) - R.expected_path_loss(W, target, 6, 8 / 6)
    pred = R.predicted_transition_drop(W, 4, 6)
    assert pred > 0 and abs(exact / pred - 1) < 0.05


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 7), st.data())
def test_sampling_without_replacement_variance(L, data):
    p = data.draw(st.integers(1, L))
    a = np.random.default_rng(L * 31 + p).standard_normal(L)
    sums = np.array([a[list(J)].sum() for J in itertools.combinations(range(L), p)])
    expect = p * (L - p) / (L * (L - 1)) * ((a - a.mean()) ** 2).sum()
    assert math.isclose(sums.var(), expect, rel_tol=1e-9, abs_tol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Schedules, scales, paths
# ---------------------------------------------------------------------------------------------------------------


def test_scales_schedule_and_flops_ratio():
    assert R.path_scale("one", 12, 6) == 1.0
    assert math.isclose(R.path_scale("sqrt", 12, 6), math.sqrt(2))
    assert R.path_scale("linear", 12, 6) == 2.0
    b = R.stage_boundaries([6, 8, 10, 12], 800)
    assert b == [200, 400, 600, 800]
    assert [R.path_length_at(t, [6, 8, 10, 12], b) for t in (0, 199, 200, 799)] == [6, 6, 8, 12]
    assert math.isclose(R.flops_ratio_from_schedule([6, 8, 10, 12], b, 12), 0.75)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.data())
def test_path_masks_have_length_p_and_contain_fixed(L, data):
    fixed = [0, L - 1]
    p = data.draw(st.integers(2, L))
    m = R.sample_path_masks(50, L, p, fixed, torch.Generator().manual_seed(p))
    assert torch.all(m.sum(1) == p) and torch.all(m[:, fixed] == 1)


def test_path_masks_are_uniform_over_free_blocks():
    m = R.sample_path_masks(40_000, 6, 4, [0, 5], torch.Generator().manual_seed(0))
    torch.testing.assert_close(m[:, 1:5].mean(0), torch.full((4,), 0.5, dtype=torch.float64), atol=0.01, rtol=0)


@pytest.mark.parametrize("call, match", [
    (lambda: R.path_scale("cube", 12, 6), "scaling must"),
    (lambda: R.path_scale("one", 12, 13), "p must"),
    (lambda: R.check_schedule([6, 6, 12], 12), "strictly increasing"),
    (lambda: R.check_schedule([6, 8], 12), "must equal the depth"),
    (lambda: R.check_schedule([1, 12], 12, [0, 11]), "at least the number of fixed"),
    (lambda: R.sample_path_masks(3, 6, 1, [0, 5], torch.Generator()), "p must lie"),
    (lambda: R.expected_path_product(np.zeros((3, 2, 3)), 1, 1.0), "square matrices"),
    (lambda: R.predicted_transition_drop(np.zeros((4, 2, 2)), 3, 2), "need p < p_next"),
    (lambda: R.init_residual_mlp([0], 0, 2, 4, 4, 1), "depth must"),
    (lambda: R.make_teacher(0, 0, 1, 4), "d_in must"),
])
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------------------------
# Model, masked Adam, ledger
# ---------------------------------------------------------------------------------------------------------------


def test_forward_skips_masked_blocks_and_replicas_are_independent():
    P = R.init_residual_mlp([1, 2], 4, 3, 8, 16, 2, dtype=torch.float64)
    x = torch.randn((5, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1]], dtype=torch.float64)
    out = R.residual_mlp_forward(P, x, mask, torch.ones_like(mask))
    # replica 0 with blocks 1 and 3 removed equals a 2-block network
    sub = {"emb": P["emb"][:1], "W1": P["W1"][:1, [0, 2]], "W2": P["W2"][:1, [0, 2]], "head": P["head"][:1]}
    torch.testing.assert_close(out[:1], R.residual_mlp_forward(sub, x, torch.ones((1, 2), dtype=torch.float64),
                                                               torch.ones((1, 2), dtype=torch.float64)))
    P1 = R.init_residual_mlp([2], 4, 3, 8, 16, 2, dtype=torch.float64)
    torch.testing.assert_close(out[1:], R.residual_mlp_forward(P1, x, mask[1:], torch.ones((1, 4),
                                                                                          dtype=torch.float64)))
    with pytest.raises(ValueError, match="mask and scale"):
        R.residual_mlp_forward(P, x, mask[:1], mask[:1])


def test_masked_blocks_get_zero_gradient_and_gradcheck():
    P = R.init_residual_mlp([0], 3, 2, 4, 5, 1, dtype=torch.float64)
    x = torch.randn((4, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mask = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    leaves = {k: v.clone().requires_grad_() for k, v in P.items()}
    loss = R.residual_mlp_forward(leaves, x, mask, 2 * mask).pow(2).sum()
    g = torch.autograd.grad(loss, [leaves["W1"], leaves["W2"]])
    assert torch.all(g[0][:, 1] == 0) and torch.all(g[1][:, 1] == 0) and g[0][:, 0].abs().sum() > 0

    def f(w1):
        return R.residual_mlp_forward({**P, "W1": w1}, x, mask, mask)

    assert torch.autograd.gradcheck(f, (P["W1"].clone().requires_grad_(),))


def test_masked_adam_matches_shared_adam_when_all_on_and_freezes_skipped_blocks():
    P = R.init_residual_mlp([0, 1], 3, 2, 4, 5, 1, dtype=torch.float64)
    g = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
         for i, (k, v) in enumerate(P.items())}
    st0 = R.masked_adam_init(P)
    on = torch.ones((2, 3), dtype=torch.float64)
    act = torch.ones(2, dtype=torch.float64)
    new, st1 = R.masked_adam_update(P, g, st0, on, act, lr=1e-2)
    for k in P:
        ref, _ = adam_update(P[k], g[k], adam_init(P[k]), 1e-2, 0.9, 0.999, 1e-8)
        torch.testing.assert_close(new[k], ref)
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    act = torch.tensor([1.0, 0.0], dtype=torch.float64)
    new2, st2 = R.masked_adam_update(new, g, st1, mask, act, lr=1e-2)
    for k in ("W1", "W2"):
        assert torch.equal(new2[k][0, 1], new[k][0, 1]) and torch.equal(st2.m[k][0, 1], st1.m[k][0, 1])
        assert torch.equal(new2[k][1], new[k][1]) and torch.equal(st2.v[k][1], st1.v[k][1])
        assert not torch.equal(new2[k][0, 0], new[k][0, 0])
    assert st2.steps["W1"].tolist() == [[2.0, 1.0, 2.0], [1.0, 1.0, 1.0]]
    assert st2.steps["emb"].tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match="beta1"):
        R.masked_adam_update(P, g, st0, on, act, lr=1e-2, beta1=1.0)
    with pytest.raises(ValueError, match="lr"):
        R.masked_adam_update(P, g, st0, on, act, lr=0.0)


def test_ledger_counts_block_forwards():
    led = R.FlopLedger(2, 4, 8, 16)
    led.add(torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]), torch.tensor([1.0, 0.0]))
    led.add(torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), torch.tensor([1.0, 1.0]))
    assert led.block_forwards.tolist() == [3, 3]
    assert led.flops().tolist() == [3 * 12.0 * 4 * 8 * 16] * 2


# ---------------------------------------------------------------------------------------------------------------
# Batched training
# ---------------------------------------------------------------------------------------------------------------

ARMS = [R.Arm("full", "full"), R.Arm("eq", "full", budget=0.75), R.Arm("rap", "raptr", "linear"),
        R.Arm("stack", "stack"), R.Arm("drop", "layerdrop", keep=0.75)]


def _train(**kw):
    teacher = R.make_teacher(0, 4, 2, 8)
    args = dict(arms=ARMS, seeds=[0], teacher=teacher, depth=4, width=8, hidden=8, path_lengths=[2, 3, 4],
                steps=30, batch=8, lr=1e-2, fixed=[0, -1], eval_batch=16, eval_every=10, jump_paths=4)
    args.update(kw)
    return R.train_arms(**args)


def test_train_arms_is_deterministic_and_counts_flops():
    h1, h2 = _train(), _train()
    np.testing.assert_array_equal(h1.full_loss, h2.full_loss)
    np.testing.assert_array_equal(h1.jumps, h2.jumps)
    bf = h1.ledger.block_forwards
    sched = R.flops_ratio_from_schedule([2, 3, 4], R.stage_boundaries([2, 3, 4], 30), 4)
    assert bf[0] == 30 * 4 and bf[1] == round(0.75 * 30) * 4
    assert math.isclose(bf[2] / bf[0], sched) and math.isclose(bf[3] / bf[0], sched)
    assert np.isnan(h1.jumps[:, 0]).all() and np.isfinite(h1.jumps[:, 2]).all() and np.isfinite(h1.jumps[:, 3]).all()
    assert h1.full_loss.shape == (5, 4) and (h1.final_full < h1.full_loss[:, 0]).all()
    assert math.isclose(R.arm_mean(h1, "rap", h1.final_full), float(h1.final_full[2]))
    with pytest.raises(ValueError, match="no arm named"):
        R.arm_mean(h1, "nope", h1.final_full)


def test_stacking_copies_the_top_blocks_at_growth():
    h = _train(steps=3, eval_every=1, lr=1e-9)
    # steps 3 over stages [2, 3, 4]: stack grows at steps 1 and 2, copying block 1 into 2, then block 2 into 3
    W1 = h.params["W1"][3]
    torch.testing.assert_close(W1[2], W1[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(W1[3], W1[2], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kw, match", [
    (dict(arms=[R.Arm("x", "bogus")]), "kind must"),
    (dict(arms=[R.Arm("x", "full", budget=1.5)]), "budget and keep"),
    (dict(seeds=[]), "seeds"),
    (dict(path_lengths=[3, 2, 4]), "strictly increasing"),
    (dict(lr=-1.0), "lr must"),
    (dict(boundaries=[10, 5, 30]), "boundaries must"),
    (dict(boundaries=[10, 20, 29]), "boundaries must"),
])
def test_train_arms_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        _train(**kw)
