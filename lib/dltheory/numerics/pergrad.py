"""Per-example gradients in one batched call, and minibatch gradients as a count matrix times them.

Defined for the chapter *Is the noise of SGD Gaussian?* (``chapters/optimization/gradient-noise.md``), after
Panigrahi, Somani, Goyal & Netrapalli 2019, "Non-Gaussianity of Stochastic Gradient Noise" (the noise
vector ``g_B - g``; reference code ``abhishekpanigrahi1996/SGD_noise``, ``main.py``: ``eval`` stacks one gradient per
minibatch and subtracts their mean). Shared numerics because any chapter that looks at per-example or minibatch
gradients (noise scales, gradient diversity, influence) needs the same two steps:

1. :func:`per_example_grads` -- the ``(N, P)`` matrix ``G`` of the gradients of the ``N`` per-example losses, from
   one ``torch.func.vmap(torch.func.grad(...))`` call (no Python loop, no backward pass per example);
2. :func:`minibatch_counts` and :func:`minibatch_noise` -- a minibatch of size ``B`` drawn from the ``N`` examples is
   a row ``c`` of counts (``sum c = B``); its gradient is ``c @ G / B`` and its *noise* is
   ``(c / B - 1 / N) @ G``. ``K`` minibatches are a ``(K, N)`` count matrix, so all their noise vectors are one
   matrix product -- no backward pass per minibatch. Because the map is linear, projections commute with it:
   ``minibatch_noise(C, G @ U) == minibatch_noise(C, G) @ U``. :func:`sample_minibatch_noise` does both steps for
   many minibatches in chunks of rows, so memory stays bounded.

:func:`mlp_example_loss` and :func:`mlp_per_example_grads` apply this to the flat-parameter MLP of
:mod:`dltheory.numerics.mlp`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dltheory.numerics.mlp import check_widths, mlp_apply
from dltheory.numerics.validate import check_int

LOSSES = ("xent", "mse")


def per_example_grads(loss_fn: Callable, theta: torch.Tensor, X: torch.Tensor, Y: torch.Tensor,
                      chunk_size: int | None = None) -> torch.Tensor:
    """The ``(N, P)`` matrix whose row ``i`` is ``grad_theta loss_fn(theta, X[i], Y[i])``.

    ``loss_fn(theta, x, y)`` is the loss of ONE example (``x`` without a batch dimension) and returns a scalar; it
    is vectorized with ``torch.func.vmap(torch.func.grad(loss_fn), in_dims=(None, 0, 0))``, so the whole data set
    costs one batched call (``chunk_size`` bounds the memory of that call). Chapter ``gradient-noise.md``, the
    per-example gradients ``g_i`` whose minibatch means Panigrahi et al. 2019 study.
    """
    if theta.dim() != 1:
        raise ValueError(f"theta must be a flat parameter vector (1-d), got shape {tuple(theta.shape)}")
    if X.shape[0] != Y.shape[0] or X.shape[0] < 1:
        raise ValueError(f"X and Y need the same, non-zero number of examples, got {X.shape[0]} and {Y.shape[0]}")
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size)
    g = torch.func.vmap(torch.func.grad(loss_fn), in_dims=(None, 0, 0), chunk_size=chunk_size)
    return g(theta.detach(), X, Y)


def mlp_example_loss(widths, loss: str = "xent", activation: str = "tanh") -> Callable:
    """The loss of one example for the flat-parameter MLP ``widths`` (:func:`dltheory.numerics.mlp.mlp_apply`):
    ``"xent"`` -- cross-entropy of the logits against an integer label (the ``NLL`` criterion of the reference
    code, ``main.py``); ``"mse"`` -- ``||f(x) - y||^2 / 2`` against a target vector. For :func:`per_example_grads`
    (chapter ``gradient-noise.md``)."""
    widths = check_widths(widths)
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")

    def one(theta, x, y):
        out = mlp_apply(theta, x.unsqueeze(0), widths, activation)[0]
        if loss == "xent":
            return torch.nn.functional.cross_entropy(out, y)
        return 0.5 * ((out - y) ** 2).sum()

    return one


def mlp_per_example_grads(theta: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, widths, loss: str = "xent",
                          activation: str = "tanh", chunk_size: int | None = None) -> torch.Tensor:
    """Per-example gradients ``(N, P)`` of the flat MLP ``widths`` on ``(X, Y)`` in one batched call
    (chapter ``gradient-noise.md``; Panigrahi et al. 2019, the per-example gradients)."""
    return per_example_grads(mlp_example_loss(widths, loss, activation), theta, X, Y, chunk_size)


def _draw_indices(n: int, batch: int, num: int, generator: torch.Generator, replace: bool) -> torch.Tensor:
    """``(num, batch)`` example indices: i.i.d. uniform draws (``replace``) or the first ``batch`` of a random
    permutation (distinct examples)."""
    if not replace and batch > n:
        raise ValueError(f"batch = {batch} exceeds n = {n}; sample with replace=True or use a smaller batch")
    if replace:
        return torch.randint(n, (num, batch), generator=generator)
    return torch.rand(num, n, generator=generator).argsort(dim=1)[:, :batch]


def minibatch_counts(n: int, batch: int, num: int, generator: torch.Generator, replace: bool = True,
                     dtype=torch.float64) -> torch.Tensor:
    """``(num, n)`` count matrix of ``num`` independent minibatches of size ``batch`` from ``n`` examples.

    ``replace=True`` (default): each minibatch is ``batch`` i.i.d. uniform draws, so its noise is the mean of
    ``batch`` i.i.d. copies of the per-example noise -- the setting of the cumulant law
    ``kappa_r(B) = kappa_r B^(1-r)`` in chapter ``gradient-noise.md``. ``replace=False``: ``batch`` distinct
    examples (a random subset; then the law only holds for ``batch << n``). Minibatches are independent of each
    other in both cases. Every row sums to ``batch``.
    """
    n, batch, num = check_int("n", n), check_int("batch", batch), check_int("num", num)
    idx = _draw_indices(n, batch, num, generator, replace)
    counts = torch.zeros(num, n, dtype=dtype)
    counts.scatter_add_(1, idx, torch.ones(num, batch, dtype=dtype))
    return counts


def minibatch_noise(counts: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """The noise ``g_B - g`` of every minibatch in ``counts`` (``(K, N)``, from :func:`minibatch_counts`) for the
    per-example gradients ``G`` (``(N, P)``, or already projected ``G @ U``): ``(counts / B - 1/N) @ G``, with
    ``B`` the (common) row sum. One matrix product for all ``K`` minibatches (chapter ``gradient-noise.md``;
    Panigrahi et al. 2019, the noise ``g_B - g``; the reference code's ``grads - mean_grad`` in ``main.py``)."""
    if counts.dim() != 2 or G.dim() != 2 or counts.shape[1] != G.shape[0]:
        raise ValueError(f"counts must be (K, N) and G (N, P) with the same N, got {tuple(counts.shape)} and "
                         f"{tuple(G.shape)}")
    sizes = counts.sum(1)
    if not torch.all(sizes == sizes[0]) or sizes[0] <= 0:
        raise ValueError("every minibatch (row of counts) must have the same positive size; build counts with "
                         "minibatch_counts")
    weights = counts.to(G.dtype) / sizes[0].to(G.dtype) - 1.0 / G.shape[0]
    return weights @ G


def sample_minibatch_noise(G: torch.Tensor, batch: int, num: int, generator: torch.Generator, replace: bool = True,
                           chunk: int = 4096) -> torch.Tensor:
    """The noise ``(num, P)`` of ``num`` independent minibatches of size ``batch`` for the per-example gradients
    ``G`` (``(N, P)``, or projected ``G @ U``): the rows of :func:`minibatch_counts` times ``G`` (as in
    :func:`minibatch_noise`), ``chunk`` minibatches at a time. The indices are drawn on the CPU from ``generator``;
    for ``batch < N / 4`` the count matrix is built sparse (same draws, same result up to rounding), which makes small
    batches cost ``num * batch`` rather than ``num * N`` per column. Chapter ``gradient-noise.md``."""
    n = G.shape[0]
    batch, num, chunk = check_int("batch", batch), check_int("num", num), check_int("chunk", chunk)
    mean = G.mean(0)
    parts, done = [], 0
    while done < num:
        k = min(chunk, num - done)
        idx = _draw_indices(n, batch, k, generator, replace)
        if 4 * batch < n:
            rows = torch.arange(k).repeat_interleave(batch)
            counts = torch.sparse_coo_tensor(torch.stack([rows, idx.flatten()]), torch.ones(k * batch, dtype=G.dtype),
                                             (k, n), check_invariants=False).coalesce().to(G.device)
            parts.append(torch.sparse.mm(counts, G) / batch - mean)
        else:
            counts = torch.zeros(k, n, dtype=G.dtype).scatter_add_(1, idx, torch.ones(k, batch, dtype=G.dtype))
            parts.append(minibatch_noise(counts.to(G.device), G))
        done += k
    return torch.cat(parts)
