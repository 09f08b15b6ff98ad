"""Pure optimizer updates against torch.optim (``dltheory.numerics.optimizers``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.numerics.optimizers import (
    adam_init,
    adam_update,
    rmsprop_init,
    rmsprop_update,
    sgd_init,
    sgd_update,
)

F64 = torch.float64


def _grad_at(x, A, noise):
    """A gradient that depends on the iterate (a random quadratic) plus a fixed noise vector."""
    return A @ x + noise


def _compare_with_torch(make_opt, ours_init, ours_step, steps=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = 7
    A = torch.randn(d, d, generator=g, dtype=F64)
    A = A @ A.T / d
    noises = [torch.randn(d, generator=g, dtype=F64) for _ in range(steps)]
    x0 = torch.randn(d, generator=g, dtype=F64)
    p = torch.nn.Parameter(x0.clone())
    opt = make_opt([p])
    x, state = x0.clone(), ours_init(x0)
    for k in range(steps):
        p.grad = _grad_at(p.detach(), A, noises[k])
        opt.step()
        x, state = ours_step(x, _grad_at(x, A, noises[k]), state)
    return x, p.detach()


lrs = st.floats(1e-3, 0.5)
betas = st.floats(0.0, 0.999)


@settings(max_examples=25, deadline=None)
@given(lr=lrs, momentum=st.floats(0.0, 0.99))
def test_sgd_matches_torch(lr, momentum):
    ours, ref = _compare_with_torch(lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum), sgd_init,
                                    lambda x, g, s: sgd_update(x, g, s, lr, momentum))
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(lr=lrs, beta=betas, eps=st.floats(1e-8, 1.0))
def test_rmsprop_matches_torch(lr, beta, eps):
    ours, ref = _compare_with_torch(lambda ps: torch.optim.RMSprop(ps, lr=lr, alpha=beta, eps=eps), rmsprop_init,
                                    lambda x, g, s: rmsprop_update(x, g, s, lr, beta, eps))
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(lr=lrs, b1=betas, b2=betas, eps=st.floats(1e-8, 1.0))
def test_adam_matches_torch(lr, b1, b2, eps):
    ours, ref = _compare_with_torch(lambda ps: torch.optim.Adam(ps, lr=lr, betas=(b1, b2), eps=eps), adam_init,
                                    lambda x, g, s: adam_update(x, g, s, lr, b1, b2, eps))
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_updates_are_pure_and_batch_like_vmap():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, generator=g, dtype=F64)
    grad = torch.randn(5, 3, generator=g, dtype=F64)
    state = rmsprop_init(x, torch.full((3,), 0.5, dtype=F64))
    x_copy, v_copy = x.clone(), state.v.clone()
    batched = rmsprop_update(x, grad, state, 0.1, 0.9, 1e-3)
    assert torch.equal(x, x_copy) and torch.equal(state.v, v_copy), "inputs must not be modified"
    vm = torch.func.vmap(lambda a, b, v: rmsprop_update(a, b, type(state)(v), 0.1, 0.9, 1e-3))(x, grad, state.v)
    assert torch.allclose(batched[0], vm[0]) and torch.allclose(batched[1].v, vm[1].v)
    looped = torch.stack([rmsprop_update(x[i], grad[i], type(state)(state.v[i]), 0.1, 0.9, 1e-3)[0]
                          for i in range(5)])
    assert torch.allclose(batched[0], looped)


def test_rmsprop_update_gradcheck():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, generator=g, dtype=F64, requires_grad=True)
    grad = torch.randn(4, generator=g, dtype=F64, requires_grad=True)
    v = torch.rand(4, generator=g, dtype=F64) + 0.1

    def f(x, grad):
        return rmsprop_update(x, grad, rmsprop_init(x.detach(), v), 0.1, 0.9, 1e-2)[0]

    assert torch.autograd.gradcheck(f, (x, grad))


@pytest.mark.parametrize("kwargs,msg", [
    ({"lr": -1.0}, "lr must be"), ({"beta": 1.0}, "beta must lie"), ({"eps": -1e-3}, "eps must be"),
])
def test_update_validation(kwargs, msg):
    x = torch.zeros(2)
    args = {"lr": 0.1, "beta": 0.9, "eps": 1e-8} | kwargs
    with pytest.raises(ValueError, match=msg):
        rmsprop_update(x, x, rmsprop_init(x), **args)
    with pytest.raises(ValueError, match="v0 must be >= 0"):
        rmsprop_init(x, -torch.ones(2))
