"""Curvature benchmarks for the Edge of Stability chapter, measured side by side in one run (ratios only).

1. Cost of a full-batch Hessian-vector product in gradients: double backward, torch.func forward-over-reverse, and
   a forward difference of gradients around the step's own gradient (one new gradient per product), on the chapter's
   64-64-64-10 tanh MLP and 1000 standardized digits.
2. Cost of one sharpness measurement during training, in HVPs and gradient-equivalents, and its relative error:
   the tracker the chapter uses (Lanczos warm-started from the previous Ritz vectors, residual stopping rule,
   forward-difference HVPs), the previous tracker (gap estimate, double backward), the reference implementation's
   method (Cohen et al.'s locuslab/edge-of-stability: scipy ``eigsh`` on full-batch HVPs from a cold start, default
   tolerance), and eigsh asked for 1e-3. Errors are against eigsh at machine precision at every compared checkpoint
   (checked once against the dense Hessian's eigenvalue).
3. Oracle: from the tracker's warm start, the fewest Lanczos steps after which the top Ritz value is within 1e-3 -- no
   stopping rule can stop sooner, so it bounds what a better stopping estimate could save.

Run: ``.venv/bin/python benchmarks/bench_curvature.py`` (about four minutes on one core).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

from dltheory.numerics.curvature import (
    SharpnessTracker,
    full_grad,
    hvp,
    hvp_forward_difference,
    hvp_forward_over_reverse,
    lanczos,
)
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

    base = full_grad(loss_fn, theta, X, Y)[1]
    t_fd = timeit(lambda: hvp_forward_difference(loss_fn, theta, X, Y, v, grad=base))
    fd_ratio = t_fd / t_grad
    print(f"HVP / gradient (forward difference):          {fd_ratio:.2f}")

    # Train at the edge (eta = 0.45) and measure the sharpness every 25 steps with both trackers side by side.
    eta, steps, every, tol = 0.45, 700, 25, 1e-3
    trackers = {  # name: (tracker, product, gradients per product)
        "ours (residual rule, forward differences)": (SharpnessTracker(tol=tol, generator=gen), "fd", fd_ratio),
        "before (gap estimate, double backward)": (SharpnessTracker(tol=tol, bound="gap", generator=gen), "db",
                                                   hvp_ratio),
    }
    counts = {name: [] for name in trackers}
    errs = {name: [] for name in trackers}
    ref, ref_tol, errs_ref_tol, oracle = [], [], [], []
    th = theta.clone()
    dense_checked = None
    for t in range(steps):
        _, g = full_grad(loss_fn, th, X, Y)
        if t % every == 0 and t > 0:
            late = t >= steps // 2  # compare on the second half of training (at the edge) only
            if late:
                exact, n_ref = eigsh_top(loss_fn, th, X, Y, tol=0)
                approx, n_ref_tol = eigsh_top(loss_fn, th, X, Y, tol=tol)
                ref.append(n_ref)
                ref_tol.append(n_ref_tol)
                errs_ref_tol.append(abs(approx - exact) / exact)
                if dense_checked is None:
                    dense = dense_top(loss_fn, th, X, Y)
                    dense_checked = abs(exact - dense) / dense
                ours = trackers["ours (residual rule, forward differences)"][0]
                oracle.append(oracle_steps(lambda u, th=th: hvp(loss_fn, th, X, Y, u), ours, th, exact, tol))
            for name, (tracker, kind, _) in trackers.items():
                before = tracker.matvecs
                if kind == "fd":
                    lam = tracker(lambda u, th=th, g=g: hvp_forward_difference(loss_fn, th, X, Y, u, grad=g), th)
                else:
                    lam = tracker(lambda u, th=th: hvp(loss_fn, th, X, Y, u), th)
                if late:
                    counts[name].append(tracker.matvecs - before)
                    errs[name].append(abs(lam - exact) / exact)
        th = th - eta * g
    n_late = len(ref)
    print(f"\nsharpness measurements at the edge (eta={eta}, every {every} steps, last {n_late} measurements):")
    print(f"eigsh (tol=0) vs dense eigvalsh, relative difference at one checkpoint: {dense_checked:.1e}")
    for name, (_, _, per) in trackers.items():
        n = np.mean(counts[name])
        print(f"{name}: {n:.1f} HVPs, {n * per:.1f} gradient-equivalents, relative error max {max(errs[name]):.1e}"
              f" median {np.median(errs[name]):.1e}")
    print(f"reference (scipy eigsh, cold, default tol): {np.mean(ref):.1f} HVPs, "
          f"{np.mean(ref) * hvp_ratio:.1f} gradient-equivalents")
    print(f"scipy eigsh, cold, tol={tol}: {np.mean(ref_tol):.1f} HVPs, max rel. error {max(errs_ref_tol):.1e}")
    print(f"oracle (fewest Lanczos steps to 1e-3 from our warm start): {np.mean(oracle):.1f} HVPs")
    name = "ours (residual rule, forward differences)"
    n_ours = np.mean(counts[name])
    print(f"RATIO gradient-equivalents per measurement, ours:          {n_ours * fd_ratio:.1f}")
    print(f"RATIO max relative error, ours:                            {max(errs[name]):.1e}")
    print(f"RATIO eigsh(tol=1e-3) HVPs / ours:                         {np.mean(ref_tol) / n_ours:.2f}x")
    print(f"RATIO reference (default eigsh) HVPs / ours:               {np.mean(ref) / n_ours:.2f}x")
    print(f"RATIO gradient-equivalents, eigsh(tol=1e-3) / ours:        "
          f"{np.mean(ref_tol) * hvp_ratio / (n_ours * fd_ratio):.2f}x")


def oracle_steps(matvec, tracker, th, exact, tol, cap=40):
    """Fewest Lanczos steps from the tracker's next warm start (before it is updated) to a top Ritz value within
    ``tol`` of ``exact``; ``cap`` if never."""
    v0 = tracker.V.sum(1)
    z = torch.randn(th.shape, dtype=th.dtype, generator=torch.Generator().manual_seed(1))
    v0 = v0 / v0.norm() + tracker.noise * z / z.norm()
    res = lanczos(matvec, v0, k=1, max_iter=cap, tol=1e-15, min_iter=cap, history=True)
    for m, top in enumerate(res.history, start=1):
        if abs(top - exact) <= tol * exact:
            return m
    return cap


if __name__ == "__main__":
    main()
