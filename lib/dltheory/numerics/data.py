"""Data sets that ship with a package (no download at run time), shared by several chapters.

scikit-learn's ``load_digits`` (1797 8x8 images, 10 classes) in the three forms the chapters use:

* :func:`digits_dataset`: a seeded subset with one-hot targets for the square loss (*Gradient descent at the Edge
  of Stability*, ``chapters/optimization/edge-of-stability.md``, after Cohen et al. 2021's CIFAR-10 subsets);
* :func:`digits_classification`: every image with integer labels (*SDEs for adaptive methods and the square-root
  scaling rule*, ``chapters/optimization/sde-scaling-rules.md``);
* :func:`digits_data`: every image, pixels standardized with a floor of 1 on the scale (*Learned optimizers
  meta-trained on a compute diet*, ``chapters/learned-algorithms/learned-optimizers.md``, the held-out task family).

Each keeps the standardization its chapter was built with, so the recorded numbers do not move.
"""

from __future__ import annotations

import numpy as np
import torch


def digits_dataset(n: int, dtype=torch.float64, seed: int = 0):
    """``n`` examples of scikit-learn's ``load_digits`` (ships with the package; no download), features
    standardized, targets one-hot (10 classes). The subset is chosen with ``seed``."""
    from sklearn.datasets import load_digits

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    d = load_digits()
    if n > len(d.target):
        raise ValueError(f"n = {n} exceeds the {len(d.target)} digits available")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(d.target), size=n, replace=False))
    X = d.data[idx].astype(np.float64)
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    Y = np.eye(10)[d.target[idx]]
    return torch.tensor(X, dtype=dtype), torch.tensor(Y, dtype=dtype)


def digits_classification(dtype=torch.float32):
    """All 1797 scikit-learn digits (ships with the package, no download): standardized 64-pixel features and
    integer labels 0..9."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = d.data.astype(np.float64)
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    return torch.tensor(X, dtype=dtype), torch.tensor(d.target, dtype=torch.long)


def digits_data(dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn ``load_digits`` (1797 8x8 images, 10 classes), each pixel standardized over the set.

    Ships with scikit-learn, so no download. Returns ``X`` (1797, 64) and ``y`` (1797,).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.as_tensor(d.data, dtype=torch.float64)
    X = (X - X.mean(0)) / X.std(0).clamp_min(1.0)
    return X.to(dtype), torch.as_tensor(d.target, dtype=torch.long)
