"""Curvature benchmarks for the Edge of Stability chapter, measured side by side in one run (ratios only).

1. Cost of a full-batch Hessian-vector product in gradients: double backward vs torch.func forward-over-reverse,
   on the chapter's 64-64-64-10 tanh MLP and 1000 standardized digits.
2. Cost of one sharpness measurement during training at 1e-3 relative accuracy, in gradient-equivalents:
   ours (Lanczos warm-started from the previous Ritz vector, residual stopping rule) vs the reference
   implementation's method (Cohen et al.'s locuslab/edge-of-stability: scipy ``eigsh`` on full-batch HVPs from a
   cold start, default tolerance), and eigsh asked for the same 1e-3 tolerance. Accuracy is measured against the
   eigenvalue of the dense Hessian (one checkpoint) and against eigsh at machine precision (all checkpoints).

Run: ``.venv/bin/python benchmarks/bench_curvature.py`` (about two minutes on 2 cores).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

from dltheory.numerics.curvature import SharpnessTracker, full_grad, hvp, hvp_forward_over_reverse
from dltheory.numerics.data import digits_dataset
from dltheory.numerics.mlp import mlp_init, mse_loss_fn


def timeit(fn, repeats=15):
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def eigsh_top(loss_fn, theta, X, Y, tol, seed=0):
    count = [0]

    def mv(v):
        count[0] += 1
        return hvp(loss_fn, theta, X, Y, torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64))).numpy()

    n = theta.numel()
    op = LinearOperator((n, n), matvec=mv, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    vals = eigsh(op, k=1, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
    return float(vals[0]), count[0]


def dense_top(loss_fn, theta, X, Y, batch=512):
    n = theta.numel()
    t = theta.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(t, X, Y), t, create_graph=True)
    rows = []
    eye = torch.eye(n, dtype=theta.dtype)
    for a in range(0, n, batch):
        (h,) = torch.autograd.grad(g, t, eye[a:a + batch], retain_graph=True, is_grads_batched=True)
        rows.append(h)
    H = torch.cat(rows)
    return float(torch.linalg.eigvalsh(0.5 * (H + H.T))[-1])


def main():
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    X, Y = digits_dataset(1000)
    widths = [64, 64, 64, 10]
    loss_fn = mse_loss_fn(widths)
    theta = mlp_init(widths, gen)
    v = torch.randn(theta.shape, dtype=torch.float64, generator=gen)

    t_grad = timeit(lambda: full_grad(loss_fn, theta, X, Y))
    t_hvp = timeit(lambda: hvp(loss_fn, theta, X, Y, v))
    t_hvp_chunk = timeit(lambda: hvp(loss_fn, theta, X, Y, v, chunk=250))
    t_fwd = timeit(lambda: hvp_forward_over_reverse(loss_fn, theta, X, Y, v))
    hvp_ratio = t_hvp / t_grad
    print(f"network 64-64-64-10 tanh, {theta.numel()} parameters, 1000 digits, float64, 1 thread")
    print(f"HVP / gradient (double backward):            {hvp_ratio:.2f}")
    print(f"HVP / gradient (double backward, 4 chunks):  {t_hvp_chunk / t_grad:.2f}")
    print(f"HVP / gradient (torch.func fwd-over-rev):     {t_fwd / t_grad:.2f}")

    # Train at the edge (eta = 0.45) and measure the sharpness every 25 steps with the warm-started tracker.
    eta, steps, every, tol = 0.45, 700, 25, 1e-3
    tracker = SharpnessTracker(tol=tol, generator=gen)
    ours, ref, ref_tol, errs, errs_ref_tol = [], [], [], [], []
    th = theta.clone()
    dense_checked = None
    for t in range(steps):
        _, g = full_grad(loss_fn, th, X, Y)
        if t % every == 0 and t > 0:
            before = tracker.matvecs
            lam = tracker(lambda u, th=th: hvp(loss_fn, th, X, Y, u), th)
            ours.append(tracker.matvecs - before)
            if t >= steps // 2:  # compare on the second half of training (at the edge) only
                exact, n_ref = eigsh_top(loss_fn, th, X, Y, tol=0)
                approx, n_ref_tol = eigsh_top(loss_fn, th, X, Y, tol=tol)
                ref.append(n_ref)
                ref_tol.append(n_ref_tol)
                errs.append(abs(lam - exact) / exact)
                errs_ref_tol.append(abs(approx - exact) / exact)
                if dense_checked is None:
                    dense = dense_top(loss_fn, th, X, Y)
                    dense_checked = abs(exact - dense) / dense
        th = th - eta * g
    n_late = len(ref)
    ours_late = ours[-n_late:]
    print(f"\nsharpness measurements at the edge (eta={eta}, every {every} steps, last {n_late} measurements):")
    print(f"eigsh (tol=0) vs dense eigvalsh, relative difference at one checkpoint: {dense_checked:.1e}")
    print(f"ours (warm-started Lanczos, gap rule, tol {tol}): {np.mean(ours_late):.1f} HVPs, "
          f"{np.mean(ours_late) * hvp_ratio:.1f} gradient-equivalents, max rel. error {max(errs):.1e}")
    print(f"reference (scipy eigsh, cold, default tol): {np.mean(ref):.1f} HVPs, "
          f"{np.mean(ref) * hvp_ratio:.1f} gradient-equivalents")
    print(f"scipy eigsh, cold, tol={tol}: {np.mean(ref_tol):.1f} HVPs, max rel. error {max(errs_ref_tol):.1e}")
    print(f"RATIO reference / ours (equal 1e-3 accuracy, default eigsh): {np.mean(ref) / np.mean(ours_late):.1f}x")
    print(f"RATIO eigsh(tol=1e-3) / ours:                               {np.mean(ref_tol) / np.mean(ours_late):.1f}x")


if __name__ == "__main__":
    main()
