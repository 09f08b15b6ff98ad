"""A Celo2-style learned optimizer: per-parameter features, a tiny MLP, a per-tensor normalized update.

Used in ``chapters/learned-algorithms/learned-optimizers.md`` (*Learned optimizers meta-trained on a compute
diet*). The update rule follows the normalized MLP rule of Celo2 (Moudgil, Knyazev & Belilovsky 2026,
"Celo2: Towards Learned Optimization Free Lunch", §3; reference ``celo/optimizers/celo2_optax.py`` of
``amoudgl/celo``), simplified as listed in the chapter:

1. *Features* per parameter entry (:data:`FEATURE_NAMES`): the gradient ``g``, the parameter ``p``, momenta
   ``m_b`` at decays ``b`` in (0.9, 0.99, 0.999), the second moment ``v`` at decay 0.95, the ratios
   ``m_b / sqrt(v)``, ``1 / sqrt(v)`` and ``g / sqrt(v)``. Every feature is divided by its root mean square
   over the tensor it belongs to (``_second_moment_normalizer`` in the reference), so the MLP sees inputs
   of order one whatever the scale of the loss or of the parameters.
2. A per-parameter MLP (2 hidden layers of 8 ReLU units, shared by every entry of every tensor) maps the
   features to a direction ``d``.
3. The output is normalized per tensor, ``d / RMS(d)``, and scaled by an external learning-rate schedule
   ``lr_t`` (linear warm-up, cosine decay), so the per-tensor update RMS is exactly ``lr_t``:
   ``p <- p - lr_t * d / RMS(d)``.

Differences from the reference: no Adafactor (factored) features, no gradient-clipping feature (it breaks the
loss-scale invariance proved in the chapter), no Newton-Schulz orthogonalization (that is "Celo2"; without it
the rule is "Celo2-base"), and the MLP has a single (direction) output.

The recipe options follow the reference where it has them: ``bias_adam_mult`` gives 1-D tensors Adam as
``Celo2`` does (``celo/optimizers/celo2.py``: ``regex_1d``, ``mult_1d``); ``normalize_output=False`` drops only
the output normalizer (``normalize_output`` in ``celo2_optax.py``, ablated in Celo2); ``learn_lr`` learns one
constant step multiplier (a reduction of Celo's learned scheduler, ``celo/optimizers/celo.py``); meta-training
draws unroll lengths log-uniformly (``LogUniformLengthSchedule`` in ``celo/factory.py``) and augments tasks by
reparametrization (``celo/tasks.py``). One option is ours, not the reference's: :func:`feature_meta_params`
gives a warm start, an MLP that outputs the normalized ``m_0.9 / sqrt(v)`` feature (normalized Adam).

Meta-training (:func:`meta_train`) uses truncated PES (the estimator of
:func:`dltheory.learned_algorithms.es.pes_estimate`, batched over replicas) on tasks from
:mod:`dltheory.learned_algorithms.tasks`. Every function handles a *population* of ``P`` networks and ``P`` rule
parameter vectors at once (rows of ``(P, ...)`` tensors): ES particles, seeds, learning-rate grids and whole
independent meta-trainings (replicas with their own meta-seeds and output normalizers) are batched.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from dltheory.learned_algorithms import es as _es
from dltheory.learned_algorithms import tasks as _tasks
from dltheory.numerics.validate import check_int

FEATURE_NAMES = ("g", "p", "m_0.9", "m_0.99", "m_0.999", "v_0.95", "m_0.9/sqrt(v)", "m_0.99/sqrt(v)",
                 "m_0.999/sqrt(v)", "1/sqrt(v)", "g/sqrt(v)")


@dataclass(frozen=True)
class LOptConfig:
    """Architecture of the learned rule. ``eps`` is added to ``v`` under square roots, ``norm_eps`` to the
    mean square in the per-tensor normalizers (the reference uses 1e-8 and 1e-9). ``normalize_output``
    (``normalize_output`` of ``Celo2Transformation`` in ``celo2_optax.py``) divides the MLP's direction by
    its per-tensor RMS; ``False`` keeps the input normalization and drops only this output normalizer.
    ``learn_lr`` appends one meta-parameter, the log of a learned step multiplier (Celo's learned scheduler,
    ``celo/optimizers/celo.py``, reduced to a constant: the schedule's *shape* stays external).
    ``bias_adam_mult > 0`` updates 1-D tensors (biases) with Adam at ``bias_adam_mult`` times the step,
    ``m_0.9 / (sqrt(v_0.95) + 1e-8)`` without bias correction, as ``Celo2`` in ``celo/optimizers/celo2.py``
    does (``regex_1d``, ``mult_1d=20``, ``adam_b2=0.95`` in ``celo/factory.py``); ``0`` applies the learned
    rule to every tensor."""

    hidden: int = 8
    layers: int = 2
    mom_decays: tuple[float, ...] = (0.9, 0.99, 0.999)
    rms_decay: float = 0.95
    eps: float = 1e-8
    norm_eps: float = 1e-9
    normalize_output: bool = True
    learn_lr: bool = False
    bias_adam_mult: float = 0.0

    def __post_init__(self):
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden <= 0:
            raise ValueError(f"hidden must be a positive integer, got {self.hidden!r}")
        if isinstance(self.layers, bool) or not isinstance(self.layers, int) or self.layers < 0:
            raise ValueError(f"layers must be a non-negative integer, got {self.layers!r}")
        if len(self.mom_decays) != 3:
            raise ValueError(f"mom_decays must hold three decays, got {self.mom_decays!r}")
        for b in (*self.mom_decays, self.rms_decay):
            if not 0 <= b < 1:
                raise ValueError(f"decays must lie in [0, 1), got {b}")
        if not self.bias_adam_mult >= 0:
            raise ValueError(f"bias_adam_mult must be >= 0 (0: learned rule on biases too), got {self.bias_adam_mult}")
        if self.bias_adam_mult > 0 and (self.mom_decays[0] != 0.9 or self.rms_decay != 0.95):
            raise ValueError("bias_adam_mult > 0 reuses the accumulators m_0.9 and v_0.95: keep those decays")
        for nm in ("normalize_output", "learn_lr"):
            if not isinstance(getattr(self, nm), bool):
                raise ValueError(f"{nm} must be True or False, got {getattr(self, nm)!r}")

    @property
    def n_features(self) -> int:
        return len(FEATURE_NAMES)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.n_features, *([self.hidden] * self.layers), 1)


def n_mlp_params(cfg: LOptConfig) -> int:
    """Number of weights and biases of the rule's MLP (``ff_mod`` in ``celo2_optax.py``).
    Chapter: ``chapters/learned-algorithms/learned-optimizers.md``."""
    s = cfg.layer_sizes
    return sum(a * b + b for a, b in zip(s[:-1], s[1:]))


def n_meta_params(cfg: LOptConfig) -> int:
    """Number of meta-parameters: the MLP's weights and biases, plus one log step multiplier if
    ``cfg.learn_lr``."""
    return n_mlp_params(cfg) + int(cfg.learn_lr)


def lr_multiplier(theta: torch.Tensor, cfg: LOptConfig) -> torch.Tensor:
    """The learned step multiplier ``exp(theta[..., -1])`` per row of ``theta`` (ones if not ``cfg.learn_lr``).

    Chapter: ``chapters/learned-algorithms/learned-optimizers.md`` (Step 3). Celo (Moudgil et al. 2025, §3.2,
    ``celo/optimizers/celo.py``) learns a scheduler that multiplies the MLP's update; we learn only its
    constant part and keep the warm-up/cosine shape external, as Celo2 does (``celo2_optax.py``)."""
    if theta.shape[-1] != n_meta_params(cfg):
        raise ValueError(f"theta must have {n_meta_params(cfg)} entries per row, got {theta.shape[-1]}")
    if not cfg.learn_lr:
        return torch.ones(theta.shape[:-1], dtype=theta.dtype, device=theta.device)
    return torch.exp(theta[..., -1])


def init_meta_params(cfg: LOptConfig, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """Initial meta-parameters as a flat vector: weights truncated normal with std ``1/sqrt(fan_in)``
    (clipped at two std, as Haiku's ``TruncatedNormal`` in the reference), biases zero."""
    parts = []
    s = cfg.layer_sizes
    for a, b in zip(s[:-1], s[1:]):
        w = torch.randn(a * b, generator=generator, dtype=torch.float64)
        while bool((w.abs() > 2).any()):  # resample outside two std: a truncated normal
            bad = w.abs() > 2
            w[bad] = torch.randn(int(bad.sum()), generator=generator, dtype=torch.float64)
        parts += [w / math.sqrt(a), torch.zeros(b, dtype=torch.float64)]
    if cfg.learn_lr:
        parts.append(torch.zeros(1, dtype=torch.float64))  # log multiplier 0: start at the scheduled step
    return torch.cat(parts).to(dtype)


def feature_meta_params(cfg: LOptConfig, feature: str = "m_0.9/sqrt(v)", dtype=torch.float32) -> torch.Tensor:
    """Meta-parameters whose MLP outputs exactly one (normalized) input feature: ``d = relu(x) - relu(-x)``
    with ``x`` the feature, carried through the hidden layers by two units; every other weight is zero.

    With the default feature ``m_0.9 / sqrt(v)`` the rule is *normalized Adam without bias correction*:
    ``lr * N(m / sqrt(v))`` per tensor. Chapter: ``chapters/learned-algorithms/learned-optimizers.md``
    (Step 3, the warm start of meta-training). The Celo2 MLP (``celo2_optax.py``) can represent this rule
    exactly; Celo's ``celo_adam.py`` pairs the Adam direction with a learned scheduler.
    """
    if feature not in FEATURE_NAMES:
        raise ValueError(f"feature must be one of {FEATURE_NAMES}, got {feature!r}")
    if cfg.layers < 1 or cfg.hidden < 2:
        raise ValueError("the rule needs at least one hidden layer of two units to carry relu(x) - relu(-x)")
    j = FEATURE_NAMES.index(feature)
    parts = []
    s = cfg.layer_sizes
    for li, (a, b) in enumerate(zip(s[:-1], s[1:])):
        W = torch.zeros(a, b, dtype=torch.float64)
        if li == 0:
            W[j, 0], W[j, 1] = 1.0, -1.0
        elif li < len(s) - 2:
            W[0, 0], W[1, 1] = 1.0, 1.0
        else:
            W[0, 0], W[1, 0] = 1.0, -1.0
        parts += [W.reshape(-1), torch.zeros(b, dtype=torch.float64)]
    if cfg.learn_lr:
        parts.append(torch.zeros(1, dtype=torch.float64))
    return torch.cat(parts).to(dtype)


def _unpack(theta: torch.Tensor, cfg: LOptConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    P = theta.shape[0]
    if theta.shape[1] != n_mlp_params(cfg):
        raise ValueError(f"theta must have {n_mlp_params(cfg)} MLP entries per row, got {theta.shape[1]}")
    out, off = [], 0
    s = cfg.layer_sizes
    for a, b in zip(s[:-1], s[1:]):
        W = theta[:, off:off + a * b].reshape(P, a, b)
        off += a * b
        out.append((W, theta[:, off:off + b]))
        off += b
    return out


def normalize_per_tensor(x: torch.Tensor, segment: torch.Tensor, counts: torch.Tensor,
                         eps: float = 1e-9) -> torch.Tensor:
    """Divide ``x`` by its root mean square over each parameter tensor (per row and per feature).

    ``x`` has shape ``(P, N)`` or ``(P, N, F)``; ``segment`` ``(N,)`` gives the tensor index of each entry and
    ``counts`` the tensor sizes. The tensors must be stored one after the other in the flat row, as
    :func:`dltheory.learned_algorithms.tasks.layout` stores them (``segment`` sorted), so that each tensor is a
    contiguous slice: the mean is then taken slice by slice, several times faster on a CPU than a scatter
    over ``segment``. Implements ``_second_moment_normalizer`` of the Celo2 reference (``celo2_optax.py``),
    ``x * rsqrt(eps + mean(x^2))`` with the mean taken over one tensor.
    Chapter: ``chapters/learned-algorithms/learned-optimizers.md`` (Step 2).
    """
    if segment.shape != x.shape[1:2] or int(counts.sum()) != x.shape[1]:
        raise ValueError(f"segment {tuple(segment.shape)} and counts (sum {int(counts.sum())}) must cover the "
                         f"{x.shape[1]} entries of x")
    parts = torch.split(x, counts.tolist(), dim=1)
    return torch.cat([v * torch.rsqrt((v * v).mean(1, keepdim=True) + eps) for v in parts], dim=1)


@dataclass
class LOptState:
    """Accumulators of the learned rule for ``P`` networks: momenta ``m`` ``(P, N, 3)`` and second moment
    ``v`` ``(P, N)`` (exponential moving averages without bias correction, as in the reference)."""

    m: torch.Tensor
    v: torch.Tensor

    @staticmethod
    def zeros(params: torch.Tensor, cfg: LOptConfig) -> LOptState:
        P, N = params.shape
        return LOptState(params.new_zeros(P, N, len(cfg.mom_decays)), params.new_zeros(P, N))


def raw_features(p: torch.Tensor, g: torch.Tensor, state: LOptState, cfg: LOptConfig) -> torch.Tensor:
    """The un-normalized feature stack ``(P, N, 11)`` in the order of :data:`FEATURE_NAMES`."""
    rs = torch.rsqrt(state.v + cfg.eps)
    return torch.cat([g[..., None], p[..., None], state.m, state.v[..., None], state.m * rs[..., None],
                      rs[..., None], (g * rs)[..., None]], dim=-1)


def update_accumulators(g: torch.Tensor, state: LOptState, cfg: LOptConfig) -> LOptState:
    """Fold the new gradient into the moving averages (done *before* the features are computed)."""
    b = torch.tensor(cfg.mom_decays, dtype=g.dtype, device=g.device)
    m = b * state.m + (1 - b) * g[..., None]
    v = cfg.rms_decay * state.v + (1 - cfg.rms_decay) * g * g
    return LOptState(m, v)


def mlp_direction(theta: torch.Tensor, feats: torch.Tensor, cfg: LOptConfig) -> torch.Tensor:
    """Apply the rule's MLP (row ``i`` of ``theta`` to row ``i`` of ``feats`` ``(P, N, F)``) → ``(P, N)``.
    A single ``theta`` of shape ``(D,)`` is shared by all rows."""
    if theta.ndim == 1:
        theta = theta.expand(feats.shape[0], -1)
    layers = _unpack(theta[..., :n_mlp_params(cfg)], cfg)
    h = feats
    for i, (W, b) in enumerate(layers):
        h = torch.baddbmm(b[:, None, :], h, W)
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h[..., 0]


def lopt_direction(theta: torch.Tensor, p: torch.Tensor, g: torch.Tensor, state: LOptState,
                   lay: _tasks.Layout, cfg: LOptConfig, out_norm: torch.Tensor | None = None) -> torch.Tensor:
    """The update direction from already-updated accumulators: ``d / RMS(d)`` per tensor (the normalized
    rule) or the raw MLP output ``d`` (``cfg.normalize_output=False``). ``out_norm`` (boolean ``(P,)``)
    overrides ``cfg.normalize_output`` row by row, so normalized and raw rules run in one tensor program."""
    feats = normalize_per_tensor(raw_features(p, g, state, cfg), lay.segment, lay.counts, cfg.norm_eps)
    d = mlp_direction(theta[..., :n_mlp_params(cfg)], feats, cfg)
    if out_norm is None:
        d = normalize_per_tensor(d, lay.segment, lay.counts, cfg.norm_eps) if cfg.normalize_output else d
    else:
        d = torch.where(out_norm[:, None], normalize_per_tensor(d, lay.segment, lay.counts, cfg.norm_eps), d)
    if cfg.bias_adam_mult > 0:  # Celo2: 1-D tensors get Adam (b1 = 0.9, b2 = 0.95, no bias correction)
        adam = state.m[..., 0] / (state.v.sqrt() + 1e-8)
        d = torch.where(lay.is_bias, cfg.bias_adam_mult * adam, d)
    return d


def lopt_step(theta: torch.Tensor, p: torch.Tensor, g: torch.Tensor, state: LOptState, lr: torch.Tensor,
              lay: _tasks.Layout, cfg: LOptConfig,
              out_norm: torch.Tensor | None = None) -> tuple[torch.Tensor, LOptState]:
    """One step ``p <- p - lr * m(theta) * d / RMS(d)`` of the learned rule for ``P`` networks (``lr`` scalar
    or ``(P,)``; ``m(theta)`` the learned multiplier, 1 unless ``cfg.learn_lr``; without the output
    normalizer the step is ``lr * m * d``). Gradients are clipped to [-1000, 1000] first, as in
    ``Celo2Transformation.update`` (``celo2_optax.py``)."""
    upd, state = lopt_update(theta, p, g, state, lr, lay, cfg, out_norm)
    return p - upd, state


def lopt_update(theta: torch.Tensor, p: torch.Tensor, g: torch.Tensor, state: LOptState, lr: torch.Tensor,
                lay: _tasks.Layout, cfg: LOptConfig,
                out_norm: torch.Tensor | None = None) -> tuple[torch.Tensor, LOptState]:
    """The update ``lr * m(theta) * d`` that :func:`lopt_step` subtracts, and the new accumulators (measured
    directly, not as a difference of parameters, so that its RMS is exact in float32). Celo2 (Moudgil et al.
    2026, §3; ``Celo2Transformation.update`` in ``celo2_optax.py`` and ``Celo2.opt_fn`` in ``celo2.py``).
    Chapter: ``chapters/learned-algorithms/learned-optimizers.md`` (Step 2 and the scaling section)."""
    g = g.clamp(-1000.0, 1000.0)
    state = update_accumulators(g, state, cfg)
    if theta.ndim == 1:
        theta = theta.expand(p.shape[0], -1)
    d = lopt_direction(theta, p, g, state, lay, cfg, out_norm)
    lr = torch.as_tensor(lr, dtype=p.dtype, device=p.device) * lr_multiplier(theta, cfg).to(p.dtype)
    return (lr[:, None] if lr.ndim == 1 else lr) * d, state


def direction_from_history(theta: torch.Tensor, p: torch.Tensor, grads: list[torch.Tensor],
                           lay: _tasks.Layout, cfg: LOptConfig) -> torch.Tensor:
    """The normalized direction the rule outputs at parameters ``p`` ``(P, N)`` after seeing the gradient
    sequence ``grads`` (each ``(P, N)``, oldest first) from zero accumulators. Used to check the loss-scale
    invariance numerically: scaling every gradient by ``c > 0`` leaves the result unchanged when
    ``cfg.eps = cfg.norm_eps = 0``."""
    if not grads:
        raise ValueError("grads must hold at least one gradient")
    theta = theta.expand(p.shape[0], -1) if theta.ndim == 1 else theta
    state = LOptState.zeros(p, cfg)
    for g in grads:
        state = update_accumulators(g, state, cfg)
    return lopt_direction(theta, p, grads[-1], state, lay, cfg)


def schedule(t: int, total: int, warmup_frac: float = 0.05) -> float:
    """Learning-rate multiplier at step ``t`` of ``total``: linear warm-up over ``warmup_frac * total``
    steps, then cosine decay to zero at ``total``. Kept outside the learned network (Celo2)."""
    if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
        raise ValueError(f"total must be a positive integer, got {total!r}")
    if not 0 <= t < total:
        raise ValueError(f"step t must lie in [0, {total}), got {t}")
    w = max(1, round(warmup_frac * total))
    if t < w:
        return (t + 1) / w
    return 0.5 * (1 + math.cos(math.pi * (t - w) / max(1, total - w)))


@dataclass
class AdamState:
    m: torch.Tensor
    v: torch.Tensor
    t: int = 0

    @staticmethod
    def zeros(params: torch.Tensor) -> AdamState:
        return AdamState(torch.zeros_like(params), torch.zeros_like(params))


def adam_step(p: torch.Tensor, g: torch.Tensor, state: AdamState, lr: torch.Tensor, b1: float = 0.9,
              b2: float = 0.999, eps: float = 1e-8) -> tuple[torch.Tensor, AdamState]:
    """One bias-corrected Adam step (Kingma & Ba 2015, Algorithm 1) for ``P`` networks, ``lr`` ``(P,)``."""
    t = state.t + 1
    m = b1 * state.m + (1 - b1) * g
    v = b2 * state.v + (1 - b2) * g * g
    step = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
    lr = torch.as_tensor(lr, dtype=p.dtype, device=p.device)
    return p - (lr[:, None] if lr.ndim == 1 else lr) * step, AdamState(m, v, t)


# ---------------------------------------------------------------------------------------------------------
# Training a population of networks on one task
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Curves:
    """Full-training-set loss of every network, recorded every ``eval_every`` steps (and after the last)."""

    steps: list[int]
    loss: torch.Tensor  # (P, len(steps))
    update_rms_min: torch.Tensor | None = None  # (P, horizon), per-tensor update RMS / lr, if tracked
    update_rms_max: torch.Tensor | None = None

    @property
    def final(self) -> torch.Tensor:
        return self.loss[:, -1]

    def by_setting(self, n_seeds: int) -> torch.Tensor:
        """Curves averaged over seeds, ``(K, len(steps))``, for rows ordered as in :func:`evaluate`."""
        if self.loss.shape[0] % n_seeds:
            raise ValueError(f"{self.loss.shape[0]} rows are not a multiple of n_seeds={n_seeds}")
        return self.loss.reshape(-1, n_seeds, self.loss.shape[1]).mean(1)


def train_population(task: _tasks.Task, params: torch.Tensor, rule: str, horizon: int, lr_peak: torch.Tensor,
                     generator: torch.Generator, theta: torch.Tensor | None = None,
                     cfg: LOptConfig | None = None, eval_every: int = 10,
                     warmup_frac: float = 0.05, out_norm: torch.Tensor | None = None,
                     track_update_rms: bool = False) -> Curves:
    """Train ``P`` copies of ``task``'s network from ``params`` for ``horizon`` minibatch steps with ``rule``
    (``"adam"`` or ``"lopt"``; the latter needs ``theta`` ``(P, D)`` or ``(D,)`` and ``cfg``). All copies see
    the same minibatches. The learning rate is ``lr_peak * schedule(t, horizon)`` for both rules.
    ``out_norm`` (boolean ``(P,)``) selects normalized or raw learned rules per row. With
    ``track_update_rms`` the curves also hold, for every row and step, the smallest and largest per-tensor
    update RMS divided by the scheduled step, over the tensors the learned rule updates
    (``Curves.update_rms_min`` / ``update_rms_max``, ``(P, horizon)``).
    """
    if rule not in ("adam", "lopt"):
        raise ValueError(f"rule must be 'adam' or 'lopt', got {rule!r}")
    P = params.shape[0]
    spec = task.spec
    lay = _tasks.layout(spec, device=params.device)
    lr_peak = torch.as_tensor(lr_peak, dtype=params.dtype, device=params.device).expand(P)
    if rule == "lopt":
        if theta is None or cfg is None:
            raise ValueError("rule 'lopt' needs theta and cfg")
        theta = theta.to(params.dtype).to(params.device)
        theta = theta.expand(P, -1) if theta.ndim == 1 else theta
        state = LOptState.zeros(params, cfg)
        if out_norm is not None:
            out_norm = torch.as_tensor(out_norm, dtype=torch.bool, device=params.device).expand(P)
    else:
        state = AdamState.zeros(params)
    steps, losses, rms_lo, rms_hi = [], [], [], []
    n = task.X.shape[0]
    p = params
    for t in range(horizon):
        if t % eval_every == 0:
            steps.append(t)
            losses.append(_tasks.cross_entropy(_tasks.forward(spec, p, task.X), task.y))
        idx = torch.randint(n, (spec.batch_size,), generator=generator).to(task.X.device)
        _, g = _tasks.loss_and_grad(spec, p, task.X[idx], task.y[idx], lay=lay)
        lr = lr_peak * schedule(t, horizon, warmup_frac)
        p_old = p
        if rule == "lopt":
            upd, state = lopt_update(theta, p, g, state, lr, lay, cfg, out_norm)
            p = p - upd
        else:
            p, state = adam_step(p, g, state, lr)
            upd = p_old - p
        if track_update_rms:
            lr_eff = lr * lr_multiplier(theta, cfg).to(lr.dtype) if rule == "lopt" else lr
            r = per_tensor_rms(upd, lay) / lr_eff[:, None]
            if rule == "lopt" and cfg.bias_adam_mult > 0:  # 1-D tensors follow Adam: track the learned rule only
                r = r[:, [i for i, shp in enumerate(lay.shapes) if len(shp) > 1]]
            rms_lo.append(r.min(1).values)
            rms_hi.append(r.max(1).values)
    steps.append(horizon)
    losses.append(_tasks.cross_entropy(_tasks.forward(spec, p, task.X), task.y))
    loss = torch.nan_to_num(torch.stack(losses, dim=1), nan=float("inf"))
    out = Curves(steps, loss)
    if track_update_rms:
        out.update_rms_min, out.update_rms_max = torch.stack(rms_lo, 1), torch.stack(rms_hi, 1)
    return out


def per_tensor_rms(x: torch.Tensor, lay: _tasks.Layout) -> torch.Tensor:
    """Root mean square of ``x`` ``(P, N)`` over each parameter tensor: ``(P, n_tensors)``.
    Chapter: ``chapters/learned-algorithms/learned-optimizers.md`` (the Celo2 scaling section)."""
    sums = torch.zeros((x.shape[0], lay.n_tensors), dtype=x.dtype, device=x.device)
    sums.index_add_(1, lay.segment, x * x)
    return (sums / lay.counts.to(x.dtype)).sqrt()


def evaluate(task: _tasks.Task, rule: str, settings: torch.Tensor, horizon: int, n_seeds: int, seed: int,
             cfg: LOptConfig | None = None, lr_peak: float | None = None, eval_every: int = 10,
             out_norm: torch.Tensor | None = None, track_update_rms: bool = False) -> Curves:
    """Train ``task`` with ``n_seeds`` initializations under several settings at once.

    ``rule="adam"``: ``settings`` are peak learning rates ``(K,)``. ``rule="lopt"``: ``settings`` are rule
    parameters ``(K, D)`` (e.g. checkpoints of meta-training) run with peak learning rate ``lr_peak``.
    Rows of the returned curves are ordered setting-major: row ``k * n_seeds + j`` is setting ``k``, seed
    ``j``. The initializations and the minibatch sequence depend only on ``seed``, so every setting sees the
    same ones (a paired comparison). ``out_norm`` (boolean ``(K,)``) says which settings run with the
    output normalizer (default: ``cfg.normalize_output`` for all).
    """
    K = settings.shape[0]
    g = torch.Generator().manual_seed(int(seed))
    p0 = _tasks.init_params(task.spec, n_seeds, g, device=task.X.device)
    p0 = p0.repeat(K, 1)
    if rule == "adam":
        return train_population(task, p0, "adam", horizon, settings.repeat_interleave(n_seeds), g,
                                eval_every=eval_every)
    if lr_peak is None:
        raise ValueError("rule 'lopt' needs lr_peak")
    theta = settings.repeat_interleave(n_seeds, dim=0)
    if out_norm is not None:
        out_norm = torch.as_tensor(out_norm, dtype=torch.bool)
        if out_norm.shape != (K,):
            raise ValueError(f"out_norm must have shape ({K},), one flag per setting, got {tuple(out_norm.shape)}")
        out_norm = out_norm.repeat_interleave(n_seeds)
    return train_population(task, p0, "lopt", horizon, torch.tensor(float(lr_peak)), g, theta=theta, cfg=cfg,
                            eval_every=eval_every, out_norm=out_norm, track_update_rms=track_update_rms)


# ---------------------------------------------------------------------------------------------------------
# Meta-training with truncated PES
# ---------------------------------------------------------------------------------------------------------

@dataclass
class MetaTrainResult:
    theta: torch.Tensor
    meta_loss: list[float]  # mean of the antithetic pair losses, per meta-iteration
    checkpoints: dict[int, torch.Tensor] = field(default_factory=dict)  # meta-iteration -> theta
    tasks_seen: list[str] = field(default_factory=list)
    episode_iters: list[int] = field(default_factory=list)  # meta-iterations of each episode, in order
    wall_s: float = 0.0


def _episode_length(episode_len, trunc_len: int, g: torch.Generator) -> int:
    """A fixed episode length, or one drawn log-uniformly from ``(lo, hi)`` and rounded to a multiple of
    ``trunc_len`` (``LogUniformLengthSchedule`` in ``celo/factory.py``: unrolls of 100 to 2000 steps)."""
    if isinstance(episode_len, int):
        return episode_len
    lo, hi = episode_len
    u = float(torch.rand(1, generator=g, dtype=torch.float64))
    L = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return max(trunc_len, int(round(L / trunc_len)) * trunc_len)


def meta_train(cfg: LOptConfig, n_iters: int, n_pairs: int, trunc_len: int, episode_len, sigma: float,
               outer_lr: float, lr_peak: float, seed, persistent: bool = True,
               checkpoint_at: tuple[int, ...] = (), theta0: torch.Tensor | None = None,
               scale_range: tuple[float, float] = (0.5, 2.0), scale_level: str = "global", batch_size: int = 64,
               out_norm: tuple[bool, ...] | None = None, task_sampler=None, device=None,
               progress: bool = False) -> MetaTrainResult | list[MetaTrainResult]:
    """Meta-train the rule with truncated PES (Vicol et al. 2021) and Adam as outer optimizer.

    Chapter: ``chapters/learned-algorithms/learned-optimizers.md`` (Step 3 and the scaling section). Follows
    ``celo/train.py`` and ``get_grad_estimator("pes")`` in ``celo/factory.py`` of amoudgl/celo (PES over
    truncations of an unroll whose length is drawn log-uniformly, tasks augmented by ``ReparamWeights``).

    Each *episode* samples one task (``task_sampler(generator, batch_size)``, default
    :func:`dltheory.learned_algorithms.tasks.sample_train_task`) and, per antithetic pair, a fresh
    initialization and a parameter scale (log-uniform on ``scale_range``; ``scale_level="global"``: one scale
    per network, ``"tensor"``: one per parameter tensor, the ``tensor`` level of Celo's
    ``ReparamWeightsListFamily``). ``episode_len`` is an int or a range ``(lo, hi)`` from which each episode's
    length is drawn log-uniformly (a multiple of ``trunc_len``). The episode is split into truncations of
    ``trunc_len`` steps; each truncation is one meta-iteration: the ``2 n_pairs`` particles
    (``theta +- sigma eps_i``) train their own copy for ``trunc_len`` steps (pairs share minibatches), the
    meta-loss of a particle is its mean minibatch loss over the truncation divided by ``log(n_classes)``
    (capped at 3 to keep diverging particles finite), and the PES estimate updates ``theta``.
    ``persistent=False`` gives plain truncated ES. The inner learning rate is
    ``lr_peak * schedule(t, episode_len)`` (times the learned multiplier if ``cfg.learn_lr``).

    *Replicas.* ``seed`` may be a tuple of meta-seeds and ``out_norm`` a tuple of flags of the same length:
    then ``R`` independent meta-trainings run side by side in one tensor program (``R * 2 n_pairs`` particles)
    and a list of ``R`` results is returned. Replicas share the task sequence and episode lengths (drawn from
    the first seed); the initial ``theta``, the perturbations, the inner initializations, scales and minibatches
    are drawn per meta-seed, so two replicas with the same seed and different ``out_norm`` are a paired
    comparison that differs *only* in the output normalizer.

    Returns the final ``theta``, the meta-loss trace and the ``theta`` at each meta-iteration listed in
    ``checkpoint_at`` (0 = initialization).
    """
    for nm, v in (("n_iters", n_iters), ("n_pairs", n_pairs), ("trunc_len", trunc_len)):
        check_int(nm, v)
    if isinstance(episode_len, int):
        check_int("episode_len", episode_len)
        if episode_len % trunc_len:
            raise ValueError(f"episode_len ({episode_len}) must be a multiple of trunc_len ({trunc_len})")
    elif not (isinstance(episode_len, tuple) and len(episode_len) == 2 and 0 < episode_len[0] <= episode_len[1]):
        raise ValueError(f"episode_len must be a positive int or a range (lo, hi) with 0 < lo <= hi, "
                         f"got {episode_len!r}")
    if scale_level not in ("global", "tensor"):
        raise ValueError(f"scale_level must be 'global' or 'tensor', got {scale_level!r}")
    single = not isinstance(seed, tuple)
    seeds = (seed,) if single else seed
    if not seeds:
        raise ValueError("seed must be an int or a non-empty tuple of ints")
    R = len(seeds)
    flags = (cfg.normalize_output,) * R if out_norm is None else tuple(out_norm)
    if len(flags) != R or not all(isinstance(f, bool) for f in flags):
        raise ValueError(f"out_norm must hold {R} booleans (one per meta-seed), got {out_norm!r}")
    if theta0 is not None and theta0.shape[-1] != n_meta_params(cfg):
        raise ValueError(f"theta0 must have {n_meta_params(cfg)} entries, got {tuple(theta0.shape)}")
    t0 = time.perf_counter()
    uniq = list(dict.fromkeys(int(s) for s in seeds))
    gens = {s: torch.Generator().manual_seed(s) for s in uniq}
    row = [uniq.index(int(s)) for s in seeds]  # replica -> its meta-seed's slot
    gt = torch.Generator().manual_seed(int(seeds[0]) + 7_777_777)  # the shared task sequence
    sampler = task_sampler
    if sampler is None:
        digits = _tasks.digits_data()

        def sampler(gen, bs):
            return _tasks.sample_train_task(gen, digits, bs)
    if theta0 is not None:
        theta = theta0.clone().reshape(-1, theta0.shape[-1]).expand(R, -1).clone()
    else:
        init = {s: init_meta_params(cfg, gens[s]) for s in uniq}
        theta = torch.stack([init[int(s)] for s in seeds])
    theta = theta.to(device)
    D = theta.shape[1]
    outer = _es.OuterAdam(outer_lr)
    N = n_pairs
    ridx = torch.tensor(row, device=device)
    # particle rows: replica-major, then +/-, then pair: row (r, k, i) = r * 2N + k * N + i
    norm_rows = torch.tensor(flags, device=device).repeat_interleave(2 * N)
    res = [MetaTrainResult(theta=theta[r], meta_loss=[]) for r in range(R)]
    if 0 in checkpoint_at:
        for r in range(R):
            res[r].checkpoints[0] = theta[r].clone()
    t_inner, ep_len = 0, 1
    acc = torch.zeros(R, N, D, device=device)
    iterator = range(1, n_iters + 1)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="meta-training")

    def per_seed(fn):  # draw once per meta-seed, then give every replica its seed's draw
        return torch.stack([fn(gens[s]) for s in uniq])[ridx.cpu()].to(device)

    for it in iterator:
        if t_inner == 0:
            task = sampler(gt, batch_size).to(device)
            ep_len = _episode_length(episode_len, trunc_len, gt)
            for r in res:
                r.tasks_seen.append(task.spec.name)
                r.episode_iters.append(ep_len // trunc_len)
            spec = task.spec
            lay = _tasks.layout(spec, device=device)
            if scale_level == "global":
                sc = per_seed(lambda gg: _tasks.sample_param_scale(N, gg, *scale_range))  # (R, N)
                scale = sc[:, None, :].expand(R, 2, N).reshape(-1)
            else:
                lay_cpu = _tasks.layout(spec)
                sc = per_seed(lambda gg, lc=lay_cpu: _tasks.sample_tensor_scale(N, lc, gg, *scale_range))
                scale = sc[:, None].expand(R, 2, N, lay.n_params).reshape(-1, lay.n_params)
            p = per_seed(lambda gg, sp=spec: _tasks.init_params(sp, N, gg))  # (R, N, n), internal u at scale 1
            p = p[:, None].expand(R, 2, N, lay.n_params).reshape(-1, lay.n_params)
            p = p / (scale[:, None] if scale.ndim == 1 else scale)
            state = LOptState.zeros(p, cfg)
            acc = torch.zeros(R, N, D, device=device)
            log_c = math.log(spec.n_classes)
        eps = per_seed(lambda gg: torch.randn(N, D, generator=gg))  # (R, N, D)
        thetas = _es.antithetic_population(theta, eps, sigma).reshape(-1, D)
        tot = torch.zeros(R * 2 * N, device=device)
        for k in range(trunc_len):
            idx = per_seed(lambda gg, n=task.X.shape[0], b=spec.batch_size: torch.randint(n, (N, b), generator=gg))
            idx = idx[:, None].expand(R, 2, N, spec.batch_size).reshape(-1, spec.batch_size)
            loss, grad = _tasks.loss_and_grad(spec, p, task.X[idx], task.y[idx], param_scale=scale, lay=lay)
            tot = tot + torch.nan_to_num(loss / log_c, nan=3.0).clamp(max=3.0)
            lr = lr_peak * schedule(t_inner + k, ep_len)
            p, state = lopt_step(thetas, p, grad, state, torch.tensor(lr), lay, cfg, norm_rows)
            p = torch.nan_to_num(p, nan=0.0, posinf=0.0, neginf=0.0)
        ml = (tot / trunc_len).reshape(R, 2, N)
        est, acc = _es.pes_estimate(ml[:, 0], ml[:, 1], eps, acc, sigma, persistent=persistent)  # per replica
        theta = outer.step(theta, est)
        for r in range(R):
            res[r].meta_loss.append(float(ml[r].mean()))
            if it in checkpoint_at:
                res[r].checkpoints[it] = theta[r].clone()
        t_inner += trunc_len
        if t_inner >= ep_len:
            t_inner = 0
    wall = time.perf_counter() - t0
    for r in range(R):
        res[r].theta, res[r].wall_s = theta[r].clone(), wall
    return res[0] if single else res
