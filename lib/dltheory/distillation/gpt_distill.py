"""The transformer variant of progressive distillation on sparse parity: a GPT-2-style teacher with many heads,
students with few, all seeds (and the cross-entropy and the progressive student) side by side as replicas.

Defined for the chapter *Progressive distillation and its implicit curriculum*
(``chapters/distillation/progressive-distillation.md``, section "The transformer variant"), after Panigrahi, Liu,
Malladi, Risteski & Goel (ICLR 2025, arXiv 2410.05464, Sec. 3.2 and their transformer figures) and their reference
code ``abhishekpanigrahi1996/ProgressiveDistillation``:

* ``parity/boolean_expts.py`` and ``parity/scripts/script_gpt.sh`` (the teacher): the ``n`` bits of ``x`` are the
  tokens, ``x_i = +1 -> 0`` and ``x_i = -1 -> 1`` (``all_data = (1 - all_data) // 2``), vocabulary 2, no CLS token;
  a 2-layer GPT-2 (causal) whose logits at the *last* position are the two class logits
  (``parity/utils.py``: ``get_logits_gpt``); Adam, weight decay 0, linear warm-up over 6% of the steps, then cosine
  decay (``warmup_ratio``, ``anneal_type='cosine'``); head width 8 (``hidden_size = n_heads * head_dim``);
* ``parity/boolean_distill_expts.py`` and ``parity/scripts/script_distill_gpt.sh`` (the students): the same model
  with fewer heads (teacher 32 heads of width 8, student 4), loss ``kl_alpha * CE + (1 - kl_alpha) * KL`` with
  ``kl_alpha = 0`` and the teacher's logits divided by ``temperature = 1``; the teacher is the first listed
  checkpoint at or after the student's step (``teacher_ckpt_step``, ``ckpt_multiplier = 1``).

The model is the book's one transformer, :class:`dltheory.numerics.transformer.Transformer` (GPT-2 pre-LayerNorm,
``gelu_tanh``), with one replica per seed. What differs from the reference: the shared transformer has no dropout
(GPT-2's default configuration, which the reference loads, has dropout 0.1), and the data are fresh samples at every
step (the reference draws ``n_examples = n_steps`` examples once, so it too sees each example about once).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from dltheory.distillation.distill import ParityStream
from dltheory.distillation.parity import all_inputs, check_nk, labels_from_parity, parity, sample_parity
from dltheory.numerics.transformer import Transformer, TransformerConfig
from dltheory.numerics.validate import check_int, check_nonnegative, check_positive


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """Tokens of the reference code for points ``x`` of ``{-1, +1}^n``: ``(1 - x) / 2``, i.e. ``+1 -> 0``,
    ``-1 -> 1`` (``parity/boolean_expts.py``). Chapter: ``chapters/distillation/progressive-distillation.md``."""
    if not torch.all((x == 1) | (x == -1)):
        raise ValueError("x must have entries +1 or -1 (a point of the hypercube); sample it with sample_parity")
    return ((1 - x) / 2).long()


def parity_gpt(n: int, n_heads: int, head_dim: int, replicas: int, seed: int, n_layers: int = 2,
               dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Transformer:
    """A GPT-2-style transformer for ``n``-bit parity: vocabulary 2, ``max_len = n``, 2 outputs read at the last
    position, width ``n_heads * head_dim`` (the reference's ``hidden_size = n_heads * head_dim``), MLP width 4x,
    ``gelu_tanh``, GPT-2 initialization; ``replicas`` independent models (one per seed) drawn from
    ``torch.Generator().manual_seed(seed)``.

    Chapter: ``chapters/distillation/progressive-distillation.md`` (the transformer variant); paper: Panigrahi et
    al. 2025, Sec. 3.2; reference: ``parity/utils.py`` (``prepare_model``, ``model_type='gpt2'``) and
    ``parity/scripts/script_gpt.sh``."""
    n = check_int("n", n)
    n_heads, head_dim = check_int("n_heads", n_heads), check_int("head_dim", head_dim)
    replicas, n_layers = check_int("replicas", replicas), check_int("n_layers", n_layers)
    check_int("seed", seed, minimum=0)
    cfg = TransformerConfig(vocab_size=2, d_model=n_heads * head_dim, n_heads=n_heads, n_layers=n_layers, max_len=n,
                            n_out=2, replicas=replicas, activation="gelu_tanh")
    return Transformer(cfg, torch.Generator().manual_seed(seed), dtype=dtype, device=device)


def last_logits(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """The class logits ``(R, B, 2)``: the model's outputs at the last position (``get_logits_gpt`` of the reference's
    ``parity/utils.py``). ``tokens`` is ``(B, n)`` (shared) or ``(R, B, n)``. Chapter:
    ``chapters/distillation/progressive-distillation.md``; paper: Panigrahi et al. 2025, Sec. 3.2."""
    return model(tokens.to(_device(model)))[:, :, -1, :]


def _device(model: Transformer) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _eval_logits(model: Transformer, tokens: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """:func:`last_logits` without gradients, ``chunk`` sequences at a time (so that the ``full`` size's probe and
    test sets fit in a GPU's memory; the shared transformer splits by replica only on the CPU)."""
    B = tokens.shape[-2]
    if B <= chunk:
        return last_logits(model, tokens)
    return torch.cat([last_logits(model, tokens[..., i:i + chunk, :]) for i in range(0, B, chunk)], -2)


def lr_at(step: int, lr: float, total: int, warmup_ratio: float) -> float:
    """The reference's learning rate at (0-based) ``step``: linear warm-up to ``lr`` over ``warmup_ratio * total``
    steps, then cosine decay to 0 at ``total`` (``parity/boolean_expts.py``, ``anneal_type='cosine'``). Chapter:
    ``chapters/distillation/progressive-distillation.md``; paper: Panigrahi et al. 2025, App. (training details)."""
    lr, total = check_positive("lr", lr), check_int("total", total)
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must lie in [0, 1), got {warmup_ratio}")
    w = total * warmup_ratio
    if step < w:
        return lr * min(1.0, (step + 1) / w)   # the reference's (step + 1) / w, capped at 1 for a fractional w
    return lr * 0.5 * (1 + math.cos(math.pi * (step - w) / (total * (1 - warmup_ratio))))


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-sum_c q_c log softmax(logits)_c`` averaged over the batch, per replica: ``logits (R, B, C)``, target
    probabilities ``q (R, B, C)``; returns ``(R,)``. Equals ``KL(q || p)`` up to ``q``'s entropy, which does not
    depend on the student (the reference's ``kl_type='forward'`` loss, ``parity/boolean_distill_expts.py``); for a
    one-hot ``q`` it is the cross-entropy. (The shared ``replica_cross_entropy`` takes integer targets only.)
    Chapter: ``chapters/distillation/progressive-distillation.md``; paper: Panigrahi et al. 2025, Eq. (1)."""
    if logits.shape != target.shape or logits.dim() != 3:
        raise ValueError(f"logits and target must both have shape (R, B, C), got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    return -(target * F.log_softmax(logits, -1)).sum(-1).mean(-1)


def teacher_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / tau)``, or for ``tau = 0`` the one-hot argmax (the reference's ``temperature < 1e-10``
    branch). Chapter: ``chapters/distillation/progressive-distillation.md``; reference:
    ``parity/boolean_distill_expts.py``."""
    temperature = check_nonnegative("temperature", temperature)
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return torch.softmax(logits / temperature, -1)


def take(stream: ParityStream, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The next ``steps`` batches of ``stream`` (the MLP section's
    :class:`~dltheory.distillation.distill.ParityStream`: one independent stream per seed) stacked as
    ``x (steps, S, B, n)`` and ``y (steps, S, B)``, so that a run of student steps that share a teacher checkpoint
    gets its teacher outputs in one forward pass. Chapter: ``chapters/distillation/progressive-distillation.md``."""
    steps = check_int("steps", steps)
    xs, ys = zip(*(stream.next() for _ in range(steps)))
    return torch.stack(xs), torch.stack(ys)


def eval_points(n: int, support: Sequence[int], n_sample: int, seed: int, max_exact: int = 12
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``x (N, n)`` and labels for the test accuracy and the probe: the whole cube ``{-1, +1}^n`` when
    ``n <= max_exact`` (exact accuracy and exact Walsh coefficients), otherwise ``n_sample`` points drawn in
    antithetic pairs ``+-x`` (so the even part of a probed function cancels exactly, as in the MLP section) from
    ``torch.Generator().manual_seed(seed)``. Chapter: ``chapters/distillation/progressive-distillation.md``."""
    n, k = check_nk(n, len(list(support)))
    n_sample = check_int("n_sample", n_sample, minimum=2)
    if n <= max_exact:
        x = all_inputs(n).float()
    else:
        half, _ = sample_parity((n_sample // 2,), n, support, torch.Generator().manual_seed(seed))
        x = torch.cat([half, -half])
    return x, labels_from_parity(parity(x, support))


@dataclass
class GPTCheckpoints:
    """Teacher snapshots: ``weights[i]`` (a ``{name: (S, ...)}`` dict of all seeds' weights) at ``steps[i]``."""

    steps: list[int] = field(default_factory=list)
    weights: list[dict[str, torch.Tensor]] = field(default_factory=list)


def _snapshot(model: Transformer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@torch.no_grad()
def accuracy(model: Transformer, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Test accuracy per replica, ``(R,)``, on a shared test set ``x (N, n)`` (+-1), ``y (N,)``."""
    return (_eval_logits(model, to_tokens(x)).argmax(-1) == y.to(_device(model))).double().mean(-1).cpu().numpy()


def _adam(model: Transformer, lr: float) -> torch.optim.Adam:
    """Adam (betas 0.9, 0.999, eps 1e-8, no weight decay: the reference's ``torch.optim.Adam``) in its fused
    implementation, which on one CPU thread takes a third or less of the per-tensor loop's time for these many
    small parameters (an elementwise rule either way, so the replicas stay independent)."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def _check_training(lr: float, steps: int, eval_every: int, warmup_ratio: float) -> tuple[float, int, int]:
    lr, steps, eval_every = check_positive("lr", lr), check_int("steps", steps), check_int("eval_every", eval_every)
    lr_at(0, lr, steps, warmup_ratio)
    return lr, steps, eval_every


def train_teacher(model: Transformer, stream: ParityStream, lr: float, steps: int, x_test: torch.Tensor,
                  y_test: torch.Tensor, eval_every: int, save_every: int, warmup_ratio: float = 0.06,
                  schedule_steps: int | None = None) -> tuple[np.ndarray, np.ndarray, GPTCheckpoints]:
    """Train the teachers (one replica per seed, in place) with cross-entropy on the last position's logits, Adam
    and the reference's warm-up + cosine schedule over ``schedule_steps`` (default ``steps``; the reference's scripts
    set ``n_steps`` = 8M, the number of *examples*, so with batch 32 its run ends inside the warm-up); replica ``s``
    sees stream seed ``s``. Returns
    ``(eval_steps (T,), acc (S, T), checkpoints)``; a checkpoint is saved every ``save_every`` steps and at the end.

    Chapter: ``chapters/distillation/progressive-distillation.md``; paper: Panigrahi et al. 2025, Sec. 3.2;
    reference: ``parity/boolean_expts.py`` with ``parity/scripts/script_gpt.sh``."""
    lr, steps, eval_every = _check_training(lr, steps, eval_every, warmup_ratio)
    save_every = check_int("save_every", save_every)
    total = steps if schedule_steps is None else check_int("schedule_steps", schedule_steps)
    S = model.replicas
    if len(stream.seeds) != S:
        raise ValueError(f"the stream has {len(stream.seeds)} seeds but the model has {S} replicas")
    opt = _adam(model, lr)
    ev, acc, ck = [], [], GPTCheckpoints()
    for step in range(steps):
        x, y = stream.next()
        for gr in opt.param_groups:
            gr["lr"] = lr_at(step, lr, total, warmup_ratio)
        logits = last_logits(model, to_tokens(x)).reshape(-1, 2)
        loss = F.cross_entropy(logits, y.reshape(-1).to(_device(model)), reduction="sum") / stream.batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        if done % eval_every == 0 or done == steps:
            ev.append(done)
            acc.append(accuracy(model, x_test, y_test))
        if done % save_every == 0 or done == steps:
            ck.steps.append(done)
            ck.weights.append(_snapshot(model))
    return np.asarray(ev), np.stack(acc, 1), ck


@torch.no_grad()
def checkpoint_probs(teacher: Transformer, ckpts: GPTCheckpoints, x: torch.Tensor, label: int = 1) -> torch.Tensor:
    """``p(y = label | x)`` of every checkpoint and seed, shape ``(C, S, N)``, on ``x (N, n)`` (+-1), computed
    with a copy of ``teacher``'s architecture loaded with each checkpoint's weights (``set_weights`` by name). The
    input of the correlation probe (``dltheory.distillation.parity.degree1_probe``; the reference's
    ``parity/probing/probing.py``). Chapter: ``chapters/distillation/progressive-distillation.md``; paper: Panigrahi
    et al. 2025, Sec. 3 (probing the teacher's checkpoints)."""
    if not ckpts.steps:
        raise ValueError("no checkpoints: train the teacher with train_teacher first")
    work = Transformer.stack([teacher])
    tok = to_tokens(x)
    out = []
    for w in ckpts.weights:
        work.set_weights(w)
        out.append(torch.softmax(_eval_logits(work, tok), -1)[..., label].cpu())
    return torch.stack(out)


@dataclass
class StudentRun:
    """The students' test accuracy ``acc[arm] (S, T)`` at ``eval_steps (T,)``, arms ``'ce'`` and ``'progressive'``,
    and the step at which training stopped."""

    eval_steps: np.ndarray
    acc: dict[str, np.ndarray]
    stopped_at: int


def checkpoint_index(saved: Sequence[int], steps: int) -> np.ndarray:
    """Index into ``saved`` of the teacher used at each student step ``0..steps-1``: the first saved step at or after
    ``max(step, 1)``, the final checkpoint after the last (the reference's ``teacher_ckpt_step`` rule with
    ``ckpt_multiplier = 1``, as :mod:`.distill` does for the MLP). Chapter:
    ``chapters/distillation/progressive-distillation.md``; reference: ``parity/boolean_distill_expts.py``."""
    saved = np.asarray(list(saved))
    if saved.size == 0 or np.any(np.diff(saved) <= 0):
        raise ValueError("saved must be a non-empty, strictly increasing list of checkpoint steps")
    steps = check_int("steps", steps)
    t = np.maximum(np.arange(steps), 1)
    return np.minimum(np.searchsorted(saved, t, side="left"), saved.size - 1)


def train_students(student: Transformer, teacher: Transformer, ckpts: GPTCheckpoints, stream: ParityStream,
                   lr: float, steps: int, x_test: torch.Tensor, y_test: torch.Tensor, eval_every: int,
                   temperature: float = 1.0, warmup_ratio: float = 0.06, stop_at: float | None = 0.99,
                   schedule_steps: int | None = None) -> StudentRun:
    """Train a cross-entropy student and a progressively distilled student per seed, side by side as the ``2 S``
    replicas of one model: replicas ``0..S-1`` fit the labels, replicas ``S..2S-1`` fit ``softmax(teacher / tau)``
    of the first teacher checkpoint at or after the current step (:func:`checkpoint_index`; seed ``s`` learns from
    teacher seed ``s``). Both arms of seed ``s`` start from ``student``'s replica ``s`` and see seed ``s``'s batches.
    Adam with the reference's warm-up + cosine schedule over ``schedule_steps`` (default ``steps``). The teacher's
    outputs are computed once per run of steps that share a checkpoint, in one batched forward pass.

    ``stop_at``: stop once more than half of the seeds of both arms have reached test accuracy ``>= stop_at`` (the
    medians are then known exactly). Chapter: ``chapters/distillation/progressive-distillation.md``; paper:
    Panigrahi et al. 2025, Sec. 3.2; reference: ``parity/boolean_distill_expts.py`` with
    ``parity/scripts/script_distill_gpt.sh``."""
    lr, steps, eval_every = _check_training(lr, steps, eval_every, warmup_ratio)
    temperature = check_nonnegative("temperature", temperature)
    total = steps if schedule_steps is None else check_int("schedule_steps", schedule_steps)
    S = student.replicas
    if teacher.replicas != S or len(stream.seeds) != S:
        raise ValueError(f"student ({S}), teacher ({teacher.replicas}) and stream ({len(stream.seeds)}) must have "
                         f"the same number of seeds")
    if not ckpts.steps:
        raise ValueError("no teacher checkpoints: train the teacher with train_teacher first")
    model = Transformer.stack([student, student])          # replica s: CE, replica S + s: progressive
    work = Transformer.stack([teacher])
    opt = _adam(model, lr)
    table = checkpoint_index(ckpts.steps, steps)
    ev, acc = [], []
    need = S // 2 + 1
    reached = np.zeros((2, S), dtype=bool)
    step, stop = 0, False
    while step < steps and not stop:
        j = table[step]
        end = int(np.searchsorted(table, j, side="right")) if j < len(ckpts.steps) - 1 else steps
        end = min(end, step + 512)
        xs, ys = take(stream, end - step)                  # (L, S, B, n), (L, S, B)
        L, _, B, n = xs.shape
        tok = to_tokens(xs)
        work.set_weights(ckpts.weights[j])
        t_logits = _eval_logits(work, tok.permute(1, 0, 2, 3).reshape(S, L * B, n))
        q_teacher = teacher_probs(t_logits, temperature).view(S, L, B, 2).permute(1, 0, 2, 3)
        q_labels = F.one_hot(ys.to(q_teacher.device), 2).to(q_teacher.dtype)
        for i in range(L):
            for gr in opt.param_groups:
                gr["lr"] = lr_at(step, lr, total, warmup_ratio)
            logits = last_logits(model, torch.cat([tok[i], tok[i]]))
            loss = soft_cross_entropy(logits, torch.cat([q_labels[i], q_teacher[i]])).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % eval_every == 0 or step == steps:
                a = accuracy(model, x_test, y_test)
                ev.append(step)
                acc.append(a)
                if stop_at is not None:
                    reached |= a.reshape(2, S) >= stop_at
                    if (reached.sum(1) >= need).all():
                        stop = True
                        break
    A = np.stack(acc, 1)
    return StudentRun(np.asarray(ev), {"ce": A[:S], "progressive": A[S:]}, step)
