"""Gradient descent at the Edge of Stability: the network, the data, and the training loops.

Defined for the chapter *Gradient descent at the Edge of Stability* (``chapters/optimization/edge-of-stability.md``):

* full-batch GD with the MSE loss on a tanh MLP (Cohen et al. 2021, Sec. 3 and Fig. 1: sharpness rises, then
  hovers at ``2/eta``);
* normalized GD ``theta <- theta - eta grad/||grad||`` and GD on ``sqrt(L)``, the two mechanisms of
  Arora, Li & Panigrahi 2022 (their Thms. 4.4 and 5.1: ``eta lambda_1 / ||grad|| -> 2`` and
  ``eta lambda_1(nabla^2 sqrt L) -> 2``);
* their toy ``L(x, y) = (1 + x^2) y^2`` (Sec. 4), where normalized GD drifts along the manifold ``y = 0``
  towards smaller sharpness at a speed proportional to ``eta^2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from dltheory.numerics.curvature import SharpnessTracker, full_grad, hvp_forward_difference

MODES = ("gd", "normalized", "sqrt")


def sqrt_loss_fn(base):
    """``sqrt(L)`` of a mean loss: used for 'GD on sqrt(L)' (Arora et al. 2022, Sec. 5). Only valid on the full
    batch (the square root of a mean is not a mean), so call it with ``chunk=None``."""
    def loss(theta, X, Y):
        return torch.sqrt(base(theta, X, Y))
    return loss


@dataclass
class History:
    """What :func:`train` records: steps of the sharpness measurements and per-step losses."""

    steps: list = field(default_factory=list)
    sharpness: list = field(default_factory=list)
    grad_norm_at: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    matvecs: int = 0
    diverged: bool = False

    def arrays(self) -> dict:
        return {k: np.asarray(v) for k, v in self.__dict__.items() if isinstance(v, list)}


def train(theta0: torch.Tensor, loss_fn, X: torch.Tensor, Y: torch.Tensor, eta: float, steps: int,
          mode: str = "gd", eval_every: int = 10, tol: float = 1e-3, generator: torch.Generator | None = None,
          chunk: int | None = None, progress=None) -> tuple[torch.Tensor, History]:
    """Full-batch training from ``theta0`` with step size ``eta`` for ``steps`` steps.

    ``mode``: ``gd`` (plain GD on ``L``), ``normalized`` (``theta -= eta g/||g||``), ``sqrt`` (GD on ``sqrt(L)``). Every
    ``eval_every`` steps the sharpness of the *objective being descended* is measured with a warm-started
    :class:`~dltheory.numerics.curvature.SharpnessTracker` (for ``sqrt``, that is ``lambda_1(nabla^2 sqrt L)``), whose
    Hessian-vector products are forward differences of gradients around the step's own gradient (one gradient each;
    :func:`~dltheory.numerics.curvature.hvp_forward_difference`). Stops
    early (``history.diverged``) if the loss becomes non-finite or explodes.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if not eta > 0:
        raise ValueError(f"eta must be positive, got {eta}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    objective = sqrt_loss_fn(loss_fn) if mode == "sqrt" else loss_fn
    if mode == "sqrt":
        chunk = None
    tracker = SharpnessTracker(tol=tol, generator=generator)
    hist = History()
    theta = theta0.detach().clone()
    loss0 = None
    it = range(steps) if progress is None else progress(range(steps))
    for t in it:
        obj, g = full_grad(objective, theta, X, Y, chunk)
        loss = float(obj) ** 2 if mode == "sqrt" else float(obj)
        loss0 = loss if loss0 is None else loss0
        if not math.isfinite(loss) or loss > 1e3 * max(loss0, 1.0):
            hist.diverged = True
            break
        hist.loss.append(loss)
        if t % eval_every == 0:
            th = theta
            lam = tracker(lambda v, th=th, g=g: hvp_forward_difference(objective, th, X, Y, v, grad=g, chunk=chunk),
                          theta)
            hist.steps.append(t)
            hist.sharpness.append(lam)
            hist.grad_norm_at.append(float(g.norm()))
        if mode == "normalized":
            theta = theta - eta * g / g.norm()
        else:
            theta = theta - eta * g
    hist.matvecs = tracker.matvecs
    return theta, hist


def toy_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Arora et al. 2022, Sec. 4: ``L(x, y) = (1 + x^2) y^2``; its minimizers are the line ``y = 0`` with
    sharpness ``2 (1 + x^2)``."""
    return (1 + x**2) * y**2


def toy_normalized_gd(x0: float, y0: float, eta: float, x_target: float, max_steps: int = 10**7):
    """Run normalized GD on :func:`toy_loss` from ``(x0, y0)`` until ``x <= x_target``.

    Returns ``(steps, xs, ys)``, where ``xs``/``ys`` are the iterates (numpy, float64). In the limit
    ``eta -> 0`` the drift along ``y = 0`` follows a flow in time ``t = steps * eta^2``, so ``steps * eta^2``
    is nearly independent of ``eta`` (Arora et al. 2022, Thm. 4.4).
    """
    if not (0 < x_target < x0):
        raise ValueError(f"need 0 < x_target < x0, got x_target={x_target}, x0={x0}")
    x, y = float(x0), float(y0)
    xs, ys = [x], [y]
    for k in range(1, max_steps + 1):
        gx, gy = 2 * x * y * y, 2 * (1 + x * x) * y
        nrm = math.hypot(gx, gy)
        if nrm == 0:
            raise RuntimeError("normalized GD reached a stationary point exactly; perturb y0")
        x, y = x - eta * gx / nrm, y - eta * gy / nrm
        xs.append(x)
        ys.append(y)
        if x <= x_target:
            return k, np.asarray(xs), np.asarray(ys)
    raise RuntimeError(f"x did not reach {x_target} within {max_steps} steps; increase eta or max_steps")
