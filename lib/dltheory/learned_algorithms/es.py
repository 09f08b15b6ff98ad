"""Evolution-strategies gradient estimators: antithetic ES and truncated persistent ES (PES).

Used in ``chapters/learned-algorithms/learned-optimizers.md`` (*Learned optimizers meta-trained on a compute
diet*) to meta-train a learned optimizer without backpropagating through its unrolled training run.

* Antithetic ES (Salimans et al. 2017, §2 and §2.2 "mirrored sampling"): for the Gaussian-smoothed loss
  ``f_sigma(theta) = E f(theta + sigma eps)``, ``eps ~ N(0, I)``,
  ``grad f_sigma(theta) = E[eps (f(theta + sigma eps) - f(theta - sigma eps))] / (2 sigma)``.
* Persistent ES (Vicol et al. 2021, Eq. (6)-(7), Algorithm 1): an unroll of ``T`` inner steps is cut into
  truncations of ``K`` steps; the positive and negative particles keep their own inner states across
  truncations and each particle pair keeps the *sum* ``xi`` of all perturbations used since its episode
  started. The estimate for one truncation is ``mean_i xi_i (L_i^+ - L_i^-) / (2 sigma)``, which is unbiased
  for the gradient of the smoothed loss of the whole unroll. Plain *truncated* ES uses only the newest
  perturbation instead of ``xi`` and is biased toward short-horizon (greedy) behavior. Our implementation
  follows the structure of ``compute_pes_grad`` in ``learned_optimization/outer_trainers/truncated_pes.py``
  (google/learned_optimization) with the perturbation written as ``sigma * eps`` with ``eps ~ N(0, I)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from dltheory.numerics.validate import check_int, check_positive


def antithetic_population(theta: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Stack ``theta + sigma eps_i`` (first ``N`` rows) and ``theta - sigma eps_i`` (last ``N`` rows).

    ``theta`` has shape ``(D,)`` and ``eps`` ``(N, D)``; the result is ``(2N, D)``. With leading replica axes,
    ``theta (R, D)`` and ``eps (R, N, D)`` give ``(R, 2N, D)``: one population per replica
    (:func:`dltheory.learned_algorithms.lopt.meta_train` with several meta-seeds).
    """
    sigma = check_positive("sigma", float(sigma))
    if eps.ndim != theta.ndim + 1 or eps.shape[-1] != theta.shape[-1] or eps.shape[:-2] != theta.shape[:-1]:
        raise ValueError(f"eps must have shape {(*theta.shape[:-1], 'N', theta.shape[-1])} for theta of shape "
                         f"{tuple(theta.shape)}, got {tuple(eps.shape)}")
    th = theta.unsqueeze(-2)
    return torch.cat([th + sigma * eps, th - sigma * eps], dim=-2)


def antithetic_estimate(loss_pos: torch.Tensor, loss_neg: torch.Tensor, eps: torch.Tensor,
                        sigma: float) -> torch.Tensor:
    """Antithetic ES gradient ``mean_i eps_i (L_i^+ - L_i^-) / (2 sigma)`` (Salimans et al. 2017, §2.2).

    ``loss_pos``, ``loss_neg`` have shape ``(N,)`` and ``eps`` ``(N, D)``; returns ``(D,)``. Leading replica axes
    broadcast through: losses ``(R, N)`` and ``eps (R, N, D)`` give ``(R, D)``.
    """
    sigma = check_positive("sigma", float(sigma))
    if loss_pos.shape != loss_neg.shape or loss_pos.shape != eps.shape[:-1]:
        raise ValueError(f"loss_pos {tuple(loss_pos.shape)}, loss_neg {tuple(loss_neg.shape)} and the leading "
                         f"dimensions of eps {tuple(eps.shape)} must agree")
    return ((loss_pos - loss_neg)[..., None] * eps).mean(-2) / (2 * sigma)


def antithetic_es_grad(f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, sigma: float,
                       n_pairs: int, generator: torch.Generator) -> torch.Tensor:
    """Antithetic ES estimate of the gradient of ``f_sigma`` at ``theta`` from ``n_pairs`` mirrored pairs.

    ``f`` maps a batch of parameter vectors ``(M, D)`` to their losses ``(M,)`` (one call for the population).
    """
    sigma, n_pairs = check_positive("sigma", float(sigma)), check_int("n_pairs", n_pairs)
    eps = torch.randn(n_pairs, theta.shape[-1], generator=generator, dtype=theta.dtype).to(theta.device)
    losses = f(antithetic_population(theta, eps, sigma))
    return antithetic_estimate(losses[:n_pairs], losses[n_pairs:], eps, sigma)


def forward_difference_es_grad(f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, sigma: float,
                               n_samples: int, generator: torch.Generator) -> torch.Tensor:
    """The one-sided ES estimate ``mean_i eps_i (f(theta + sigma eps_i) - f(theta)) / sigma`` (ES with the
    unperturbed loss as baseline), to compare with :func:`antithetic_es_grad` at equal sample counts."""
    sigma, n_samples = check_positive("sigma", float(sigma)), check_int("n_samples", n_samples)
    eps = torch.randn(n_samples, theta.shape[-1], generator=generator, dtype=theta.dtype).to(theta.device)
    losses = f(torch.cat([theta[None], theta + sigma * eps], dim=0))
    return ((losses[1:] - losses[0])[:, None] * eps).mean(0) / sigma


ESTIMATORS = ("antithetic", "forward", "vanilla")


def es_samples(f: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, sigma: float, n: int,
               generator: torch.Generator, kind: str = "antithetic") -> torch.Tensor:
    """``n`` single-sample ES gradient estimates ``(n, D)`` of the smoothed loss, to study their variance:

    * ``"antithetic"``: ``eps (f(theta + sigma eps) - f(theta - sigma eps)) / (2 sigma)`` (mirrored pair);
    * ``"forward"``: ``eps (f(theta + sigma eps) - f(theta)) / sigma`` (baseline ``f(theta)``);
    * ``"vanilla"``: ``eps f(theta + sigma eps) / sigma`` (the plain score-function form of Salimans et al.
      2017, §2, without a baseline).

    All three have mean ``grad f_sigma(theta)``; their means over samples are the usual estimators.
    """
    if kind not in ESTIMATORS:
        raise ValueError(f"kind must be one of {ESTIMATORS}, got {kind!r}")
    sigma, n = check_positive("sigma", float(sigma)), check_int("n", n)
    eps = torch.randn(n, theta.shape[-1], generator=generator, dtype=theta.dtype).to(theta.device)
    if kind == "antithetic":
        losses = f(antithetic_population(theta, eps, sigma))
        return (losses[:n] - losses[n:])[:, None] * eps / (2 * sigma)
    losses = f(torch.cat([theta[None], theta + sigma * eps], dim=0))
    if kind == "forward":
        return (losses[1:] - losses[0])[:, None] * eps / sigma
    return losses[1:, None] * eps / sigma


def pes_estimate(loss_pos: torch.Tensor, loss_neg: torch.Tensor, eps: torch.Tensor, accumulator: torch.Tensor,
                 sigma: float, persistent: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One truncation of PES (Vicol et al. 2021, Algorithm 1) or of plain truncated ES.

    ``eps`` ``(N, D)`` is the perturbation used in this truncation, ``accumulator`` ``(N, D)`` the sum of the
    perturbations used earlier in each pair's episode. With ``persistent=True`` the new accumulator is
    ``accumulator + eps`` and the estimate ``mean_i xi_i (L_i^+ - L_i^-) / (2 sigma)`` uses it (PES); with
    ``persistent=False`` only ``eps`` is used (truncated ES). Returns ``(grad, new_accumulator)``; reset the
    accumulator to zero when an episode ends (see :func:`reset_rows`).
    """
    if accumulator.shape != eps.shape:
        raise ValueError(f"accumulator {tuple(accumulator.shape)} must have the shape of eps "
                         f"{tuple(eps.shape)}")
    xi = accumulator + eps if persistent else eps
    return antithetic_estimate(loss_pos, loss_neg, xi, sigma), xi


def reset_rows(accumulator: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
    """Zero the accumulator rows whose episode has finished (``done`` is a boolean ``(N,)`` mask)."""
    return torch.where(done[:, None], torch.zeros_like(accumulator), accumulator)


class OuterAdam:
    """Adam on the meta-parameters (the *outer* optimizer; the references use Adam(W) with a small learning
    rate on the ES estimate). ``step(theta, grad)`` returns the new ``theta``."""

    def __init__(self, lr: float, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.lr, (self.b1, self.b2), self.eps = float(lr), betas, float(eps)
        self.m = self.v = None
        self.t = 0

    def step(self, theta: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        if self.m is None:
            self.m, self.v = torch.zeros_like(theta), torch.zeros_like(theta)
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        mhat = self.m / (1 - self.b1 ** self.t)
        vhat = self.v / (1 - self.b2 ** self.t)
        return theta - self.lr * mhat / (vhat.sqrt() + self.eps)


# ---------------------------------------------------------------------------------------------------------
# Symbolic helpers for the chapter's derivation
# ---------------------------------------------------------------------------------------------------------

def gaussian_moment(k: int) -> int:
    """``E[eps^k]`` for a standard normal ``eps``: 0 for odd ``k``, ``(k-1)!!`` for even ``k``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    if k % 2:
        return 0
    out = 1
    for j in range(k - 1, 0, -2):
        out *= j
    return out


def gaussian_expectation(expr, eps_symbols):
    """Exact ``E[expr]`` for a *polynomial* ``expr`` in independent standard normals ``eps_symbols``
    (a sympy expression; other symbols are treated as constants). Expands and replaces every monomial by the
    product of Gaussian moments."""
    import sympy as sp

    eps_symbols = list(eps_symbols)
    poly = sp.Poly(sp.expand(expr), *eps_symbols)
    out = 0
    for powers, coeff in poly.terms():
        m = 1
        for p in powers:
            m *= gaussian_moment(int(p))
        out += coeff * m
    return sp.expand(out)
