"""Batch-size scaling rules, SVAG, and the two experiments of the SDE chapter.

Defined for the chapter *SDEs for adaptive methods and the square-root scaling rule*
(``chapters/optimization/sde-scaling-rules.md``), after Malladi, Lyu, Panigrahi & Arora 2022, "On the SDEs and
Scaling Rules for Adaptive Gradient Algorithms" (reference code: ``abhishekpanigrahi1996/Adaptive-SDE``).

The scaling rules (:func:`scale_sqrt`, :func:`scale_linear`, :func:`scale_none`; the paper's Def. 4.1) and SVAG
(:func:`svag_hparams`, :func:`svag_combine`) act on :class:`HParams`. The rest of the module holds the chapter's two
experiments: online noisy linear regression with many RMSprop replicas, and Adam-SVAG on scikit-learn digits with a
batch of small MLPs. The optimizer updates themselves are :mod:`dltheory.numerics.optimizers`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from dltheory.numerics.optimizers import (
    _check_beta,
    adam_init,
    adam_update,
    gaussian_like,
    rmsprop_init,
    rmsprop_update,
)
from dltheory.numerics.validate import check_nonnegative, check_positive


def _check_factor(name: str, value) -> None:
    if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value) and value >= 1):
        raise ValueError(f"{name} must be a finite number >= 1, got {value!r}")


# ---------------------------------------------------------------------------------------------------------------
# Hyperparameters, scaling rules and SVAG
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HParams:
    """Hyperparameters of a run: learning rate, batch size, number of steps, and for adaptive methods the decay
    rates (``beta1 = None`` means no momentum, i.e. RMSprop) and ``eps``. ``steps`` may be fractional after a
    rule divides it; :meth:`n_steps` rounds it."""

    lr: float
    batch: int
    steps: float
    beta2: float | None = None
    beta1: float | None = None
    eps: float = 0.0

    def __post_init__(self):
        check_positive("lr", self.lr)
        if isinstance(self.batch, bool) or not isinstance(self.batch, int | np.integer) or self.batch < 1:
            raise ValueError(f"batch must be a positive integer, got {self.batch!r}")
        if not (isinstance(self.steps, int | float) and math.isfinite(self.steps) and self.steps > 0):
            raise ValueError(f"steps must be a positive number, got {self.steps!r}")
        if self.beta2 is not None:
            _check_beta("beta2", self.beta2)
        if self.beta1 is not None:
            _check_beta("beta1", self.beta1)
        check_nonnegative("eps", self.eps)

    @property
    def adaptive(self) -> bool:
        return self.beta2 is not None

    def n_steps(self) -> int:
        """The number of steps, rounded to the nearest integer (at least 1)."""
        return max(1, int(round(self.steps)))


def scale_sqrt(hp: HParams, kappa: float) -> HParams:
    """The square-root scaling rule of Malladi et al. 2022 (RMSprop and Adam) for batch ``B -> kappa B``:
    ``lr -> sqrt(kappa) lr``, ``1 - beta -> kappa (1 - beta)`` (both betas for Adam), ``eps -> eps / sqrt(kappa)``,
    ``steps -> steps / kappa``. It keeps ``sigma lr``, ``eps lr``, ``(1 - beta)/lr^2`` and ``steps lr^2`` fixed.

    Raises ``ValueError`` where the rule breaks, ``kappa (1 - beta) >= 1`` (the new decay rate would be <= 0).
    Used in ``chapters/optimization/sde-scaling-rules.md``."""
    _check_factor("kappa", kappa)
    if not hp.adaptive:
        raise ValueError("the square-root rule is for adaptive methods (give beta2); for SGD use scale_linear")
    for name in ("beta2", "beta1"):
        b = getattr(hp, name)
        if b is not None and kappa * (1 - b) >= 1:
            raise ValueError(f"the square-root rule breaks: kappa * (1 - {name}) = {kappa * (1 - b):.3g} >= 1, so the "
                             f"scaled {name} would be <= 0; use kappa < {1 / (1 - b):.4g} or a {name} closer to 1")
    r = math.sqrt(kappa)
    return replace(hp, lr=hp.lr * r, batch=int(round(hp.batch * kappa)), steps=hp.steps / kappa,
                   beta2=1 - kappa * (1 - hp.beta2),
                   beta1=None if hp.beta1 is None else 1 - kappa * (1 - hp.beta1), eps=hp.eps / r)


def scale_linear(hp: HParams, kappa: float) -> HParams:
    """The linear scaling rule (Goyal et al. 2017, Sec. 2.1: 'multiply the learning rate by k'), epochs fixed:
    ``lr -> kappa lr``, ``steps -> steps / kappa``, decay rates and ``eps`` unchanged. Right for SGD; the chapter
    shows it is wrong for RMSprop/Adam. Used in ``chapters/optimization/sde-scaling-rules.md``."""
    _check_factor("kappa", kappa)
    return replace(hp, lr=hp.lr * kappa, batch=int(round(hp.batch * kappa)), steps=hp.steps / kappa)


def scale_none(hp: HParams, kappa: float) -> HParams:
    """No scaling: only the batch grows (``B -> kappa B``) and the number of epochs stays fixed
    (``steps -> steps / kappa``). Used in ``chapters/optimization/sde-scaling-rules.md``."""
    _check_factor("kappa", kappa)
    return replace(hp, batch=int(round(hp.batch * kappa)), steps=hp.steps / kappa)


SCALING_RULES = {"sqrt": scale_sqrt, "linear": scale_linear, "none": scale_none}


def svag_coefficients(ell: float, adaptive: bool = True) -> tuple[float, float]:
    """SVAG's weights ``(r1, r2) = ((1 + s)/2, (1 - s)/2)`` for ``g = r1 g1 + r2 g2`` with independent ``g1, g2``:
    ``r1 + r2 = 1`` (unbiased) and ``r1^2 + r2^2 = (1 + s^2)/2`` (the noise variance multiplier).

    For SGD (Li, Malladi & Arora 2021, SVAG) ``s = sqrt(2 ell - 1)``: variance ``x ell``. For adaptive methods
    (Malladi et al. 2022, SVAG for RMSprop/Adam; ``svag_train`` in their ``cifar_main.py``) ``s =
    sqrt(2 ell^2 - 1)``: variance ``x ell^2``, so that ``sigma lr`` stays fixed when ``lr -> lr / ell``."""
    _check_factor("ell", ell)
    s = math.sqrt(2 * ell**2 - 1) if adaptive else math.sqrt(2 * ell - 1)
    return (1 + s) / 2, (1 - s) / 2


def svag_combine(g1: torch.Tensor, g2: torch.Tensor, ell: float, adaptive: bool = True) -> torch.Tensor:
    """SVAG's gradient ``r1 g1 + r2 g2`` from two independent stochastic gradients (:func:`svag_coefficients`)."""
    r1, r2 = svag_coefficients(ell, adaptive)
    return r1 * g1 + r2 * g2


def svag_hparams(hp: HParams, ell: float) -> HParams:
    """SVAG hyperparameters for adaptive methods (Malladi et al. 2022, SVAG; their ``cifar_main.py``):
    ``lr -> lr / ell``, ``1 - beta -> (1 - beta) / ell^2`` (both betas), ``eps -> eps ell``,
    ``steps -> steps ell^2``; the batch size is unchanged (each step uses two batches, see :func:`svag_combine`).
    As ``ell -> infinity`` the run converges to the SDE of the base hyperparameters."""
    _check_factor("ell", ell)
    if not hp.adaptive:
        raise ValueError("svag_hparams is for adaptive methods (give beta2); SGD-SVAG uses lr/ell and steps*ell")
    return replace(hp, lr=hp.lr / ell, steps=hp.steps * ell**2, beta2=1 - (1 - hp.beta2) / ell**2,
                   beta1=None if hp.beta1 is None else 1 - (1 - hp.beta1) / ell**2, eps=hp.eps * ell)


def sde_invariants(hp: HParams, sigma: float) -> dict:
    """The quantities the RMSprop/Adam SDE depends on (Malladi et al. 2022, the RMSprop and Adam SDEs): noise scale
    ``sigma0 = sigma lr``, ``eps0 = eps lr``, ``c2 = (1 - beta2)/lr^2``, ``c1 = (1 - beta1)/lr^2`` and the SDE time
    ``T = steps lr^2``. ``sigma`` is the gradient-noise scale of the batch (``~ 1/sqrt(batch)``)."""
    if not hp.adaptive:
        raise ValueError("sde_invariants is for adaptive methods (give beta2)")
    out = {"sigma0": sigma * hp.lr, "eps0": hp.eps * hp.lr, "c2": (1 - hp.beta2) / hp.lr**2, "T": hp.steps * hp.lr**2}
    if hp.beta1 is not None:
        out["c1"] = (1 - hp.beta1) / hp.lr**2
    return out


# ---------------------------------------------------------------------------------------------------------------
# Experiment 1: online noisy linear regression, many RMSprop replicas at once
# ---------------------------------------------------------------------------------------------------------------


def linreg_grad_second_moment(w: torch.Tensor, h: torch.Tensor, noise_std: float, batch: int) -> torch.Tensor:
    """``E[g_i^2]`` of the minibatch gradient of online linear regression at ``w`` (optimum at 0): inputs
    ``x ~ N(0, diag(h))``, labels ``y = noise_std * xi``, loss ``(1/2)(x.w - y)^2`` averaged over ``batch`` fresh
    examples. With ``r = x.w - y``: mean ``h_i w_i``, single-example variance
    ``h_i (sum_k h_k w_k^2 + noise_std^2) + h_i^2 w_i^2`` (Isserlis), divided by ``batch``."""
    if batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    hw = h * w
    total = (hw * w).sum(-1, keepdim=True) + noise_std**2
    return hw * hw + (h * total + hw * hw) / batch


def linreg_excess_loss(w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Population excess risk ``(1/2) sum_i h_i w_i^2`` of online linear regression (optimum ``w* = 0``)."""
    return 0.5 * (h * w * w).sum(-1)


def linreg_minibatch_grad(w: torch.Tensor, h: torch.Tensor, noise_std: float, batch: int,
                          generator: torch.Generator) -> torch.Tensor:
    """Minibatch gradient of online linear regression for a batch of replicas ``w`` of shape ``(R, d)``: each
    replica draws its own ``batch`` fresh examples ``x ~ N(0, diag(h))``, ``y = noise_std * xi``."""
    R, d = w.shape
    z = gaussian_like((R, batch, d + 1), w, generator)
    x = z[..., :d] * h.sqrt()
    r = torch.bmm(x, w.unsqueeze(-1)).squeeze(-1) - noise_std * z[..., d]
    return torch.bmm(r.unsqueeze(1), x).squeeze(1) / batch


@dataclass
class ReplicaRun:
    """Excess loss of every replica at recorded steps (``loss[j, r]`` at step ``steps[j]``), and the SDE time
    ``t = step * lr^2`` of each record."""

    steps: np.ndarray
    time: np.ndarray
    loss: np.ndarray

    def stationary_mean(self, fraction: float = 0.5) -> tuple[float, float]:
        """Mean excess loss over the last ``fraction`` of the records and all replicas, and its standard error
        (from the spread of the per-replica time averages; replicas are independent)."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
        tail = self.loss[int(len(self.loss) * (1 - fraction)):]
        per_replica = tail.mean(0)
        return float(per_replica.mean()), float(per_replica.std(ddof=1) / math.sqrt(len(per_replica)))


def linreg_rmsprop_replicas(hp: HParams, h: torch.Tensor, noise_std: float, w0: torch.Tensor, replicas: int,
                            generator: torch.Generator, n_records: int = 50) -> ReplicaRun:
    """RMSprop on online noisy linear regression, ``replicas`` independent runs as one ``(R, d)`` tensor.

    Every replica starts at ``w0`` with ``v0 = E[g^2](w0)`` (:func:`linreg_grad_second_moment`; a simplification
    so that no scaling rule is confounded by the first step). Records the excess loss ``n_records`` times,
    evenly in steps. Used in ``chapters/optimization/sde-scaling-rules.md`` (excess loss vs. kappa)."""
    if not hp.adaptive or hp.beta1 is not None:
        raise ValueError("linreg_rmsprop_replicas runs RMSprop: give beta2 and leave beta1 = None")
    if replicas < 2:
        raise ValueError(f"replicas must be an integer >= 2, got {replicas!r}")
    n = hp.n_steps()
    every = max(1, n // n_records)
    w = w0.expand(replicas, -1).clone()
    state = rmsprop_init(w, linreg_grad_second_moment(w0, h, noise_std, hp.batch))
    steps, losses = [], []
    for k in range(1, n + 1):
        g = linreg_minibatch_grad(w, h, noise_std, hp.batch, generator)
        w, state = rmsprop_update(w, g, state, hp.lr, hp.beta2, hp.eps)
        if k % every == 0:
            steps.append(k)
            losses.append(linreg_excess_loss(w, h))
    steps = np.array(steps)
    return ReplicaRun(steps, steps * hp.lr**2, torch.stack(losses).cpu().numpy())


# ---------------------------------------------------------------------------------------------------------------
# Experiment 2: Adam-SVAG on scikit-learn digits, a batch of small MLPs
# ---------------------------------------------------------------------------------------------------------------


def _check_widths(widths) -> list[int]:
    widths = list(widths)
    if len(widths) < 2 or any(isinstance(w, bool) or not isinstance(w, int | np.integer) or w < 1 for w in widths):
        raise ValueError(f"widths must be >= 2 positive integers (input, hidden..., output), got {widths}")
    return [int(w) for w in widths]


def batched_mlp_init(widths, replicas: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """Flat parameters ``(replicas, P)`` of ``replicas`` independent tanh MLPs, PyTorch's default ``nn.Linear``
    initialization (uniform in ``+-1/sqrt(fan_in)``)."""
    widths = _check_widths(widths)
    if replicas < 1:
        raise ValueError(f"replicas must be a positive integer, got {replicas!r}")
    parts = []
    for a, b in zip(widths[:-1], widths[1:]):
        bound = 1.0 / math.sqrt(a)
        parts.append((torch.rand(replicas, a * b + b, generator=generator, dtype=dtype, device=generator.device)
                      * 2 - 1) * bound)
    return torch.cat(parts, 1)


def batched_mlp_logits(theta: torch.Tensor, x: torch.Tensor, widths) -> torch.Tensor:
    """Logits ``(R, n, out)`` of the replica MLPs ``theta (R, P)`` on inputs ``x`` of shape ``(R, n, in)`` or
    ``(n, in)`` (shared)."""
    widths = _check_widths(widths)
    R = theta.shape[0]
    h = x if x.dim() == 3 else x.expand(R, -1, -1)
    i = 0
    layers = list(zip(widths[:-1], widths[1:]))
    for li, (a, b) in enumerate(layers):
        W = theta[:, i:i + a * b].view(R, a, b)
        i += a * b
        bias = theta[:, i:i + b]
        i += b
        h = torch.baddbmm(bias.unsqueeze(1), h, W)
        if li < len(layers) - 1:
            h = torch.tanh(h)
    return h


def batched_xent(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, widths,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of every replica, ``(R,)``: the mean over examples, or the ``weights``-weighted sum
    (``weights`` of shape ``(R, n)`` or ``(n,)``)."""
    logits = batched_mlp_logits(theta, x, widths)
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.expand(logits.shape[0], -1).flatten(),
                                            reduction="none").view(logits.shape[:2])
    return nll.mean(1) if weights is None else (nll * weights).sum(1)


@dataclass
class SVAGRun:
    """Full-data training loss of every replica at the recorded SDE times (``loss[j, r]`` at ``time[j]``)."""

    time: np.ndarray
    loss: np.ndarray

    def mean_curve(self) -> np.ndarray:
        return self.loss.mean(1)


def train_adam_svag(theta0: torch.Tensor, X: torch.Tensor, y: torch.Tensor, widths, hp: HParams, ell: float,
                    n_records: int, generator: torch.Generator) -> SVAGRun:
    """Adam-SVAG with parameter ``ell`` from the base hyperparameters ``hp`` (Malladi et al. 2022, SVAG):
    :func:`svag_hparams` sets ``lr/ell``, ``1-(1-beta)/ell^2``, ``eps*ell``, ``steps*ell^2``; every step draws two
    independent minibatches per replica and uses :func:`svag_combine` (``ell = 1`` is plain Adam, one batch).
    Records the full-data loss ``n_records`` times, at the same SDE times ``t = step * lr^2`` for every ``ell``.
    Used in ``chapters/optimization/sde-scaling-rules.md``."""
    if not hp.adaptive or hp.beta1 is None:
        raise ValueError("train_adam_svag runs Adam: give beta1 and beta2")
    sv = svag_hparams(hp, ell)
    r1, r2 = svag_coefficients(ell)
    n = sv.n_steps()
    if n % n_records:
        raise ValueError(f"the {n} SVAG steps must be a multiple of n_records = {n_records}; pick steps so that "
                         "steps * ell^2 is divisible by n_records")
    every = n // n_records
    R, b, N = theta0.shape[0], hp.batch, X.shape[0]
    theta = theta0.clone()
    state = adam_init(theta)
    two = r2 != 0.0
    w = torch.cat([torch.full((b,), r1 / b), torch.full((b,), r2 / b)]) if two else torch.full((b,), 1.0 / b)
    w = w.to(dtype=theta.dtype, device=theta.device)
    times, losses = [0.0], [_full_loss(theta, X, y, widths)]
    for k in range(1, n + 1):
        idx = torch.randint(N, (R, 2 * b if two else b), generator=generator, device=theta.device)
        th = theta.detach().requires_grad_(True)
        loss = batched_xent(th, X[idx], y[idx], widths, w).sum()
        (g,) = torch.autograd.grad(loss, th)
        theta, state = adam_update(theta, g, state, sv.lr, sv.beta1, sv.beta2, sv.eps)
        if k % every == 0:
            times.append(k * sv.lr**2)
            losses.append(_full_loss(theta, X, y, widths))
    return SVAGRun(np.array(times), torch.stack(losses).cpu().numpy())


def _full_loss(theta, X, y, widths) -> torch.Tensor:
    with torch.no_grad():
        return batched_xent(theta, X, y, widths).detach().clone()


def curve_distance(a: SVAGRun, b: SVAGRun) -> float:
    """Largest gap between the replica-mean loss curves of two runs recorded at the same SDE times."""
    if a.loss.shape[0] != b.loss.shape[0] or not np.allclose(a.time, b.time):
        raise ValueError("the two runs must be recorded at the same SDE times")
    return float(np.max(np.abs(a.mean_curve() - b.mean_curve())))
