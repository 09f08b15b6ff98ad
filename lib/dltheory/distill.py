"""Teachers, students and (progressive) knowledge distillation on sparse parity, several seeds at once.

Defined for the chapter *Progressive distillation and its implicit curriculum*
(``chapters/distillation/progressive-distillation.md``), after Panigrahi, Liu, Malladi, Risteski & Goel (ICLR 2025,
arXiv 2410.05464) and their reference code ``abhishekpanigrahi1996/ProgressiveDistillation`` (``parity/``):

* one-hidden-layer ReLU MLPs with two output logits and PyTorch's default ``nn.Linear`` initialization
  (reference ``prepare_model``), trained by plain SGD at a constant learning rate on fresh samples
  (``boolean_expts.py``, ``anneal_type='constant'``);
* the student loss ``alpha * CE(y, student) + (1 - alpha) * KL(teacher_tau || student)`` with the teacher's
  logits divided by a temperature ``tau`` (``boolean_distill_expts.py``; ``tau = 0`` means the teacher's hard
  argmax label);
* progressive distillation: at student step ``s`` the teacher is the first saved checkpoint at or after ``s``
  (their ``teacher_ckpt_step`` rule with ``ckpt_multiplier = 1``); one-shot distillation uses the final
  checkpoint throughout.

Seeds are batched: every parameter tensor carries a leading seed axis and all seeds advance with one batched
matrix product (``torch.baddbmm``). Seed ``s`` gets its own generator for its initialization and its own data
stream, so its numbers do not depend on which other seeds run beside it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from dltheory.parity import labels_from_parity, parity, sample_parity

METHODS = ("ce", "oneshot", "progressive")


def _check_pos_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _check_seeds(seeds) -> list[int]:
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of non-negative integers, got {seeds!r}")
    return [int(s) for s in seeds]


@dataclass
class MLP:
    """A batch of one-hidden-layer ReLU MLPs ``x -> W2 relu(W1 x + b1) + b2``, one per seed.

    Shapes: ``W1 (S, m, n)``, ``b1 (S, m)``, ``W2 (S, c, m)``, ``b2 (S, c)``."""

    W1: torch.Tensor
    b1: torch.Tensor
    W2: torch.Tensor
    b2: torch.Tensor

    def tensors(self) -> list[torch.Tensor]:
        return [self.W1, self.b1, self.W2, self.b2]

    @property
    def num_seeds(self) -> int:
        return self.W1.shape[0]

    @property
    def width(self) -> int:
        return self.W1.shape[1]

    def detached(self) -> MLP:
        """A copy that shares nothing with ``self`` (a checkpoint)."""
        return MLP(*(t.detach().clone() for t in self.tensors()))

    def select(self, idx: Sequence[int]) -> MLP:
        """The MLPs of the seeds at positions ``idx``."""
        idx = torch.as_tensor(list(idx), dtype=torch.long)
        return MLP(*(t[idx] for t in self.tensors()))


def init_mlp(seeds: Sequence[int], n: int, width: int, num_labels: int = 2,
             dtype: torch.dtype = torch.float32) -> MLP:
    """PyTorch's default ``nn.Linear`` initialization (weights and biases uniform in ``+-1/sqrt(fan_in)``),
    as in the reference ``prepare_model``; seed ``s`` is drawn from ``torch.Generator().manual_seed(s)``."""
    seeds = _check_seeds(seeds)
    n, width, num_labels = (_check_pos_int(a, b) for a, b in (("n", n), ("width", width), ("num_labels", num_labels)))
    parts = []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        b_in, b_h = 1 / math.sqrt(n), 1 / math.sqrt(width)
        parts.append([(torch.rand(width, n, generator=g, dtype=dtype) * 2 - 1) * b_in,
                      (torch.rand(width, generator=g, dtype=dtype) * 2 - 1) * b_in,
                      (torch.rand(num_labels, width, generator=g, dtype=dtype) * 2 - 1) * b_h,
                      (torch.rand(num_labels, generator=g, dtype=dtype) * 2 - 1) * b_h])
    return MLP(*(torch.stack([p[i] for p in parts]) for i in range(4)))


def mlp_logits(params: MLP, x: torch.Tensor) -> torch.Tensor:
    """Logits ``(S, B, c)`` for inputs ``x`` of shape ``(S, B, n)`` (one batch per seed) or ``(B, n)`` (shared)."""
    if x.dim() == 2:
        x = x.expand(params.num_seeds, *x.shape)
    if x.shape[0] != params.num_seeds or x.shape[-1] != params.W1.shape[-1]:
        raise ValueError(f"x has shape {tuple(x.shape)}; expected ({params.num_seeds}, B, {params.W1.shape[-1]})")
    h = torch.relu(torch.baddbmm(params.b1.unsqueeze(1), x, params.W1.transpose(1, 2)))
    return torch.baddbmm(params.b2.unsqueeze(1), h, params.W2.transpose(1, 2))


class ParityStream:
    """Fresh ``(n, k)``-sparse-parity batches, one independent stream per seed (online SGD, as in the paper:
    every training example is seen once). ``next()`` returns ``x (S, B, n)`` and ``y (S, B)``."""

    def __init__(self, seeds: Sequence[int], n: int, support: Sequence[int], batch: int, chunk: int = 256,
                 dtype: torch.dtype = torch.float32):
        self.seeds = _check_seeds(seeds)
        self.n, self.batch, self.chunk = _check_pos_int("n", n), _check_pos_int("batch", batch), _check_pos_int(
            "chunk", chunk)
        self.support, self.dtype = list(support), dtype
        self.gens = [torch.Generator().manual_seed(s) for s in self.seeds]
        self._buf: tuple[torch.Tensor, torch.Tensor] | None = None
        self._pos = chunk

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pos >= self.chunk:
            xs, ys = zip(*(sample_parity((self.chunk, self.batch), self.n, self.support, g, self.dtype)
                           for g in self.gens))
            self._buf, self._pos = (torch.stack(xs, 1), torch.stack(ys, 1)), 0
        x, y = self._buf[0][self._pos], self._buf[1][self._pos]
        self._pos += 1
        return x, y


def _check_alpha_temperature(alpha: float, temperature: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if temperature < 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be finite and >= 0 (0 = hard teacher labels), got {temperature}")


def teacher_target(teacher_logits: torch.Tensor, temperature: float, dtype: torch.dtype
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The distillation target ``q = softmax(teacher / tau)`` and its log, or for ``tau = 0`` the one-hot
    argmax of the teacher and ``None`` (its log is 0 where ``q`` is 1)."""
    if temperature == 0:
        return F.one_hot(teacher_logits.argmax(-1), teacher_logits.shape[-1]).to(dtype), None
    logq = F.log_softmax(teacher_logits / temperature, dim=-1)
    return logq.exp(), logq


def distill_loss(student_logits: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None,
                 alpha: float = 0.0, temperature: float = 1.0) -> torch.Tensor:
    """``alpha * CE(y, student) + (1 - alpha) * KL(softmax(teacher / tau) || softmax(student))``, averaged over
    the batch axis and summed over the seed axis (seeds are independent, so each seed's gradient is its own).

    Shapes: logits ``(S, B, c)``, labels ``(S, B)``. ``teacher_logits=None`` gives plain cross-entropy
    (``alpha`` is then ignored). ``temperature = 0`` uses the teacher's argmax as a one-hot target. Implements
    the loss of the reference ``boolean_distill_expts.py`` (``kl_type='forward'``); the teacher's entropy, which
    the reference leaves in, does not change the gradient."""
    _check_alpha_temperature(alpha, temperature)
    logp = F.log_softmax(student_logits, dim=-1)
    ce = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(-1)  # (S,)
    if teacher_logits is None:
        return ce.sum()
    q, logq = teacher_target(teacher_logits, temperature, logp.dtype)
    kl = (q * ((0.0 if logq is None else logq) - logp)).sum(-1).mean(-1)
    return (alpha * ce + (1 - alpha) * kl).sum()


@torch.no_grad()
def accuracy(params: MLP, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Test accuracy per seed, shape ``(S,)``, on a shared test set ``x (N, n)``, ``y (N,)``."""
    return (mlp_logits(params, x).argmax(-1) == y).to(torch.float64).mean(-1)


@dataclass
class Checkpoints:
    """Teacher snapshots saved every ``every`` steps (``steps[i] = (i + 1) * every``; the last one may be the
    final step). ``params[i]`` holds all seeds' teachers at ``steps[i]``."""

    steps: list[int] = field(default_factory=list)
    params: list[MLP] = field(default_factory=list)

    def index_for_step(self, step: int) -> int:
        """Progressive distillation's rule: the first checkpoint saved at or after ``step`` (``step >= 1``;
        step 0 uses the first checkpoint), or the last checkpoint once the student has passed them all."""
        if not self.steps:
            raise ValueError("no teacher checkpoints were saved")
        return min(bisect.bisect_left(self.steps, max(int(step), 1)), len(self.steps) - 1)

    def subsample(self, every: int) -> Checkpoints:
        """Every ``every``-th checkpoint (sparser spacing), always keeping the final one."""
        every = _check_pos_int("every", every)
        idx = list(range(every - 1, len(self.steps), every))
        if not idx or idx[-1] != len(self.steps) - 1:
            idx.append(len(self.steps) - 1)
        return Checkpoints([self.steps[i] for i in idx], [self.params[i] for i in idx])

    def final(self) -> Checkpoints:
        """Only the last checkpoint: one-shot distillation."""
        return Checkpoints(self.steps[-1:], self.params[-1:])


@dataclass
class History:
    """Test accuracy ``acc (S, T)`` at ``eval_steps (T,)`` (step = number of SGD updates done)."""

    eval_steps: list[int] = field(default_factory=list)
    acc: list[np.ndarray] = field(default_factory=list)
    teacher_steps: list[int] = field(default_factory=list)  # checkpoint used at each eval (distillation only)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.eval_steps), np.stack(self.acc, axis=1)


def loss_and_grads(params: MLP, x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                   alpha: float = 0.0, temperature: float = 1.0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """:func:`distill_loss` and its gradient with respect to ``(W1, b1, W2, b2)``, by hand.

    The gradient of ``alpha * CE + (1 - alpha) * KL`` with respect to the student's logits is
    ``(softmax(logits) - target) / B`` with ``target = alpha * onehot(y) + (1 - alpha) * q`` (``q`` the teacher's
    tempered probabilities); back-propagating it through the two layers takes four batched matrix products.
    About twice as fast as autograd for these small networks; ``tests/test_distill.py`` checks it against
    autograd and with ``torch.autograd.gradcheck``."""
    _check_alpha_temperature(alpha, temperature)
    B = x.shape[1]
    z1 = torch.baddbmm(params.b1.unsqueeze(1), x, params.W1.transpose(1, 2))
    h = torch.relu(z1)
    logits = torch.baddbmm(params.b2.unsqueeze(1), h, params.W2.transpose(1, 2))
    c = logits.shape[-1]
    logp = F.log_softmax(logits, dim=-1)
    onehot = F.one_hot(y, c).to(logits.dtype)
    if teacher_logits is None:
        target = onehot
        loss = -(onehot * logp).sum(-1).mean(-1).sum()
    else:
        q, logq = teacher_target(teacher_logits, temperature, logits.dtype)
        kl = (q * ((0.0 if logq is None else logq) - logp)).sum(-1)
        target = alpha * onehot + (1 - alpha) * q
        loss = (alpha * -(onehot * logp).sum(-1) + (1 - alpha) * kl).mean(-1).sum()
    dlogits = (logp.exp() - target) / B                         # (S, B, c)
    dW2 = torch.bmm(dlogits.transpose(1, 2), h)                 # (S, c, m)
    db2 = dlogits.sum(1)
    dz1 = torch.bmm(dlogits, params.W2) * (z1 > 0)              # (S, B, m)
    dW1 = torch.bmm(dz1.transpose(1, 2), x)                     # (S, m, n)
    db1 = dz1.sum(1)
    return loss, [dW1, db1, dW2, db2]


def train(params: MLP, stream: ParityStream, lr: float, steps: int, x_test: torch.Tensor, y_test: torch.Tensor,
          eval_every: int, method: str = "ce", teacher: Checkpoints | None = None, alpha: float = 0.0,
          temperature: float = 1.0, save_every: int | None = None, stop_at: float | None = None
          ) -> tuple[MLP, History, Checkpoints]:
    """Online SGD on fresh parity batches, all seeds at once. Returns ``(final params, history, checkpoints)``.

    * ``method='ce'``: cross-entropy on the labels (teacher training, and the CE student);
    * ``method='oneshot'``: distill from ``teacher``'s final checkpoint at every step;
    * ``method='progressive'``: at step ``s`` distill from ``teacher.params[teacher.index_for_step(s)]``;
    * ``save_every``: save a checkpoint of ``params`` every that many steps (and at the last step);
    * ``stop_at``: stop early once every seed's test accuracy is ``>= stop_at`` at an evaluation.

    Student seed ``i`` distils from teacher seed ``i`` (the teacher's seed axis must match).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if method != "ce" and (teacher is None or not teacher.steps):
        raise ValueError(f"method {method!r} needs teacher checkpoints")
    if method != "ce" and teacher.params[0].num_seeds != params.num_seeds:
        raise ValueError(f"the teacher has {teacher.params[0].num_seeds} seeds, the student {params.num_seeds}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr}")
    steps, eval_every = _check_pos_int("steps", steps), _check_pos_int("eval_every", eval_every)
    if len(stream.seeds) != params.num_seeds:
        raise ValueError(f"the stream has {len(stream.seeds)} seeds but params have {params.num_seeds}")
    cur = params.detached()
    p = cur.tensors()
    hist, ckpts = History(), Checkpoints()
    if method == "oneshot":
        teacher = teacher.final()

    def log(step: int, tstep: int | None) -> bool:
        acc = accuracy(cur, x_test, y_test).numpy()
        hist.eval_steps.append(step)
        hist.acc.append(acc)
        if tstep is not None:
            hist.teacher_steps.append(tstep)
        return stop_at is not None and bool((acc >= stop_at).all())

    t_idx = teacher.index_for_step(0) if method != "ce" else None
    log(0, teacher.steps[t_idx] if t_idx is not None else None)
    with torch.no_grad():
        for step in range(steps):
            x, y = stream.next()
            t_logits = None
            if method != "ce":
                t_idx = teacher.index_for_step(step)
                t_logits = mlp_logits(teacher.params[t_idx], x)
            _, grads = loss_and_grads(cur, x, y, t_logits, alpha, temperature)
            for t, g in zip(p, grads):
                t.sub_(g, alpha=lr)
            done = step + 1
            if save_every is not None and (done % save_every == 0 or done == steps):
                ckpts.steps.append(done)
                ckpts.params.append(cur.detached())
            if done % eval_every == 0 or done == steps:
                if log(done, teacher.steps[t_idx] if t_idx is not None else None):
                    break
    return cur.detached(), hist, ckpts


def steps_to_accuracy(eval_steps: np.ndarray, acc: np.ndarray, threshold: float, budget: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """First evaluated step at which each seed's accuracy is ``>= threshold``.

    ``acc`` has shape ``(S, T)``. Returns ``(steps, reached)``: a seed that never reaches the threshold gets
    ``steps = budget`` and ``reached = False`` (a censored value, a lower bound on the true step count)."""
    acc = np.asarray(acc)
    if acc.ndim != 2 or acc.shape[1] != len(eval_steps):
        raise ValueError(f"acc must have shape (seeds, {len(eval_steps)}), got {acc.shape}")
    hit = acc >= threshold
    reached = hit.any(axis=1)
    first = np.where(reached, np.asarray(eval_steps)[hit.argmax(axis=1)], budget)
    return first.astype(int), reached


@torch.no_grad()
def checkpoint_probs(ckpts: Checkpoints, x: torch.Tensor, label: int = 1) -> torch.Tensor:
    """``p(y = label | x)`` of every checkpoint and seed, shape ``(C, S, N)``, in float64, on ``x (N, n)``."""
    out = []
    for prm in ckpts.params:
        p64 = MLP(*(t.to(torch.float64) for t in prm.tensors()))
        out.append(torch.softmax(mlp_logits(p64, x.to(torch.float64)), -1)[..., label])
    return torch.stack(out)


@torch.no_grad()
def checkpoint_accuracy(ckpts: Checkpoints, x: torch.Tensor, support: Sequence[int]) -> torch.Tensor:
    """Accuracy of every checkpoint and seed on ``x``, shape ``(C, S)``."""
    y = labels_from_parity(parity(x, support))
    return torch.stack([(mlp_logits(p, x.to(p.W1.dtype)).argmax(-1) == y).double().mean(-1) for p in ckpts.params])
