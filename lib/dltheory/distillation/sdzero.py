"""Self-distillation from binary rewards on a toy: GRPO against a self-reviser that localizes errors.

Defined for the chapter *Self-distillation from binary rewards* (``chapters/distillation/self-distillation-zero.md``),
after He, Kaur, Bhaskar, Yang, Liu, Ri, Fowl, Panigrahi, Chen & Arora 2026, "Self-Distillation Zero: Self-Revision
Turns Binary Rewards into Dense Supervision" (arXiv 2604.12002; reference code
``princeton-pli/Self-Distillation-Zero``).

**The toy.** ``K`` prompts, each with a target string ``y*`` of ``T`` tokens over a vocabulary of ``V``; the reward
of an answer is exact match, ``r = 1[y = y*]``. The policy is factorized over positions,
``pi(y | k) = prod_t softmax(logits[k, t])[y_t]``, either *tabular* (one free logit vector per prompt and position)
or *linear* (``logits[k, t] = W_t x_k`` on a fixed prompt embedding ``x_k``, so that what is learned on one prompt
moves the others). The "pretrained" model has a head start: the target token starts with probability about
``p_head`` at every position.

**The reviser** (paper Sec. 2.1-2.2). The reference builds the teacher input ``chat(x) + y + P_r + y`` with an
outcome-conditioned phrase ``P_r`` and distils the teacher's token distributions over the *second* copy of ``y``
(``self-distillation/nemo_rl/algorithms/distillation.py``, ``_phase2_build_teacher_message_log``). Here the
reviser's distribution at position ``t`` is the generator's own belief, updated by Bayes' rule on the reward and
on what the reviser can check: each token is *inspected* with probability ``kappa`` (its correctness is then
known), the rest is inferred from the reward (:func:`reviser_posterior`). A token believed wrong is replaced by the
generator's distribution over the *other* tokens (:func:`reviser_targets`): the reviser localizes errors, it does
not know the right token. ``kappa = 0``: nothing beyond the generator's beliefs and the reward; ``kappa = 1``: it
knows exactly which tokens are wrong.

**The updates**, batched over arms x seeds x prompts (every tensor carries the leading axes ``(A, S, K)``):

* self-distillation (:func:`sd_logit_grad`): the token-level forward KL from the reviser to the generator, the
  ``kl_type: forward`` option of the reference's ``DistillationLossFn`` (``nemo_rl/algorithms/loss_functions.py``;
  its default config mixes it 50/50 with the reverse KL);
* GRPO (:func:`grpo_advantages`, :func:`pg_logit_grad`): the reference's ``GRPOAdvantageEstimator``
  (``nemo_rl/algorithms/advantage_estimator.py`` with ``calculate_baseline_and_std_per_prompt`` in
  ``nemo_rl/algorithms/utils.py``): leave-one-out baseline and standard deviation per prompt group, advantages
  divided by ``std + 1e-6`` where ``std > 0`` (``grpo_math_1B.yaml``: ``normalize_rewards: true``,
  ``use_leave_one_out_baseline: true``), one on-policy step (the clipped ratio is 1).

Both losses sum over the ``T`` tokens of an answer and average over the answers of a prompt. The reference averages
over all tokens of the batch; with answers of one length ``T`` that is our loss divided by ``T``, a constant we fold
into the learning rate so that a learning rate means the same at every ``T``. Plain SGD on the logits (the reference
trains with AdamW).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dltheory.numerics.validate import check_int, check_nonnegative, check_positive, check_seeds

_TINY = 1e-300


def _check_prob(name: str, value, open_interval: bool = True) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = 0 < value < 1 if open_interval else 0 <= value <= 1
    if not ok:
        rng = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} must be a number in {rng}, got {value!r}")
    return float(value)




# ---------------------------------------------------------------------------------------------------------------
# The task and the policy
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Task:
    """``S`` independent copies (one per seed) of the toy: targets ``(S, K, T)`` over ``vocab`` tokens; for the
    linear policy also the prompt embeddings ``features (S, K, d)`` (``None`` for the tabular policy)."""

    targets: torch.Tensor
    vocab: int
    features: torch.Tensor | None = None

    @property
    def policy(self) -> str:
        return "tabular" if self.features is None else "linear"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.targets.shape)


def head_start_logit(p_head: float, vocab: int) -> float:
    """The logit bonus ``h`` of the target token that gives it probability ``p_head`` when every other logit is 0:
    ``e^h / (e^h + V - 1) = p_head``, so ``h = log(p_head (V - 1) / (1 - p_head))``.
    Used in ``chapters/distillation/self-distillation-zero.md`` (the "pretrained" head start)."""
    p_head = _check_prob("p_head", p_head)
    vocab = check_int("vocab", vocab, minimum=2)
    return math.log(p_head * (vocab - 1) / (1 - p_head))


def make_task(seeds: Sequence[int], prompts: int, length: int, vocab: int, p_head: float, init_noise: float = 0.0,
              policy: str = "tabular", dim: int | None = None, dtype: torch.dtype = torch.float64,
              device: torch.device | str | None = None):
    """The toy and the head-start parameters, one copy per seed (``chapters/distillation/self-distillation-zero.md``,
    "The toy").

    Seed ``s`` draws from ``torch.Generator().manual_seed(2 s)``, so its numbers do not depend on the other seeds
    (:func:`train_arms` uses ``2 s + 1``).

    * ``policy="tabular"``: logits ``(S, K, T, V)`` equal to ``h 1[v = y*] + init_noise * N(0, 1)`` with ``h`` from
      :func:`head_start_logit`;
    * ``policy="linear"``: unit-norm prompt embeddings ``x_k`` in ``R^dim`` and weights ``W (S, T, V, dim)``,
      ``logits[k, t] = W_t x_k``. The targets are ``y*_{k,t} = argmax_v (W*_t x_k)_v`` for a random Gaussian
      teacher ``W*``, and the head start is ``W = alpha W* + init_noise * N(0, 1)`` with ``alpha`` chosen so that the
      target token's probability, averaged over prompts and positions, is ``p_head``. With ``K > dim`` the targets
      are a shared rule, and what a success on one prompt teaches moves the others.

    Returns ``(task, params)`` with ``params`` of shape ``(S, K, T, V)`` or ``(S, T, V, dim)``, on ``device``
    (drawn on the CPU, so the numbers do not depend on the device).
    """
    seeds = check_seeds(seeds)
    K, T = check_int("prompts", prompts), check_int("length", length)
    V = check_int("vocab", vocab, minimum=2)
    h = head_start_logit(p_head, V)
    init_noise = check_nonnegative("init_noise", init_noise)
    if policy not in ("tabular", "linear"):
        raise ValueError(f"policy must be 'tabular' or 'linear', got {policy!r}")
    targets, params, feats = [], [], []
    for s in seeds:
        g = torch.Generator().manual_seed(2 * s)
        if policy == "tabular":
            y = torch.randint(V, (K, T), generator=g)
            theta = h * torch.nn.functional.one_hot(y, V).to(dtype)
            theta = theta + init_noise * torch.randn((K, T, V), generator=g, dtype=dtype)
            targets.append(y)
            params.append(theta)
        else:
            d = check_int("dim", dim)
            x = torch.randn((K, d), generator=g, dtype=dtype)
            x = x / x.norm(dim=-1, keepdim=True)
            w_star = torch.randn((T, V, d), generator=g, dtype=dtype)
            scores = torch.einsum("tvd,kd->ktv", w_star, x)
            y = scores.argmax(-1)
            alpha = _calibrate_scale(scores, y, p_head)
            w = alpha * w_star + init_noise * torch.randn((T, V, d), generator=g, dtype=dtype)
            targets.append(y)
            params.append(w)
            feats.append(x)
    task = Task(torch.stack(targets).to(device), V, torch.stack(feats).to(device) if feats else None)
    return task, torch.stack(params).to(device)


def _calibrate_scale(scores: torch.Tensor, targets: torch.Tensor, p_head: float) -> float:
    """The scale ``alpha`` at which ``softmax(alpha * scores)`` gives the targets mean probability ``p_head``
    (bisection; the mean is increasing in ``alpha`` because every target is its row's argmax)."""
    def mean_p(a):
        return float(torch.softmax(a * scores, -1).gather(-1, targets.unsqueeze(-1)).mean())

    lo, hi = 0.0, 1.0
    while mean_p(hi) < p_head and hi < 1e6:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_p(mid) < p_head else (lo, mid)
    return (lo + hi) / 2


def policy_logits(task: Task, params: torch.Tensor) -> torch.Tensor:
    """Logits ``(..., S, K, T, V)`` of the policy with parameters ``params`` (leading batch axes allowed, e.g. arms):
    the parameters themselves (tabular) or ``W_t x_k`` (linear)."""
    if task.features is None:
        return params
    return torch.einsum("...stvd,skd->...sktv", params, task.features)


def logit_grad_to_params(task: Task, grad_logits: torch.Tensor) -> torch.Tensor:
    """Back-propagate a gradient with respect to the logits ``(..., S, K, T, V)`` to the parameters (the chain rule
    through :func:`policy_logits`; identity for the tabular policy)."""
    if task.features is None:
        return grad_logits
    return torch.einsum("...sktv,skd->...stvd", grad_logits, task.features)


def pass_at_1(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Exact pass@1 of each prompt, ``pi(y* | k) = prod_t pi_t(y*_t)``: ``probs (..., K, T, V)`` and
    ``targets (..., K, T)`` (broadcast) give ``(..., K)``. No sampling: the chapter's curves are exact."""
    tgt = targets.expand(probs.shape[:-1])
    return probs.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).prod(-1)


def sample_answers(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Answers ``y (..., G, T)`` drawn from the factorized policy by inverting its CDF at uniforms ``u (..., G, T)``;
    ``probs (..., T, V)`` is broadcast over the answer axis ``G``. Passing the same ``u`` to several arms gives them
    common random numbers."""
    cdf = probs.unsqueeze(-3).cumsum(-1)
    y = (cdf < u.unsqueeze(-1).to(cdf.dtype)).sum(-1)
    return y.clamp_max(probs.shape[-1] - 1)


def exact_match(y: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The binary reward ``r = 1[y = y*]`` of answers ``y (..., K, G, T)`` for ``targets (..., K, T)``:
    ``(..., K, G)`` of 0. and 1. in ``dtype``."""
    return (y == targets.unsqueeze(-2)).all(-1).to(dtype)


# ---------------------------------------------------------------------------------------------------------------
# The reviser
# ---------------------------------------------------------------------------------------------------------------


def reviser_posterior(c: torch.Tensor, wrong: torch.Tensor, inspected: torch.Tensor, r: torch.Tensor | None
                      ) -> torch.Tensor:
    """The reviser's probability that each token of an answer is wrong (``chapters/distillation/
    self-distillation-zero.md``, derivation (1)).

    The reviser believes, like the generator, that token ``t`` is right with probability ``c_t = pi_t(y_t)``,
    independently across tokens. It knows the correctness of the ``inspected`` tokens and, unless ``r`` is
    ``None`` (reward withheld), the reward ``r = prod_t 1[y_t right]``. By Bayes' rule, for an uninspected token:

    * ``r = 1``: 0 (every token is right);
    * ``r = 0`` and some inspected token is wrong: ``1 - c_t`` (the reward is explained, nothing is learned);
    * ``r = 0`` and every inspected token is right: ``(1 - c_t) / (1 - prod_{s uninspected} c_s)``;
    * reward withheld: ``1 - c_t``.

    An inspected token gets ``1[wrong]``. Shapes: ``c``, ``wrong``, ``inspected`` ``(..., T)``; ``r (...)``.
    """
    wrong_f = wrong.to(c.dtype)
    if r is None:
        return torch.where(inspected, wrong_f, 1 - c)
    any_flagged = (inspected & wrong).any(-1, keepdim=True)
    prod_unins = torch.where(inspected, torch.ones_like(c), c).prod(-1, keepdim=True)
    denom = 1 - prod_unins
    conditioned = (1 - c) / denom.clamp_min(_TINY)
    w_unins = torch.where(any_flagged, 1 - c, torch.where(denom > 0, conditioned, torch.zeros_like(c)))
    w = torch.where(inspected, wrong_f, w_unins)
    return torch.where(r.unsqueeze(-1) > 0.5, torch.zeros_like(w), w)


def reviser_targets(probs: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The reviser's token distributions over the answer, ``q_t = (1 - w_t) delta_{y_t} + w_t pi_t(. | not y_t)``:
    keep the token with the probability that it is right, otherwise redistribute over the other tokens as the
    generator would (``chapters/distillation/self-distillation-zero.md``; the teacher's logits over the second copy
    of ``y`` in the reference's ``chat(x) + y + P_r + y``). ``probs (..., T, V)`` is broadcast over the answers
    ``y (..., G, T)``; ``w (..., G, T)`` from :func:`reviser_posterior`. Returns ``(..., G, T, V)``."""
    V = probs.shape[-1]
    p = probs.unsqueeze(-3).expand(*y.shape, V)
    onehot = torch.nn.functional.one_hot(y, V).to(p.dtype)
    others = p * (1 - onehot)
    mass = others.sum(-1, keepdim=True)
    rest = torch.where(mass > 0, others / mass.clamp_min(_TINY), (1 - onehot) / (V - 1))
    wv = w.unsqueeze(-1)
    return (1 - wv) * onehot + wv * rest


def reviser_step(probs: torch.Tensor, y: torch.Tensor, targets: torch.Tensor, r: torch.Tensor, kappa,
                 u_inspect: torch.Tensor, use_reward=True):
    """Everything the reviser computes for answers ``y (..., K, G, T)``: the generator's beliefs ``c``, the truth
    ``wrong``, the inspected set (``u_inspect < kappa``; ``kappa`` a number or a tensor broadcast against
    ``(..., K, G, T)``), the posterior ``w`` and the targets ``q``. ``use_reward`` may be a bool or a boolean
    tensor broadcast like ``kappa`` (per arm). Returns ``(w, q, wrong)``."""
    p = probs.unsqueeze(-3).expand(*y.shape, probs.shape[-1])
    c = p.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    wrong = y != targets.unsqueeze(-2)
    kappa_t = torch.as_tensor(kappa, dtype=u_inspect.dtype)
    inspected = u_inspect < kappa_t
    inspected = inspected.expand(c.shape)
    if isinstance(use_reward, bool):
        w = reviser_posterior(c, wrong, inspected, r if use_reward else None)
    else:
        w = torch.where(use_reward, reviser_posterior(c, wrong, inspected, r),
                        reviser_posterior(c, wrong, inspected, None))
    return w, reviser_targets(probs, y, w), wrong


def localization(w: torch.Tensor, wrong: torch.Tensor, r: torch.Tensor) -> dict:
    """How well the reviser localizes errors on failed answers (``r = 0``), with its posterior ``w`` as a soft flag:
    precision ``sum w 1[wrong] / sum w``, recall ``sum w 1[wrong] / sum 1[wrong]``, and ``wrong_share``, the
    fraction of wrong tokens among the tokens of failed answers (the precision of flagging every token).
    ``chapters/distillation/self-distillation-zero.md`` (the paper's "token-level self-localization")."""
    fail = (r < 0.5).unsqueeze(-1).to(w.dtype)
    wf = wrong.to(w.dtype) * fail
    hit = (w * wf).sum()
    flagged = (w * fail).sum()
    n_wrong = wf.sum()
    n_tok = fail.expand(w.shape).sum()
    return {"precision": float(hit / flagged.clamp_min(_TINY)), "recall": float(hit / n_wrong.clamp_min(_TINY)),
            "wrong_share": float(n_wrong / n_tok.clamp_min(_TINY))}


# ---------------------------------------------------------------------------------------------------------------
# The two updates, as gradients with respect to the logits
# ---------------------------------------------------------------------------------------------------------------


def sd_logit_grad(probs: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Gradient with respect to the logits ``(..., T, V)`` of the self-distillation loss
    ``(1/G) sum_i sum_t KL(q_{i,t} || pi_t)`` (the reviser's targets ``q (..., G, T, V)`` held fixed):
    ``(1/G) sum_i (pi_t - q_{i,t})``. The forward KL of the reference's ``DistillationLossFn``
    (paper Sec. 2.2); ``chapters/distillation/self-distillation-zero.md``."""
    return probs - q.mean(-3)


def grpo_advantages(r: torch.Tensor, leave_one_out: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's group-normalized advantages for rewards ``r (..., G)`` of the ``G`` answers to one prompt, as in the
    reference's ``GRPOAdvantageEstimator`` with ``calculate_baseline_and_std_per_prompt``: baseline and sample
    standard deviation over the group (the *other* ``G - 1`` answers with ``leave_one_out``), ``A = r - baseline``,
    divided by ``std + eps`` where ``std > 0``. A group of one answer gets advantage 0 (the reference sets its
    baseline to its reward). Shao et al. 2024 (GRPO) use ``leave_one_out=False``.
    ``chapters/distillation/self-distillation-zero.md``."""
    check_nonnegative("eps", eps)
    G = r.shape[-1]
    if G == 1:
        return torch.zeros_like(r)
    tot, tot2 = r.sum(-1, keepdim=True), (r * r).sum(-1, keepdim=True)
    if leave_one_out:
        n = G - 1
        base, sq = (tot - r) / n, (tot2 - r * r) / n
    else:
        n = G
        base, sq = (tot / n).expand_as(r), (tot2 / n).expand_as(r)
    if n > 1:
        std = ((sq - base * base).clamp_min(0) * (n / (n - 1))).sqrt()
    else:
        std = torch.zeros_like(r)
    adv = r - base
    return torch.where(std > 0, adv / (std + eps), adv)


def pg_logit_grad(probs: torch.Tensor, y: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Gradient with respect to the logits ``(..., T, V)`` of the policy-gradient loss
    ``-(1/G) sum_i A_i sum_t log pi_t(y_{i,t})`` (advantages ``adv (..., G)`` held fixed):
    ``-(1/G) sum_i A_i (e_{y_{i,t}} - pi_t)`` (REINFORCE, Williams 1992; GRPO with the on-policy ratio 1).
    ``chapters/distillation/self-distillation-zero.md``."""
    onehot = torch.nn.functional.one_hot(y, probs.shape[-1]).to(probs.dtype)
    a = adv.to(probs.dtype)[..., None, None]
    return -(a * (onehot - probs.unsqueeze(-3))).mean(-3)


def kappa0_advantage(r: torch.Tensor, prob_y: torch.Tensor) -> torch.Tensor:
    """The advantage ``(r - pi(y)) / (1 - pi(y))`` with which self-distillation from a ``kappa = 0`` reviser equals
    REINFORCE, token by token (``chapters/distillation/self-distillation-zero.md``, derivation (2)). At ``r = 1`` it
    is 1; at ``r = 0`` it is ``-pi(y) / (1 - pi(y))``."""
    return torch.where(r > 0.5, torch.ones_like(prob_y), (r - prob_y) / (1 - prob_y).clamp_min(_TINY))


# ---------------------------------------------------------------------------------------------------------------
# Training every arm side by side
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One training recipe: ``method`` ``"grpo"`` or ``"sd"`` (self-distillation), its SGD learning rate, and for
    ``"sd"`` the reviser's ``kappa`` and whether it sees the reward."""

    name: str
    method: str
    lr: float
    kappa: float = 0.0
    reward: bool = True

    def __post_init__(self):
        if self.method not in ("grpo", "sd"):
            raise ValueError(f"arm {self.name!r}: method must be 'grpo' or 'sd', got {self.method!r}")
        check_positive(f"arm {self.name!r}: lr", self.lr)
        _check_prob(f"arm {self.name!r}: kappa", self.kappa, open_interval=False)


@dataclass
class History:
    """pass@1 of every arm, seed and prompt at the evaluation points: ``pass1 (A, S, K, E)``; ``samples (E,)`` is the
    number of answers drawn per prompt before each evaluation; ``final_params`` the parameters at the end."""

    arms: list
    samples: np.ndarray
    pass1: np.ndarray
    final_params: torch.Tensor

    def index(self, name: str) -> int:
        names = [a.name for a in self.arms]
        if name not in names:
            raise ValueError(f"no arm named {name!r}; arms: {', '.join(names)}")
        return names.index(name)

    def curve(self, name: str) -> np.ndarray:
        """Mean pass@1 over seeds and prompts, ``(E,)``."""
        return self.pass1[self.index(name)].mean((0, 1))

    def seed_curves(self, name: str) -> np.ndarray:
        """Mean pass@1 over prompts, per seed, ``(S, E)``."""
        return self.pass1[self.index(name)].mean(1)


def train_arms(task: Task, params0: torch.Tensor, arms: Sequence[Arm], seeds: Sequence[int], budget: int,
               group: int, eval_every: int = 1, leave_one_out: bool = True) -> History:
    """Train every arm on every seed's copy of the toy, side by side (one tensor program over ``(A, S, K)``), for
    ``budget`` answers per prompt drawn in groups of ``group`` per step (both methods see the same number of
    answers per step). ``chapters/distillation/self-distillation-zero.md``, "The experiment".

    Every arm starts from the same head start ``params0 (S, ...)``. At each step seed ``s`` draws the uniforms for
    sampling and for the reviser's inspections from its own generator (``manual_seed(2 s + 1)``), shared by all
    arms (common random numbers). GRPO arms step along :func:`pg_logit_grad` with :func:`grpo_advantages`,
    self-distillation arms along :func:`sd_logit_grad` with :func:`reviser_step`. pass@1 is evaluated exactly
    every ``eval_every`` steps and at the end."""
    arms = list(arms)
    if not arms:
        raise ValueError("arms must list at least one Arm")
    seeds = check_seeds(seeds)
    budget, group = check_int("budget", budget), check_int("group", group, minimum=2)
    eval_every = check_int("eval_every", eval_every)
    steps = budget // group
    if steps < 1:
        raise ValueError(f"budget ({budget}) must be at least one group ({group} answers per prompt)")
    S, K, T = task.shape
    if len(seeds) != S or params0.shape[0] != S:
        raise ValueError(f"seeds ({len(seeds)}) and params0 ({params0.shape[0]}) must match the task's {S} copies")
    dt, dev = params0.dtype, params0.device
    A = len(arms)
    params = params0.unsqueeze(0).repeat(A, *([1] * params0.dim())).contiguous()
    extra = (1,) * (params.dim() - 1)
    lr = torch.tensor([a.lr for a in arms], dtype=dt, device=dev).view(A, *extra)
    gi = torch.tensor([i for i, a in enumerate(arms) if a.method == "grpo"], dtype=torch.long, device=dev)
    si = torch.tensor([i for i, a in enumerate(arms) if a.method == "sd"], dtype=torch.long, device=dev)
    kap = torch.tensor([arms[i].kappa for i in si.tolist()], dtype=dt, device=dev).view(-1, 1, 1, 1, 1)
    use_r = torch.tensor([arms[i].reward for i in si.tolist()], dtype=torch.bool, device=dev).view(-1, 1, 1, 1, 1)
    gens = [torch.Generator().manual_seed(2 * s + 1) for s in seeds]
    targets = task.targets

    def evaluate(p):
        return pass_at_1(torch.softmax(policy_logits(task, p), -1), targets)

    evals, samples = [evaluate(params)], [0]
    for step in range(1, steps + 1):
        u = torch.stack([torch.rand((K, group, T), generator=g, dtype=dt) for g in gens]).to(dev)
        u_insp = torch.stack([torch.rand((K, group, T), generator=g, dtype=dt) for g in gens]).to(dev)
        probs = torch.softmax(policy_logits(task, params), -1)          # (A, S, K, T, V)
        y = sample_answers(probs, u)                                     # (A, S, K, G, T)
        r = exact_match(y, targets, dt)                                   # (A, S, K, G)
        grad = torch.empty_like(probs)
        if len(gi):
            adv = grpo_advantages(r[gi], leave_one_out=leave_one_out)
            grad[gi] = pg_logit_grad(probs[gi], y[gi], adv)
        if len(si):
            _, q, _ = reviser_step(probs[si], y[si], targets, r[si], kap, u_insp, use_reward=use_r)
            grad[si] = sd_logit_grad(probs[si], q)
        params = params - lr * logit_grad_to_params(task, grad)
        if step % eval_every == 0 or step == steps:
            evals.append(evaluate(params))
            samples.append(step * group)
    pass1 = torch.stack(evals, -1).cpu().numpy()
    return History(arms, np.asarray(samples), pass1, params)


def best_arm(history: History, names: Sequence[str], threshold: float = 0.5) -> str:
    """The arm among ``names`` (e.g. GRPO's learning-rate grid) that first reaches mean pass@1 ``threshold``; ties
    (and arms that never reach it) are broken by the mean pass@1 over the run. ``chapters/distillation/
    self-distillation-zero.md`` ("GRPO, best of a small learning-rate grid")."""
    names = list(names)
    if not names:
        raise ValueError("names must list at least one arm")
    never = float(history.samples[-1]) + 1
    key = {n: (samples_to(history.curve(n), history.samples, threshold, never), -float(history.curve(n).mean()))
           for n in names}
    return min(names, key=lambda n: key[n])


def reviser_localization(task: Task, params: torch.Tensor, kappa: float, use_reward: bool, answers: int,
                         generator: torch.Generator) -> dict:
    """:func:`localization` of the reviser for ``answers`` answers per prompt drawn from the policy ``params``
    (e.g. the head start), with uniforms from ``generator`` (on the CPU).
    ``chapters/distillation/self-distillation-zero.md`` (localization precision and recall)."""
    _check_prob("kappa", kappa, open_interval=False)
    answers = check_int("answers", answers)
    probs = torch.softmax(policy_logits(task, params), -1)
    S, K, T = task.shape
    u = torch.rand((S, K, answers, T), generator=generator, dtype=probs.dtype).to(probs.device)
    u_insp = torch.rand((S, K, answers, T), generator=generator, dtype=probs.dtype).to(probs.device)
    y = sample_answers(probs, u)
    r = exact_match(y, task.targets, probs.dtype)
    w, _, wrong = reviser_step(probs, y, task.targets, r, kappa, u_insp, use_reward=use_reward)
    return localization(w, wrong, r)


def samples_to(curve: np.ndarray, samples: np.ndarray, threshold: float, never: float) -> float:
    """The first number of answers per prompt at which ``curve`` reaches ``threshold``, or ``never`` if it does
    not within the run (the chapter records the budget + 1). ``chapters/distillation/self-distillation-zero.md``."""
    curve, samples = np.asarray(curve), np.asarray(samples)
    hit = np.nonzero(curve >= threshold)[0]
    return float(samples[hit[0]]) if hit.size else float(never)


# ---------------------------------------------------------------------------------------------------------------
# Signal-to-noise of one sample (derivation (3))
# ---------------------------------------------------------------------------------------------------------------


def snr_reinforce(p: float, length: int) -> float:
    """Signal-to-noise ratio (mean squared over variance) of one REINFORCE sample's gradient on the target token's
    logit at one position, ``r (1[y_1 right] - p)``, for a policy that is right with probability ``p`` at each of
    ``length`` positions: ``p^T / (1 - p^T)``. ``chapters/distillation/self-distillation-zero.md``, derivation (3)."""
    p = _check_prob("p", p)
    P = p ** check_int("length", length)
    return P / (1 - P)


def snr_kappa1(p: float, vocab: int) -> float:
    """The same signal-to-noise ratio for self-distillation from a ``kappa = 1`` reviser, the wrong tokens sharing
    ``1 - p`` equally: ``p (V - 1)^2 / ((1 - p) (V - 2)^2)``, whatever the length (infinite for ``V = 2``).
    ``chapters/distillation/self-distillation-zero.md``, derivation (3)."""
    p = _check_prob("p", p)
    V = check_int("vocab", vocab, minimum=2)
    if V == 2:
        return math.inf
    return p * (V - 1) ** 2 / ((1 - p) * (V - 2) ** 2)


def symmetric_probs(p: float, length: int, vocab: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Policy probabilities ``(T, V)`` with the target token 0 at probability ``p`` at every position and the other
    tokens at ``(1 - p) / (V - 1)`` (the setting of derivation (3))."""
    p = _check_prob("p", p)
    T, V = check_int("length", length), check_int("vocab", vocab, minimum=2)
    probs = torch.full((T, V), (1 - p) / (V - 1), dtype=dtype)
    probs[:, 0] = p
    return probs
