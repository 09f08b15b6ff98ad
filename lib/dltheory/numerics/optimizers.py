"""Optimizers as small pure update functions (SGD with momentum, RMSprop, Adam), shared by every part.

Defined for the chapter *SDEs for adaptive methods and the square-root scaling rule*
(``chapters/optimization/sde-scaling-rules.md``), after Malladi, Lyu, Panigrahi & Arora 2022, "On the SDEs and
Scaling Rules for Adaptive Gradient Algorithms" (reference code: ``abhishekpanigrahi1996/Adaptive-SDE``); the scaling
rules and the chapter's experiments live in :mod:`dltheory.optimization.scaling`.

Every update is a pure function ``(x, g, state, hyperparameters) -> (x_new, state_new)``: nothing is modified in
place, the state is a ``NamedTuple`` of tensors, and all arithmetic is elementwise. So the same function runs on
one parameter vector ``(P,)``, on a batch of independent replicas ``(R, P)`` (one call updates all of them), or
under :func:`torch.func.vmap`. The updates follow ``torch.optim`` exactly (``tests/numerics/test_optimizers.py``
checks it):

* SGD with heavy-ball momentum (``torch.optim.SGD``, ``dampening=0``);
* RMSprop (``torch.optim.RMSprop``, ``alpha = beta``, not centered): ``v <- beta v + (1-beta) g^2``,
  ``x <- x - lr g / (sqrt(v) + eps)`` -- the RMSprop of Malladi et al. 2022 (their update rule);
* Adam with bias correction (``torch.optim.Adam``), as in Kingma & Ba 2015, Alg. 1.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from dltheory.numerics.validate import check_nonnegative, check_positive

# ---------------------------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------------------------




def _check_beta(name: str, beta) -> None:
    if not (isinstance(beta, int | float) and 0 <= beta < 1):
        raise ValueError(f"{name} must lie in [0, 1), got {beta!r}")




def gaussian_like(shape, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal samples of ``shape`` on ``like``'s device, cast to ``like``'s dtype. They are drawn in float32,
    which is about five times faster than float64 on CPU and statistically indistinguishable for this use."""
    return torch.randn(shape, generator=generator, device=like.device).to(like.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Pure update functions (state in, state out)
# ---------------------------------------------------------------------------------------------------------------


class SGDState(NamedTuple):
    """Momentum buffer of SGD (zeros at start; with ``dampening = 0`` this equals torch's first-step rule)."""

    buf: torch.Tensor


class RMSpropState(NamedTuple):
    """Running average ``v`` of the squared gradient."""

    v: torch.Tensor


class AdamState(NamedTuple):
    """First moment ``m``, second moment ``v`` and the number of steps taken (a python int, shared by a batch)."""

    m: torch.Tensor
    v: torch.Tensor
    step: int


def sgd_init(x: torch.Tensor) -> SGDState:
    """Initial SGD state for parameters shaped like ``x``."""
    return SGDState(torch.zeros_like(x))


def sgd_update(x: torch.Tensor, g: torch.Tensor, state: SGDState, lr: float, momentum: float = 0.0):
    """One SGD step ``buf <- momentum buf + g``, ``x <- x - lr buf`` (``torch.optim.SGD``, no dampening).

    Returns ``(x_new, state_new)``. Used in ``chapters/optimization/sde-scaling-rules.md`` for the SGD half of
    the scaling-rule derivation (the linear scaling rule of Goyal et al. 2017, Sec. 2.1)."""
    check_positive("lr", lr)
    _check_beta("momentum", momentum)
    buf = momentum * state.buf + g if momentum else g
    return x - lr * buf, SGDState(buf)


def rmsprop_init(x: torch.Tensor, v0: torch.Tensor | None = None) -> RMSpropState:
    """Initial RMSprop state: ``v = 0`` (torch's default) or a given ``v0`` (e.g. the expected squared gradient
    at ``x``, which the chapter uses so that no run starts with a huge first step)."""
    if v0 is None:
        return RMSpropState(torch.zeros_like(x))
    v0 = torch.as_tensor(v0, dtype=x.dtype, device=x.device)
    if (v0 < 0).any():
        raise ValueError("v0 must be >= 0 elementwise (it is a running average of squared gradients)")
    return RMSpropState(torch.broadcast_to(v0, x.shape).clone())


def rmsprop_update(x: torch.Tensor, g: torch.Tensor, state: RMSpropState, lr: float, beta: float, eps: float):
    """One RMSprop step: ``v <- beta v + (1 - beta) g^2``, ``x <- x - lr g / (sqrt(v) + eps)``.

    The RMSprop update of Malladi et al. 2022 (``torch.optim.RMSprop`` with ``alpha = beta``). Returns
    ``(x_new, state_new)``. Used in ``chapters/optimization/sde-scaling-rules.md``."""
    check_positive("lr", lr)
    _check_beta("beta", beta)
    check_nonnegative("eps", eps)
    v = torch.addcmul(beta * state.v, g, g, value=1 - beta)
    return torch.addcdiv(x, g, v.sqrt() + eps, value=-lr), RMSpropState(v)


def adam_init(x: torch.Tensor) -> AdamState:
    """Initial Adam state (zero moments, zero steps)."""
    return AdamState(torch.zeros_like(x), torch.zeros_like(x), 0)


def adam_update(x: torch.Tensor, g: torch.Tensor, state: AdamState, lr: float, beta1: float, beta2: float,
                eps: float):
    """One Adam step with bias correction (Kingma & Ba 2015, Alg. 1; ``torch.optim.Adam``):
    ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``,
    ``x <- x - lr (m / (1-b1^k)) / (sqrt(v / (1-b2^k)) + eps)``.

    The Adam update of Malladi et al. 2022. Returns ``(x_new, state_new)``. Used in
    ``chapters/optimization/sde-scaling-rules.md`` (the SVAG experiment)."""
    check_positive("lr", lr)
    _check_beta("beta1", beta1)
    _check_beta("beta2", beta2)
    check_nonnegative("eps", eps)
    k = state.step + 1
    m = beta1 * state.m + (1 - beta1) * g
    v = beta2 * state.v + (1 - beta2) * g * g
    denom = v.sqrt() / math.sqrt(1 - beta2**k) + eps
    return x - (lr / (1 - beta1**k)) * m / denom, AdamState(m, v, k)
