"""Arc-cosine kernels and the ReLU Gram (NTK) matrix, as functions of input correlations.

One implementation shared by the chapters *How the activation function sets the Gram matrix's smallest
eigenvalue* (``chapters/overparametrization/activation-gram.md``) and *What over-parametrized RNNs provably
learn* (``chapters/overparametrization/rnn-learning.md``).

For ``(u, v)`` standard Gaussians with correlation ``rho`` (Cho & Saul 2009, Eq. 6, with n = 0, 1):

* ``relu_deriv_kernel(rho) = E[1{u>0} 1{v>0}] = (pi - arccos rho) / (2 pi)``
* ``relu_kernel(rho)       = E[relu(u) relu(v)] = (sqrt(1 - rho^2) + (pi - arccos rho) rho) / (2 pi)``

The normalized arc-cosine maps of order 0 and 1 are ``kappa0 = 2 relu_deriv_kernel`` and
``kappa1 = 2 relu_kernel`` (He initialization keeps ``kappa1(1) = 1``).
"""

from __future__ import annotations

import math

import torch


def _clip(rho: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(rho).clamp(-1.0, 1.0)


def relu_deriv_kernel(rho: torch.Tensor) -> torch.Tensor:
    """``E[1{u>0} 1{v>0}]`` for unit Gaussians with correlation ``rho`` (Cho & Saul 2009, order 0)."""
    rho = _clip(rho)
    return (math.pi - torch.arccos(rho)) / (2 * math.pi)


def relu_kernel(rho: torch.Tensor) -> torch.Tensor:
    """``E[relu(u) relu(v)]`` for unit Gaussians with correlation ``rho`` (Cho & Saul 2009, order 1)."""
    rho = _clip(rho)
    return (torch.sqrt(torch.clamp(1 - rho**2, min=0.0)) + (math.pi - torch.arccos(rho)) * rho) / (2 * math.pi)


def arccos_kappa0(rho: torch.Tensor) -> torch.Tensor:
    """Normalized order-0 arc-cosine map ``kappa0(rho) = 1 - arccos(rho)/pi`` (so ``kappa0(1) = 1``)."""
    return 2 * relu_deriv_kernel(rho)


def arccos_kappa1(rho: torch.Tensor) -> torch.Tensor:
    """Normalized order-1 arc-cosine map ``kappa1(rho) = (sqrt(1-rho^2) + (pi - arccos rho) rho)/pi``:
    the correlation map of a wide ReLU layer at He initialization (``kappa1(1) = 1``)."""
    return 2 * relu_kernel(rho)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a tensor, checked to be a matrix ``(n, d)`` of unit-norm rows (the setting of Du et al. 2019 and
    Panigrahi et al. 2020); raises with the fix otherwise."""
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"x must be a matrix (n, d) of unit-norm rows, got shape {tuple(x.shape)}")
    norms = x.norm(dim=1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-6 if x.dtype == torch.float64 else 1e-4):
        raise ValueError("rows of x must have unit norm; normalize with x / x.norm(dim=1, keepdim=True)")
    return x


def cosines(x: torch.Tensor) -> torch.Tensor:
    """The matrix ``rho_ij = <x_i, x_j>`` of unit-norm rows, exactly symmetric and clipped to ``[-1, 1]``: a
    matmul is symmetric only to rounding, and arccos amplifies a 1e-16 asymmetry near ``rho = 1`` to 1e-8."""
    x = unit_rows(x)
    g = x @ x.T
    return ((g + g.T) / 2).clamp(-1.0, 1.0)


def relu_ntk_gram(x: torch.Tensor) -> torch.Tensor:
    """The infinite-width Gram matrix of a two-layer ReLU net with trained first layer (Du et al. 2019,
    Eq. 3; Panigrahi et al. 2020): ``G_ij = <x_i, x_j> (pi - arccos <x_i, x_j>) / (2 pi)`` for unit-norm
    rows ``x_i``. Raises if the rows are not unit norm."""
    g = cosines(x)
    return g * relu_deriv_kernel(g)
