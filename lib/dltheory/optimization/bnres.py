"""Batch norm and residual connections: a deep residual MLP in three arms, its per-block statistics at
initialization, the mean-field predictions, and a short training run.

Defined for the chapter *Batch norm and residual connections, together*
(``chapters/optimization/batchnorm-residual.md``), after Panigrahi, Chen & Kuo 2018, "Analysis on Gradient
Propagation in Batch Normalized Residual Networks" (arXiv:1812.00342; no official code, this is our own). Their
block is convolutional; here it is the fully connected block

    x_{l+1} = x_l + BN(W2 relu(BN(W1 x_l)))                       ("bnres": batch norm + shortcut)

and two ablations: ``res`` (the same block without either batch norm, He-initialized so that each branch
preserves the second moment) and ``bnplain`` (batch norm without the shortcut, ``x_{l+1} = BN(W2 relu(BN(W1 x_l)))``).
The three arms share their initial weights and run side by side in one tensor program (a leading "arm" axis).

The mean-field predictions (the chapter's sympy cell derives them):

* forward: ``v_{l+1} = v_l + 1`` for ``bnres`` (:func:`forward_variance_theory`), ``q_{l+1} = 2 q_l`` for ``res``;
* backward: ``G_l = G_{l+1} (1 + kappa / v_l)`` with ``kappa = E[relu'^2] / Var[relu] = pi / (pi - 1)``
  (:data:`KAPPA`; the same constant is the BN-ReLU gradient explosion rate of Yang et al. 2019), so
  ``G_1 / G_{L+1} = (1 + kappa)_L / L!``, a rising factorial that grows like ``L^kappa``
  (:func:`bnres_log_ratio_theory`); ``G_l = 2 G_{l+1}`` for ``res`` and ``G_l = kappa G_{l+1}`` for ``bnplain``.

The experiment: :func:`init_params`, :func:`forward`, :func:`block_statistics` (one backward pass), :func:`measure`
and :func:`summarize` (the chapter's recorded numbers and their predictions), :func:`fit_kappa`,
:func:`kappa_ladder` (the finite-size excess of kappa), :func:`kappa_monte_carlo` and :func:`train_arms`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dltheory.numerics.validate import check_int, check_nonnegative, check_positive

ARMS = ("bnres", "res", "bnplain")
#: which arms use batch norm, and which keep the identity shortcut
ARM_FLAGS = {"bnres": (True, True), "res": (False, True), "bnplain": (True, False)}
#: ``E[relu'(z)^2] / Var[relu(z)]`` for ``z ~ N(0, 1)``: the backward gain of a BN-ReLU-BN branch
KAPPA = math.pi / (math.pi - 1)
BN_EPS = 1e-5


def _check_arms(arms) -> tuple[str, ...]:
    arms = tuple(arms)
    if not arms or any(a not in ARM_FLAGS for a in arms) or len(set(arms)) != len(arms):
        raise ValueError(f"arms must be distinct names from {', '.join(ARMS)}, got {arms!r}")
    return arms


# ---------------------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------------------


def init_params(width: int, depth: int, d_in: int, n_classes: int, generator: torch.Generator,
                arms=ARMS, dtype=torch.float64) -> dict:
    """Gaussian initial weights of the residual MLP, the same for every arm (copied along a leading arm axis):
    stem ``W_in`` ``(A, width, d_in)`` with variance ``1/d_in``; per block ``W1`` ``(A, depth, width, width)`` with
    variance ``2/width`` (He, a ReLU follows) and ``W2`` with variance ``1/width``, so that without batch norm a
    branch preserves the second moment (chapter: "residual without BN grows like 2^L"); the head ``W_out``
    ``(A, n_classes, width)`` with variance ``1/width``. Batch norm makes the BN arms invariant to these scales.
    No biases and no BN affine parameters (they are 0 and 1 at initialization)."""
    width, depth = check_int("width", width), check_int("depth", depth)
    d_in, n_classes = check_int("d_in", d_in), check_int("n_classes", n_classes)
    A = len(_check_arms(arms))

    def gauss(*shape, var):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype) * math.sqrt(var)

    base = {"W_in": gauss(width, d_in, var=1.0 / d_in),
            "W1": gauss(depth, width, width, var=2.0 / width),
            "W2": gauss(depth, width, width, var=1.0 / width),
            "W_out": gauss(n_classes, width, var=1.0 / width)}
    return {k: w.unsqueeze(0).repeat(A, *([1] * w.dim())).contiguous() for k, w in base.items()}


def batch_norm(z: torch.Tensor, eps: float = BN_EPS) -> torch.Tensor:
    """Training-mode batch norm without affine parameters: every feature (last axis) normalized by its mean and
    biased variance over the examples (axis ``-2``), as ``torch.nn.functional.batch_norm(training=True)``
    (Ioffe & Szegedy 2015, Alg. 1). Chapter ``batchnorm-residual.md``, the BN of the block."""
    mean = z.mean(-2, keepdim=True)
    var = z.var(-2, unbiased=False, keepdim=True)
    return (z - mean) * torch.rsqrt(var + eps)


def _masks(arms, dtype, device):
    bn = torch.tensor([float(ARM_FLAGS[a][0]) for a in arms], dtype=dtype, device=device).view(-1, 1, 1)
    res = torch.tensor([float(ARM_FLAGS[a][1]) for a in arms], dtype=dtype, device=device).view(-1, 1, 1)
    return bn, res


def _maybe_bn(z: torch.Tensor, bn: torch.Tensor, eps: float) -> torch.Tensor:
    """``batch_norm(z)`` in the arms where ``bn == 1`` and ``z`` where ``bn == 0``, as one expression (no
    ``torch.where``, whose backward allocates a zero gradient for the branch it did not take)."""
    mean = z.mean(-2, keepdim=True)
    scale = torch.rsqrt(z.var(-2, unbiased=False, keepdim=True) + eps)
    return (z - bn * mean) * (bn * scale + (1 - bn))


def forward(params: dict, X: torch.Tensor, arms=ARMS, eps: float = BN_EPS):
    """Logits ``(A, B, n_classes)`` and the residual stream ``[x_1, ..., x_{L+1}]`` (each ``(A, B, width)``) of
    every arm on the batch ``X`` ``(B, d_in)``. ``x_1`` is the stem ``W_in x`` (batch-normalized in the BN arms, as
    a ResNet's stem); block ``l`` maps ``x_l`` to ``x_{l+1}`` as in the module docstring; the head is linear on
    ``x_{L+1}``. Chapter ``batchnorm-residual.md``, the block of Panigrahi, Chen & Kuo 2018 in MLP form."""
    arms = _check_arms(arms)
    if X.dim() != 2 or X.shape[1] != params["W_in"].shape[-1]:
        raise ValueError(f"X must be (batch, {params['W_in'].shape[-1]}), got {tuple(X.shape)}")
    if params["W_in"].shape[0] != len(arms):
        raise ValueError(f"params hold {params['W_in'].shape[0]} arms but arms = {arms}; init with the same arms")
    bn, res = _masks(arms, X.dtype, X.device)
    x = _maybe_bn(torch.matmul(X, params["W_in"].transpose(-1, -2)), bn, eps)
    stream = [x]
    # unbind once: slicing W[:, l] per block would make autograd zero-fill a full-size gradient for every block
    for W1, W2 in zip(params["W1"].transpose(-1, -2).unbind(1), params["W2"].transpose(-1, -2).unbind(1)):
        h = torch.relu(_maybe_bn(torch.matmul(x, W1), bn, eps))
        f = _maybe_bn(torch.matmul(h, W2), bn, eps)
        x = f + res * x
        stream.append(x)
    logits = torch.matmul(x, params["W_out"].transpose(-1, -2))
    return logits, stream


def arm_losses(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Per-arm mean loss ``(A,)`` (chapter ``batchnorm-residual.md``). ``ce``: cross-entropy with the integer
    labels ``y`` (the chapter's loss);
    ``constant``: the mean of the first logit, whose gradient is the same for every example, so batch norm (which
    removes the batch mean of the gradient) passes no gradient into any branch (the chapter's "things that bite")."""
    if loss == "ce":
        A, B, C = logits.shape
        return torch.nn.functional.cross_entropy(logits.reshape(A * B, C), y.repeat(A),
                                                 reduction="none").view(A, B).mean(1)
    if loss == "constant":
        return logits[..., 0].mean(1)
    raise ValueError(f"unknown loss {loss!r}; use 'ce' or 'constant'")


def block_statistics(params: dict, X: torch.Tensor, y: torch.Tensor, arms=ARMS, loss: str = "ce",
                     eps: float = BN_EPS) -> dict:
    """Per-block statistics of every arm at the given weights, from one forward and **one** backward pass:

    * ``v`` ``(A, L+1)``: forward variance of ``x_l`` (over the batch, averaged over features);
    * ``q`` ``(A, L+1)``: forward second moment ``E[x_l^2]``;
    * ``G`` ``(A, L+1)``: second moment of the activation gradient ``d loss / d x_l``, times ``B^2`` (so that it is
      the scale of one example's gradient; ratios do not depend on this);
    * ``G_mean`` ``(A, L+1)``: the part of ``G`` carried by the gradient's batch mean (``G - G_mean`` is its
      variance over the batch), same scaling;
    * ``gradw`` ``(A, L)``: Frobenius norm of the gradient of block ``l``'s weights ``(W1, W2)``;
    * ``loss`` ``(A,)``.

    Returned as float64 numpy arrays. Chapter ``batchnorm-residual.md`` (the profiles of its figure)."""
    arms = _check_arms(arms)
    p = {k: w.detach().requires_grad_(k != "W_out") for k, w in params.items()}
    logits, stream = forward(p, X, arms, eps)
    losses = arm_losses(logits, y, loss)
    grads = torch.autograd.grad(losses.sum(), [*stream, p["W1"], p["W2"]])
    gx, gW1, gW2 = grads[:-2], grads[-2], grads[-1]
    B = X.shape[0]
    with torch.no_grad():
        out = {
            "v": torch.stack([s.var(1, unbiased=False).mean(-1) for s in stream], 1),
            "q": torch.stack([(s * s).mean((1, 2)) for s in stream], 1),
            "G": torch.stack([(g * g).mean((1, 2)) for g in gx], 1) * B**2,
            "G_mean": torch.stack([(g.mean(1) ** 2).mean(-1) for g in gx], 1) * B**2,
            "gradw": torch.sqrt((gW1 * gW1).sum((-1, -2)) + (gW2 * gW2).sum((-1, -2))),
            "loss": losses.detach(),
        }
    return {k: v.to("cpu", torch.float64).numpy() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------------------------
# The mean-field theory
# ---------------------------------------------------------------------------------------------------------------


def forward_variance_theory(depth: int, v1: float = 1.0) -> np.ndarray:
    """``v_l = v_1 + l - 1`` for ``l = 1, ..., L+1``: the solution of ``v_{l+1} = v_l + 1`` (each BN branch adds a
    unit-variance output uncorrelated with the stream). Chapter ``batchnorm-residual.md``, the ``rsolve`` step."""
    depth = check_int("depth", depth)
    return check_positive("v1", v1) + np.arange(depth + 1, dtype=np.float64)


def bnres_profile_theory(v, kappa: float = KAPPA) -> np.ndarray:
    """``G_l / G_{L+1} = prod_{k=l}^{L} (1 + kappa / v_k)`` for ``l = 1, ..., L+1`` from the forward variances
    ``v = (v_1, ..., v_{L+1})`` (``v_{L+1}`` is not used). Chapter ``batchnorm-residual.md``, the backward
    recursion ``G_l = G_{l+1} (1 + kappa / v_l)``."""
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 1 or v.size < 2 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"v must be a 1-d array of at least 2 positive finite variances, got shape {v.shape}")
    check_nonnegative("kappa", kappa)
    logs = np.log1p(kappa / v[:-1])
    return np.exp(np.append(np.cumsum(logs[::-1])[::-1], 0.0))


def bnres_log_ratio_theory(depth: int, kappa: float = KAPPA) -> float:
    """``log(G_1 / G_{L+1}) = log((1 + kappa)_L / L!) = lgamma(L + 1 + kappa) - lgamma(1 + kappa) - lgamma(L + 1)``
    for ``v_l = l``: a rising factorial, ``~ kappa log L - lgamma(1 + kappa)`` for large ``L``. Chapter
    ``batchnorm-residual.md``, the product identity checked in sympy."""
    depth = check_int("depth", depth)
    kappa = check_nonnegative("kappa", kappa)
    return math.lgamma(depth + 1 + kappa) - math.lgamma(1 + kappa) - math.lgamma(depth + 1)


# ---------------------------------------------------------------------------------------------------------------
# Fits of the measured profiles
# ---------------------------------------------------------------------------------------------------------------


def linear_slope(x, y) -> float:
    """Least-squares slope of ``y`` against ``x`` (at least two points): the growth rates of the profiles in chapter
    ``batchnorm-residual.md`` (e.g. ``fwd_var_slope_bnres``, ``fwd_log2_q_slope_res``)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2 or np.ptp(x) == 0:
        raise ValueError(f"need two 1-d arrays of equal length >= 2 with distinct x, got {x.shape} and {y.shape}")
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


def fit_kappa(v, G, iterations: int = 50) -> float:
    """The ``kappa`` of the recursion ``G_l = G_{l+1} (1 + kappa / v_l)`` that fits the measured profiles best, given
    the measured forward variances: least squares of the cumulative log profile
    ``log(G_l / G_{L+1})`` against ``sum_{k=l}^{L} log(1 + kappa / v_k)`` over ``l = 1, ..., L`` (Gauss-Newton from
    ``kappa = 1``; ``v``, ``G`` of length ``L+1``). Every block counts once in log space; a least-squares fit of the
    per-block excess ``G_l / G_{l+1} - 1`` on ``1 / v_l`` would be dominated by the first two or three blocks.
    Chapter ``batchnorm-residual.md``, ``bwd_kappa_hat_bnres``."""
    v, G = np.asarray(v, dtype=np.float64), np.asarray(G, dtype=np.float64)
    if v.ndim != 1 or v.shape != G.shape or v.size < 2:
        raise ValueError(f"v and G must be 1-d of equal length >= 2, got {v.shape} and {G.shape}")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(G)) and np.all(v > 0) and np.all(G > 0)):
        raise ValueError("v and G must be positive and finite (a diverged run has no kappa)")
    iterations = check_int("iterations", iterations)
    target = np.log(G[:-1] / G[-1])
    kappa = 1.0
    for _ in range(iterations):
        model = np.cumsum(np.log1p(kappa / v[:-1])[::-1])[::-1]
        jac = np.cumsum((1.0 / (v[:-1] + kappa))[::-1])[::-1]
        step = float(((target - model) * jac).sum() / (jac * jac).sum())
        kappa = max(kappa + step, 0.0)
        if abs(step) < 1e-12:
            break
    return kappa


def summarize(stats: dict, arms=ARMS) -> dict:
    """The chapter's numbers from one network's :func:`block_statistics` (depth ``L`` = number of blocks), measured
    and predicted, under the names the chapter records (``bwd_*`` slopes are against the block index ``l``; a
    *gain* is the factor per block going backwards; every ``log`` is natural, ``log2`` base 2):

    * ``bnres``: ``fwd_var_slope`` (slope of ``v_l`` on ``l``; theory 1), ``fwd_var_final`` (``v_{L+1}``; theory
      ``L + 1``), ``bwd_kappa_hat`` (:func:`fit_kappa`), ``bwd_log_ratio`` (``log G_1/G_{L+1}``; theory
      :func:`bnres_log_ratio_theory`), ``bwd_profile_slope`` (slope of ``log G_l`` on ``log l``; theory: the same
      fit of the theory profile, ``-> -kappa`` for large ``l``), ``bwd_last4_gain`` (``(G_{L-3}/G_{L+1})^{1/4}``;
      theory ``prod_{l=L-3}^{L} (1 + kappa/l)^{1/4}``);
    * ``res``: ``fwd_log2_q_slope`` (slope of ``log2 q_l``; theory 1), ``bwd_log2_g_slope`` (slope of ``log2 G_l``;
      theory -1), ``bwd_log_ratio`` (theory ``L log 2``);
    * ``bnplain``: ``bwd_log_gain`` (minus the slope of ``log G_l``; theory ``log kappa``), ``bwd_log_ratio``
      (theory ``L log kappa``);
    * every arm: ``gradw_ratio_first_last`` (weight-gradient norm of block 1 over block ``L``) and its mean-field
      prediction (``sqrt(G_2/G_{L+1})`` of the theory for the BN arms, 1 for ``res``).

    Keys are ``<name>_<arm>`` and ``<name>_<arm>_pred``, plus ``depth``. Chapter ``batchnorm-residual.md``."""
    arms = _check_arms(arms)
    L = stats["G"].shape[1] - 1
    if L < 4:
        raise ValueError(f"need at least 4 blocks for the last-four gain, got depth {L}")
    for k in ("v", "q", "G", "gradw"):
        if not np.all(np.isfinite(stats[k])):
            raise ValueError(f"stats[{k!r}] is not finite: the forward pass overflowed; use float64 or a smaller depth")
    l = np.arange(1, L + 2, dtype=np.float64)
    theory_v = forward_variance_theory(L)
    theory_profile = bnres_profile_theory(theory_v)
    out = {"depth": L}
    for i, arm in enumerate(arms):
        v, q, G, gw = stats["v"][i], stats["q"][i], stats["G"][i], stats["gradw"][i]
        out[f"bwd_log_ratio_{arm}"] = float(np.log(G[0] / G[-1]))
        out[f"gradw_ratio_first_last_{arm}"] = float(gw[0] / gw[-1])
        if arm == "bnres":
            out.update({
                "fwd_var_slope_bnres": linear_slope(l, v), "fwd_var_slope_bnres_pred": 1.0,
                "fwd_var_final_bnres": float(v[-1]), "fwd_var_final_bnres_pred": float(theory_v[-1]),
                "bwd_kappa_hat_bnres": fit_kappa(v, G), "bwd_kappa_hat_bnres_pred": KAPPA,
                "bwd_log_ratio_bnres_pred": bnres_log_ratio_theory(L),
                "bwd_profile_slope_bnres": linear_slope(np.log(l), np.log(G)),
                "bwd_profile_slope_bnres_pred": linear_slope(np.log(l), np.log(theory_profile)),
                "bwd_last4_gain_bnres": float((G[-5] / G[-1]) ** 0.25),
                "bwd_last4_gain_bnres_pred": float(theory_profile[-5] ** 0.25),
                "gradw_ratio_first_last_bnres_pred": float(math.sqrt(theory_profile[1])),
            })
        elif arm == "res":
            out.update({
                "fwd_log2_q_slope_res": linear_slope(l, np.log2(q)), "fwd_log2_q_slope_res_pred": 1.0,
                "bwd_log2_g_slope_res": linear_slope(l, np.log2(G)), "bwd_log2_g_slope_res_pred": -1.0,
                "bwd_log_ratio_res_pred": L * math.log(2.0),
                "gradw_ratio_first_last_res_pred": 1.0,
            })
        else:
            out.update({
                "bwd_log_gain_bnplain": -linear_slope(l, np.log(G)), "bwd_log_gain_bnplain_pred": math.log(KAPPA),
                "bwd_log_ratio_bnplain_pred": L * math.log(KAPPA),
                "gradw_ratio_first_last_bnplain_pred": float(KAPPA ** ((L - 1) / 2)),
            })
    return out


def draw_batch(X: torch.Tensor, y: torch.Tensor, batch: int, generator: torch.Generator):
    """``batch`` distinct examples of ``(X, y)``, chosen with ``generator`` (chapter ``batchnorm-residual.md``: the
    batch whose statistics batch norm uses)."""
    batch = check_int("batch", batch)
    if batch > X.shape[0]:
        raise ValueError(f"batch = {batch} exceeds the {X.shape[0]} examples available; lower batch")
    idx = torch.randperm(X.shape[0], generator=generator)[:batch].to(X.device)
    return X[idx], y[idx]


def measure(width: int, depth: int, batch: int, X: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
            arms=ARMS, dtype=torch.float64) -> dict:
    """Fresh initial weights (:func:`init_params`, shared by the arms) and a fresh batch, then
    :func:`block_statistics` on the device of ``X``. Chapter ``batchnorm-residual.md``, the three-arm experiment."""
    Xb, yb = draw_batch(X, y, batch, generator)
    params = init_params(width, depth, X.shape[1], int(y.max()) + 1, generator, arms, dtype)
    params = {k: w.to(X.device) for k, w in params.items()}
    return block_statistics(params, Xb.to(dtype), yb, arms)


def kappa_ladder(widths, batches, depth: int, reps, X: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator, dtype=torch.float64) -> dict:
    """How far the measured backward gains sit above the mean-field ``kappa`` at finite width ``n`` and batch ``B``:
    for each rung ``(widths[i], batches[i])``, ``reps[i]`` fresh networks (``reps`` may be one number for every
    rung; small rungs are cheap and noisy, so give them more) of ``depth`` blocks in the ``bnres`` and ``bnplain``
    arms. Returns ``bnres``: per rung an array of :func:`fit_kappa` ``/ KAPPA - 1``, and ``bnplain``: per rung an
    array of ``exp(bwd_log_gain) / KAPPA - 1``. Chapter ``batchnorm-residual.md`` ("things that bite": the measured
    kappa exceeds ``pi / (pi - 1)`` at finite size)."""
    widths, batches = list(widths), list(batches)
    if not widths or len(widths) != len(batches):
        raise ValueError(f"widths and batches must be non-empty lists of equal length, got {widths} and {batches}")
    reps = [reps] * len(widths) if isinstance(reps, int | np.integer) else list(reps)
    if len(reps) != len(widths):
        raise ValueError(f"reps must be one integer or one per rung ({len(widths)}), got {reps}")
    reps = [check_int("reps", r) for r in reps]
    arms = ("bnres", "bnplain")
    out = {"bnres": [], "bnplain": []}
    for n, B, R in zip(widths, batches, reps):
        ex_res, ex_plain = np.zeros(R), np.zeros(R)
        for r in range(R):
            s = summarize(measure(n, depth, B, X, y, generator, arms, dtype), arms)
            ex_res[r] = s["bwd_kappa_hat_bnres"] / KAPPA - 1
            ex_plain[r] = math.exp(s["bwd_log_gain_bnplain"]) / KAPPA - 1
        out["bnres"].append(ex_res)
        out["bnplain"].append(ex_plain)
    return out


def kappa_monte_carlo(samples: int, generator: torch.Generator, chunks: int = 16) -> tuple[float, float]:
    """Monte Carlo of ``kappa = E[relu'(z)^2] / Var[relu(z)]`` for ``z ~ N(0, 1)`` with ``relu'`` taken by autograd
    (so the check does not reuse the indicator the sympy derivation integrates). Returns the estimate and a standard
    error from ``chunks`` independent chunks. Chapter ``batchnorm-residual.md``, the sympy cell's cross-check."""
    samples, chunks = check_int("samples", samples), check_int("chunks", chunks, minimum=2)
    if samples < 2 * chunks:
        raise ValueError(f"samples = {samples} must be at least 2 * chunks = {2 * chunks}")
    z = torch.randn(chunks, samples // chunks, generator=generator, dtype=torch.float64, requires_grad=True)
    r = torch.relu(z)
    (d,) = torch.autograd.grad(r.sum(), z)
    with torch.no_grad():
        per_chunk = (d * d).mean(1) / r.var(1, unbiased=True)
        pooled = float((d * d).mean() / r.var(unbiased=True))
    return pooled, float(per_chunk.std(unbiased=True) / math.sqrt(chunks))


# ---------------------------------------------------------------------------------------------------------------
# A short training run of each arm
# ---------------------------------------------------------------------------------------------------------------


def train_arms(params: dict, X: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch: int,
               generator: torch.Generator, arms=ARMS, eps: float = BN_EPS) -> dict:
    """Minibatch SGD (no momentum, learning rate ``lr``) on the cross-entropy of every arm side by side, from
    ``params``, on minibatches of ``batch`` distinct examples of ``(X, y)`` (the same minibatches for every arm).
    An arm whose loss or gradient becomes non-finite, or whose loss exceeds ``1e6``, is *diverged*: it is dropped
    from the computation from then on and none of its later numbers exist, so every returned number of a live arm
    is finite.

    Returns ``loss`` ``(steps, A)`` (NaN where an arm was no longer live: plot it, never record it),
    ``final_loss`` and ``final_acc`` ``(A,)`` on all of ``X`` (batch statistics of all of ``X``; NaN for a diverged
    arm), ``diverged`` ``(A,)`` bools and ``diverged_step`` ``(A,)`` (``-1`` if never). Chapter
    ``batchnorm-residual.md``, the short training run of each arm."""
    arms = _check_arms(arms)
    steps, batch = check_int("steps", steps), check_int("batch", batch)
    lr = check_positive("lr", lr)
    if batch > X.shape[0]:
        raise ValueError(f"batch = {batch} exceeds the {X.shape[0]} examples; lower batch")
    A = len(arms)
    p = {k: w.detach().clone() for k, w in params.items()}
    alive = np.ones(A, dtype=bool)
    diverged_step = np.full(A, -1)
    hist = np.full((steps, A), np.nan)
    for t in range(steps):
        live = np.flatnonzero(alive)
        if live.size == 0:
            break
        idx = torch.randperm(X.shape[0], generator=generator)[:batch].to(X.device)
        sel = torch.as_tensor(live, device=X.device)
        q = {k: w[sel].requires_grad_() for k, w in p.items()}
        logits, _ = forward(q, X[idx], tuple(arms[i] for i in live), eps)
        losses = arm_losses(logits, y[idx])
        grads = torch.autograd.grad(losses.sum(), list(q.values()))
        with torch.no_grad():
            ok = torch.isfinite(losses) & (losses < 1e6)
            for g in grads:
                ok &= torch.isfinite(g).flatten(1).all(1)
            ok_np = ok.cpu().numpy()
            for j, i in enumerate(live):
                if ok_np[j]:
                    hist[t, i] = float(losses[j])
                else:
                    alive[i], diverged_step[i] = False, t
            keep = sel[ok]
            for (k, w), g in zip(q.items(), grads):
                p[k][keep] = w[ok] - lr * g[ok]
    final_loss, final_acc = np.full(A, np.nan), np.full(A, np.nan)
    live = np.flatnonzero(alive)
    if live.size:
        with torch.no_grad():
            sel = torch.as_tensor(live, device=X.device)
            logits, _ = forward({k: w[sel] for k, w in p.items()}, X, tuple(arms[i] for i in live), eps)
            loss = arm_losses(logits, y).cpu().double().numpy()
            acc = (logits.argmax(-1) == y).double().mean(1).cpu().numpy()
        for j, i in enumerate(live):
            if np.isfinite(loss[j]):
                final_loss[i], final_acc[i] = loss[j], acc[j]
            else:
                alive[i], diverged_step[i] = False, steps
    return {"loss": hist, "final_loss": final_loss, "final_acc": final_acc,
            "diverged": ~alive, "diverged_step": diverged_step}
