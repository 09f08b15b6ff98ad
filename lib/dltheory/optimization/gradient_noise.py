"""Is the noise of SGD Gaussian? Gaussianity tests, cumulants, the tail-index estimator and its pooling bias.

Defined for the chapter *Is the noise of SGD Gaussian?* (``chapters/optimization/gradient-noise.md``), after
Panigrahi, Somani, Goyal & Netrapalli 2019, "Non-Gaussianity of Stochastic Gradient Noise" (reference code
``abhishekpanigrahi1996/SGD_noise``), which answers Simsekli, Sagun & Gurbuzbalaban 2019, "A tail-index analysis of
stochastic gradient noise in deep neural networks". The per-example gradients and the minibatch noise as a count
matrix times them live in the shared numerics (:mod:`dltheory.numerics.pergrad`); this module holds what the chapter
measures on that noise:

* :func:`sample_cumulants`, :func:`cumulant_prediction`, :func:`ratio_through_origin`, :func:`cumulant_check` --
  variance, skewness and excess kurtosis against the law ``kappa_r(B) = kappa_r(1) B^(1-r)`` of a mean of ``B``
  i.i.d. draws;
* :func:`shapiro_pvalues`, :func:`rejection_rate`, :func:`gaussian_threshold` -- Shapiro-Wilk tests
  (``scipy.stats.shapiro``) of the noise projected on directions, and the smallest batch that passes;
* :func:`tail_index`, :func:`pooled_tail_index` -- the estimator of Mohammadi et al. 2015 (Cor. 2.4) exactly as
  the reference code's ``utils.alpha_estimator``, per direction or pooled over shuffled coordinates with the block
  size of ``main.py`` (the largest divisor of the sample size that is at most its square root);
* :func:`pooled_tail_index_prediction` -- what that pooled estimator returns when every coordinate is Gaussian
  but the scales differ; :func:`symmetric_stable` -- symmetric alpha-stable draws (Chambers-Mallows-Stuck);
* :func:`train_sgd`, :func:`random_directions`, :func:`nonconstant_coordinates`, :func:`noise_statistics` --
  the experiment: checkpoints of SGD, the directions, the coordinates kept, all statistics at every batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from dltheory.numerics.mlp import check_widths, mlp_apply
from dltheory.numerics.pergrad import sample_minibatch_noise
from dltheory.numerics.validate import check_int, check_positive

# ---------------------------------------------------------------------------------------------------------------
# Cumulants and the B^(1-r) law
# ---------------------------------------------------------------------------------------------------------------


def sample_cumulants(x: torch.Tensor, unbiased: bool = True) -> dict[str, torch.Tensor]:
    """Variance, skewness and excess kurtosis of every column of ``x`` (``(K,)`` or ``(K, R)``).

    ``unbiased=True``: the sample estimators ``k_2``, ``G_1``, ``G_2`` (``scipy.stats.skew/kurtosis`` with
    ``bias=False``), for ``K`` measured minibatch noises; ``unbiased=False``: the moments of the empirical
    distribution itself (``1/K`` weights) -- the exact cumulants of "one example drawn uniformly" when ``x`` holds
    all ``N`` per-example noises. Chapter ``gradient-noise.md``, the measured side of ``kappa_r(B)``.
    """
    x = x.double()
    if x.dim() == 1:
        x = x.unsqueeze(1)
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"need at least 4 samples per column for the kurtosis, got {n}")
    d = x - x.mean(0)
    m2, m3, m4 = (d**2).mean(0), (d**3).mean(0), (d**4).mean(0)
    g1, g2 = m3 / m2**1.5, m4 / m2**2 - 3.0
    if not unbiased:
        return {"var": m2, "skew": g1, "exkurt": g2}
    var = m2 * n / (n - 1)
    skew = g1 * math.sqrt(n * (n - 1)) / (n - 2)
    exkurt = ((n + 1) * g2 + 6.0) * (n - 1) / ((n - 2) * (n - 3))
    return {"var": var, "skew": skew, "exkurt": exkurt}


def cumulant_prediction(one: dict[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
    """The cumulants of a mean of ``batch`` i.i.d. copies from those of one copy (``one``, as returned by
    :func:`sample_cumulants`): ``kappa_r(B) = kappa_r B^(1-r)``, i.e. variance ``/B``, skewness ``/sqrt(B)``, excess
    kurtosis ``/B`` (chapter ``gradient-noise.md``, derived there from ``K_B(t) = B K(t/B)``)."""
    batch = check_int("batch", batch)
    return {"var": one["var"] / batch, "skew": one["skew"] / math.sqrt(batch), "exkurt": one["exkurt"] / batch}


def ratio_through_origin(measured, predicted) -> float:
    """Least-squares slope of ``measured`` on ``predicted`` through the origin, ``sum(m p) / sum(p^2)``: one
    "measured / predicted" number for many directions whose predictions differ in size and sign (chapter
    ``gradient-noise.md``, the cumulant ratios)."""
    m = torch.as_tensor(measured, dtype=torch.float64).flatten()
    p = torch.as_tensor(predicted, dtype=torch.float64).flatten()
    if m.shape != p.shape or m.numel() == 0:
        raise ValueError(f"measured and predicted need the same non-zero length, got {m.numel()} and {p.numel()}")
    den = float((p * p).sum())
    if den == 0.0:
        raise ValueError("every prediction is zero; the ratio is undefined")
    return float((m * p).sum()) / den


# ---------------------------------------------------------------------------------------------------------------
# Gaussianity tests
# ---------------------------------------------------------------------------------------------------------------


def shapiro_pvalues(samples) -> np.ndarray:
    """Shapiro-Wilk p-value (``scipy.stats.shapiro``) of every column of ``samples`` (``(K, R)``; ``K`` between
    3 and 5000, where scipy's p-values are accurate). Chapter ``gradient-noise.md``; Panigrahi et al. 2019 (Gaussianity
    tests of the noise)."""
    from scipy.stats import shapiro

    a = np.asarray(torch.as_tensor(samples).double().cpu().numpy())
    if a.ndim == 1:
        a = a[:, None]
    if not 3 <= a.shape[0] <= 5000:
        raise ValueError(f"Shapiro-Wilk needs 3 to 5000 samples per test, got {a.shape[0]}; change the number of "
                         "minibatches")
    return np.asarray(shapiro(a, axis=0).pvalue, dtype=float).reshape(a.shape[1])


def rejection_rate(pvalues, level: float = 0.05) -> float:
    """Fraction of tests that reject Gaussianity at ``level`` (``p < level``); about ``level`` when every tested
    projection is Gaussian (chapter ``gradient-noise.md``)."""
    level = check_positive("level", level)
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        raise ValueError("no p-values given")
    return float(np.mean(p < level))


def gaussian_threshold(batches, rates, level: float = 0.25) -> int | None:
    """The smallest batch size whose rejection rate is at most ``level`` (``None`` if none is): the chapter's
    "batch size from which the noise looks Gaussian" (``gradient-noise.md``; Panigrahi et al. 2019, abstract: 256 and
    above, early in training). It depends on the number of minibatches per test: state that next to it."""
    level = check_positive("level", level)
    pairs = sorted(zip([int(b) for b in batches], [float(r) for r in rates]))
    if not pairs:
        raise ValueError("no batch sizes given")
    return next((b for b, r in pairs if r <= level), None)


# ---------------------------------------------------------------------------------------------------------------
# Tail index (Mohammadi et al. 2015, as Simsekli et al. 2019 use it)
# ---------------------------------------------------------------------------------------------------------------


def block_size(n: int) -> int:
    """The block size ``m`` of the reference code (``main.py``): the largest divisor of ``n`` with ``m <= sqrt(n)``
    (chapter ``gradient-noise.md``)."""
    n = check_int("n", n)
    return max(i for i in range(1, math.isqrt(n) + 1) if n % i == 0)


def tail_index(x: torch.Tensor, m: int | None = None) -> torch.Tensor:
    """Tail-index estimate ``alpha`` of every column of ``x`` (``(K,)`` or ``(K, R)``), Mohammadi et al. 2015,
    Cor. 2.4, as in the reference code's ``utils.alpha_estimator``: split the ``K = m K2`` samples into ``K2``
    blocks of ``m``, sum each block to ``Y``, and

    ``1 / alpha = (mean log|Y| - mean log|X|) / log m``.

    For a symmetric alpha-stable law a block sum is ``m^(1/alpha)`` times a copy, so the estimate is ``alpha``
    at every scale; for a Gaussian it is 2. ``m`` defaults to :func:`block_size` of ``K``. Chapter
    ``gradient-noise.md``; Simsekli et al. 2019 (their tail-index estimate).
    """
    x = torch.as_tensor(x).double()
    if x.dim() == 1:
        x = x.unsqueeze(1)
    k = x.shape[0]
    m = block_size(k) if m is None else check_int("m", m)
    if m < 2 or k % m != 0:
        raise ValueError(f"the block size m = {m} must be >= 2 and divide the {k} samples; choose a number of "
                         "samples with a divisor between 2 and its square root (a power of 2, say)")
    eps = float(np.spacing(1))  # as utils.alpha_estimator
    y = x.view(k // m, m, -1).sum(1)
    diff = (torch.log(y.abs() + eps).mean(0) - torch.log(x.abs() + eps).mean(0)) / math.log(m)
    return 1.0 / diff


def pooled_tail_index(noise: torch.Tensor, generator: torch.Generator, m: int | None = None) -> tuple[float, int]:
    """The tail index of Simsekli et al. 2019: every coordinate of every noise vector in ``noise``
    (``(K, P)``) pooled into one sample of ``K P`` scalars, *shuffled* (blocks must not be runs of neighbouring
    coordinates), then :func:`tail_index` with the reference code's block size (``main.py``). Returns
    ``(alpha, m)``. Chapter ``gradient-noise.md``."""
    flat = torch.as_tensor(noise).double().flatten()
    flat = flat[torch.randperm(flat.numel(), generator=generator).to(flat.device)]
    m = block_size(flat.numel()) if m is None else check_int("m", m)
    return float(tail_index(flat, m)[0]), m


def pooled_tail_index_prediction(variances, m: int, generator: torch.Generator, blocks: int = 4096) -> float:
    """What :func:`pooled_tail_index` returns, in expectation of ``1/alpha``, when coordinate ``j`` is an
    independent Gaussian of variance ``variances[j]`` (every coordinate equally often in the pool):

    ``1/alpha = (E_S[ (1/2) log sum_{j in S} sigma_j^2 ] - mean_j log sigma_j) / log m``,

    with ``S`` a block of ``m`` coordinates drawn uniformly (``blocks`` Monte Carlo blocks; no Gaussian is drawn,
    the ``E log|Z|`` terms cancel). By Jensen's inequality the estimate is below 2 unless all scales are equal:
    heterogeneous scales alone make a pool of Gaussians look heavy-tailed. Chapter ``gradient-noise.md``.
    """
    v = torch.as_tensor(variances, dtype=torch.float64).flatten()
    m, blocks = check_int("m", m, minimum=2), check_int("blocks", blocks)
    if v.numel() == 0 or not torch.all(v > 0):
        raise ValueError("variances must be positive; drop the always-zero coordinates first")
    idx = torch.randint(v.numel(), (blocks, m), generator=generator).to(v.device)
    log_block = 0.5 * torch.log(v[idx].sum(1)).mean()
    log_single = 0.5 * torch.log(v).mean()
    return float(math.log(m) / (log_block - log_single))


def symmetric_stable(alpha: float, size, generator: torch.Generator) -> torch.Tensor:
    """Draws of the standard symmetric alpha-stable law (characteristic function ``exp(-|t|^alpha)``), by the method
    of Chambers, Mallows & Stuck 1976: ``V ~ U(-pi/2, pi/2)``, ``W ~ Exp(1)``,
    ``X = sin(alpha V) / cos(V)^(1/alpha) * (cos((1 - alpha) V) / W)^((1 - alpha) / alpha)``. ``alpha = 2`` gives
    ``N(0, 2)``. The competing hypothesis of chapter ``gradient-noise.md`` (the alpha-stable model of
    Simsekli et al. 2019)."""
    alpha = check_positive("alpha", alpha)
    if alpha > 2:
        raise ValueError(f"alpha must lie in (0, 2], got {alpha}")
    size = (size,) if isinstance(size, int) else tuple(size)
    v = (torch.rand(size, generator=generator, dtype=torch.float64) - 0.5) * math.pi
    w = -torch.log1p(-torch.rand(size, generator=generator, dtype=torch.float64))
    return (torch.sin(alpha * v) / torch.cos(v) ** (1 / alpha)
            * (torch.cos((1 - alpha) * v) / w) ** ((1 - alpha) / alpha))


# ---------------------------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------------------------


def train_sgd(theta0: torch.Tensor, X: torch.Tensor, y: torch.Tensor, widths, lr: float, batch: int,
              checkpoints, generator: torch.Generator, activation: str = "tanh") -> dict[int, torch.Tensor]:
    """Plain SGD on the cross-entropy of the flat MLP ``widths`` (minibatches of ``batch`` i.i.d. examples), returning
    the parameters after each step count in ``checkpoints`` (``0`` = initialization). The training run whose noise
    chapter ``gradient-noise.md`` inspects (Panigrahi et al. 2019: SGD, noise measured along training)."""
    widths = check_widths(widths)
    lr, batch = check_positive("lr", lr), check_int("batch", batch)
    steps = sorted({check_int("checkpoint", c, minimum=0) for c in checkpoints})
    if not steps:
        raise ValueError("give at least one checkpoint (a number of SGD steps, 0 = initialization)")

    theta, out = theta0.detach().clone().requires_grad_(True), {}
    for step in range(steps[-1] + 1):
        if step in steps:
            out[step] = theta.detach().clone()
        if step == steps[-1]:
            break
        idx = torch.randint(X.shape[0], (batch,), generator=generator).to(X.device)
        loss = torch.nn.functional.cross_entropy(mlp_apply(theta, X[idx], widths, activation), y[idx])
        (g,) = torch.autograd.grad(loss, theta)
        with torch.no_grad():
            theta -= lr * g
    return out


def full_xent(theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, widths, activation: str = "tanh") -> float:
    """Training cross-entropy of the flat MLP on the whole set (chapter ``gradient-noise.md``, the checkpoints)."""
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(mlp_apply(theta, X, widths, activation), y))


def nonconstant_coordinates(G: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the parameter coordinates whose per-example gradient is not zero for every example. The
    first-layer weights of an always-zero pixel (digits has several) never move: their noise is exactly 0, and
    ``log 0`` would wreck the tail-index estimator. Chapter ``gradient-noise.md``."""
    if G.dim() != 2:
        raise ValueError(f"G must be the (N, P) per-example gradients, got shape {tuple(G.shape)}")
    return G.abs().amax(0) > 0


def random_directions(p: int, r: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """``(p, r)``: ``r`` directions drawn uniformly on the unit sphere of ``R^p`` (normalized Gaussians), the
    random projections of chapter ``gradient-noise.md`` (Panigrahi et al. 2019)."""
    p, r = check_int("p", p), check_int("r", r)
    u = torch.randn(p, r, generator=generator, dtype=dtype)
    return u / u.norm(dim=0, keepdim=True)


@dataclass
class NoiseStats:
    """Every statistic of :func:`noise_statistics` at one checkpoint, per batch size (lists aligned with
    ``batches``); ``one`` holds the exact cumulants of one example's noise along each direction, ``directions`` and
    ``coordinates`` what was tested."""

    batches: list[int]
    minibatches: int
    one: dict[str, torch.Tensor]
    directions: torch.Tensor
    coordinates: torch.Tensor
    measured: list[dict[str, torch.Tensor]] = field(default_factory=list)
    reject_dir: list[float] = field(default_factory=list)
    reject_coord: list[float] = field(default_factory=list)
    alpha_dir: list[float] = field(default_factory=list)

    def at(self, batch: int) -> int:
        if batch not in self.batches:
            raise ValueError(f"batch {batch} was not measured; measured: {self.batches}")
        return self.batches.index(batch)

    def ratio(self, key: str, batch: int) -> float:
        """Measured / predicted ``key`` (``"var"``, ``"skew"``, ``"exkurt"``) at ``batch``, over all directions."""
        pred = cumulant_prediction(self.one, batch)[key]
        return ratio_through_origin(self.measured[self.at(batch)][key], pred)


def noise_statistics(G: torch.Tensor, batches, minibatches: int, U: torch.Tensor, coords: torch.Tensor,
                     generator: torch.Generator, level: float = 0.05, replace: bool = True) -> NoiseStats:
    """All per-batch-size statistics of chapter ``gradient-noise.md`` at one checkpoint, from the per-example
    gradients ``G`` (``(N, P)``) alone: for every ``B`` in ``batches``, ``minibatches`` independent minibatches
    (i.i.d. draws with replacement by default) give the noise ``(C/B - 1/N) G`` projected on the columns of ``U``
    (``(P, R)``) and on the coordinates ``coords``; recorded are the Shapiro-Wilk rejection rates at ``level`` along
    directions and coordinates, the sample cumulants along directions, and the mean tail index along directions.
    Panigrahi et al. 2019 (the tests); Simsekli et al. 2019 (the tail index)."""
    minibatches = check_int("minibatches", minibatches)
    batches = [check_int("batch", b) for b in batches]
    GU, GC = G @ U.to(G), G[:, coords]
    one = sample_cumulants(GU - GU.mean(0), unbiased=False)
    st = NoiseStats(batches=batches, minibatches=minibatches, one=one, directions=U, coordinates=coords)
    for b in batches:
        noise = sample_minibatch_noise(torch.cat([GU, GC], 1), b, minibatches, generator, replace=replace)
        nd, nc = noise[:, :GU.shape[1]], noise[:, GU.shape[1]:]
        st.measured.append(sample_cumulants(nd))
        st.reject_dir.append(rejection_rate(shapiro_pvalues(nd), level))
        st.reject_coord.append(rejection_rate(shapiro_pvalues(nc), level))
        st.alpha_dir.append(float(tail_index(nd).mean()))
    return st


def cumulant_check(P: torch.Tensor, batch: int, minibatches: int, generator: torch.Generator,
                   replace: bool = True, groups: int = 8) -> dict[str, float]:
    """Measured / predicted variance, skewness and excess kurtosis of the minibatch noise at ``batch``, over all
    columns of the projected per-example gradients ``P`` (``(N, R)``: directions and coordinates), from
    ``minibatches`` fresh minibatches; the prediction is ``kappa_r(1) B^(1-r)`` with the exact one-example
    cumulants of the ``N`` examples (:func:`cumulant_prediction`), the ratio the least-squares slope of
    :func:`ratio_through_origin`. Standard errors (``var_se``, ``skew_se``, ``exkurt_se``) come from ``groups``
    disjoint groups of minibatches (batch means: the spread of the group ratios over ``sqrt(groups)``), because
    normal-theory errors are far too small for heavy-tailed projections. Chapter ``gradient-noise.md``."""
    batch, minibatches = check_int("batch", batch), check_int("minibatches", minibatches)
    groups = check_int("groups", groups, minimum=2)
    if minibatches % groups or minibatches // groups < 4:
        raise ValueError(f"minibatches = {minibatches} must split into {groups} equal groups of at least 4")
    one = sample_cumulants(P - P.mean(0), unbiased=False)
    pred = cumulant_prediction(one, batch)
    noise = sample_minibatch_noise(P, batch, minibatches, generator, replace=replace)
    meas = sample_cumulants(noise)
    keys = ("var", "skew", "exkurt")
    out = {k: ratio_through_origin(meas[k], pred[k]) for k in keys}
    per_group = [sample_cumulants(chunk) for chunk in noise.chunk(groups)]
    for k in keys:
        r = torch.tensor([ratio_through_origin(g[k], pred[k]) for g in per_group])
        out[f"{k}_se"] = float(r.std() / math.sqrt(groups))
    return out
