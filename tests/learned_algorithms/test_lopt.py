"""Tests of dltheory.learned_algorithms.lopt (the learned update rule, Adam, training and meta-training) and
dltheory.learned_algorithms.tasks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.learned_algorithms import lopt, tasks
from dltheory.numerics.data import digits_data

# ---------------------------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------------------------


def _data(spec: tasks.TaskSpec, n: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, spec.in_dim, generator=g, dtype=dtype)
    y = torch.randint(spec.n_classes, (n,), generator=g)
    return X, y


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("hidden", [(5,), (4, 3)])
@pytest.mark.parametrize("shared_batch", [True, False])
def test_manual_backprop_matches_autograd(activation, hidden, shared_batch):
    spec = tasks.TaskSpec("t", 6, hidden, 4, activation, 8)
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    p = tasks.init_params(spec, 3, g, param_scale=scale, dtype=torch.float64)
    p = p + 0.05 * torch.randn(p.shape, generator=g, dtype=torch.float64)
    X, y = _data(spec, 8, 1)
    if not shared_batch:
        X, y = X.expand(3, -1, -1).clone(), y.expand(3, -1).clone()
        X[1] = X[1] * 2.0
        y[2] = torch.roll(y[2], 1)
    loss, grad = tasks.loss_and_grad(spec, p, X, y, param_scale=scale)
    pp = p.clone().requires_grad_(True)
    ref = tasks.cross_entropy(tasks.forward(spec, pp, X, param_scale=scale), y)
    (g_ref,) = torch.autograd.grad(ref.sum(), pp)
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(grad, g_ref, rtol=1e-10, atol=1e-12)


def test_manual_backprop_matches_finite_differences():
    spec = tasks.TaskSpec("t", 3, (4,), 3, "tanh", 5)
    p = tasks.init_params(spec, 1, torch.Generator().manual_seed(2), dtype=torch.float64)
    X, y = _data(spec, 5, 3)
    _, grad = tasks.loss_and_grad(spec, p, X, y)
    h = 1e-6
    for j in range(0, p.shape[1], 3):
        e = torch.zeros_like(p)
        e[0, j] = h
        fd = (tasks.loss_and_grad(spec, p + e, X, y)[0] - tasks.loss_and_grad(spec, p - e, X, y)[0]) / (2 * h)
        assert abs(float(fd) - float(grad[0, j])) < 1e-7


def test_cross_entropy_matches_torch():
    logits = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 0])
    ref = torch.stack([torch.nn.functional.cross_entropy(logits[i], y) for i in range(2)])
    torch.testing.assert_close(tasks.cross_entropy(logits, y), ref)


def test_layout_and_init():
    spec = tasks.TaskSpec("t", 64, (32,), 10)
    lay = tasks.layout(spec)
    assert lay.shapes == ((64, 32), (32,), (32, 10), (10,))
    assert lay.n_params == 64 * 32 + 32 + 32 * 10 + 10
    assert lay.segment.shape == (lay.n_params,) and int(lay.counts.sum()) == lay.n_params
    p = tasks.init_params(spec, 4, torch.Generator().manual_seed(0), param_scale=2.0)
    assert p.shape == (4, lay.n_params)
    w1 = p[:, : 64 * 32] * 2.0
    assert abs(float(w1.var()) - 2.0 / 64) < 0.2 * 2.0 / 64
    assert float(p[:, 64 * 32: 64 * 32 + 32].abs().max()) == 0.0


def test_param_scale_does_not_change_the_function():
    spec = tasks.TaskSpec("t", 5, (7,), 3)
    X, _ = _data(spec, 4, 0, dtype=torch.float32)
    a = tasks.forward(spec, tasks.init_params(spec, 2, torch.Generator().manual_seed(1)), X)
    s = torch.tensor([0.3, 3.0])
    b = tasks.forward(spec, tasks.init_params(spec, 2, torch.Generator().manual_seed(1), param_scale=s), X,
                      param_scale=s)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_task_distribution_and_heldout_tasks():
    g = torch.Generator().manual_seed(0)
    digits = digits_data()
    assert digits[0].shape == (1797, 64) and int(digits[1].max()) == 9
    names = set()
    for _ in range(12):
        t = tasks.sample_train_task(g, digits)
        assert t.spec.hidden[0] in tasks.TRAIN_WIDTHS and len(t.spec.hidden) == 1
        assert t.spec.activation == "relu"
        names.add(t.spec.name.split("-")[0].rstrip("0123456789dc"))
    assert len(names) == 2  # both data families appear
    held = tasks.heldout_tasks(digits)
    assert [h.spec.name for h in held] == ["digits-tanh-32x32", "teacher-relu-96"]
    assert held[0].X.shape[0] == 1797 - tasks.DIGITS_META_TRAIN
    s = tasks.sample_param_scale(1000, g)
    assert float(s.min()) >= 0.5 and float(s.max()) <= 2.0
    y = torch.arange(10).repeat(100)
    flipped = tasks.flip_labels(y, 0.2, 10, g)
    assert 0.1 < float((flipped != y).float().mean()) < 0.3


def test_task_validation_errors():
    with pytest.raises(ValueError, match="in_dim must be a positive integer, got -3"):
        tasks.TaskSpec("t", -3, (4,), 2)
    with pytest.raises(ValueError, match="hidden must be a tuple of positive integers"):
        tasks.TaskSpec("t", 3, (0,), 2)
    with pytest.raises(ValueError, match="activation must be one of"):
        tasks.TaskSpec("t", 3, (4,), 2, "gelu")
    with pytest.raises(ValueError, match="n_classes must be at least 2"):
        tasks.TaskSpec("t", 3, (4,), 1)
    spec = tasks.TaskSpec("t", 3, (4,), 2)
    with pytest.raises(ValueError, match="param_scale must be positive"):
        tasks.init_params(spec, 2, torch.Generator(), param_scale=torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="X must have shape"):
        tasks.Task(spec, torch.zeros(5, 4), torch.zeros(5, dtype=torch.long))


# ---------------------------------------------------------------------------------------------------------
# the learned rule
# ---------------------------------------------------------------------------------------------------------

CFG = lopt.LOptConfig()


def test_meta_param_count_and_init():
    assert CFG.n_features == len(lopt.FEATURE_NAMES) == 11
    assert lopt.n_meta_params(CFG) == 11 * 8 + 8 + 8 * 8 + 8 + 8 + 1
    th = lopt.init_meta_params(CFG, torch.Generator().manual_seed(0))
    assert th.shape == (lopt.n_meta_params(CFG),)
    assert float(th[: 11 * 8].abs().max()) <= 2 / math.sqrt(11) + 1e-6
    assert float(th[11 * 8: 11 * 8 + 8].abs().max()) == 0.0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), scales=st.lists(st.floats(1e-3, 1e3), min_size=2, max_size=2))
def test_normalize_per_tensor_unit_rms_and_scale_free(seed, scales):
    spec = tasks.TaskSpec("t", 3, (4,), 2)
    lay = tasks.layout(spec)
    x = torch.randn(2, lay.n_params, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    n = lopt.normalize_per_tensor(x, lay.segment, lay.counts, eps=0.0)
    for o, c in zip(lay.offsets, lay.counts.tolist()):
        rms = (n[:, o:o + c] ** 2).mean(1).sqrt()
        torch.testing.assert_close(rms, torch.ones_like(rms))
    # multiply each tensor by its own positive factor: the normalized result does not change
    factor = torch.tensor(scales, dtype=torch.float64)[lay.segment % 2]
    n2 = lopt.normalize_per_tensor(x * factor[None, :, None], lay.segment, lay.counts, eps=0.0)
    torch.testing.assert_close(n, n2)


def _history(seed: int, n: int = 4):
    spec = tasks.TaskSpec("t", 5, (6,), 3, "tanh", 8)
    lay = tasks.layout(spec)
    g = torch.Generator().manual_seed(seed)
    p = tasks.init_params(spec, 2, g, dtype=torch.float64)
    p = p + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64)
    X, y = _data(spec, 32, seed)
    grads = [tasks.loss_and_grad(spec, p, X[8 * i: 8 * i + 8], y[8 * i: 8 * i + 8], lay=lay)[1]
             for i in range(n)]
    theta = lopt.init_meta_params(CFG, g, dtype=torch.float64)
    return spec, lay, p, grads, theta


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), c=st.floats(1e-3, 1e3))
def test_update_invariant_to_loss_scale_and_reparametrization(seed, c):
    _, lay, p, grads, theta = _history(seed)
    exact = lopt.LOptConfig(eps=0.0, norm_eps=0.0)
    d = lopt.direction_from_history(theta, p, grads, lay, exact)
    d_c = lopt.direction_from_history(theta, p, [c * g for g in grads], lay, exact)
    d_s = lopt.direction_from_history(theta, p / c, [c * g for g in grads], lay, exact)
    torch.testing.assert_close(d, d_c, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(d, d_s, rtol=1e-9, atol=1e-9)


def test_step_has_per_tensor_rms_equal_to_lr():
    _, lay, p, grads, theta = _history(0)
    lr = torch.tensor([0.01, 0.003], dtype=torch.float64)
    new, state = lopt.lopt_step(theta, p, grads[0], lopt.LOptState.zeros(p, CFG), lr, lay, CFG)
    for o, c in zip(lay.offsets, lay.counts.tolist()):
        rms = ((new - p)[:, o:o + c] ** 2).mean(1).sqrt()
        torch.testing.assert_close(rms, lr, rtol=1e-6, atol=0.0)
    assert state.m.shape == (*p.shape, 3) and state.v.shape == p.shape


def test_accumulators_are_emas_without_bias_correction():
    g = torch.ones(1, 4)
    st_ = lopt.update_accumulators(g, lopt.LOptState.zeros(g, CFG), CFG)
    torch.testing.assert_close(st_.m[0, 0], torch.tensor([0.1, 0.01, 0.001]))
    torch.testing.assert_close(st_.v[0, 0], torch.tensor(0.05))


def test_schedule_warmup_and_cosine():
    T = 100
    vals = [lopt.schedule(t, T) for t in range(T)]
    assert vals[0] == pytest.approx(0.2) and max(vals) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(vals[5:], vals[6:]))
    assert 0 < vals[-1] < 0.01
    with pytest.raises(ValueError, match="total must be a positive integer"):
        lopt.schedule(0, 0)
    with pytest.raises(ValueError, match=r"step t must lie in \[0, 10\)"):
        lopt.schedule(10, 10)


def test_adam_step_matches_torch_optim():
    p0 = torch.randn(1, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads = [torch.randn(1, 6, generator=torch.Generator().manual_seed(i + 1), dtype=torch.float64)
             for i in range(4)]
    q = p0.clone().requires_grad_(True)
    ref = torch.optim.Adam([q], lr=0.05)
    p, state = p0, lopt.AdamState.zeros(p0)
    for g in grads:
        q.grad = g.clone()
        ref.step()
        p, state = lopt.adam_step(p, g, state, torch.tensor([0.05], dtype=torch.float64))
    torch.testing.assert_close(p, q.detach())


def test_config_validation():
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        lopt.LOptConfig(hidden=0)
    with pytest.raises(ValueError, match="mom_decays must hold three decays"):
        lopt.LOptConfig(mom_decays=(0.9,))
    with pytest.raises(ValueError, match="decays must lie in"):
        lopt.LOptConfig(rms_decay=1.0)
    with pytest.raises(ValueError, match="theta must have 177 MLP entries"):
        lopt.mlp_direction(torch.zeros(1, 5), torch.zeros(1, 3, 11), CFG)


# ---------------------------------------------------------------------------------------------------------
# training and meta-training
# ---------------------------------------------------------------------------------------------------------


def _tiny_task():
    spec = tasks.TaskSpec("tiny", 4, (6,), 3, "relu", 16)
    g = torch.Generator().manual_seed(0)
    X, y = tasks.gaussian_clusters(64, 4, 3, g)
    return tasks.Task(spec, X, y)


def test_evaluate_shapes_and_adam_learns():
    task = _tiny_task()
    c = lopt.evaluate(task, "adam", torch.tensor([1e-5, 3e-2]), 40, 2, seed=0)
    assert c.loss.shape == (4, len(c.steps)) and c.steps[-1] == 40
    by = c.by_setting(2)
    assert by.shape == (2, len(c.steps))
    assert float(by[1, -1]) < float(by[1, 0]) - 0.1  # a reasonable lr decreases the loss
    assert float(by[1, -1]) < float(by[0, -1])
    # rows are setting-major: both settings start from the same two initializations
    torch.testing.assert_close(c.loss[:2, 0], c.loss[2:, 0])


def test_meta_train_runs_and_is_deterministic():
    kw = dict(cfg=CFG, n_iters=4, n_pairs=2, trunc_len=2, episode_len=4, sigma=0.05, outer_lr=0.01,
              lr_peak=0.01, seed=3, checkpoint_at=(0, 2, 4), batch_size=16)
    a = lopt.meta_train(**kw)
    b = lopt.meta_train(**kw)
    assert torch.equal(a.theta, b.theta) and a.meta_loss == b.meta_loss
    assert sorted(a.checkpoints) == [0, 2, 4] and len(a.tasks_seen) == 2
    assert not torch.equal(a.checkpoints[0], a.theta)
    task = _tiny_task()
    th = torch.stack([a.checkpoints[0], a.theta])
    c1 = lopt.evaluate(task, "lopt", th, 10, 1, seed=0, cfg=CFG, lr_peak=0.01)
    c2 = lopt.evaluate(task, "lopt", th, 10, 1, seed=0, cfg=CFG, lr_peak=0.01)
    assert torch.equal(c1.loss, c2.loss)


def test_meta_train_validation():
    with pytest.raises(ValueError, match="must be a multiple of trunc_len"):
        lopt.meta_train(CFG, 1, 1, 3, 4, 0.1, 0.01, 0.01, 0)
    with pytest.raises(ValueError, match="n_pairs must be a positive integer"):
        lopt.meta_train(CFG, 1, 0, 2, 4, 0.1, 0.01, 0.01, 0)
    with pytest.raises(ValueError, match="rule must be 'adam' or 'lopt'"):
        lopt.train_population(_tiny_task(), torch.zeros(1, 45), "sgd", 3, 0.1, torch.Generator())
    with pytest.raises(ValueError, match="rule 'lopt' needs lr_peak"):
        lopt.evaluate(_tiny_task(), "lopt", torch.zeros(1, 177), 3, 1, 0, cfg=CFG)


# ---------------------------------------------------------------------------------------------------------
# the Celo2 recipe: learned step multiplier, Adam on biases, warm start, raw (unnormalized) output, replicas
# ---------------------------------------------------------------------------------------------------------

CELO2 = lopt.LOptConfig(learn_lr=True, bias_adam_mult=10.0)


def _probe(seed=0, dtype=torch.float64):
    spec = tasks.TaskSpec("probe", 5, (7,), 3, "tanh", 16)
    X, y = _data(spec, 32, seed, dtype)
    lay = tasks.layout(spec)
    g = torch.Generator().manual_seed(seed)
    p = tasks.init_params(spec, 2, g, dtype=dtype) + 0.1 * torch.randn(2, lay.n_params, generator=g, dtype=dtype)
    grad = tasks.loss_and_grad(spec, p, X, y, lay=lay)[1]
    return spec, lay, p, grad


def test_learned_multiplier_and_meta_param_count():
    assert lopt.n_meta_params(CELO2) == lopt.n_mlp_params(CELO2) + 1 == 178
    th = lopt.init_meta_params(CELO2, torch.Generator().manual_seed(0))
    assert th.shape == (178,) and float(th[-1]) == 0.0
    torch.testing.assert_close(lopt.lr_multiplier(th, CELO2), torch.tensor(1.0))
    th2 = th.clone()
    th2[-1] = math.log(3.0)
    torch.testing.assert_close(lopt.lr_multiplier(th2, CELO2), torch.tensor(3.0))
    assert float(lopt.lr_multiplier(torch.zeros(177), CFG)) == 1.0
    with pytest.raises(ValueError, match="178 entries per row"):
        lopt.lr_multiplier(torch.zeros(177), CELO2)


def test_update_rms_is_the_learned_step_and_biases_follow_adam():
    _, lay, p, grad = _probe()
    th = lopt.init_meta_params(CELO2, torch.Generator().manual_seed(1), dtype=torch.float64)
    th[-1] = math.log(2.0)
    state0 = lopt.LOptState.zeros(p, CELO2)
    upd, state = lopt.lopt_update(th, p, grad, state0, 0.01, lay, CELO2)
    rms = lopt.per_tensor_rms(upd, lay)
    weights = [i for i, s in enumerate(lay.shapes) if len(s) == 2]
    torch.testing.assert_close(rms[:, weights], torch.full_like(rms[:, weights], 0.02), rtol=1e-6, atol=0)
    adam = state.m[..., 0] / (state.v.sqrt() + 1e-8)
    torch.testing.assert_close(upd[:, lay.is_bias], (0.02 * 10.0 * adam)[:, lay.is_bias])
    p_new, _ = lopt.lopt_step(th, p, grad, state0, 0.01, lay, CELO2)
    torch.testing.assert_close(p_new, p - upd)


def test_warm_start_is_normalized_adam():
    _, lay, p, grad = _probe()
    for cfg in (CFG, CELO2):
        th = lopt.feature_meta_params(cfg, dtype=torch.float64)
        assert th.shape == (lopt.n_meta_params(cfg),)
        d = lopt.direction_from_history(th, p, [grad, 0.5 * grad], lay, cfg)
        state = lopt.LOptState.zeros(p, cfg)
        for g in (grad, 0.5 * grad):
            state = lopt.update_accumulators(g, state, cfg)
        x = state.m[..., 0] * torch.rsqrt(state.v + cfg.eps)
        ref = lopt.normalize_per_tensor(lopt.normalize_per_tensor(x, lay.segment, lay.counts), lay.segment,
                                        lay.counts)
        if cfg.bias_adam_mult > 0:
            ref = torch.where(lay.is_bias, cfg.bias_adam_mult * state.m[..., 0] / (state.v.sqrt() + 1e-8), ref)
        torch.testing.assert_close(d, ref)
    with pytest.raises(ValueError, match="feature must be one of"):
        lopt.feature_meta_params(CFG, "adam")
    with pytest.raises(ValueError, match="at least one hidden layer"):
        lopt.feature_meta_params(lopt.LOptConfig(layers=0))


def test_raw_output_drops_only_the_output_normalizer():
    _, lay, p, grad = _probe()
    raw_cfg = lopt.LOptConfig(normalize_output=False)
    th = lopt.init_meta_params(CFG, torch.Generator().manual_seed(2), dtype=torch.float64)
    state = lopt.update_accumulators(grad, lopt.LOptState.zeros(p, CFG), CFG)
    feats = lopt.normalize_per_tensor(lopt.raw_features(p, grad, state, CFG), lay.segment, lay.counts)
    raw = lopt.mlp_direction(th, feats, CFG)
    torch.testing.assert_close(lopt.lopt_direction(th, p, grad, state, lay, raw_cfg), raw)
    norm = lopt.lopt_direction(th, p, grad, state, lay, CFG)
    torch.testing.assert_close(norm, lopt.normalize_per_tensor(raw, lay.segment, lay.counts))
    mixed = lopt.lopt_direction(th, p, grad, state, lay, CFG, out_norm=torch.tensor([True, False]))
    torch.testing.assert_close(mixed, torch.stack([norm[0], raw[1]]))
    # the warm start's raw output already has unit RMS per tensor: with and without the normalizer it agrees
    tw = lopt.feature_meta_params(CFG, dtype=torch.float64)
    torch.testing.assert_close(lopt.lopt_direction(tw, p, grad, state, lay, raw_cfg),
                               lopt.lopt_direction(tw, p, grad, state, lay, CFG))


def test_config_validation_of_the_recipe():
    with pytest.raises(ValueError, match="bias_adam_mult must be >= 0"):
        lopt.LOptConfig(bias_adam_mult=-1.0)
    with pytest.raises(ValueError, match="keep those decays"):
        lopt.LOptConfig(bias_adam_mult=1.0, rms_decay=0.99)
    with pytest.raises(ValueError, match="learn_lr must be True or False"):
        lopt.LOptConfig(learn_lr=1)


def test_track_update_rms_and_out_norm_in_evaluate():
    task = _tiny_task()
    th = torch.stack([lopt.feature_meta_params(CELO2), lopt.init_meta_params(CELO2, torch.Generator().manual_seed(0))])
    c = lopt.evaluate(task, "lopt", th, 12, 2, seed=0, cfg=CELO2, lr_peak=0.01,
                      out_norm=torch.tensor([True, False]), track_update_rms=True)
    assert c.update_rms_min.shape == (4, 12) and c.update_rms_max.shape == (4, 12)
    torch.testing.assert_close(c.update_rms_min[:2], torch.ones(2, 12), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(c.update_rms_max[:2], torch.ones(2, 12), rtol=1e-4, atol=1e-4)
    assert float((c.update_rms_max[2:] - 1).abs().max()) > 1e-3  # a random raw rule's RMS is not the step
    with pytest.raises(ValueError, match="one flag per setting"):
        lopt.evaluate(task, "lopt", th, 3, 1, 0, cfg=CELO2, lr_peak=0.01, out_norm=torch.tensor([True]))


def test_meta_train_replicas_are_paired_and_deterministic():
    kw = dict(cfg=CELO2, n_iters=4, n_pairs=2, trunc_len=2, episode_len=(2, 6), sigma=0.05, outer_lr=0.01,
              lr_peak=0.01, batch_size=16, theta0=lopt.feature_meta_params(CELO2), scale_level="tensor")
    a = lopt.meta_train(seed=(3, 4, 3), out_norm=(True, True, True), **kw)
    b = lopt.meta_train(seed=(3, 4, 3), out_norm=(True, True, True), **kw)
    assert len(a) == 3 and all(torch.equal(x.theta, y.theta) for x, y in zip(a, b))
    assert torch.equal(a[0].theta, a[2].theta)  # same meta-seed, same flag: the same run
    assert not torch.equal(a[0].theta, a[1].theta)  # another meta-seed
    assert a[0].tasks_seen == a[1].tasks_seen and sum(a[0].episode_iters) >= 4
    single = lopt.meta_train(seed=3, **kw)
    assert torch.equal(single.theta, a[0].theta)  # a replica is the same run as alone
    r = lopt.meta_train(seed=(3, 3), out_norm=(True, False), **kw)
    assert not torch.equal(r[0].theta, r[1].theta)  # differs only by the output normalizer


def test_meta_train_replica_validation():
    kw = dict(n_iters=1, n_pairs=1, trunc_len=2, sigma=0.1, outer_lr=0.01, lr_peak=0.01)
    with pytest.raises(ValueError, match="one per meta-seed"):
        lopt.meta_train(CFG, episode_len=4, seed=(0, 1), out_norm=(True,), **kw)
    with pytest.raises(ValueError, match="range"):
        lopt.meta_train(CFG, episode_len=(5, 2), seed=0, **kw)
    with pytest.raises(ValueError, match="scale_level must be"):
        lopt.meta_train(CFG, episode_len=4, seed=0, scale_level="parameter", **kw)
    with pytest.raises(ValueError, match="theta0 must have 177"):
        lopt.meta_train(CFG, episode_len=4, seed=0, theta0=torch.zeros(178), **kw)
    with pytest.raises(ValueError, match="non-empty tuple"):
        lopt.meta_train(CFG, episode_len=4, seed=(), **kw)


def test_sliced_normalizer_matches_a_scatter_reference_and_checks_its_input():
    lay = tasks.layout(tasks.TaskSpec("t", 6, (5, 4), 3))
    x = torch.randn(3, lay.n_params, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sums = torch.zeros(3, lay.n_tensors, 2, dtype=torch.float64).index_add_(1, lay.segment, x * x)
    ref = x * torch.rsqrt(sums / lay.counts.double()[None, :, None] + 1e-9).index_select(1, lay.segment)
    torch.testing.assert_close(lopt.normalize_per_tensor(x, lay.segment, lay.counts), ref)
    with pytest.raises(ValueError, match="must cover"):
        lopt.normalize_per_tensor(x[:, :-1], lay.segment, lay.counts)
