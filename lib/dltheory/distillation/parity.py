"""Sparse parity: data, exact Fourier–Walsh coefficients, and the correlation probe.

Defined for the chapter *Progressive distillation and its implicit curriculum*
(``chapters/distillation/progressive-distillation.md``), after Panigrahi, Liu, Malladi, Risteski & Goel,
"Progressive distillation induces an implicit curriculum" (ICLR 2025, arXiv 2410.05464):

* ``(n, k)``-sparse parity (their Definition 3.1): ``x`` uniform on ``{-1, +1}^n``, target
  ``chi_S(x) = prod_{i in S} x_i`` with ``|S| = k``. As in the reference code
  (``abhishekpanigrahi1996/ProgressiveDistillation``, ``parity/utils.py``: ``get_features``/``boolean_data``)
  the support is the first ``k`` coordinates and the two-class label is ``y = 0`` where ``chi_S = +1`` and
  ``y = 1`` where ``chi_S = -1``;
* Fourier–Walsh coefficients ``hat f(T) = E_x[f(x) chi_T(x)]``, exactly (rationals, by enumeration) or on a
  sample;
* the correlation probe of their Sec. 3 (probing the teacher's checkpoints): ``|E_x[chi_T(x) p(y=1|x)]|`` for monomials
  ``T`` inside and outside the support; here for the degree-1 monomials ``T = {i}``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import sympy as sp
import torch


def check_nk(n: int, k: int) -> tuple[int, int]:
    """Validate the sparse-parity sizes: ``1 <= k <= n``."""
    for name, v in (("n", n), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if k > n:
        raise ValueError(f"the support size k = {k} cannot exceed the input dimension n = {n}")
    return n, k


def default_support(n: int, k: int) -> tuple[int, ...]:
    """The support ``S = {0, ..., k-1}`` (the reference code's default, ``randomize_features=0``)."""
    check_nk(n, k)
    return tuple(range(k))


def parity(x: torch.Tensor, support: Sequence[int]) -> torch.Tensor:
    """``chi_S(x) = prod_{i in S} x_i`` over the last axis of ``x`` (entries ``+-1``)."""
    support = list(support)
    if len(support) == 0:
        return torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device)
    if max(support) >= x.shape[-1] or min(support) < 0:
        raise ValueError(f"support {support} has a coordinate outside 0..{x.shape[-1] - 1}")
    return x[..., support].prod(dim=-1)


def labels_from_parity(chi: torch.Tensor) -> torch.Tensor:
    """Two-class labels: ``0`` where ``chi = +1``, ``1`` where ``chi = -1`` (reference code's argmax rule)."""
    return (chi < 0).long()


def random_signs(shape: Sequence[int], n: int, generator: torch.Generator,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform points of ``{-1, +1}^n`` with batch shape ``shape``, unpacked from random bytes (8 coordinates
    per draw, about 2.5x faster than one ``randint`` per coordinate)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    r = torch.randint(0, 256, (*shape, -(-n // 8)), generator=generator, dtype=torch.uint8)
    bits = (r.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8)) & 1        # (*shape, bytes, 8)
    return 1 - 2 * bits.reshape(*shape, -1)[..., :n].to(dtype)


def sample_parity(shape: Sequence[int], n: int, support: Sequence[int], generator: torch.Generator,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``x`` uniform on ``{-1, +1}^n`` with batch shape ``shape`` and its labels ``y``.

    Returns ``(x, y)`` with ``x.shape == (*shape, n)`` and ``y.shape == tuple(shape)`` (``torch.long``)."""
    x = random_signs(shape, n, generator, dtype)
    return x, labels_from_parity(parity(x, support))


def all_inputs(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """All ``2^n`` points of the hypercube ``{-1, +1}^n`` as rows (for exact coefficients; ``n <= 22``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if n > 22:
        raise ValueError(f"enumerating 2^{n} inputs is too large; use n <= 22 or a Monte Carlo sample")
    idx = torch.arange(2**n)
    bits = (idx[:, None] >> torch.arange(n)) & 1
    return (1 - 2 * bits).to(dtype)


def walsh_coefficient_exact(f: Callable[[tuple[int, ...]], object], m: int, subset: Sequence[int]) -> sp.Expr:
    """Exact ``hat f(T) = 2^{-m} sum_{x in {+-1}^m} f(x) chi_T(x)`` with sympy arithmetic.

    ``f`` maps a tuple of ``m`` python ints ``+-1`` to a number or sympy expression (e.g.
    ``lambda x: sp.Max(0, sum(x))`` for ``ReLU(x_1 + ... + x_m)``). Used for the derivation in the chapter
    (the degree-1 coefficients of ``ReLU(sum_{i in S} x_i)``, and the vanishing low-degree coefficients of
    ``chi_S``)."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 1 or m > 16:
        raise ValueError(f"m must be an integer in 1..16 for exact enumeration, got {m!r}")
    subset = list(subset)
    if any(i < 0 or i >= m for i in subset):
        raise ValueError(f"subset {subset} has a coordinate outside 0..{m - 1}")
    total = sp.Integer(0)
    for x in itertools.product((1, -1), repeat=m):
        chi = 1
        for i in subset:
            chi *= x[i]
        total += sp.sympify(f(x)) * chi
    return sp.nsimplify(sp.simplify(total / sp.Integer(2) ** m))


def walsh_coefficients(values: torch.Tensor, x: torch.Tensor, subsets: Sequence[Sequence[int]]) -> torch.Tensor:
    """``E_x[f(x) chi_T(x)]`` for each ``T`` in ``subsets``, averaged over the rows of ``x``.

    ``values`` has shape ``(..., N)`` (any leading batch axes, e.g. teachers or checkpoints), ``x`` has shape
    ``(N, n)``. Exact when ``x = all_inputs(n)``; a Monte Carlo estimate (error ``~ std(f)/sqrt(N)``) otherwise.
    Returns shape ``(..., len(subsets))``."""
    if values.shape[-1] != x.shape[0]:
        raise ValueError(f"values has {values.shape[-1]} points on its last axis but x has {x.shape[0]} rows")
    chis = torch.stack([parity(x, list(T)) for T in subsets], dim=-1).to(values.dtype)  # (N, |subsets|)
    return values @ chis / x.shape[0]


def degree1_probe(prob: torch.Tensor, x: torch.Tensor, support: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The correlation probe on degree-1 monomials: ``|E_x[x_i p(x)]|`` for ``i`` in and outside the support.

    ``prob`` is ``p(y = 1 | x)`` (or any output) with shape ``(..., N)`` on the rows of ``x`` (shape ``(N, n)``).
    Returns ``(in_support, off_support)`` with shapes ``(..., k)`` and ``(..., n - k)``. The degree-1 case of the
    correlation probe of Panigrahi et al. 2025, Sec. 3. Passing a sample closed under ``x -> -x`` (the chapter's
    antithetic probe) makes the even part of ``prob`` cancel exactly, since
    ``E[x_i p(x)] = E[x_i (p(x) - p(-x)) / 2]``."""
    n = x.shape[-1]
    support = sorted(set(int(i) for i in support))
    if any(i < 0 or i >= n for i in support):
        raise ValueError(f"support {support} has a coordinate outside 0..{n - 1}")
    corr = (prob @ x.to(prob.dtype) / x.shape[0]).abs()  # (..., n)
    off = [i for i in range(n) if i not in support]
    return corr[..., support], corr[..., off]
