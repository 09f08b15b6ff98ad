"""A multilayer perceptron whose parameters are one flat vector, so that curvature (HVPs, Lanczos) and
optimizers act on a single tensor.

Defined for the chapter *Gradient descent at the Edge of Stability* (``chapters/optimization/edge-of-stability.md``):
the tanh MLP and square loss of Cohen et al. 2021 (Sec. 3, Fig. 1; their ``SquaredLoss`` and PyTorch's default
``nn.Linear`` initialization). Shared with the curvature tests and benchmark (``benchmarks/bench_curvature.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def check_widths(widths) -> list[int]:
    widths = list(widths)
    if len(widths) < 2 or any((not isinstance(w, int | np.integer)) or w < 1 for w in widths):
        raise ValueError(f"widths must be >= 2 positive integers (input, hidden..., output), got {widths}")
    return [int(w) for w in widths]


def mlp_num_params(widths) -> int:
    widths = check_widths(widths)
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def mlp_init(widths, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Flat parameters of an MLP with PyTorch's default ``nn.Linear`` initialization
    (uniform in ``+-1/sqrt(fan_in)`` for weights and biases), as in Cohen et al.'s reference code."""
    widths = check_widths(widths)
    parts = []
    for a, b in zip(widths[:-1], widths[1:]):
        bound = 1.0 / math.sqrt(a)
        parts.append((torch.rand(b * a, generator=generator, dtype=dtype) * 2 - 1) * bound)
        parts.append((torch.rand(b, generator=generator, dtype=dtype) * 2 - 1) * bound)
    return torch.cat(parts)


def mlp_apply(theta: torch.Tensor, x: torch.Tensor, widths, activation: str = "tanh") -> torch.Tensor:
    """Forward pass of the flat-parameter MLP ``widths = [d_in, h_1, ..., d_out]``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}")
    act = ACTIVATIONS[activation]
    i, h = 0, x
    layers = list(zip(widths[:-1], widths[1:]))
    for li, (a, b) in enumerate(layers):
        W = theta[i:i + a * b].view(b, a)
        i += a * b
        bias = theta[i:i + b]
        i += b
        h = h @ W.T + bias
        if li < len(layers) - 1:
            h = act(h)
    return h


def mse_loss_fn(widths, activation: str = "tanh"):
    """``L(theta) = (1/2n) sum_i ||f(x_i) - y_i||^2``, the square loss of Cohen et al. (``SquaredLoss``)."""
    def loss(theta, X, Y):
        return 0.5 * ((mlp_apply(theta, X, widths, activation) - Y) ** 2).sum(1).mean()
    return loss
