"""Activation functions, their Hermite expansions and the Gram (NTK) matrix of a wide two-layer net.

Defined for the chapter *How the activation function sets the Gram matrix's smallest eigenvalue*
(``chapters/overparametrization/activation-gram.md``), after Panigrahi, Shetty & Goyal, "Effect of
Activation Functions on the Training of Overparametrized Neural Nets" (ICLR 2020, arXiv 1908.05660) and
Du et al., "Gradient Descent Provably Optimizes Over-parameterized Neural Networks" (ICLR 2019).

Setting. A two-layer net ``F(x) = m^{-1/2} sum_r a_r phi(w_r . x)`` with ``w_r ~ N(0, I_d)``, fixed signs
``a_r``, unit-norm inputs and the first layer trained. Its Gram matrix at infinite width is

    G_ij = <x_i, x_j> E_w[phi'(w . x_i) phi'(w . x_j)].

With ``phi'(u) = sum_k c_k h_k(u)`` in normalized probabilists' Hermite polynomials
``h_k = He_k / sqrt(k!)`` and ``E[h_k(u) h_l(v)] = delta_kl rho^k`` for ``rho``-correlated standard
Gaussians, ``G_ij = sum_k c_k^2 <x_i, x_j>^{k+1}`` (:func:`hermite_gram`).

The ReLU closed form lives in :mod:`dltheory.numerics.kernels` (``relu_ntk_gram``); it is used here, never rewritten.
All computations are in float64 unless the caller passes another dtype.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dltheory.numerics.kernels import cosines, relu_ntk_gram, unit_rows
from dltheory.numerics.validate import check_int

SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772

# ---------------------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    """An activation ``phi`` with its derivative ``dphi``.

    ``kink`` is True when ``dphi`` (or its derivative) is not smooth at 0 (ReLU, ELU, SELU): quadratures then
    split the real line at 0. ``smooth`` activations (tanh, swish, polynomials) have derivatives of all
    orders; this is the dichotomy of Panigrahi et al. 2020. ``poly_coeffs`` holds ``a_0..a_p`` of
    ``phi(z) = sum_j a_j z^j`` for polynomial activations, else ``None``."""

    name: str
    phi: Callable[[torch.Tensor], torch.Tensor]
    dphi: Callable[[torch.Tensor], torch.Tensor]
    kink: bool
    poly_coeffs: tuple[float, ...] | None = None

    @property
    def smooth(self) -> bool:
        return not self.kink


def _relu_d(u):
    return (u > 0).to(u.dtype)


def _elu(u, alpha=1.0):
    return torch.where(u > 0, u, alpha * torch.expm1(torch.clamp(u, max=0.0)))


def _elu_d(u, alpha=1.0):
    return torch.where(u > 0, torch.ones_like(u), alpha * torch.exp(torch.clamp(u, max=0.0)))


def _swish_d(u):
    s = torch.sigmoid(u)
    return s * (1 + u * (1 - s))


def polynomial_activation(coeffs: Sequence[float], name: str | None = None) -> Activation:
    """``phi(z) = sum_j coeffs[j] z^j`` (``coeffs[0]`` is the constant term). Used for the rank bound of
    Panigrahi et al. 2020 (polynomial activations); see :func:`poly_rank_bound`."""
    coeffs = tuple(float(c) for c in coeffs)
    if len(coeffs) < 2 or all(c == 0 for c in coeffs[1:]):
        raise ValueError(f"a polynomial activation needs a non-constant part, got coeffs={coeffs}")
    while coeffs[-1] == 0:
        coeffs = coeffs[:-1]

    def phi(u):
        out = torch.zeros_like(u)
        for c in reversed(coeffs):
            out = out * u + c
        return out

    dcoeffs = [j * c for j, c in enumerate(coeffs)][1:]

    def dphi(u):
        out = torch.zeros_like(u)
        for c in reversed(dcoeffs):
            out = out * u + c
        return out

    return Activation(name or f"poly{len(coeffs) - 1}", phi, dphi, kink=False, poly_coeffs=coeffs)


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("relu", torch.relu, _relu_d, kink=True),
    "elu": Activation("elu", _elu, _elu_d, kink=True),
    "selu": Activation("selu", lambda u: SELU_LAMBDA * _elu(u, SELU_ALPHA),
                       lambda u: SELU_LAMBDA * _elu_d(u, SELU_ALPHA), kink=True),
    "tanh": Activation("tanh", torch.tanh, lambda u: 1 / torch.cosh(u) ** 2, kink=False),
    "swish": Activation("swish", lambda u: u * torch.sigmoid(u), _swish_d, kink=False),
    # phi(z) = z + z^2/2 + z^3/6, the cubic Taylor polynomial of exp(z) - 1
    "poly": polynomial_activation((0.0, 1.0, 0.5, 1 / 6), name="poly"),
}


def get_activation(activation: str | Activation) -> Activation:
    """Look up an activation by name (``relu, elu, selu, tanh, swish, poly``) or pass one through."""
    if isinstance(activation, Activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)} "
                         "or build one with polynomial_activation(coeffs)")
    return ACTIVATIONS[activation]


# ---------------------------------------------------------------------------------------------------------
# Hermite expansions
# ---------------------------------------------------------------------------------------------------------




def normalized_hermite(k_max: int, u: torch.Tensor) -> torch.Tensor:
    """``h_0(u), ..., h_{k_max}(u)`` stacked on a new first axis, ``h_k = He_k / sqrt(k!)`` (orthonormal
    under the standard Gaussian). Stable three-term recurrence
    ``h_{k+1} = (u h_k - sqrt(k) h_{k-1}) / sqrt(k+1)``."""
    k_max = check_int("k_max", k_max, 0)
    u = torch.as_tensor(u)
    out = torch.empty((k_max + 1, *u.shape), dtype=u.dtype, device=u.device)
    out[0] = 1
    if k_max >= 1:
        out[1] = u
    for k in range(1, k_max):
        out[k + 1] = (u * out[k] - math.sqrt(k) * out[k - 1]) / math.sqrt(k + 1)
    return out


def gauss_hermite_rule(order: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss–Hermite rule of ``order`` nodes for ``E[f(u)]``, ``u ~ N(0, 1)`` (probabilists' weight, weights
    summing to 1). Exact for polynomials ``f`` of degree ``<= 2 order - 1``.

    Nodes are the eigenvalues of the Jacobi matrix (Golub–Welsch, off-diagonal ``sqrt(k)``); weights are the
    Christoffel numbers ``1 / sum_{k<order} h_k(x_i)^2`` summed with a rescaled recurrence, so large orders
    (``numpy``'s ``hermegauss`` overflows beyond about 180 nodes) keep full relative accuracy. Nodes whose
    weight underflows to zero are dropped."""
    from scipy.linalg import eigh_tridiagonal

    order = check_int("order", order)
    x = eigh_tridiagonal(np.zeros(order), np.sqrt(np.arange(1, order, dtype=float)), eigvals_only=True)
    x = 0.5 * (x - x[::-1])  # exact symmetry
    h_prev, h = np.zeros_like(x), np.ones_like(x)
    total, log_scale = np.ones_like(x), np.zeros_like(x)
    for k in range(1, order):
        h_prev, h = h, (x * h - math.sqrt(k - 1) * h_prev) / math.sqrt(k)
        total += h * h
        big = total > 1e150
        if big.any():  # rescale h, h_prev and the running sum by 1e-75 (squares by 1e-150)
            h[big] *= 1e-75
            h_prev[big] *= 1e-75
            total[big] *= 1e-150
            log_scale[big] += 150 * math.log(10)
    w = np.exp(-(np.log(total) + log_scale))
    w = w / w.sum()
    keep = w > 0
    return torch.tensor(x[keep], dtype=dtype), torch.tensor(w[keep], dtype=dtype)


def split_gauss_rule(order: int, half_width: float = 16.0,
                     dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Rule for ``E[f(u)]``, ``u ~ N(0,1)``, when ``f`` has a jump or kink at 0: Gauss–Legendre with ``order``
    nodes on each of ``[-L, 0]`` and ``[0, L]`` (``L = half_width``), weights multiplied by the Gaussian
    density. Spectrally accurate for piecewise-smooth bounded ``f``: the Gaussian mass beyond ``L = 16`` is
    ``< 1e-57``, and ``|f h_k| e^{-u^2/2} < |f| e^{-u^2/4}`` there, so Hermite coefficients are accurate to
    about 1e-13 up to ``k = 300``. (To integrate squares of degree-``K`` polynomials take
    ``L > 2 sqrt(K)``.)"""
    order = check_int("order", order)
    if not half_width > 0:
        raise ValueError(f"half_width must be positive, got {half_width}")
    x, w = np.polynomial.legendre.leggauss(order)
    x = torch.tensor(x, dtype=dtype)
    w = torch.tensor(w, dtype=dtype) * half_width / 2
    nodes = torch.cat([(x - 1) * half_width / 2, (x + 1) * half_width / 2])
    weights = torch.cat([w, w]) * torch.exp(-nodes**2 / 2) / math.sqrt(2 * math.pi)
    return nodes, weights


def hermite_coefficients(f: Callable[[torch.Tensor], torch.Tensor], k_max: int, order: int = 200,
                         rule: str = "hermite", half_width: float = 16.0) -> torch.Tensor:
    """Hermite coefficients ``c_k = E[f(u) h_k(u)]``, ``k = 0..k_max``, ``u ~ N(0,1)``, by quadrature.

    ``rule="hermite"``: Gauss–Hermite of ``order`` nodes (:func:`gauss_hermite_rule`), exact when ``f`` is a
    polynomial of degree ``<= 2 order - 1 - k_max``, and exponentially accurate for analytic ``f`` (tanh,
    swish). ``rule="split"``: :func:`split_gauss_rule`, for ``f`` with a jump or kink at 0 (ReLU, ELU, SELU).
    Implements the expansion of ``phi'`` used in Panigrahi et al. 2020 (Hermite analysis of the G-matrix);
    used in ``chapters/overparametrization/activation-gram.md``."""
    k_max = check_int("k_max", k_max, 0)
    if rule == "hermite":
        nodes, weights = gauss_hermite_rule(order)
    elif rule == "split":
        nodes, weights = split_gauss_rule(order, half_width)
    else:
        raise ValueError(f"unknown quadrature rule {rule!r}; use 'hermite' (smooth f) or 'split' (kink at 0)")
    h = normalized_hermite(k_max, nodes)
    return (h * (f(nodes) * weights)).sum(-1)


def activation_hermite_coefficients(activation: str | Activation, k_max: int, order: int | None = None,
                                    derivative: bool = True) -> torch.Tensor:
    """Hermite coefficients of ``phi'`` (``derivative=True``, the ``c_k`` of the Gram series) or of ``phi``,
    choosing the rule by the activation: split Gauss–Legendre for kinked ones, Gauss–Hermite otherwise.
    ``order`` defaults to ``max(200, 2 k_max)`` nodes (per half-line for the split rule)."""
    act = get_activation(activation)
    k_max = check_int("k_max", k_max, 0)
    order = order if order is not None else max(200, 2 * k_max)
    return _cached_coefficients(act, k_max, order, derivative).clone()


@functools.lru_cache(maxsize=64)
def _cached_coefficients(act: Activation, k_max: int, order: int, derivative: bool) -> torch.Tensor:
    f = act.dphi if derivative else act.phi
    return hermite_coefficients(f, k_max, order=order, rule="split" if act.kink else "hermite")


def hermite_series(coeffs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Evaluate ``sum_k coeffs[k] h_k(u)``: the truncated Hermite series (reconstructs ``f`` in
    L2(N(0,1)))."""
    coeffs = torch.as_tensor(coeffs)
    u = torch.as_tensor(u, dtype=coeffs.dtype)
    return torch.tensordot(coeffs, normalized_hermite(len(coeffs) - 1, u), dims=1)


def hermite_tail(f: Callable[[torch.Tensor], torch.Tensor], coeffs: torch.Tensor, order: int = 400,
                 rule: str = "hermite") -> float:
    """Parseval tail ``E[f(u)^2] - sum_{k<=K} c_k^2 >= 0``: the Hermite mass a truncation at ``K`` drops. For
    the Gram series it bounds every entry of ``G - G_K`` (entries ``sum_{k>K} c_k^2 rho^{k+1}``)."""
    nodes, weights = gauss_hermite_rule(order) if rule == "hermite" else split_gauss_rule(order)
    return float((f(nodes) ** 2 * weights).sum() - (torch.as_tensor(coeffs) ** 2).sum())


# ---------------------------------------------------------------------------------------------------------
# Gram matrices
# ---------------------------------------------------------------------------------------------------------


def hermite_gram(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """``G_ij = sum_{k=0}^{K} c_k^2 <x_i, x_j>^{k+1}`` for unit-norm rows ``x_i`` (Panigrahi et al. 2020,
    Hermite form of the G-matrix). With ``c`` the coefficients of ``phi'`` truncated at ``K`` this is a
    lower bound of the infinite series in the PSD order (the dropped terms are Schur powers, hence PSD), so
    ``lambda_min(hermite_gram) <= lambda_min(G^inf)``; for a polynomial ``phi`` it is exact."""
    rho = cosines(x)
    coeffs = torch.as_tensor(coeffs, dtype=rho.dtype)
    g = torch.zeros_like(rho)
    power = rho.clone()
    for c in coeffs:
        g = g + c**2 * power
        power = power * rho
    return g


def polar_kernel(rho: torch.Tensor, dphi: Callable[[torch.Tensor], torch.Tensor], order_theta: int = 24,
                 order_r: int = 48, radius: float = 12.0, chunk: int = 4096) -> torch.Tensor:
    """``E[phi'(u) phi'(v)]`` for standard Gaussians with correlation ``rho`` (any shape), by 2-D quadrature
    in polar coordinates: ``u = r cos t``, ``v = r cos(t - g)``, ``g = arccos rho``. The angle is split at
    the four directions where ``u = 0`` or ``v = 0`` and Gauss–Legendre is used on each arc (``order_theta``
    nodes) and on ``r in [0, radius]`` (``order_r`` nodes), so a jump or kink of ``phi'`` at 0 costs no
    accuracy (~1e-14 for ReLU against the closed form). An independent check of the closed form and of the
    Hermite series; the kernel of ELU/SELU (no closed form used here)."""
    rho = torch.as_tensor(rho, dtype=torch.float64).clamp(-1.0, 1.0)
    flat = rho.reshape(-1)
    tn, tw = (torch.tensor(a, dtype=flat.dtype) for a in np.polynomial.legendre.leggauss(order_theta))
    rn, rw = (torch.tensor(a, dtype=flat.dtype) for a in np.polynomial.legendre.leggauss(order_r))
    r = (rn + 1) * radius / 2
    wr = rw * radius / 2 * r * torch.exp(-(r**2) / 2)
    out = torch.empty_like(flat)
    for s in range(0, flat.numel(), chunk):
        g = torch.arccos(flat[s:s + chunk])
        half = math.pi / 2
        b = torch.stack([torch.full_like(g, half), torch.full_like(g, 3 * half), g + half, g + 3 * half], 1)
        b = torch.remainder(b, 2 * math.pi).sort(1).values
        b = torch.cat([b, b[:, :1] + 2 * math.pi], 1)
        lo, hi = b[:, :-1], b[:, 1:]
        t = lo[..., None] + (hi - lo)[..., None] * (tn + 1) / 2  # (P, 4, qt)
        wt = (hi - lo)[..., None] * tw / 2
        u = r[:, None, None, None] * torch.cos(t)[None]
        v = r[:, None, None, None] * torch.cos(t - g[:, None, None])[None]
        vals = dphi(u) * dphi(v) * wt[None] * wr[:, None, None, None]
        out[s:s + chunk] = vals.sum((0, 2, 3)) / (2 * math.pi)
    return out.reshape(rho.shape)


def quadrature_gram(x: torch.Tensor, dphi: Callable[[torch.Tensor], torch.Tensor], **kw) -> torch.Tensor:
    """``G_ij = <x_i,x_j> E[phi'(u)phi'(v)]`` with the expectation from :func:`polar_kernel` (upper triangle
    evaluated once, then mirrored)."""
    rho = cosines(x)
    n = rho.shape[0]
    iu = torch.triu_indices(n, n)
    vals = polar_kernel(rho[iu[0], iu[1]], dphi, **kw).to(rho.dtype)
    k = torch.zeros_like(rho)
    k[iu[0], iu[1]] = vals
    k = k + k.T - torch.diag(k.diagonal())
    return k * rho


def gram_inf(x: torch.Tensor, activation: str | Activation, k_max: int = 300) -> torch.Tensor:
    """The infinite-width Gram matrix ``G^inf`` of the two-layer net for ``activation`` (Du et al. 2019,
    Eq. (3); Panigrahi et al. 2020), by the most accurate route available here:

    * ``relu``: the closed form ``<x_i,x_j>(pi - arccos<x_i,x_j>)/(2 pi)``
      (:func:`dltheory.numerics.kernels.relu_ntk_gram`);
    * smooth activations (tanh, swish, polynomials): the Hermite series :func:`hermite_gram` with ``k_max``
      terms (exact for polynomials; for tanh the dropped mass at ``k_max = 300`` is ``< 1e-12``);
    * other kinked activations (ELU, SELU): :func:`quadrature_gram`, because their Hermite series converges
      only algebraically."""
    act = get_activation(activation)
    x = unit_rows(x)
    if act.name == "relu":
        return relu_ntk_gram(x)
    if act.smooth:
        k = k_max if act.poly_coeffs is None else len(act.poly_coeffs) - 2
        return hermite_gram(x, activation_hermite_coefficients(act, k))
    return quadrature_gram(x, act.dphi)


def empirical_gram(x: torch.Tensor, activation: str | Activation, width: int, generator: torch.Generator,
                   replicas: int | None = None) -> torch.Tensor:
    """The finite-width Gram ``H_ij = <x_i,x_j> (1/m) sum_r phi'(w_r.x_i) phi'(w_r.x_j)``, ``w_r ~ N(0, I_d)``
    (Du et al. 2019, ``H(0)``): a Monte Carlo estimate of ``G^inf`` with error ``O(m^{-1/2})``. With
    ``replicas=R`` returns ``R`` independent estimates stacked (one batched draw, no Python loop)."""
    x = unit_rows(x)
    width = check_int("width", width)
    act = get_activation(activation)
    r = 1 if replicas is None else check_int("replicas", replicas)
    w = torch.randn(r, width, x.shape[1], generator=generator, dtype=x.dtype).to(x.device)
    d = act.dphi(torch.einsum("rmd,nd->rnm", w, x))
    h = d @ d.transpose(1, 2) / width * (x @ x.T)
    return h[0] if replicas is None else h


def relu_mc_rel_err_rms(x: torch.Tensor, width: int) -> float:
    """Predicted root-mean-square relative Frobenius error of :func:`empirical_gram` for ReLU:
    ``sqrt(sum_ij rho_ij^2 p_ij (1 - p_ij) / m) / ||G||_F`` with ``p_ij = (pi - arccos rho_ij)/(2 pi)``,
    because ``1{u>0}1{v>0}`` is Bernoulli(``p_ij``). Exact, not a bound."""
    from dltheory.numerics.kernels import relu_deriv_kernel

    rho = cosines(x)
    p = relu_deriv_kernel(rho)
    g = relu_ntk_gram(x)
    return float(torch.sqrt((rho**2 * p * (1 - p)).sum() / width) / g.norm())


def lambda_min(g: torch.Tensor) -> float:
    """Smallest eigenvalue of a symmetric matrix (``torch.linalg.eigvalsh``, float64)."""
    return float(torch.linalg.eigvalsh(torch.as_tensor(g, dtype=torch.float64))[0])


def numerical_rank(g: torch.Tensor, rtol: float = 1e-9) -> int:
    """Number of eigenvalues of the symmetric PSD matrix ``g`` above ``rtol * lambda_max``."""
    if not 0 < rtol < 1:
        raise ValueError(f"rtol must lie in (0, 1), got {rtol}")
    ev = torch.linalg.eigvalsh(torch.as_tensor(g, dtype=torch.float64))
    return int((ev > rtol * ev[-1]).sum())


def poly_rank_bound(d_sub: int, degree: int) -> int:
    """``sum_{k=1}^{p} C(d'+k-1, k)``: the dimension of polynomials of degree 1..p in ``d'`` variables, an
    upper bound on ``rank G^inf`` for a degree-``p`` polynomial activation when the data span a
    ``d'``-dimensional subspace (Panigrahi et al. 2020; powers ``<x_i,x_j>^k``, ``k = 1..p``)."""
    d_sub = check_int("d_sub", d_sub)
    degree = check_int("degree", degree)
    return sum(math.comb(d_sub + k - 1, k) for k in range(1, degree + 1))


def poly_rank_sphere(d_sub: int, powers: Sequence[int]) -> int:
    """Rank of ``sum_k b_k <x_i,x_j>^k`` (``b_k > 0`` exactly for ``k in powers``) for many generic points
    on the unit sphere of a ``d'``-dimensional subspace. On the sphere ``|x|^2 = 1``, so degree-``k``
    homogeneous polynomials contain those of degree ``k-2, k-4, ...``: the rank is
    ``C(d'+p_e-1, p_e) + C(d'+p_o-1, p_o)`` with ``p_e``/``p_o`` the largest even/odd power present.
    Equals :func:`poly_rank_bound` when the powers are ``{1, 2}`` and is smaller once a power ``>= 3``
    occurs together with the one two below it."""
    d_sub = check_int("d_sub", d_sub)
    powers = sorted({check_int("power", k) for k in powers})
    if not powers:
        raise ValueError("powers must contain at least one positive integer")
    total = 0
    for parity in (0, 1):
        ks = [k for k in powers if k % 2 == parity]
        if ks:
            total += math.comb(d_sub + max(ks) - 1, max(ks))
    return total


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------


def separation(x: torch.Tensor) -> float:
    """``delta = min_{i != j} min(|x_i - x_j|, |x_i + x_j|)``: the separation of Panigrahi et al. 2020 (and
    Du et al. 2019), which counts near-antipodal pairs as close."""
    rho = cosines(x)
    n = rho.shape[0]
    if n < 2:
        return float("inf")
    off = rho.abs()[~torch.eye(n, dtype=torch.bool, device=rho.device)]
    return float(torch.sqrt(torch.clamp(2 - 2 * off.max(), min=0.0)))


def subspace_sphere_data(n: int, d: int, d_sub: int, generator: torch.Generator, min_sep: float = 0.0,
                         max_tries: int = 100_000, dtype=torch.float64) -> torch.Tensor:
    """``n`` unit vectors in ``R^d`` spread uniformly on the unit sphere of a random ``d_sub``-dimensional
    subspace (Panigrahi et al. 2020, data of small dimension ``d'``). With ``min_sep > 0`` points are drawn
    one at a time and rejected until ``min(|x_i - x_j|, |x_i + x_j|) >= min_sep`` for all pairs (random
    sequential packing; on a circle it succeeds for ``min_sep`` up to about ``0.7 pi / n``)."""
    n = check_int("n", n)
    d = check_int("d", d)
    d_sub = check_int("d_sub", d_sub)
    if d_sub > d:
        raise ValueError(f"d_sub must be <= d, got d_sub={d_sub} > d={d}")
    if min_sep < 0 or min_sep >= math.sqrt(2):
        raise ValueError(f"min_sep must lie in [0, sqrt(2)), got {min_sep}")
    q, _ = torch.linalg.qr(torch.randn(d, d_sub, generator=generator, dtype=dtype))
    pts: list[torch.Tensor] = []
    tries = 0
    while len(pts) < n:
        tries += 1
        if tries > max_tries:
            raise RuntimeError(f"could not place {n} points with separation {min_sep} on a {d_sub}-dim "
                               f"sphere in {max_tries} draws; lower min_sep (0.7*pi/n works on a circle)")
        z = torch.randn(d_sub, generator=generator, dtype=dtype)
        z = z / z.norm()
        if min_sep > 0 and pts:
            p = torch.stack(pts)
            if torch.minimum((p - z).norm(dim=1), (p + z).norm(dim=1)).min() < min_sep:
                continue
        pts.append(z)
    return torch.stack(pts) @ q.T


# ---------------------------------------------------------------------------------------------------------
# Networks and training
# ---------------------------------------------------------------------------------------------------------


def two_layer_net(activation: str | Activation, d: int, width: int, generator: torch.Generator,
                  dtype=torch.float64, device=None):
    """``F(x) = m^{-1/2} sum_r a_r phi(w_r . x)``, ``w_r ~ N(0, I_d)``, ``a_r`` uniform signs, fixed
    (Du et al. 2019, Eq. (1); Panigrahi et al. 2020). Returns ``(params, forward)`` with
    ``params = {"W1": (m, d)}`` (the trained layer) and ``forward(params, x) -> (n,)``."""
    act = get_activation(activation)
    width = check_int("width", width)
    w1 = torch.randn(width, d, generator=generator, dtype=dtype)
    a = torch.randint(0, 2, (width,), generator=generator).to(dtype) * 2 - 1
    w1, a = w1.to(device), a.to(device)
    scale = 1 / math.sqrt(width)

    def forward(params, x):
        return act.phi(x @ params["W1"].T) @ a * scale

    return {"W1": w1}, forward


def three_layer_net(activation: str | Activation, d: int, width: int, generator: torch.Generator,
                    gain: float = 1.0, dtype=torch.float64, device=None):
    """``F(x) = m^{-1/2} a . phi(gain m^{-1/2} W2 phi(W1 x))`` with standard Gaussian ``W1 (m, d)``,
    ``W2 (m, m)`` (both trained) and fixed signs ``a``. ``gain`` scales the second pre-activation;
    ``gain > 1`` puts tanh in its decorrelating ("chaotic") regime, where depth spreads low-dimensional
    data."""
    act = get_activation(activation)
    width = check_int("width", width)
    if not gain > 0:
        raise ValueError(f"gain must be positive, got {gain}")
    w1 = torch.randn(width, d, generator=generator, dtype=dtype)
    w2 = torch.randn(width, width, generator=generator, dtype=dtype)
    a = torch.randint(0, 2, (width,), generator=generator).to(dtype) * 2 - 1
    w1, w2, a = w1.to(device), w2.to(device), a.to(device)
    scale = 1 / math.sqrt(width)

    def forward(params, x):
        h = act.phi(x @ params["W1"].T)
        return act.phi(gain * scale * h @ params["W2"].T) @ a * scale

    return {"W1": w1, "W2": w2}, forward


def empirical_ntk(forward, params: dict, x: torch.Tensor) -> torch.Tensor:
    """``H = J J^T`` with ``J`` the Jacobian of the outputs on ``x`` with respect to every tensor in
    ``params`` (``torch.func.jacrev``). For :func:`two_layer_net` this is :func:`empirical_gram` of its
    weights."""
    from torch.func import jacrev

    jac = jacrev(forward)(params, x)
    n = x.shape[0]
    return sum(j.reshape(n, -1) @ j.reshape(n, -1).T for j in jac.values())


def linearized_losses(h: torch.Tensor, r0: torch.Tensor, eta: float, steps: int) -> torch.Tensor:
    """Loss curve of gradient descent on ``0.5 |u - y|^2`` when the kernel stays at ``h``:
    ``u_t - y = (I - eta h)^t (u_0 - y)``, so ``L_t = 0.5 sum_k (1 - eta lambda_k)^{2t} <v_k, r_0>^2``
    (Du et al. 2019, Sec. 3; Arora et al. 2019). Returns ``L_0..L_{steps-1}``."""
    ev, v = torch.linalg.eigh(h)
    proj = (v.T @ r0) ** 2
    t = torch.arange(steps, dtype=h.dtype, device=h.device)
    return 0.5 * ((1 - eta * ev)[None, :].abs() ** (2 * t[:, None]) * proj[None, :]).sum(1)


def train_gd(forward, params: dict, x: torch.Tensor, y: torch.Tensor, steps: int, lr_scale: float = 1.0,
             output_scale: float = 1.0, center: bool = False):
    """Full-batch gradient descent on ``0.5 sum_i (u(x_i) - y_i)^2`` over every tensor in ``params``, with
    ``u = output_scale * (F - F_0)`` if ``center`` else ``output_scale * F`` (``F_0`` the outputs at
    initialization) and step ``eta = lr_scale / lambda_max(H(0))`` (``H(0)`` the empirical NTK of ``u``).

    ``output_scale > 1`` with ``center=True`` is lazy training (Chizat, Oyallon & Bach 2019): the weights
    move ``output_scale`` times less for the same change of ``u``, so a moderate width follows its kernel.
    Returns a dict with ``losses`` (``steps`` values, before each step), ``predicted`` (the kernel-regime
    curve :func:`linearized_losses` from ``H(0)``), ``eta``, ``ntk_eigs`` (eigenvalues of ``H(0)``,
    ascending) and ``params`` (trained). Used in ``chapters/overparametrization/activation-gram.md``."""
    steps = check_int("steps", steps)
    if not 0 < lr_scale < 2:
        raise ValueError(f"lr_scale must lie in (0, 2) (eta = lr_scale / lambda_max), got {lr_scale}")
    if not output_scale > 0:
        raise ValueError(f"output_scale must be positive, got {output_scale}")
    with torch.no_grad():
        f0 = forward(params, x) if center else torch.zeros_like(y)

    def u(p):
        return output_scale * (forward(p, x) - f0)

    h0 = empirical_ntk(lambda p, _x: u(p), params, x)
    eigs = torch.linalg.eigvalsh(h0)
    eta = lr_scale / float(eigs[-1])
    with torch.no_grad():
        r0 = u(params) - y
    p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    losses = torch.empty(steps, dtype=x.dtype, device=x.device)
    for t in range(steps):
        loss = 0.5 * ((u(p) - y) ** 2).sum()
        losses[t] = loss.detach()
        grads = torch.autograd.grad(loss, list(p.values()))
        with torch.no_grad():
            for v, g in zip(p.values(), grads):
                v -= eta * g
    return {"losses": losses.cpu(), "predicted": linearized_losses(h0, r0, eta, steps).cpu(), "eta": eta,
            "ntk_eigs": eigs.cpu(), "params": {k: v.detach() for k, v in p.items()}}
