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
* progressive distillation (:class:`Plan`, :func:`train_students`): at student step ``s`` the teacher is the first
  listed checkpoint at or after ``s`` (their ``teacher_ckpt_step`` rule with ``ckpt_multiplier = 1``); one-shot
  distillation lists only the final checkpoint, their "2-shot" distillation one intermediate checkpoint and the
  final one.

Seeds are batched: every parameter tensor carries a leading seed axis and all seeds advance with one batched
matrix product (``torch.baddbmm``). Seed ``s`` gets its own generator for its initialization and its own data
stream, so its numbers do not depend on which other seeds run beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from dltheory.distillation.parity import check_nk, labels_from_parity, parity, sample_parity
from dltheory.numerics.validate import check_int, check_positive, check_seeds


@dataclass
class MLP:
    """A batch of one-hidden-layer ReLU MLPs ``x -> W2 relu(W1 x + b1) + b2``, one per seed (also the students of
    :mod:`.skills`, one per arm and seed).

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
    def num_replicas(self) -> int:
        """The number of MLPs side by side (seeds, or arms x seeds as in :mod:`.skills`)."""
        return self.W1.shape[0]

    def repeat(self, times: int) -> MLP:
        """``times`` copies of every MLP, laid out copy-major (MLP ``c * R + r``), sharing nothing with ``self``."""
        return MLP(*(t.detach().repeat(times, *([1] * (t.dim() - 1))).clone() for t in self.tensors()))

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
    seeds = check_seeds(seeds)
    n, width, num_labels = (check_int(a, b) for a, b in (("n", n), ("width", width), ("num_labels", num_labels)))
    parts = []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        b_in, b_h = 1 / math.sqrt(n), 1 / math.sqrt(width)
        parts.append([(torch.rand(width, n, generator=g, dtype=dtype) * 2 - 1) * b_in,
                      (torch.rand(width, generator=g, dtype=dtype) * 2 - 1) * b_in,
                      (torch.rand(num_labels, width, generator=g, dtype=dtype) * 2 - 1) * b_h,
                      (torch.rand(num_labels, generator=g, dtype=dtype) * 2 - 1) * b_h])
    return MLP(*(torch.stack([p[i] for p in parts]) for i in range(4)))


def mlp_logits(params: MLP, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Logits ``(S, B, c)`` for inputs ``x`` of shape ``(S, B, n)`` (one batch per seed) or ``(B, n)`` (shared).

    Large batches go through in chunks of ``chunk`` rows with the ReLU applied in place: the hidden layer of a
    chunk then stays in the CPU's cache, which makes evaluating a wide teacher on the probe sample faster than one
    pass over the whole batch (``benchmarks/bench_distill.py`` measures the ratio)."""
    if x.dim() == 2:
        x = x.expand(params.num_seeds, *x.shape)
    if x.dim() != 3 or x.shape[0] != params.num_seeds or x.shape[-1] != params.W1.shape[-1]:
        raise ValueError(f"x has shape {tuple(x.shape)}; expected ({params.num_seeds}, B, {params.W1.shape[-1]})")
    if x.shape[1] > chunk:
        return torch.cat([mlp_logits(params, x[:, i:i + chunk], chunk) for i in range(0, x.shape[1], chunk)], 1)
    h = torch.baddbmm(params.b1.unsqueeze(1), x, params.W1.transpose(1, 2)).relu_()
    return torch.baddbmm(params.b2.unsqueeze(1), h, params.W2.transpose(1, 2))


class ParityStream:
    """Fresh ``(n, k)``-sparse-parity batches, one independent stream per seed (online SGD, as in the paper:
    every training example is seen once). ``next()`` returns ``x (S, B, n)`` and ``y (S, B)``."""

    def __init__(self, seeds: Sequence[int], n: int, support: Sequence[int], batch: int, chunk: int = 256,
                 dtype: torch.dtype = torch.float32):
        self.seeds = check_seeds(seeds)
        self.n, self.batch, self.chunk = check_int("n", n), check_int("batch", batch), check_int(
            "chunk", chunk)
        self.support, self.dtype = list(support), dtype
        check_nk(self.n, len(self.support))
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


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis; for two labels, the sigmoid of the logit difference (the same values, and
    several times faster on a CPU than ``torch.softmax`` over an axis of length 2: ``benchmarks/bench_distill.py``
    measures the ratio)."""
    if logits.shape[-1] == 2:
        p1 = torch.sigmoid(logits[..., 1] - logits[..., 0])
        return torch.stack([1 - p1, p1], -1)
    return torch.softmax(logits, -1)


def _one_hot(labels: torch.Tensor, c: int, dtype: torch.dtype) -> torch.Tensor:
    """``F.one_hot(labels, c)`` as floats (for two labels built directly, without ``F.one_hot``)."""
    if c == 2:
        y1 = labels.to(dtype)
        return torch.stack([1 - y1, y1], -1)
    return F.one_hot(labels, c).to(dtype)


def teacher_target(teacher_logits: torch.Tensor, temperature: float, dtype: torch.dtype
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The distillation target ``q = softmax(teacher / tau)`` and its log, or for ``tau = 0`` the one-hot
    argmax of the teacher and ``None`` (its log is 0 where ``q`` is 1)."""
    c = teacher_logits.shape[-1]
    if temperature == 0:
        top = (teacher_logits[..., 1] > teacher_logits[..., 0]).long() if c == 2 else teacher_logits.argmax(-1)
        return _one_hot(top, c, dtype), None
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

    def subsample(self, every: int) -> Checkpoints:
        """Every ``every``-th checkpoint (sparser spacing), always keeping the final one."""
        every = check_int("every", every)
        idx = list(range(every - 1, len(self.steps), every))
        if not idx or idx[-1] != len(self.steps) - 1:
            idx.append(len(self.steps) - 1)
        return Checkpoints([self.steps[i] for i in idx], [self.params[i] for i in idx])


@dataclass
class History:
    """Test accuracy ``acc (S, T)`` at ``eval_steps (T,)`` (step = number of SGD updates done)."""

    eval_steps: list[int] = field(default_factory=list)
    acc: list[np.ndarray] = field(default_factory=list)
    teacher_steps: list[np.ndarray] = field(default_factory=list)  # per eval, the teacher step of each seed
                                                                     # (train_students; -1 = labels)
    params: MLP | None = None                                        # the final students (train_students)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.eval_steps), np.stack(self.acc, axis=1)


def _forward(params: MLP, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden activations ``h`` and logits for batched inputs ``x (S, B, n)``."""
    h = torch.baddbmm(params.b1.unsqueeze(1), x, params.W1.transpose(1, 2)).relu_()
    return h, torch.baddbmm(params.b2.unsqueeze(1), h, params.W2.transpose(1, 2))


def _backward(params: MLP, x: torch.Tensor, h: torch.Tensor, dlogits: torch.Tensor) -> list[torch.Tensor]:
    """Back-propagate ``dlogits (S, B, c)`` through the two layers: gradients of ``(W1, b1, W2, b2)``
    (``h > 0`` is the ReLU's derivative, since ``relu(z) > 0`` exactly where ``z > 0``)."""
    dW2 = torch.bmm(dlogits.transpose(1, 2), h)                 # (S, c, m)
    db2 = dlogits.sum(1)
    dz1 = torch.bmm(dlogits, params.W2).mul_(h > 0)             # (S, B, m)
    dW1 = torch.bmm(dz1.transpose(1, 2), x)                     # (S, m, n)
    return [dW1, dz1.sum(1), dW2, db2]


def loss_and_grads(params: MLP, x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                   alpha: float = 0.0, temperature: float = 1.0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """:func:`distill_loss` and its gradient with respect to ``(W1, b1, W2, b2)``, by hand.

    The gradient of ``alpha * CE + (1 - alpha) * KL`` with respect to the student's logits is
    ``(softmax(logits) - target) / B`` with ``target = alpha * onehot(y) + (1 - alpha) * q`` (``q`` the teacher's
    tempered probabilities); back-propagating it through the two layers takes four batched matrix products.
    About twice as fast as autograd for these small networks; ``tests/test_distill.py`` checks it against
    autograd and with ``torch.autograd.gradcheck``."""
    _check_alpha_temperature(alpha, temperature)
    h, logits = _forward(params, x)
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
    return loss, _backward(params, x, h, (logp.exp() - target) / x.shape[1])




def train(params: MLP, stream: ParityStream, lr: float, steps: int, x_test: torch.Tensor, y_test: torch.Tensor,
          eval_every: int, save_every: int | None = None, stop_at: float | None = None
          ) -> tuple[MLP, History, Checkpoints]:
    """Online SGD with cross-entropy on fresh parity batches, all seeds at once (the teachers, and the
    reference ``boolean_expts.py``). Returns ``(final params, history, checkpoints)``.

    * ``save_every``: save a checkpoint of ``params`` every that many steps (and at the last step);
    * ``stop_at``: stop early once every seed's test accuracy is ``>= stop_at`` at an evaluation.

    Students that learn from a teacher's checkpoints train with :func:`train_students`.
    """
    lr = check_positive("lr", lr)
    steps, eval_every = check_int("steps", steps), check_int("eval_every", eval_every)
    if save_every is not None:
        save_every = check_int("save_every", save_every)
    if len(stream.seeds) != params.num_seeds:
        raise ValueError(f"the stream has {len(stream.seeds)} seeds but params have {params.num_seeds}")
    cur = params.detached()
    p = cur.tensors()
    hist, ckpts = History(), Checkpoints()

    def log(step: int) -> bool:
        acc = accuracy(cur, x_test, y_test).cpu().numpy()
        hist.eval_steps.append(step)
        hist.acc.append(acc)
        return stop_at is not None and bool((acc >= stop_at).all())

    log(0)
    with torch.no_grad():
        for step in range(steps):
            x, y = stream.next()
            _, grads = loss_and_grads(cur, x, y)
            for t, g in zip(p, grads):
                t.sub_(g, alpha=lr)
            done = step + 1
            if save_every is not None and (done % save_every == 0 or done == steps):
                ckpts.steps.append(done)
                ckpts.params.append(cur.detached())
            if (done % eval_every == 0 or done == steps) and log(done):
                break
    return cur.detached(), hist, ckpts


@dataclass(frozen=True)
class Plan:
    """How one group of students (one per seed) learns, for :func:`train_students`.

    ``teacher_steps is None``: cross-entropy on the labels. Otherwise ``teacher_steps[s]`` lists the saved teacher
    checkpoints (by step) that seed ``s`` may use, and the reference code's progressive rule picks one: at student
    step ``t`` the first listed checkpoint at or after ``t``, the last one once they are all passed (their
    ``teacher_ckpt_step`` list with ``ckpt_multiplier = 1``). One-shot distillation lists only the final
    checkpoint; the reference's "2-shot" distillation lists one intermediate checkpoint and the final one. The loss
    is ``alpha * CE + (1 - alpha) * KL(teacher_tau || student)``; ``temperature = 0`` is the teacher's argmax (the
    reference MLP script's ``temp=1e-20``)."""

    name: str
    teacher_steps: tuple[tuple[int, ...], ...] | None = None
    temperature: float = 0.0
    alpha: float = 0.0

    @classmethod
    def ce(cls, name: str = "ce") -> Plan:
        return cls(name)

    @classmethod
    def from_teacher(cls, name: str, steps: Sequence[int] | Sequence[Sequence[int]], num_seeds: int,
                     temperature: float = 0.0, alpha: float = 0.0) -> Plan:
        """A distillation plan; ``steps`` is one list of checkpoint steps for every seed, or one list per seed."""
        _check_alpha_temperature(alpha, temperature)
        num_seeds = check_int("num_seeds", num_seeds)
        steps = list(steps)
        shared = not steps or isinstance(steps[0], int | np.integer)
        per_seed = [steps] * num_seeds if shared else [list(v) for v in steps]
        if len(per_seed) != num_seeds:
            raise ValueError(f"plan {name!r} lists checkpoints for {len(per_seed)} seeds, expected {num_seeds}")
        for v in per_seed:
            if not v:
                raise ValueError(f"plan {name!r} has a seed with no teacher checkpoint; use Plan.ce for labels")
        return cls(name, tuple(tuple(sorted({int(t) for t in v})) for v in per_seed), float(temperature), float(alpha))


def _side_by_side(student: MLP, P: int) -> list[torch.Tensor]:
    """``P`` copies of every seed's student, laid out seed-major as one wide layer per seed: ``W1 (S, P*m, n)``,
    ``b1 (S, P*m)``, ``W2 (S, P, c, m)``, ``b2 (S, P, c)``. All plans of a seed see the same batch, so their first
    layer is one matrix product ``(B, n) @ (n, P*m)`` per seed instead of ``P`` small ones."""
    W1, b1, W2, b2 = (t.detach() for t in student.tensors())
    S, m, n = W1.shape
    return [W1.unsqueeze(1).repeat(1, P, 1, 1).reshape(S, P * m, n), b1.repeat(1, P),
            W2.unsqueeze(1).repeat(1, P, 1, 1), b2.unsqueeze(1).repeat(1, P, 1)]


def _side_forward(g: list[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden layer ``(S, B, P*m)`` and logits ``(S, B, P, c)`` of the side-by-side students on ``x (S, B, n)``."""
    W1, b1, W2, b2 = g
    S, P, c, m = W2.shape
    h = torch.baddbmm(b1.unsqueeze(1), x, W1.transpose(1, 2)).relu_()
    return h, (h.view(S, -1, P, 1, m) * W2.unsqueeze(1)).sum(-1) + b2.unsqueeze(1)


def _side_backward(g: list[torch.Tensor], x: torch.Tensor, h: torch.Tensor, dlogits: torch.Tensor
                   ) -> list[torch.Tensor]:
    """:func:`_backward` for the side-by-side layout; ``dlogits`` has shape ``(S, B, P, c)``."""
    W1, _, W2, _ = g
    S, P, c, m = W2.shape
    hv = h.view(S, -1, P, m)
    dW2 = torch.einsum("sbpc,sbpm->spcm", dlogits, hv)
    dz = torch.einsum("sbpc,spcm->sbpm", dlogits, W2).mul_(hv > 0).reshape(S, -1, P * m)
    return [torch.bmm(dz.transpose(1, 2), x), dz.sum(1), dW2, dlogits.sum(1)]


def _side_plan(g: list[torch.Tensor], p: int) -> MLP:
    """Plan ``p``'s students as an :class:`MLP` (one per seed)."""
    W1, b1, W2, b2 = g
    S, P, c, m = W2.shape
    return MLP(W1.view(S, P, m, -1)[:, p].clone(), b1.view(S, P, m)[:, p].clone(), W2[:, p].clone(),
               b2[:, p].clone())


def _schedule_table(plan: Plan, saved: list[int], steps: int) -> np.ndarray:
    """Checkpoint index (into ``saved``) used by each seed at each student step, shape ``(S, steps)``."""
    where = {t: i for i, t in enumerate(saved)}
    t_grid = np.maximum(np.arange(steps), 1)
    rows = []
    for v in plan.teacher_steps:
        missing = [t for t in v if t not in where]
        if missing:
            raise ValueError(f"plan {plan.name!r} asks for teacher checkpoints at steps {missing[:5]}, which were "
                             f"not saved; saved steps run from {saved[0]} to {saved[-1]}")
        pos = np.minimum(np.searchsorted(np.asarray(v), t_grid, side="left"), len(v) - 1)
        rows.append(np.asarray([where[t] for t in v])[pos])
    return np.stack(rows)


def train_students(student: MLP, plans: Sequence[Plan], teacher: Checkpoints, stream: ParityStream, lr: float,
                   steps: int, x_test: torch.Tensor, y_test: torch.Tensor, eval_every: int,
                   stop_at: float | None = None, stop_rule: str = "median") -> dict[str, History]:
    """Train one copy of ``student`` per plan, every plan and seed side by side, on the same data stream.

    Plan ``p``'s seed ``s`` starts from ``student``'s seed ``s``, sees seed ``s``'s batches and distils from teacher
    seed ``s``. All ``P x S`` students advance together (:func:`_side_by_side`: one wide first layer per seed).
    The teacher's logits are computed once per distinct (checkpoint, seed) pair that some student uses at that
    step, so plans that share a teacher (one-shot and the late steps of progressive) share its forward pass.
    The results equal those of one run per plan up to float32 rounding (the wide products sum in another order);
    ``benchmarks/bench_distill.py`` measures the speed ratio. Implements the chapter's students, after the
    reference ``boolean_distill_expts.py``.

    ``stop_at`` with ``stop_rule``: stop once, for every plan, more than half of the seeds (``'median'``: the median
    step count is then known exactly) or all of them (``'all'``) have reached test accuracy ``>= stop_at`` at some
    evaluation. Returns one :class:`History` per plan name, with the teacher step each seed used at each
    evaluation in ``History.teacher_steps`` (an array of shape ``(S,)`` per evaluation; ``-1`` for labels) and
    the final students in ``History.params``."""
    plans = list(plans)
    names = [pl.name for pl in plans]
    if not plans or len(set(names)) != len(names):
        raise ValueError(f"plans must be a non-empty list with distinct names, got {names}")
    if stop_rule not in ("median", "all"):
        raise ValueError(f"unknown stop_rule {stop_rule!r}; use 'median' or 'all'")
    lr = check_positive("lr", lr)
    steps, eval_every = check_int("steps", steps), check_int("eval_every", eval_every)
    S, P = student.num_seeds, len(plans)
    if len(stream.seeds) != S:
        raise ValueError(f"the stream has {len(stream.seeds)} seeds but the student has {S}")
    distilled = [p for p, pl in enumerate(plans) if pl.teacher_steps is not None]
    if distilled and (not teacher.steps or teacher.params[0].num_seeds != S):
        raise ValueError(f"distillation plans need teacher checkpoints with {S} seeds")
    for p in distilled:
        if len(plans[p].teacher_steps) != S:
            raise ValueError(f"plan {plans[p].name!r} lists checkpoints for {len(plans[p].teacher_steps)} seeds, "
                             f"the student has {S}")
    dev = student.W1.device
    g = _side_by_side(student, P)
    c = g[2].shape[2]
    # distilled students in plan-major order: entry i * S + s is plan distilled[i], seed s
    d_idx = torch.as_tensor(distilled, dtype=torch.long, device=dev)
    table = (np.concatenate([_schedule_table(plans[p], teacher.steps, steps) for p in distilled]) if distilled
             else np.zeros((0, steps), dtype=int))
    d_seed = np.tile(np.arange(S), len(distilled))
    tau = np.repeat([plans[p].temperature for p in distilled], S)
    alpha = torch.as_tensor([plans[p].alpha for p in distilled], dtype=g[0].dtype, device=dev).view(1, 1, -1, 1)
    stacked = [torch.stack([ck.tensors()[j] for ck in teacher.params]) for j in range(4)] if distilled else []
    hist = {nm: History() for nm in names}
    reached = np.zeros((P, S), dtype=bool)
    need = S // 2 + 1 if stop_rule == "median" else S
    last_key, pair_params, pair_seed, inverse = None, None, None, None
    x_eval = x_test.expand(S, *x_test.shape)

    def log(step: int, cidx: np.ndarray | None) -> bool:
        acc = (_side_forward(g, x_eval)[1].argmax(-1) == y_test.view(1, -1, 1)).double().mean(1)
        acc = acc.T.cpu().numpy()                                               # (P, S)
        used = np.full((P, S), -1)
        if cidx is not None:
            used[distilled] = np.asarray(teacher.steps)[cidx].reshape(len(distilled), S)
        for p, nm in enumerate(names):
            hist[nm].eval_steps.append(step)
            hist[nm].acc.append(acc[p])
            hist[nm].teacher_steps.append(used[p])
        if stop_at is None:
            return False
        reached[:] |= acc >= stop_at
        return bool((reached.sum(1) >= need).all())

    log(0, table[:, 0] if distilled else None)
    with torch.no_grad():
        for step in range(steps):
            x, y = stream.next()                                   # (S, B, n), (S, B)
            labels = _one_hot(y, c, x.dtype).unsqueeze(2)           # (S, B, 1, c)
            target = labels.expand(-1, -1, P, -1).clone()            # (S, B, P, c)
            cidx = None
            if distilled:
                cidx = table[:, step]
                key = cidx * S + d_seed
                if last_key is None or not np.array_equal(key, last_key):
                    uniq, inv = np.unique(key, return_inverse=True)
                    ci, si = (torch.as_tensor(a, device=dev) for a in (uniq // S, uniq % S))
                    pair_params = MLP(*(t[ci, si] for t in stacked))
                    pair_seed, inverse = si, torch.as_tensor(inv, device=dev)
                    last_key = key
                t_logits = mlp_logits(pair_params, x[pair_seed])[inverse]      # (D, B, c)
                q = torch.empty_like(t_logits)
                for tv in np.unique(tau):
                    rows = torch.as_tensor(np.flatnonzero(tau == tv), device=dev)
                    q[rows] = (teacher_target(t_logits[rows], 0.0, x.dtype)[0] if tv == 0
                               else _softmax(t_logits[rows] / float(tv)))
                q = q.view(len(distilled), S, -1, c).permute(1, 2, 0, 3)         # (S, B, D / S, c)
                target[:, :, d_idx] = alpha * labels + (1 - alpha) * q
            h, logits = _side_forward(g, x)
            grads = _side_backward(g, x, h, (_softmax(logits) - target) / x.shape[1])
            for t, gr in zip(g, grads):
                t.sub_(gr, alpha=lr)
            done = step + 1
            if (done % eval_every == 0 or done == steps) and log(done, cidx):
                break
    for p, nm in enumerate(names):
        hist[nm].params = _side_plan(g, p)
    return hist


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
def checkpoint_probs(ckpts: Checkpoints, x: torch.Tensor, label: int = 1, dtype: torch.dtype = torch.float32
                     ) -> torch.Tensor:
    """``p(y = label | x)`` of every checkpoint and seed, shape ``(C, S, N)``, computed in ``dtype`` on
    ``x (N, n)``. float32 is the default: its rounding error (about 1e-7 per probability) is far below the
    probe's sampling error (about ``0.5 / sqrt(N)``), and float64 costs more than twice as much on a CPU
    (``benchmarks/bench_distill.py``)."""
    out = []
    for prm in ckpts.params:
        p = MLP(*(t.to(dtype) for t in prm.tensors()))
        out.append(torch.softmax(mlp_logits(p, x.to(dtype)), -1)[..., label])
    return torch.stack(out)


@torch.no_grad()
def checkpoint_accuracy(ckpts: Checkpoints, x: torch.Tensor, support: Sequence[int]) -> torch.Tensor:
    """Accuracy of every checkpoint and seed on ``x``, shape ``(C, S)``."""
    y = labels_from_parity(parity(x, support))
    return torch.stack([(mlp_logits(p, x.to(p.W1.dtype)).argmax(-1) == y).double().mean(-1) for p in ckpts.params])
