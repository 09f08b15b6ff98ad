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
the rule is "Celo2-base"), the learned rule is applied to every tensor including biases, and the MLP has a
single (direction) output.

Meta-training (:func:`meta_train`) uses truncated PES from :mod:`dltheory.learned_algorithms.es` on tasks from
:mod:`dltheory.learned_algorithms.tasks`. Every function handles a *population* of ``P`` networks and ``P`` rule
parameter vectors at once (rows of ``(P, ...)`` tensors): ES particles, seeds and learning-rate grids are batched.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from dltheory.learned_algorithms import es as _es
from dltheory.learned_algorithms import tasks as _tasks

FEATURE_NAMES = ("g", "p", "m_0.9", "m_0.99", "m_0.999", "v_0.95", "m_0.9/sqrt(v)", "m_0.99/sqrt(v)",
                 "m_0.999/sqrt(v)", "1/sqrt(v)", "g/sqrt(v)")


@dataclass(frozen=True)
class LOptConfig:
    """Architecture of the learned rule. ``eps`` is added to ``v`` under square roots, ``norm_eps`` to the
    mean square in the per-tensor normalizers (the reference uses 1e-8 and 1e-9)."""

    hidden: int = 8
    layers: int = 2
    mom_decays: tuple[float, ...] = (0.9, 0.99, 0.999)
    rms_decay: float = 0.95
    eps: float = 1e-8
    norm_eps: float = 1e-9

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

    @property
    def n_features(self) -> int:
        return len(FEATURE_NAMES)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.n_features, *([self.hidden] * self.layers), 1)


def n_meta_params(cfg: LOptConfig) -> int:
    """Number of meta-parameters (weights and biases of the rule's MLP)."""
    s = cfg.layer_sizes
    return sum(a * b + b for a, b in zip(s[:-1], s[1:]))


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
    return torch.cat(parts).to(dtype)


def _unpack(theta: torch.Tensor, cfg: LOptConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    P = theta.shape[0]
    if theta.shape[1] != n_meta_params(cfg):
        raise ValueError(f"theta must have {n_meta_params(cfg)} entries per row, got {theta.shape[1]}")
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
    ``counts`` the tensor sizes. Implements ``_second_moment_normalizer`` of the Celo2 reference,
    ``x * rsqrt(eps + mean(x^2))`` with the mean taken over one tensor.
    """
    sq = x * x
    sums = torch.zeros((x.shape[0], counts.numel(), *x.shape[2:]), dtype=x.dtype, device=x.device)
    sums.index_add_(1, segment, sq)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    ms = sums / counts.to(x.dtype).reshape(shape)
    return x * torch.rsqrt(ms + eps).index_select(1, segment)


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
    layers = _unpack(theta, cfg)
    h = feats
    for i, (W, b) in enumerate(layers):
        h = torch.baddbmm(b[:, None, :], h, W)
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h[..., 0]


def lopt_direction(theta: torch.Tensor, p: torch.Tensor, g: torch.Tensor, state: LOptState,
                   lay: _tasks.Layout, cfg: LOptConfig) -> torch.Tensor:
    """The normalized update direction ``d / RMS(d)`` (per tensor), from already-updated accumulators."""
    feats = normalize_per_tensor(raw_features(p, g, state, cfg), lay.segment, lay.counts, cfg.norm_eps)
    d = mlp_direction(theta, feats, cfg)
    return normalize_per_tensor(d, lay.segment, lay.counts, cfg.norm_eps)


def lopt_step(theta: torch.Tensor, p: torch.Tensor, g: torch.Tensor, state: LOptState, lr: torch.Tensor,
              lay: _tasks.Layout, cfg: LOptConfig) -> tuple[torch.Tensor, LOptState]:
    """One step ``p <- p - lr * d / RMS(d)`` of the learned rule for ``P`` networks (``lr`` scalar or
    ``(P,)``). Gradients are clipped to [-1000, 1000] first, as in the reference."""
    g = g.clamp(-1000.0, 1000.0)
    state = update_accumulators(g, state, cfg)
    d = lopt_direction(theta, p, g, state, lay, cfg)
    lr = torch.as_tensor(lr, dtype=p.dtype, device=p.device)
    return p - (lr[:, None] if lr.ndim == 1 else lr) * d, state


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
                     warmup_frac: float = 0.05) -> Curves:
    """Train ``P`` copies of ``task``'s network from ``params`` for ``horizon`` minibatch steps with ``rule``
    (``"adam"`` or ``"lopt"``; the latter needs ``theta`` ``(P, D)`` or ``(D,)`` and ``cfg``). All copies see
    the same minibatches. The learning rate is ``lr_peak * schedule(t, horizon)`` for both rules.
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
    else:
        state = AdamState.zeros(params)
    steps, losses = [], []
    n = task.X.shape[0]
    p = params
    for t in range(horizon):
        if t % eval_every == 0:
            steps.append(t)
            losses.append(_tasks.cross_entropy(_tasks.forward(spec, p, task.X), task.y))
        idx = torch.randint(n, (spec.batch_size,), generator=generator).to(task.X.device)
        _, g = _tasks.loss_and_grad(spec, p, task.X[idx], task.y[idx], lay=lay)
        lr = lr_peak * schedule(t, horizon, warmup_frac)
        if rule == "lopt":
            p, state = lopt_step(theta, p, g, state, lr, lay, cfg)
        else:
            p, state = adam_step(p, g, state, lr)
    steps.append(horizon)
    losses.append(_tasks.cross_entropy(_tasks.forward(spec, p, task.X), task.y))
    loss = torch.nan_to_num(torch.stack(losses, dim=1), nan=float("inf"))
    return Curves(steps, loss)


def evaluate(task: _tasks.Task, rule: str, settings: torch.Tensor, horizon: int, n_seeds: int, seed: int,
             cfg: LOptConfig | None = None, lr_peak: float | None = None, eval_every: int = 10) -> Curves:
    """Train ``task`` with ``n_seeds`` initializations under several settings at once.

    ``rule="adam"``: ``settings`` are peak learning rates ``(K,)``. ``rule="lopt"``: ``settings`` are rule
    parameters ``(K, D)`` (e.g. checkpoints of meta-training) run with peak learning rate ``lr_peak``.
    Rows of the returned curves are ordered setting-major: row ``k * n_seeds + j`` is setting ``k``, seed
    ``j``. The initializations and the minibatch sequence depend only on ``seed``, so every setting sees the
    same ones (a paired comparison).
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
    return train_population(task, p0, "lopt", horizon, torch.tensor(float(lr_peak)), g, theta=theta, cfg=cfg,
                            eval_every=eval_every)


# ---------------------------------------------------------------------------------------------------------
# Meta-training with truncated PES
# ---------------------------------------------------------------------------------------------------------

@dataclass
class MetaTrainResult:
    theta: torch.Tensor
    meta_loss: list[float]  # mean of the antithetic pair losses, per meta-iteration
    checkpoints: dict[int, torch.Tensor] = field(default_factory=dict)  # meta-iteration -> theta
    tasks_seen: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def meta_train(cfg: LOptConfig, n_iters: int, n_pairs: int, trunc_len: int, episode_len: int, sigma: float,
               outer_lr: float, lr_peak: float, seed: int, persistent: bool = True,
               checkpoint_at: tuple[int, ...] = (), theta0: torch.Tensor | None = None,
               scale_range: tuple[float, float] = (0.5, 2.0), batch_size: int = 64, device=None,
               progress: bool = False) -> MetaTrainResult:
    """Meta-train the rule with truncated PES (Vicol et al. 2021) and Adam as outer optimizer.

    Each *episode* samples one task from :func:`dltheory.learned_algorithms.tasks.sample_train_task` and, per antithetic
    pair, a fresh initialization and a parameter scale (log-uniform on ``scale_range``). The episode's
    ``episode_len`` inner steps are split into truncations of ``trunc_len`` steps; each truncation is one
    meta-iteration: the ``2 n_pairs`` particles (``theta +- sigma eps_i``) train their own copy for
    ``trunc_len`` steps (pairs share minibatches), the meta-loss of a particle is its mean minibatch loss over
    the truncation divided by ``log(n_classes)`` (capped at 3 to keep diverging particles finite), and the
    PES estimate updates ``theta``. ``persistent=False`` gives plain truncated ES. The inner learning rate is
    ``lr_peak * schedule(t, episode_len)``. Returns the final ``theta``, the meta-loss trace and the
    ``theta`` at each meta-iteration listed in ``checkpoint_at`` (0 = initialization).
    """
    for nm, v in (("n_iters", n_iters), ("n_pairs", n_pairs), ("trunc_len", trunc_len),
                  ("episode_len", episode_len)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{nm} must be a positive integer, got {v!r}")
    if episode_len % trunc_len:
        raise ValueError(f"episode_len ({episode_len}) must be a multiple of trunc_len ({trunc_len})")
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(int(seed))
    digits = _tasks.digits_data()
    theta = (theta0.clone() if theta0 is not None else init_meta_params(cfg, g)).to(device)
    D = theta.numel()
    outer = _es.OuterAdam(outer_lr)
    N, P = n_pairs, 2 * n_pairs
    res = MetaTrainResult(theta=theta, meta_loss=[])
    if 0 in checkpoint_at:
        res.checkpoints[0] = theta.clone()
    t_inner = 0
    acc = torch.zeros(N, D, device=device)
    iterator = range(1, n_iters + 1)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="meta-training")
    for it in iterator:
        if t_inner == 0:
            task = _tasks.sample_train_task(g, digits, batch_size).to(device)
            res.tasks_seen.append(task.spec.name)
            spec = task.spec
            lay = _tasks.layout(spec, device=device)
            scale = _tasks.sample_param_scale(N, g).to(device).repeat(2)
            p = _tasks.init_params(spec, N, g, param_scale=scale[:N], device=device).repeat(2, 1)
            state = LOptState.zeros(p, cfg)
            acc = torch.zeros(N, D, device=device)
            log_c = math.log(spec.n_classes)
        eps = torch.randn(N, D, generator=g).to(device)
        thetas = _es.antithetic_population(theta, eps, sigma)
        tot = torch.zeros(P, device=device)
        for k in range(trunc_len):
            idx = torch.randint(task.X.shape[0], (N, spec.batch_size), generator=g).to(device).repeat(2, 1)
            loss, grad = _tasks.loss_and_grad(spec, p, task.X[idx], task.y[idx], param_scale=scale, lay=lay)
            tot = tot + torch.nan_to_num(loss / log_c, nan=3.0).clamp(max=3.0)
            lr = lr_peak * schedule(t_inner + k, episode_len)
            p, state = lopt_step(thetas, p, grad, state, torch.tensor(lr), lay, cfg)
            p = torch.nan_to_num(p, nan=0.0, posinf=0.0, neginf=0.0)
        ml = tot / trunc_len
        est, acc = _es.pes_estimate(ml[:N], ml[N:], eps, acc, sigma, persistent=persistent)
        theta = outer.step(theta, est)
        res.meta_loss.append(float(ml.mean()))
        t_inner += trunc_len
        if t_inner >= episode_len:
            t_inner = 0
        if it in checkpoint_at:
            res.checkpoints[it] = theta.clone()
    res.theta = theta
    res.wall_s = time.perf_counter() - t0
    return res
