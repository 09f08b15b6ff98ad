"""Batched replicas vs a Python loop over replicas, measured side by side in one run (ratios only).

The chapter *SDEs for adaptive methods and the square-root scaling rule* runs hundreds of independent RMSprop replicas
on online noisy linear regression (``dltheory.optimization.scaling.linreg_rmsprop_replicas``). Because the update
functions of ``dltheory.numerics.optimizers`` are pure and elementwise, one call updates a whole ``(R, d)`` batch. This
script times one RMSprop step for ``R`` replicas three ways, on the same pre-drawn minibatches:

1. batched: the replica axis is a tensor dimension (what the chapter does);
2. ``torch.func.vmap`` over a per-replica step function;
3. a Python loop over the replicas, one ``(d,)`` vector at a time.

Run: ``.venv/bin/python benchmarks/bench_replicas.py`` (about half a minute on one core).
"""

from __future__ import annotations

import statistics
import time

import torch

from dltheory.numerics.optimizers import RMSpropState, rmsprop_init, rmsprop_update

LR, BETA, EPS = 0.01, 0.99, 0.05


def grad_one(w, x, y):
    """Minibatch gradient of (1/2)(x.w - y)^2 for one replica: ``w (d,)``, ``x (B, d)``, ``y (B,)``."""
    return x.T @ (x @ w - y) / x.shape[0]


def step_one(w, v, x, y):
    w, state = rmsprop_update(w, grad_one(w, x, y), RMSpropState(v), LR, BETA, EPS)
    return w, state.v


def step_batched(w, v, x, y):
    g = torch.einsum("rbd,rb->rd", x, torch.einsum("rbd,rd->rb", x, w) - y) / x.shape[1]
    w, state = rmsprop_update(w, g, RMSpropState(v), LR, BETA, EPS)
    return w, state.v


step_vmap = torch.func.vmap(step_one)


def step_loop(w, v, x, y):
    out = [step_one(w[r], v[r], x[r], y[r]) for r in range(w.shape[0])]
    return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])


def timeit(fn, args, steps, repeats=5):
    ts = []
    for _ in range(repeats):
        w, v = args[0].clone(), args[1].clone()
        t = time.perf_counter()
        for k in range(steps):
            w, v = fn(w, v, args[2][k], args[3][k])
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), w


def main():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    R, d, B, steps = 256, 10, 2, 40
    h = torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    xs = torch.randn(steps, R, B, d, generator=g, dtype=torch.float64) * h.sqrt()
    ys = torch.randn(steps, R, B, generator=g, dtype=torch.float64)
    w0 = torch.zeros(R, d, dtype=torch.float64)
    v0 = rmsprop_init(w0, h / B).v
    args = (w0, v0, xs, ys)
    t_batch, w_batch = timeit(step_batched, args, steps)
    t_vmap, w_vmap = timeit(step_vmap, args, steps)
    t_loop, w_loop = timeit(step_loop, args, steps, repeats=3)
    assert torch.allclose(w_batch, w_loop) and torch.allclose(w_vmap, w_loop), "the three ways must agree"
    print(f"RMSprop on online linear regression: {R} replicas, d = {d}, batch {B}, {steps} steps, float64, 1 thread")
    print(f"per step: batched {1e3 * t_batch / steps:.3f} ms, vmap {1e3 * t_vmap / steps:.3f} ms, "
          f"python loop {1e3 * t_loop / steps:.3f} ms")
    print(f"RATIO python loop / batched: {t_loop / t_batch:.1f}x")
    print(f"RATIO python loop / vmap:    {t_loop / t_vmap:.1f}x")


if __name__ == "__main__":
    main()
