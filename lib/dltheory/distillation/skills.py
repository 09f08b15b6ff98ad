"""Skill-targeted training on a toy: a missing-skill profile from the student's failures, and training data
reweighted (STAT-Sel) or synthesized (STAT-Syn) towards the skills it lacks.

Defined for the chapter *Teaching the skills a student lacks* (``chapters/distillation/skill-targeted-training.md``),
after He, Panigrahi, Lin & Arora 2025, "Skill-Targeted Adaptive Training" (STAT, arXiv 2510.10023; the repository
``princeton-pli/STAT`` releases data, not code: its ``README.md`` describes STAT-Sel and STAT-Syn) and He et al.
2025, "AdaptMI: Adaptive Skill-based In-context Math Instruction for Small Language Models" (arXiv 2505.00147;
reference code ``princeton-pli/AdaptMI``).

**The toy.** ``K`` skills, each a random permutation ``pi_k`` of ``V`` symbols. A task is three skills and a start
symbol ``x0``; its response is the chain of thought ``x1 = pi_k1(x0), x2 = pi_k2(x1), x3 = pi_k3(x2)``. The student
is a one-hidden-layer ReLU MLP that reads a *dense* random code of the skill and the one-hot current symbol and
predicts the next symbol; all skills share its weights. A task is solved when all three greedy steps are right.

**The profile** (:func:`missing_skill_profile`), after AdaptMI's two stages: a question is *difficult* when a
step-level check fails (the reference's ``math-rm/rm_classify.py``, ``select_sample``: difficult if the last step's
score, the mean score or any later step's score is below its threshold; here the check is exact), and only the
difficult questions go to the skill labeler (``skill_identifier/data.py``, ``load_classified_data``: it keeps the
samples with ``PRM_pred == False``), which names the skills missing from the student's response
(``post_processing`` parses them from ``<skill>...</skill>``). Here the teacher names the skill of every step whose
output is not ``pi_k`` of the student's own input. ``evaluation/utils.py`` (``load_prompt``) then builds one example
per missing skill from the skill bank, the first skill filling any spare shots; STAT turns the same per-question
missing skills into a training set.

**STAT-Sel and STAT-Syn** (STAT ``README.md``, Part 1). Sel: for every (difficult question, missing skill) pair,
select training questions that use the skill (:func:`stat_sel_weights`: the profile's mass on a skill spread evenly
over the pool tasks that use it). Syn: synthesize *new* questions around each missing skill from retrieved
examples (:func:`stat_syn_tasks`: a retrieved pool task's skills with a fresh start symbol); the teacher's
consistency filter is a no-op here because the toy's teacher is exact.

All students of a run (data arms x optimizers x seeds) train side by side as one batched tensor program: every
parameter has a leading replica axis (:func:`train_students`), as in :mod:`dltheory.distillation.distill`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from dltheory.distillation.distill import MLP
from dltheory.numerics.optimizers import adam_init, adam_update, sgd_init, sgd_update
from dltheory.numerics.validate import check_int, check_nonnegative, check_positive, check_seeds

CHAIN = 3          # skills per task (the chain of thought has three steps)
DATA = ("uniform", "sel", "syn")
OPTIMIZERS = ("sgd", "adam")


# ---------------------------------------------------------------------------------------------------------------
# The tabular analysis (derivation of the chapter)
# ---------------------------------------------------------------------------------------------------------------


def grad_sq_norm_at_margin(margin, vocab: int):
    """``||softmax(z) - e_y||^2 = V (V - 1) / (e^m + V - 1)^2`` for logits ``z`` whose correct entry exceeds the
    ``V - 1`` others (all equal) by the margin ``m``: the squared norm of the cross-entropy gradient of a token
    whose skill is learned with margin ``m``. Chapter: ``chapters/distillation/skill-targeted-training.md``,
    derivation (1); it is why uniform fine-tuning gets no signal from known skills (STAT, Sec. 1 motivation)."""
    V = check_int("vocab", vocab, minimum=2)
    m = torch.as_tensor(margin, dtype=torch.float64)
    return V * (V - 1) / (m.exp() + V - 1) ** 2


def margin_time(m0: float, m1: float, share: float, lr: float, vocab: int) -> float:
    """Closed-form time of the margin flow ``dm/dt = lr * share / (e^m + V - 1)`` from ``m0`` to ``m1``:
    ``(e^m1 - e^m0 + (V - 1)(m1 - m0)) / (lr * share)``. In the exact per-skill lookup model (one logit table per
    skill, cross-entropy averaged over tokens, a fraction ``share`` of them from this skill, inputs uniform) this is
    gradient descent's time to learn the skill to margin ``m1``; it is inversely proportional to ``share``, so
    reweighting speeds a skill up by exactly the ratio of its token shares. Chapter:
    ``chapters/distillation/skill-targeted-training.md``, derivation (2)."""
    check_positive("share", share)
    check_positive("lr", lr)
    V = check_int("vocab", vocab, minimum=2)
    return (math.exp(m1) - math.exp(m0) + (V - 1) * (m1 - m0)) / (lr * share)


def margin_recursion(m0: float, m1: float, share: float, lr: float, vocab: int, max_steps: int = 10**7) -> int:
    """Steps of the discrete recursion ``m <- m + lr * share / (e^m + V - 1)`` (gradient descent on the lookup
    model, :func:`tabular_gd_margin`) until the margin reaches ``m1``; ``max_steps + 1`` if it never does.
    Chapter: ``chapters/distillation/skill-targeted-training.md``, derivation (2)."""
    check_positive("share", share)
    check_positive("lr", lr)
    V = check_int("vocab", vocab, minimum=2)
    m, k = float(m0), 0
    while m < m1 and k <= max_steps:
        m += lr * share / (math.exp(m) + V - 1)
        k += 1
    return k


def tabular_gd_margin(table: torch.Tensor, targets: torch.Tensor, shares: torch.Tensor, lr: float) -> torch.Tensor:
    """One full-batch gradient step on the lookup model: ``table (K, V, V)`` of logits, ``targets (K, V)`` (the
    permutation of each skill), token shares ``shares (K,)``; the loss is
    ``sum_k shares_k * mean_a CE(table[k, a], targets[k, a])`` (inputs uniform). Returns the new table. Chapter:
    ``chapters/distillation/skill-targeted-training.md``, derivation (2) (checked against :func:`margin_recursion`)."""
    check_positive("lr", lr)
    p = torch.softmax(table, -1)
    g = (p - F.one_hot(targets, table.shape[-1]).to(table.dtype)) * (shares / table.shape[1])[:, None, None]
    return table - lr * g


def adam_snr_factor(lam):
    """``E[n] / sqrt(E[n^2]) = sqrt(lam / (1 + lam))`` for a Poisson count ``n`` of a skill's tokens in a batch (mean
    ``lam``): the size of Adam's steady-state step ``E[g] / sqrt(E[g^2])`` on a parameter that only that skill
    moves, relative to its noiseless value. Adam divides out the loss scale, so reweighting helps it only through
    this factor (Kingma & Ba 2015, Sec. 2; chapter ``chapters/distillation/skill-targeted-training.md``,
    derivation (3))."""
    lam = torch.as_tensor(lam, dtype=torch.float64)
    if (lam < 0).any():
        raise ValueError("lam must be >= 0 (a mean count of tokens per batch)")
    return torch.sqrt(lam / (1 + lam))


# ---------------------------------------------------------------------------------------------------------------
# The world: skills, tasks, chains of thought
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class World:
    """``S`` independent copies (one per seed) of the skill world: permutations ``perms (S, K, V)``, dense skill
    codes ``codes (S, K, d)``, the truly missing skills ``missing (S, K)`` (bool), the training pool
    ``pool (S, N, 3)`` skills with start symbols ``pool_x0 (S, N)``, validation and test tasks likewise, and the
    skill frequencies used in pretraining ``freq (S, K)``."""

    perms: torch.Tensor
    codes: torch.Tensor
    missing: torch.Tensor
    pool: torch.Tensor
    pool_x0: torch.Tensor
    val: torch.Tensor
    val_x0: torch.Tensor
    test: torch.Tensor
    test_x0: torch.Tensor
    freq: torch.Tensor
    seeds: list[int] = field(default_factory=list)

    @property
    def num_seeds(self) -> int:
        return self.perms.shape[0]

    @property
    def num_skills(self) -> int:
        return self.perms.shape[1]

    @property
    def vocab(self) -> int:
        return self.perms.shape[2]


def _tasks(g: torch.Generator, n: int, K: int, V: int, freq: torch.Tensor | None = None):
    if freq is None:
        skills = torch.randint(K, (n, CHAIN), generator=g)
    else:
        skills = torch.multinomial(freq, n * CHAIN, replacement=True, generator=g).view(n, CHAIN)
    return skills, torch.randint(V, (n,), generator=g)


def make_world(seeds: Sequence[int], skills: int, vocab: int, missing: int, code_dim: int, pool: int,
               n_val: int, n_test: int, zipf: float = 0.0) -> World:
    """The toy of ``chapters/distillation/skill-targeted-training.md``, one copy per seed (seed ``s`` draws from
    ``torch.Generator().manual_seed(3 s)``, so its world does not depend on the other seeds).

    Each skill is a random permutation of ``vocab`` symbols with a dense Gaussian code of ``code_dim`` entries
    (variance ``1 / code_dim``). ``zipf = 0``: the ``missing`` skills are chosen at random and never appear in
    pretraining (every other skill equally often); ``zipf > 0``: pretraining draws skill ``k`` with frequency
    ``proportional to rank^-zipf`` (ranks in random order) and ``missing`` is ignored: the missing skills are
    whatever pretraining leaves unlearned (set them with :func:`mark_missing`). Pool, validation and test tasks draw
    their three skills uniformly (the fine-tuning distribution: every skill equally often), as in STAT, where
    the training and validation sets come from the same MATH distribution."""
    seeds = check_seeds(seeds)
    K, V = check_int("skills", skills, minimum=2), check_int("vocab", vocab, minimum=2)
    d = check_int("code_dim", code_dim)
    n_pool, n_val, n_test = check_int("pool", pool), check_int("n_val", n_val), check_int("n_test", n_test)
    zipf = check_nonnegative("zipf", zipf)
    M = check_int("missing", missing, minimum=0)
    if zipf == 0 and not 0 < M < K:
        raise ValueError(f"missing must lie in 1..skills-1 = 1..{K - 1} (the student must know some skills and "
                         f"lack some), got {missing}")
    out = {k: [] for k in ("perms", "codes", "missing", "pool", "pool_x0", "val", "val_x0", "test", "test_x0",
                           "freq")}
    for s in seeds:
        g = torch.Generator().manual_seed(3 * s)
        out["perms"].append(torch.stack([torch.randperm(V, generator=g) for _ in range(K)]))
        out["codes"].append(torch.randn((K, d), generator=g) / math.sqrt(d))
        order = torch.randperm(K, generator=g)
        miss = torch.zeros(K, dtype=torch.bool)
        if zipf == 0:
            miss[order[:M]] = True
            freq = (~miss).float()
        else:
            freq = torch.empty(K)
            freq[order] = torch.arange(1, K + 1, dtype=torch.float32) ** -zipf
        out["missing"].append(miss)
        out["freq"].append(freq / freq.sum())
        for name, n in (("pool", n_pool), ("val", n_val), ("test", n_test)):
            sk, x0 = _tasks(g, n, K, V)
            out[name].append(sk)
            out[name + "_x0"].append(x0)
    return World(**{k: torch.stack(v) for k, v in out.items()}, seeds=seeds)


def chain(perms: torch.Tensor, skills: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The teacher's chain of thought ``(S, N, 3)``: ``x_i = pi_{k_i}(x_{i-1})`` for ``perms (S, K, V)``,
    ``skills (S, N, 3)``, ``x0 (S, N)``. Chapter: ``chapters/distillation/skill-targeted-training.md`` ("The toy")."""
    xs, x = [], x0
    for i in range(skills.shape[-1]):
        x = _apply(perms, skills[..., i], x)
        xs.append(x)
    return torch.stack(xs, -1)


def _apply(perms: torch.Tensor, k: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``pi_k(a)`` per seed: ``perms (S, K, V)``, ``k`` and ``a`` of shape ``(S, N)``."""
    S, K, V = perms.shape
    return perms.reshape(S, K * V).gather(1, k * V + a)


def token_shares(skills: torch.Tensor, weights: torch.Tensor | None, num_skills: int) -> torch.Tensor:
    """Each skill's share of the chain-of-thought tokens ``(S, K)`` of a training distribution over the tasks
    ``skills (S, N, 3)`` with task weights ``weights (S, N)`` (``None``: uniform). Chapter:
    ``chapters/distillation/skill-targeted-training.md`` (the token shares of derivation (2))."""
    S, N, _ = skills.shape
    w = torch.full((S, N), 1.0 / N, dtype=torch.float64) if weights is None else weights.double()
    w = w / w.sum(-1, keepdim=True)
    oh = F.one_hot(skills, num_skills).double().sum(-2) / skills.shape[-1]      # (S, N, K)
    return torch.einsum("sn,snk->sk", w, oh)


# ---------------------------------------------------------------------------------------------------------------
# The student: a batch of MLPs over (dense skill code, one-hot symbol)
# ---------------------------------------------------------------------------------------------------------------


#: ``R`` one-hidden-layer ReLU MLPs side by side, ``W1 (R, H, d + V)``, ``b1 (R, H)``, ``W2 (R, V, H)``,
#: ``b2 (R, V)``: the distillation part's batched MLP (:class:`.distill.MLP`). Replica ``r`` belongs to seed
#: ``r % S`` of its world.
Student = MLP


def init_student(world: World, width: int) -> Student:
    """PyTorch's default ``nn.Linear`` initialization, one student per seed of ``world`` (seed ``s`` draws from
    ``torch.Generator().manual_seed(3 s + 1)``). Chapter: ``chapters/distillation/skill-targeted-training.md``."""
    H = check_int("width", width)
    fan_in = world.codes.shape[-1] + world.vocab
    parts = []
    for s in world.seeds:
        g = torch.Generator().manual_seed(3 * s + 1)
        b1, b2 = 1 / math.sqrt(fan_in), 1 / math.sqrt(H)
        parts.append([(torch.rand(H, fan_in, generator=g) * 2 - 1) * b1, (torch.rand(H, generator=g) * 2 - 1) * b1,
                      (torch.rand(world.vocab, H, generator=g) * 2 - 1) * b2,
                      (torch.rand(world.vocab, generator=g) * 2 - 1) * b2])
    return Student(*(torch.stack([p[i] for p in parts]) for i in range(4)))


def features(world: World, k: torch.Tensor, a: torch.Tensor, replicas: int) -> torch.Tensor:
    """Inputs ``(R, N, d + V)`` for skills ``k`` and symbols ``a`` of shape ``(R, N)``: the skill's dense code and
    the symbol's one-hot vector; replica ``r`` uses the codes of seed ``r % S``.
    Chapter: ``chapters/distillation/skill-targeted-training.md`` ("The toy")."""
    S = world.num_seeds
    codes = world.codes.repeat(replicas // S, 1, 1)                               # (R, K, d)
    c = codes.gather(1, k.unsqueeze(-1).expand(-1, -1, codes.shape[-1]))
    return torch.cat([c, F.one_hot(a, world.vocab).to(c.dtype)], -1)


def logits(student: Student, x: torch.Tensor) -> torch.Tensor:
    """Logits ``(R, N, V)`` of every replica on its inputs ``x (R, N, d + V)``.
    Chapter: ``chapters/distillation/skill-targeted-training.md``."""
    h = torch.baddbmm(student.b1.unsqueeze(1), x, student.W1.transpose(1, 2)).relu()
    return torch.baddbmm(student.b2.unsqueeze(1), h, student.W2.transpose(1, 2))


def _by_replica(world: World, t: torch.Tensor, R: int) -> torch.Tensor:
    return t.repeat(R // world.num_seeds, *([1] * (t.dim() - 1)))


@torch.no_grad()
def rollout(student: Student, world: World, skills: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The student's greedy chain of thought ``(R, N, 3)`` on tasks ``skills (R, N, 3)``, ``x0 (R, N)``: each step
    reads the student's own previous output (the student's response that AdaptMI's stage 1 scores).
    Chapter: ``chapters/distillation/skill-targeted-training.md``."""
    R = student.num_replicas
    outs, a = [], x0
    for i in range(skills.shape[-1]):
        a = logits(student, features(world, skills[..., i], a, R)).argmax(-1)
        outs.append(a)
    return torch.stack(outs, -1)


def step_errors(world: World, skills: torch.Tensor, x0: torch.Tensor, preds: torch.Tensor) -> torch.Tensor:
    """Which steps of the student's responses ``preds (R, N, 3)`` are wrong *given the student's own input*:
    ``preds[i] != pi_{k_i}(preds[i-1])`` (``x0`` before the first step). This is the teacher's step-level check
    (the role of the process reward model in AdaptMI's ``math-rm/rm_classify.py``, here exact).
    Chapter: ``chapters/distillation/skill-targeted-training.md``."""
    R = preds.shape[0]
    perms = _by_replica(world, world.perms, R)
    inputs = torch.cat([x0.unsqueeze(-1), preds[..., :-1]], -1)
    truth = torch.stack([_apply(perms, skills[..., i], inputs[..., i]) for i in range(skills.shape[-1])], -1)
    return preds != truth


def task_accuracy(student: Student, world: World, split: str = "test") -> torch.Tensor:
    """Fraction of the ``split`` tasks (``"test"`` or ``"val"``) whose three greedy steps are all right, per replica
    ``(R,)``. Chapter: ``chapters/distillation/skill-targeted-training.md`` (the accuracy the figures show)."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    R = student.num_replicas
    sk, x0 = _by_replica(world, getattr(world, split), R), _by_replica(world, getattr(world, split + "_x0"), R)
    preds = rollout(student, world, sk, x0)
    truth = chain(_by_replica(world, world.perms, R), sk, x0)
    return (preds == truth).all(-1).double().mean(-1)


@torch.no_grad()
def skill_accuracy(student: Student, world: World) -> torch.Tensor:
    """Per-skill accuracy of one step ``(R, K)``: the fraction of the ``V`` input symbols that skill ``k`` maps
    right (every input, exhaustively). Chapter: ``chapters/distillation/skill-targeted-training.md``."""
    R, K, V = student.num_replicas, world.num_skills, world.vocab
    k = torch.arange(K).repeat_interleave(V).expand(R, -1)
    a = torch.arange(V).repeat(K).expand(R, -1)
    pred = logits(student, features(world, k, a, R)).argmax(-1)
    truth = _apply(_by_replica(world, world.perms, R), k, a)
    return (pred == truth).double().view(R, K, V).mean(-1)


def mark_missing(world: World, student: Student, threshold: float = 0.5) -> World:
    """For a ``zipf > 0`` world: mark as missing the skills the pretrained ``student`` (one replica per seed) maps
    right on fewer than ``threshold`` of the inputs. Returns a new world.
    Chapter: ``chapters/distillation/skill-targeted-training.md`` (the ``full`` preset: "the missing
    skills whatever pretraining left unlearned")."""
    acc = skill_accuracy(student, world)
    if acc.shape[0] != world.num_seeds:
        raise ValueError(f"pass one student per seed ({world.num_seeds}), got {acc.shape[0]} replicas")
    return World(**{**world.__dict__, "missing": acc < threshold})


# ---------------------------------------------------------------------------------------------------------------
# The missing-skill profile, STAT-Sel and STAT-Syn
# ---------------------------------------------------------------------------------------------------------------


def missing_skill_profile(world: World, student: Student) -> tuple[torch.Tensor, torch.Tensor]:
    """The Missing-Skill-Profile of each seed's student ``(S, K)`` and the fraction of difficult validation tasks
    ``(S,)``.

    AdaptMI's recipe: a validation task is *difficult* when the step-level check fails somewhere
    (``math-rm/rm_classify.py``, ``select_sample``); only difficult tasks are labeled (``skill_identifier/data.py``,
    ``load_classified_data`` keeps ``PRM_pred == False``); the labeler names the skills missing from the response
    (``post_processing``: the ``<skill>`` list). Here the teacher names the skill of every wrong step
    (:func:`step_errors`). The profile counts how often each skill is named, normalized to sum to 1; STAT builds its
    training data from these (question, missing skill) pairs. ``student`` holds one replica per seed."""
    S = world.num_seeds
    if student.num_replicas != S:
        raise ValueError(f"pass one student per seed ({S}), got {student.num_replicas} replicas")
    preds = rollout(student, world, world.val, world.val_x0)
    wrong = step_errors(world, world.val, world.val_x0, preds)                   # (S, N, 3)
    difficult = wrong.any(-1)
    named = wrong & difficult.unsqueeze(-1)
    counts = torch.zeros((S, world.num_skills), dtype=torch.float64)
    counts.scatter_add_(1, world.val.reshape(S, -1), named.reshape(S, -1).double())
    total = counts.sum(-1, keepdim=True)
    profile = torch.where(total > 0, counts / total.clamp_min(1), torch.full_like(counts, 1 / world.num_skills))
    return profile, difficult.double().mean(-1)


def stat_sel_weights(pool: torch.Tensor, profile: torch.Tensor) -> torch.Tensor:
    """STAT-Sel's task weights over the pool ``(S, N)``: for each skill ``k`` the profile's mass ``q_k`` is spread
    evenly over the pool tasks that use ``k`` (the README's "select 5 questions for each missing skill in the
    question's Missing-Skill-Profile", in expectation). A skill that no pool task uses gets nothing. Chapter:
    ``chapters/distillation/skill-targeted-training.md``; STAT ``README.md`` (STAT-Sel, steps 1-3)."""
    S, N, _ = pool.shape
    K = profile.shape[-1]
    uses = F.one_hot(pool, K).amax(-2).double()                                   # (S, N, K): task n uses skill k
    n_k = uses.sum(1, keepdim=True)                                               # (S, 1, K)
    w = (uses * (profile.unsqueeze(1) / n_k.clamp_min(1))).sum(-1)
    if (w.sum(-1) <= 0).any():
        raise ValueError("no pool task uses a profiled skill: enlarge the pool")
    return w / w.sum(-1, keepdim=True)


def stat_syn_tasks(pool: torch.Tensor, profile: torch.Tensor, n: int, vocab: int, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` synthesized tasks for one seed: a missing skill ``k`` drawn from the profile ``(K,)``, a reference task
    retrieved from the pool ``(N, 3)`` among those that use ``k``, and a new question with the reference's skills and
    a fresh start symbol; its solution is the teacher's (exact) chain, so the consistency filter keeps it. Returns
    ``skills (n, 3)`` and ``x0 (n,)``. Chapter: ``chapters/distillation/skill-targeted-training.md``; STAT
    ``README.md`` (STAT-Syn: retrieve questions for each (difficult question, missing skill) pair, synthesize new
    ones, filter by consistency)."""
    n = check_int("n", n)
    K = profile.shape[-1]
    uses = F.one_hot(pool, K).amax(-2).double()                                   # (N, K)
    k = torch.multinomial(profile.double(), n, replacement=True, generator=generator)
    cand = uses[:, k].T                                                           # (n, N)
    if (cand.sum(-1) <= 0).any():
        raise ValueError("no pool task uses a profiled skill: enlarge the pool")
    ref = torch.multinomial(cand, 1, generator=generator).squeeze(-1)
    return pool[ref], torch.randint(vocab, (n,), generator=generator)


# ---------------------------------------------------------------------------------------------------------------
# Training, batched over arms and seeds
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One training configuration: ``data`` in ``uniform`` (the pool, every task equally), ``sel`` (STAT-Sel
    weights), ``syn`` (STAT-Syn tasks); ``opt`` in ``sgd``, ``adam``; learning rate ``lr``."""

    name: str
    data: str
    opt: str
    lr: float

    def __post_init__(self):
        if self.data not in DATA:
            raise ValueError(f"data must be one of {', '.join(DATA)}, got {self.data!r}")
        if self.opt not in OPTIMIZERS:
            raise ValueError(f"opt must be one of {', '.join(OPTIMIZERS)}, got {self.opt!r}")
        check_positive("lr", self.lr)


@dataclass
class History:
    """Test accuracy ``acc (A, S, E)`` of every arm and seed at ``steps (E,)``; ``names`` of the arms."""

    names: list[str]
    steps: np.ndarray
    acc: np.ndarray
    final: Student | None = None

    def curve(self, name: str) -> np.ndarray:
        """The mean test accuracy over seeds of arm ``name`` at every evaluation."""
        return self.acc[self.names.index(name)].mean(0)

    def at(self, name: str, step: int) -> float:
        i = int(np.flatnonzero(self.steps == step)[0]) if step in self.steps else None
        if i is None:
            raise ValueError(f"step {step} was not evaluated; evaluations at {self.steps.tolist()}")
        return float(self.curve(name)[i])


def steps_to(curve: np.ndarray, steps: np.ndarray, threshold: float, never: float) -> float:
    """The first evaluated step at which ``curve`` reaches ``threshold`` (``never`` if it does not).
    Chapter: ``chapters/distillation/skill-targeted-training.md``
    (steps to an accuracy threshold)."""
    hit = np.flatnonzero(np.asarray(curve) >= threshold)
    return float(steps[hit[0]]) if hit.size else float(never)


def _cot_tokens(world: World, skills: torch.Tensor, x0: torch.Tensor):
    """Teacher-forced tokens of tasks ``(R, B, 3)``: inputs (skill, previous symbol) and targets, each ``(R, 3B)``."""
    R = skills.shape[0]
    xs = chain(_by_replica(world, world.perms, R), skills, x0)
    prev = torch.cat([x0.unsqueeze(-1), xs[..., :-1]], -1)
    return skills.reshape(R, -1), prev.reshape(R, -1), xs.reshape(R, -1)


def loss_per_replica(student: Student, world: World, k: torch.Tensor, a: torch.Tensor, y: torch.Tensor
                     ) -> torch.Tensor:
    """Mean next-symbol cross-entropy of every replica ``(R,)`` on tokens ``k, a, y`` of shape ``(R, N)``: the
    supervised fine-tuning loss on the teacher's chains of thought.
    Chapter: ``chapters/distillation/skill-targeted-training.md``."""
    z = logits(student, features(world, k, a, student.num_replicas))
    return F.cross_entropy(z.transpose(1, 2), y, reduction="none").mean(-1)


def logit_grad_sq(student: Student, world: World, k: torch.Tensor, a: torch.Tensor, y: torch.Tensor
                  ) -> torch.Tensor:
    """Per-token squared norm of the cross-entropy gradient with respect to the logits, ``||p - e_y||^2``,
    shape ``(R, N)`` (derivation (1), measured on the student).
    Chapter: ``chapters/distillation/skill-targeted-training.md``."""
    with torch.no_grad():
        p = torch.softmax(logits(student, features(world, k, a, student.num_replicas)), -1)
        return (p - F.one_hot(y, world.vocab).to(p.dtype)).pow(2).sum(-1)


def sample_tasks(world: World, arm_data: str, seed_gens: Sequence[torch.Generator], n: int,
                 profile: torch.Tensor | None = None, sel: torch.Tensor | None = None, pretrain: bool = False):
    """``n`` training tasks per seed ``(S, n, 3)`` and ``(S, n)`` from one data arm (``uniform``: the pool;
    ``sel``: the pool with STAT-Sel weights ``sel (S, N)``; ``syn``: :func:`stat_syn_tasks` from ``profile``);
    ``pretrain=True``: fresh tasks with skills drawn from the pretraining frequencies ``world.freq``.
    Chapter: ``chapters/distillation/skill-targeted-training.md``; STAT
    ``README.md`` (Part 1)."""
    sks, x0s = [], []
    for s, g in enumerate(seed_gens):
        if pretrain:
            sk, x0 = _tasks(g, n, world.num_skills, world.vocab, world.freq[s])
        elif arm_data == "syn":
            sk, x0 = stat_syn_tasks(world.pool[s], profile[s], n, world.vocab, g)
        else:
            N = world.pool.shape[1]
            idx = (torch.randint(N, (n,), generator=g) if arm_data == "uniform"
                   else torch.multinomial(sel[s], n, replacement=True, generator=g))
            sk, x0 = world.pool[s, idx], world.pool_x0[s, idx]
        sks.append(sk)
        x0s.append(x0)
    return torch.stack(sks), torch.stack(x0s)


def pretrain(world: World, width: int, steps: int, batch: int, lr: float, betas=(0.9, 0.999), eps: float = 1e-8
             ) -> Student:
    """Pretrain one student per seed with Adam on chains whose skills follow ``world.freq`` (the known skills only
    when ``zipf = 0``). Chapter: ``chapters/distillation/skill-targeted-training.md`` ("pretrained so it knows most
    skills and lacks a few")."""
    steps, batch = check_int("steps", steps), check_int("batch", batch)
    st = init_student(world, width)
    gens = [torch.Generator().manual_seed(3 * s + 2) for s in world.seeds]
    params = [t.clone().requires_grad_() for t in st.tensors()]
    states = [adam_init(p) for p in params]
    for _ in range(steps):
        sk, x0 = sample_tasks(world, "uniform", gens, batch, pretrain=True)
        k, a, y = _cot_tokens(world, sk, x0)
        loss = loss_per_replica(Student(*params), world, k, a, y).sum()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            new = [adam_update(p, g, s_, lr, betas[0], betas[1], eps) for p, g, s_ in zip(params, grads, states)]
        params = [n[0].requires_grad_() for n in new]
        states = [n[1] for n in new]
    return Student(*(p.detach() for p in params))


def train_students(world: World, student0: Student, arms: Sequence[Arm], steps: int, batch: int,
                   profile: torch.Tensor, eval_every: int, betas=(0.9, 0.999), eps: float = 1e-8) -> History:
    """Fine-tune every arm from the pretrained students ``student0`` (one per seed), all ``A x S`` replicas side by
    side (replica ``a * S + s``), for ``steps`` steps of ``batch`` tasks (``3 batch`` chain-of-thought tokens).
    SGD arms use :func:`~dltheory.numerics.optimizers.sgd_update`, Adam arms
    :func:`~dltheory.numerics.optimizers.adam_update`; each replica's step is scaled by its arm's learning rate.
    Every arm of a seed with the same ``data`` sees the same batches (common random numbers). Test accuracy is
    evaluated at step 0 and every ``eval_every`` steps. Chapter: ``chapters/distillation/skill-targeted-training.md``
    ("The experiment")."""
    steps, batch, eval_every = check_int("steps", steps), check_int("batch", batch), check_int("eval_every",
                                                                                                  eval_every)
    if not arms:
        raise ValueError("arms must list at least one Arm")
    S, A = world.num_seeds, len(arms)
    if student0.num_replicas != S:
        raise ValueError(f"student0 must hold one replica per seed ({S}), got {student0.num_replicas}")
    sel = stat_sel_weights(world.pool, profile)
    R = A * S
    lr = torch.tensor([a.lr for a in arms], dtype=student0.W1.dtype).repeat_interleave(S)
    is_adam = torch.tensor([a.opt == "adam" for a in arms]).repeat_interleave(S)
    params = [t.requires_grad_() for t in student0.repeat(A).tensors()]
    sgd_states = [sgd_init(p) for p in params]
    adam_states = [adam_init(p) for p in params]
    datas = sorted({a.data for a in arms})
    gens = {d: [torch.Generator().manual_seed(3 * s + 100 + i) for s in world.seeds] for i, d in enumerate(DATA)
            if d in datas}
    eval_steps, accs = [], []

    def evaluate(step):
        eval_steps.append(step)
        accs.append(task_accuracy(Student(*(p.detach() for p in params)), world).view(A, S).numpy())

    evaluate(0)
    for t in range(1, steps + 1):
        batches = {d: sample_tasks(world, d, gens[d], batch, profile, sel) for d in datas}
        sk = torch.cat([batches[a.data][0] for a in arms])
        x0 = torch.cat([batches[a.data][1] for a in arms])
        k, a_, y = _cot_tokens(world, sk, x0)
        loss = loss_per_replica(Student(*params), world, k, a_, y).sum()
        grads = torch.autograd.grad(loss, params)
        new = []
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, grads)):
                shape = (R,) + (1,) * (p.dim() - 1)
                x_sgd, sgd_states[i] = sgd_update(p, g, sgd_states[i], 1.0)
                x_adam, adam_states[i] = adam_update(p, g, adam_states[i], 1.0, betas[0], betas[1], eps)
                delta = torch.where(is_adam.view(shape), p - x_adam, p - x_sgd)
                new.append((p - lr.view(shape) * delta).requires_grad_())
        params = new
        if t % eval_every == 0 or t == steps:
            evaluate(t)
    final = Student(*(p.detach() for p in params))
    return History([a.name for a in arms], np.asarray(eval_steps), np.stack(accs, -1), final)
