"""Curvature of a full-batch loss: chunked Hessian-vector products and warm-started Lanczos.

Defined for the chapter *Gradient descent at the Edge of Stability* (``chapters/optimization/edge-of-stability.md``),
where the sharpness ``lambda_1(nabla^2 L)`` is tracked during training (Cohen et al. 2021, Sec. 3; their
reference code, locuslab/edge-of-stability ``src/utilities.py``, calls scipy ``eigsh`` on full-batch HVPs).

Everything here works on a *flat* parameter vector ``theta`` and a loss ``loss_fn(theta, X, Y)`` that returns
the **mean** loss over the rows of ``X``. The full-batch quantities are assembled chunk by chunk, so memory
stays bounded by one chunk's graph:

* :func:`full_grad` — ``nabla L(theta)``;
* :func:`hvp` — ``nabla^2 L(theta) v`` by double backward (Pearlmutter 1994). On this machine the double
  backward costs about 2.7 gradients on the chapter's network, ``torch.func`` forward-over-reverse about 3.3
  (``benchmarks/bench_curvature.py`` measures it);
* :func:`hvp_forward_difference` — the same product as a difference of two gradients, one of which a training step
  has already computed: one gradient per product, at a relative error near 1e-7 in float64;
* :func:`lanczos` — top eigenpairs of a symmetric operator with full reorthogonalization and a residual
  stopping rule; warm-started from the previous Ritz vector it needs a handful of products per measurement;
* :func:`dense_hessian` — the full Hessian, for tests on tiny networks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _chunks(n: int, chunk: int | None):
    if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be a positive integer or None, got {chunk!r}")
    step = n if chunk is None else chunk
    for start in range(0, n, step):
        yield start, min(n, start + step)


def full_loss(loss_fn: LossFn, theta: torch.Tensor, X: torch.Tensor, Y: torch.Tensor,
              chunk: int | None = None) -> torch.Tensor:
    """The mean loss over all rows of ``X``, evaluated chunk by chunk without a graph."""
    n = X.shape[0]
    with torch.no_grad():
        return sum(loss_fn(theta, X[a:b], Y[a:b]) * (b - a) for a, b in _chunks(n, chunk)) / n


def full_grad(loss_fn: LossFn, theta: torch.Tensor, X: torch.Tensor, Y: torch.Tensor,
              chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L(theta), nabla L(theta))`` over the full batch, accumulated over chunks of ``chunk`` rows."""
    n = X.shape[0]
    g = torch.zeros_like(theta)
    total = torch.zeros((), dtype=theta.dtype, device=theta.device)
    for a, b in _chunks(n, chunk):
        t = theta.detach().requires_grad_(True)
        loss = loss_fn(t, X[a:b], Y[a:b]) * ((b - a) / n)
        (gi,) = torch.autograd.grad(loss, t)
        g += gi
        total += loss.detach()
    return total, g


def hvp(loss_fn: LossFn, theta: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, v: torch.Tensor,
        chunk: int | None = None) -> torch.Tensor:
    """Full-batch Hessian-vector product ``nabla^2 L(theta) v`` by double backward, chunked over rows."""
    if v.shape != theta.shape:
        raise ValueError(f"v has shape {tuple(v.shape)} but theta has shape {tuple(theta.shape)}")
    n = X.shape[0]
    out = torch.zeros_like(theta)
    for a, b in _chunks(n, chunk):
        t = theta.detach().requires_grad_(True)
        loss = loss_fn(t, X[a:b], Y[a:b]) * ((b - a) / n)
        (g,) = torch.autograd.grad(loss, t, create_graph=True)
        (hv,) = torch.autograd.grad(g @ v, t)
        out += hv
    return out


def hvp_forward_difference(loss_fn: LossFn, theta: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, v: torch.Tensor,
                           grad: torch.Tensor | None = None, eps: float | None = None,
                           chunk: int | None = None) -> torch.Tensor:
    """``nabla^2 L(theta) v ~ (nabla L(theta + h v) - nabla L(theta)) / h``: one gradient per product when the base
    gradient ``grad = nabla L(theta)`` is passed (a training step has just computed it).

    The truncation error is ``h/2 nabla^3 L[v, v]`` and the rounding error about ``eps_mach |nabla L| / h``; the default
    ``h = sqrt(eps_mach) (1 + |theta|) / |v|`` balances them, which in float64 leaves a relative error near 1e-7 on the
    chapter's network (``tests/numerics/test_curvature.py`` checks it against :func:`hvp`). In float32 the same rule
    leaves about 1e-3, too coarse for a 1e-3 sharpness, so float32 raises. Used by the Edge of Stability chapter
    (``chapters/optimization/edge-of-stability.md``) through :func:`dltheory.optimization.eos.train`.
    """
    if v.shape != theta.shape:
        raise ValueError(f"v has shape {tuple(v.shape)} but theta has shape {tuple(theta.shape)}")
    if theta.dtype != torch.float64:
        raise ValueError(f"hvp_forward_difference needs float64 parameters (got {theta.dtype}); use hvp() in float32")
    vnorm = float(v.norm())
    if vnorm == 0:
        return torch.zeros_like(theta)
    if eps is None:
        eps = torch.finfo(theta.dtype).eps ** 0.5 * (1.0 + float(theta.norm())) / vnorm
    elif not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if grad is None:
        grad = full_grad(loss_fn, theta, X, Y, chunk)[1]
    elif grad.shape != theta.shape:
        raise ValueError(f"grad has shape {tuple(grad.shape)} but theta has shape {tuple(theta.shape)}")
    return (full_grad(loss_fn, theta.detach() + eps * v, X, Y, chunk)[1] - grad) / eps


def hvp_forward_over_reverse(loss_fn: LossFn, theta: torch.Tensor, X: torch.Tensor, Y: torch.Tensor,
                             v: torch.Tensor) -> torch.Tensor:
    """The same product with ``torch.func.jvp`` of ``torch.func.grad`` (forward-over-reverse); kept for the
    benchmark that chose double backward."""
    from torch.func import grad, jvp

    return jvp(grad(lambda t: loss_fn(t, X, Y)), (theta,), (v,))[1]


def dense_hessian(loss_fn: LossFn, theta: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """The full Hessian (``p x p``) by ``torch.autograd.functional.hessian``; only for tiny networks."""
    if theta.numel() > 5000:
        raise ValueError(f"dense_hessian is for tiny networks (<= 5000 parameters), got {theta.numel()}")
    return torch.autograd.functional.hessian(lambda t: loss_fn(t, X, Y), theta.detach())


@dataclass
class LanczosResult:
    """Top eigenvalues (descending), their Ritz vectors (columns), residual norms and operator products; with
    ``history=True`` also the top Ritz value after each step."""

    values: torch.Tensor
    vectors: torch.Tensor
    residuals: torch.Tensor
    matvecs: int
    history: list[float] | None = None


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, k: int = 1, max_iter: int = 60,
            tol: float = 1e-3, min_iter: int | None = None, bound: str = "residual",
            keep: int | None = None, history: bool = False) -> LanczosResult:
    """Top-``k`` eigenpairs of a symmetric operator by Lanczos with full reorthogonalization
    (Lanczos 1950; Golub & Van Loan, Alg. 10.1.1 with reorthogonalization).

    Each wanted Ritz pair ``(theta_i, y_i)`` has residual ``r_i = ||A y_i - theta_i y_i|| = beta_m |s_{m,i}|``.
    Stopping rule (``bound``):

    * ``"residual"``: ``r_i <= tol |theta_i|``. For a symmetric operator an eigenvalue lies within ``r_i`` of
      ``theta_i``, so ``tol`` bounds the relative error rigorously (ARPACK's rule, used by scipy ``eigsh``).
    * ``"gap"``: ``min(r_i, r_i^2 / delta_i) <= tol |theta_i|`` with ``delta_i`` the distance from ``theta_i`` to
      the nearest other Ritz value: the Kato–Temple estimate ``|lambda - theta| <~ r^2 / gap``. Much cheaper
      when the residual is moderate and the gap is not tiny; the gap is *estimated* from Ritz values, so this is
      an estimate, not a bound (``benchmarks/bench_curvature.py`` measures the actual error).

    Warm start: pass the previous top Ritz vector(s), combined, as ``v0``. ``keep`` (>= k) Ritz pairs are
    returned (only the top ``k`` are tested for convergence), so a tracker can warm-start from a subspace.
    ``history=True`` records the top Ritz value after every step (the benchmark's oracle stopping count).
    """
    if bound not in ("residual", "gap"):
        raise ValueError(f"unknown bound {bound!r}; use 'residual' or 'gap'")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if max_iter < k:
        raise ValueError(f"max_iter ({max_iter}) must be at least k ({k})")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    min_iter = k + 1 if min_iter is None else min_iter
    q = v0 / v0.norm()
    Q = [q]
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    beta = torch.zeros((), dtype=v0.dtype, device=v0.device)
    n = v0.numel()
    trace: list[float] | None = [] if history else None
    for j in range(min(max_iter, n)):
        w = matvec(Q[j])
        alpha = torch.dot(w, Q[j])
        w = w - alpha * Q[j] - (beta * Q[j - 1] if j > 0 else 0)
        Qm = torch.stack(Q, 1)
        for _ in range(2):  # full reorthogonalization, twice is enough
            w = w - Qm @ (Qm.T @ w)
        alphas.append(alpha)
        beta = w.norm()
        T = torch.diag(torch.stack(alphas))
        if j > 0:
            off = torch.stack(betas)
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
        evals, S = torch.linalg.eigh(T)
        top = min(k, j + 1)
        vals = evals.flip(0)[:top]
        Ssel = S.flip(1)[:, :top]
        n_ret = min(max(k, keep or k), j + 1)
        res = beta * Ssel[-1].abs()
        if trace is not None:
            trace.append(float(vals[0]))
        err = res
        if bound == "gap" and j > 0:
            desc = evals.flip(0)
            gaps = torch.stack([torch.min(torch.cat([(desc[i] - desc[:i]).abs(), (desc[i] - desc[i + 1:]).abs()]))
                                for i in range(top)])
            err = torch.minimum(res, res**2 / gaps.clamp_min(1e-30))
        done = j + 1 >= min_iter and top == k and bool((err <= tol * vals.abs()).all())
        if done or beta <= 1e-12 * vals.abs().max() or j + 1 == min(max_iter, n):
            vecs = Qm @ S.flip(1)[:, :n_ret]
            return LanczosResult(evals.flip(0)[:n_ret], vecs, res, j + 1, trace)
        betas.append(beta)
        Q.append(w / beta)
    raise AssertionError("unreachable")  # pragma: no cover


class SharpnessTracker:
    """Track ``lambda_1(nabla^2 L)`` along a training run, warm-starting Lanczos from the last Ritz vectors.

    The start vector is the sum of the previous top-``keep`` Ritz vectors plus a little noise, so the Krylov space holds
    the directions that may overtake the old top one (at the edge of stability the top eigenvalues are close and cross).
    Used by :func:`dltheory.optimization.eos.train`; Cohen et al. 2021 measure the sharpness the same way but from a
    cold start with scipy ``eigsh`` (``benchmarks/bench_curvature.py`` compares the two).

    The default stopping rule is the rigorous ``"residual"`` one. The cheaper ``"gap"`` estimate stops about a third
    sooner but, at the edge, sometimes before a new top eigenvalue has entered the Krylov space: the benchmark measured
    a worst relative error of 1.2e-2 with it against 9e-6 with the residual rule (median 1.5e-4 and 4e-6).
    """

    def __init__(self, tol: float = 1e-3, max_iter: int = 60, generator: torch.Generator | None = None,
                 bound: str = "residual", keep: int = 4, noise: float = 0.1):
        if keep < 1:
            raise ValueError(f"keep must be a positive integer, got {keep}")
        self.tol, self.max_iter, self.generator, self.bound = tol, max_iter, generator, bound
        self.keep, self.noise = keep, noise
        self.V: torch.Tensor | None = None
        self.matvecs = 0
        self.calls = 0

    def __call__(self, matvec: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor) -> float:
        z = torch.randn(like.shape, dtype=like.dtype, generator=self.generator).to(like.device)
        if self.V is None:
            v0 = z
        else:
            v0 = self.V.sum(1)
            v0 = v0 / v0.norm() + self.noise * z / z.norm()
        res = lanczos(matvec, v0, k=1, max_iter=self.max_iter, tol=self.tol,
                      min_iter=self.keep + 2 if self.V is not None else 2, bound=self.bound, keep=self.keep)
        self.V = res.vectors
        self.matvecs += res.matvecs
        self.calls += 1
        return float(res.values[0])
