"""Small fits shared by chapters that read a rate off a log-log plot.

Used by *How the activation function sets the Gram matrix's smallest eigenvalue*
(``chapters/overparametrization/activation-gram.md``: how ``lambda_min`` falls with ``n``) and *What
over-parametrized RNNs provably learn* (``chapters/overparametrization/rnn-learning.md``: how the kernel and
decoding errors fall with the width ``m``).
"""

from __future__ import annotations

import torch


def loglog_slope(xs, ys) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (all ``x, y > 0``); needs at least two points."""
    lx = torch.log(torch.as_tensor(xs, dtype=torch.float64))
    ly = torch.log(torch.as_tensor(ys, dtype=torch.float64))
    if lx.numel() < 2 or lx.shape != ly.shape:
        raise ValueError(f"need at least two (x, y) pairs of equal length, got {lx.numel()} and {ly.numel()}")
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())
