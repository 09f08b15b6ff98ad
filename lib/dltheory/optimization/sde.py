"""Euler--Maruyama for the RMSprop SDE, the noisy gradient oracle, and closed forms to check them against.

Defined for the chapter *SDEs for adaptive methods and the square-root scaling rule*
(``chapters/optimization/sde-scaling-rules.md``), after Malladi, Lyu, Panigrahi & Arora 2022.

The RMSprop SDE of Malladi et al. 2022 for a loss ``L`` and a noisy gradient oracle
``g = grad L(x) + sigma * Sigma(x)^{1/2} z`` (``E z = 0``, ``Cov z = I``; their noisy gradient oracle with
scale parameter, NGOS) reads, with
``sigma0 = sigma lr``, ``eps0 = eps lr``, ``c2 = (1 - beta)/lr^2`` and time ``t = k lr^2``::

    dX_t = -P_t^{-1} ( grad L(X_t) dt + sigma0 Sigma(X_t)^{1/2} dW_t ),
    du_t = c2 ( diag Sigma(X_t) - u_t ) dt,          P_t = sigma0 diag(u_t)^{1/2} + eps0 I,

where ``u`` tracks ``v / sigma^2``. Here ``Sigma`` is diagonal (a vector), which is all the chapter needs.
Everything is batched over a leading replica axis: ``x`` has shape ``(R, d)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from dltheory.numerics.optimizers import _check_beta, gaussian_like, rmsprop_init, rmsprop_update
from dltheory.numerics.validate import check_int, check_nonnegative, check_positive
from dltheory.optimization.scaling import ReplicaRun


def euler_maruyama(drift: Callable, diffusion: Callable, x0: torch.Tensor, t1: float, n_steps: int,
                   generator: torch.Generator, n_records: int | None = None):
    """Euler--Maruyama for ``dX = drift(t, X) dt + diffusion(t, X) * dW`` with *diagonal* noise (``diffusion``
    returns a tensor shaped like ``X``, multiplied elementwise with independent Brownian increments).

    ``x0`` may carry a leading replica axis. Returns the final state, or ``(times, states)`` with ``n_records``
    states evenly spaced in time when ``n_records`` is given. The RMSprop SDE uses :func:`simulate_rmsprop_sde`,
    which applies the same scheme to the pair ``(X, u)``. Used in ``chapters/optimization/sde-scaling-rules.md``."""
    check_int("n_steps", n_steps)
    if not (math.isfinite(t1) and t1 > 0):
        raise ValueError(f"t1 must be a positive finite time, got {t1!r}")
    dt = t1 / n_steps
    sq = math.sqrt(dt)
    every = None if n_records is None else max(1, n_steps // n_records)
    x, times, states = x0.clone(), [], []
    for k in range(n_steps):
        t = k * dt
        dw = gaussian_like(x.shape, x, generator) * sq
        x = x + drift(t, x) * dt + diffusion(t, x) * dw
        if every is not None and (k + 1) % every == 0:
            times.append((k + 1) * dt)
            states.append(x.clone())
    if every is None:
        return x
    return np.array(times), torch.stack(states)


def ou_moments(theta: float, mu: float, sigma: float, x0: float, t: float) -> tuple[float, float]:
    """Mean and variance at time ``t`` of the Ornstein--Uhlenbeck process ``dX = theta (mu - X) dt + sigma dW``,
    ``X_0 = x0``: ``mu + (x0 - mu) e^{-theta t}`` and ``sigma^2 (1 - e^{-2 theta t}) / (2 theta)``. The closed
    form that tests :func:`euler_maruyama`."""
    if theta <= 0:
        raise ValueError(f"theta must be > 0 for a mean-reverting OU process, got {theta}")
    return mu + (x0 - mu) * math.exp(-theta * t), sigma**2 * (1 - math.exp(-2 * theta * t)) / (2 * theta)


def rmsprop_sde_params(lr: float, beta: float, eps: float, sigma: float) -> dict:
    """The constants of the RMSprop SDE (Malladi et al. 2022): ``sigma0 = sigma lr``, ``eps0 = eps lr``,
    ``c2 = (1 - beta) / lr^2``; the SDE time of step ``k`` is ``k lr^2``."""
    check_positive("lr", lr)
    _check_beta("beta", beta)
    check_nonnegative("eps", eps)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite noise scale, got {sigma!r}")
    return {"sigma0": sigma * lr, "eps0": eps * lr, "c2": (1 - beta) / lr**2}


class QuadraticNGOS:
    """The test problem of the SDE-vs-discrete comparison: ``L(x) = (1/2) sum_i h_i x_i^2`` with the noisy
    gradient oracle ``g = h x + sigma * sqrt(Sigma) z`` (diagonal, state-independent ``Sigma``, Gaussian ``z``)."""

    def __init__(self, h: torch.Tensor, Sigma: torch.Tensor):
        if h.shape != Sigma.shape or h.dim() != 1:
            raise ValueError(f"h and Sigma must be vectors of the same length, got {tuple(h.shape)} and "
                             f"{tuple(Sigma.shape)}")
        if (h <= 0).any() or (Sigma <= 0).any():
            raise ValueError("h and Sigma must be positive (a convex quadratic with non-degenerate noise)")
        self.h, self.Sigma = h, Sigma

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.h * x

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.h * x * x).sum(-1)

    def noisy_grad(self, x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
        z = gaussian_like(x.shape, x, generator)
        return self.h * x + sigma * self.Sigma.sqrt() * z

    def sde_stationary_loss(self, sigma0: float, eps0: float) -> float:
        """Stationary ``E L`` of the RMSprop SDE on this problem. With ``u = Sigma`` at equilibrium each
        coordinate is an OU process with rate ``h_i / P_i`` and noise ``sigma0 sqrt(Sigma_i) / P_i``,
        ``P_i = sigma0 sqrt(Sigma_i) + eps0``, so ``E[(1/2) h_i x_i^2] = sigma0^2 Sigma_i / (4 P_i)``."""
        P = sigma0 * self.Sigma.sqrt() + eps0
        return float((sigma0**2 * self.Sigma / (4 * P)).sum())


def simulate_rmsprop_discrete(problem: QuadraticNGOS, x0: torch.Tensor, lr: float, beta: float, eps: float,
                              sigma: float, steps: int, replicas: int, generator: torch.Generator,
                              n_records: int = 50) -> ReplicaRun:
    """Discrete RMSprop (:func:`dltheory.numerics.optimizers.rmsprop_update`) with the noisy oracle, ``replicas`` runs
    at once, from ``x0`` with ``v0 = sigma^2 Sigma + (grad L(x0))^2`` (the expected squared gradient). Records the loss
    at SDE times ``k lr^2``."""
    check_int("steps", steps)
    check_int("replicas", replicas)
    x = x0.expand(replicas, -1).clone()
    state = rmsprop_init(x, sigma**2 * problem.Sigma + problem.grad(x0) ** 2)
    every = max(1, steps // n_records)
    ks, losses = [], []
    for k in range(1, steps + 1):
        x, state = rmsprop_update(x, problem.noisy_grad(x, sigma, generator), state, lr, beta, eps)
        if k % every == 0:
            ks.append(k)
            losses.append(problem.loss(x))
    ks = np.array(ks)
    return ReplicaRun(ks, ks * lr**2, torch.stack(losses).cpu().numpy())


def simulate_rmsprop_sde(problem: QuadraticNGOS, x0: torch.Tensor, sigma0: float, eps0: float, c2: float,
                         t1: float, n_steps: int, replicas: int, generator: torch.Generator,
                         n_records: int = 50, u0: torch.Tensor | None = None) -> ReplicaRun:
    """Euler--Maruyama for the RMSprop SDE of Malladi et al. 2022 (module docstring) on ``problem``,
    ``replicas`` paths at once from ``X_0 = x0`` and ``u_0 = u0`` (default ``Sigma``, the equilibrium of the
    ``u``-equation; the discrete run's ``v0 / sigma^2`` is the consistent choice). Itô: ``P`` and the drift are
    evaluated at the start of each step. Used in ``chapters/optimization/sde-scaling-rules.md``."""
    check_int("n_steps", n_steps)
    check_int("replicas", replicas)
    if not (sigma0 > 0 and eps0 >= 0 and c2 > 0 and t1 > 0):
        raise ValueError(f"need sigma0 > 0, eps0 >= 0, c2 > 0, t1 > 0; got {sigma0}, {eps0}, {c2}, {t1}")
    dt = t1 / n_steps
    if c2 * dt >= 1:
        raise ValueError(f"c2 * dt = {c2 * dt:.3g} >= 1: Euler-Maruyama overshoots the u-equation; use more steps")
    sq = math.sqrt(dt)
    x = x0.expand(replicas, -1).clone()
    u = (problem.Sigma if u0 is None else torch.as_tensor(u0, dtype=x0.dtype, device=x0.device))
    u = u.expand(replicas, -1).clone()
    sqrt_sigma = problem.Sigma.sqrt()
    every = max(1, n_steps // n_records)
    ks, losses = [], []
    for k in range(1, n_steps + 1):
        P = sigma0 * u.sqrt() + eps0
        dw = gaussian_like(x.shape, x, generator) * sq
        x_new = x - (problem.grad(x) * dt + sigma0 * sqrt_sigma * dw) / P
        u = u + c2 * (problem.Sigma - u) * dt
        x = x_new
        if k % every == 0:
            ks.append(k)
            losses.append(problem.loss(x))
    ks = np.array(ks)
    return ReplicaRun(ks, ks * dt, torch.stack(losses).cpu().numpy())


def linreg_sde_stationary_loss(lr: float, batch: int, eps: float, h: torch.Tensor, noise_std: float) -> float:
    """The RMSprop SDE's stationary excess loss for the online linear regression of
    ``dltheory.optimization.scaling.linreg_rmsprop_replicas``. Near the optimum the minibatch gradient noise is
    ``noise_std^2 diag(h) / batch``, i.e. an NGOS with ``sigma = 1 / sqrt(batch)`` and ``Sigma = noise_std^2 h``
    (dropping the ``O(excess loss)`` state-dependent part); then :meth:`QuadraticNGOS.sde_stationary_loss` with
    ``sigma0 = lr / sqrt(batch)`` and ``eps0 = eps lr``. Used in ``chapters/optimization/sde-scaling-rules.md``
    to predict the excess loss under each scaling rule."""
    check_positive("lr", lr)
    check_nonnegative("eps", eps)
    check_int("batch", batch)
    return QuadraticNGOS(h, noise_std**2 * h).sde_stationary_loss(lr / math.sqrt(batch), eps * lr)
