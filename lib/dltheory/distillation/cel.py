"""Multi-layer translation MLT(d, n), the paper's surrogate model SURR-MLT and context-enhanced learning on it.

Defined for the chapter *Learning with privileged context* (``chapters/distillation/context-enhanced-learning.md``),
after Zhu, Panigrahi & Arora, "On the Power of Context-Enhanced Learning in LLMs" (ICML 2025, arXiv 2503.01821)
and their reference code ``princeton-pli/Context-Enhanced-Learning``:

* the task (``data_generation/MLT/n_layer_dictionary_gen.py``): ``d`` phrasebooks, each a random bijection on the
  ``n**2`` bigrams of an ``n``-letter alphabet; a string of ``L`` bigrams is translated bigram by bigram and
  circularly shifted by one character (re-paired into bigrams), ``d`` times. Bigram ``(a, b)`` has index
  ``a * n + b``. We use the surrogate's order, translate then shift, in every layer; the generator shifts first and
  pre-rotates the source so that its first shift is undone, which computes the same map up to the final shift;
* the surrogate SURR-MLT (``surrogate_model_dynamics/grad_accuracy/var_dropout.py`` and
  ``surrogate_model_dynamics/end2end_gd_training/*.ipynb``): layer ``i`` is the column-stochastic matrix
  ``P_i = softmax_columns(beta * (W_i + M_i))`` where ``M_i`` is the true phrasebook's permutation matrix with the
  columns of the rules dropped from the context set to zero -- idealized in-context learning: a rule in the context
  is applied exactly; a layer maps a distribution over bigrams at each position to ``P_i`` times it, and the shift
  re-pairs the product of the character marginals of neighbouring positions (their ``shift`` with ``Q``,
  ``Q^T``). The loss is the cross-entropy of the output's characters against the true translation (their
  ``F.cross_entropy(log(output))``, which averages over bigram positions); ``beta = 25`` is their ``temp``;
* the gradient-accuracy measure of their ``mat_grad_normalizing``: a dropped rule counts as found when the
  gradient on its true entry is below the mean gradient of the rest of its column -- since a softmax column's
  gradient sums to zero, that is the same as the true entry's gradient being negative;
* the curriculum of ``training_CEL/components/data_utils.py``: a rule-drop rate annealed linearly from 0 to 1 over
  the first 60% of training (``"0.0@0.0-1.0@0.6"``), applied either to every layer or to one random layer, with
  probability 1/2 each (``bin_progress(..., "even_disjoint_random")``); ``int(rate * n**2)`` rules of a layer are
  removed from a sample's context (``encode_dictionary_with_mask``); a fixed rate (``"on-0.2"``, ``"even"``); no
  dropout (``"off"``); and no context at all (standard learning, ``"on"``);
* training on all layers at once with the projection ``W <- clip(W - lr * update, 0, 1)`` of the reference
  notebooks (``surrogate_model_dynamics/end2end_gd_training/*.ipynb``, full-parameter GD: the paper's Algorithm 5),
  with ``update`` the gradient (``optimizer="gd"``) or, by default, Adam's step (the chapter's choice, so that the
  standard learner is not held back by its vanishing gradients), from ``W = init_scale * randn`` (the notebooks use
  ``init_scale = 1 / n``; the chapter starts near the ``W = 0`` of the gradient analysis).

Runs are batched: every tensor carries a leading run axis ``R`` (seeds, arms, sample budgets, learning rates side by
side), and all runs advance with one batched tensor program. Runs whose context is the same for every sample (none,
or all of it) use one set of layers per run; runs with per-sample dropout select, column by column, between the
two softmaxes "rule in context" and "rule dropped" (:func:`layer_readouts`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dltheory.numerics.optimizers import AdamState, adam_init, adam_update
from dltheory.numerics.validate import check_int, check_nonnegative, check_positive

BETA = 25.0  # the reference code's softmax temperature factor ``temp``

SCHEDULES = ("anneal", "fixed", "none", "all")


# ---------------------------------------------------------------------------------------------------------------
# The task MLT(d, n)
# ---------------------------------------------------------------------------------------------------------------


def random_phrasebooks(generator: torch.Generator, d: int, n: int) -> torch.Tensor:
    """``d`` random phrasebooks on the ``n**2`` bigrams as a ``(d, n**2)`` long tensor: ``books[i, u]`` is the
    image of bigram ``u`` under phrasebook ``i`` (a uniformly random permutation, like the reference
    ``generate_random_translation``). Chapter ``context-enhanced-learning.md``, the task MLT(d, n)."""
    d, n = check_int("d", d), check_int("n", n, minimum=2)
    return torch.stack([torch.randperm(n * n, generator=generator) for _ in range(d)])


def _check_books(books: torch.Tensor, n: int) -> tuple[int, int]:
    n = check_int("n", n, minimum=2)
    if books.dim() < 2 or books.shape[-1] != n * n:
        raise ValueError(f"phrasebooks must have shape (..., d, n**2) = (..., d, {n * n}); got {tuple(books.shape)}")
    return books.shape[-2], n


def sample_strings(generator: torch.Generator, shape: Sequence[int], length: int, n: int) -> torch.Tensor:
    """Uniformly random source strings of ``length`` bigrams, shape ``(*shape, length)`` (bigram indices), as the
    reference generator with its default uniform transition matrix."""
    length, n = check_int("length", length), check_int("n", n, minimum=2)
    return torch.randint(n * n, (*shape, length), generator=generator)


def shift_bigrams(z: torch.Tensor, n: int) -> torch.Tensor:
    """Shift a string of bigrams (last axis) circularly by one character and re-pair it: new bigram ``j`` is
    (second character of ``z_j``, first character of ``z_{j+1}``)."""
    return (z % n) * n + torch.roll(z // n, -1, dims=-1)


def translate(x: torch.Tensor, books: torch.Tensor, n: int) -> torch.Tensor:
    """The exact MLT(d, n) map: ``d`` times (translate every bigram, then shift by one character). ``x`` has shape
    ``(..., L)``; ``books`` ``(d, n**2)`` or, with leading axes matching ``x``'s, ``(..., d, n**2)``."""
    d, n = _check_books(books, n)
    z = x
    for i in range(d):
        book = books[..., i, :]
        if book.dim() == 1:
            z = book[z]
        else:
            z = torch.gather(book, -1, z)
        z = shift_bigrams(z, n)
    return z


def translate_steps(x: torch.Tensor, books: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The string after each of the ``d`` steps of :func:`translate` (a list of ``d`` tensors shaped like ``x``),
    for showing the task."""
    return [translate(x, books[..., : i + 1, :], n) for i in range(books.shape[-2])]


def bigrams_to_text(x: torch.Tensor, n: int) -> str:
    """A 1-d string of bigram indices as letters, bigrams separated by spaces (``a`` is character 0)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    if n > len(letters):
        raise ValueError(f"n = {n} has more characters than the alphabet a-z; use n <= 26 to print strings")
    return " ".join(letters[int(z) // n] + letters[int(z) % n] for z in x.reshape(-1))


def make_task(seed: int, d: int, n: int, n_test: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The phrasebooks ``(d, n**2)`` of run seed ``seed`` (from ``Generator(1000 * seed + 4)``) and its test strings
    ``(n_test, length)`` (from ``Generator(1000 * seed + 5)``), independent of the training strings that
    :func:`train_runs` draws for the same seed."""
    books = random_phrasebooks(torch.Generator().manual_seed(1000 * seed + 4), d, n)
    test_x = sample_strings(torch.Generator().manual_seed(1000 * seed + 5), (check_int("n_test", n_test),), length, n)
    return books, test_x


def permutation_matrices(books: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The phrasebooks as 0/1 matrices ``T[..., i, v, u] = 1`` iff phrasebook ``i`` maps bigram ``u`` to ``v``
    (column ``u`` holds the rule for ``u``: the reference's ``np.random.permutation(np.eye(N**2))``); shape
    ``(..., d, n**2, n**2)``."""
    m = books.shape[-1]
    return torch.nn.functional.one_hot(books, m).transpose(-1, -2).to(dtype)


# ---------------------------------------------------------------------------------------------------------------
# The surrogate SURR-MLT
# ---------------------------------------------------------------------------------------------------------------


def layer_matrices(W: torch.Tensor, T: torch.Tensor | None = None, keep: torch.Tensor | None = None,
                   beta: float = BETA) -> torch.Tensor:
    """``P = softmax over each column of beta * (W + T * keep)``: the surrogate's layers (paper's SURR-MLT; the
    reference ``F.softmax(temp * (weights[i] + mask), dim=0)``). ``W``: ``(R, d, m, m)``; ``T`` the phrasebooks'
    matrices ``(R, d, m, m)`` or ``None`` (no context); ``keep``: ``(R, B, d, m)``, 1 where the rule for bigram
    ``u`` is in the sample's context, 0 where it was dropped (``None``: every rule is there). Returns
    ``(R, B, d, m, m)`` with context (``B = 1`` without ``keep``), ``(R, 1, d, m, m)`` without."""
    check_positive("beta", beta)
    logits = W.unsqueeze(1)
    if T is not None:
        M = T.unsqueeze(1) if keep is None else T.unsqueeze(1) * keep.unsqueeze(-2).to(T.dtype)
        logits = logits + M
    return torch.softmax(beta * logits, dim=-2)


def marginal_readout(n: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 0/1 matrix ``A (n**2, 2n)`` that maps a distribution over bigrams to its (second-character,
    first-character) marginals: ``A[(a, b), k] = [b = k]`` for ``k < n`` and ``[a = k - n]`` for ``k >= n`` (the
    reference's ``Q`` and ``Q^T`` products, which form these marginals for the shift)."""
    u = torch.arange(n * n, device=device)
    k = torch.arange(n, device=device)
    return torch.cat([(u % n).unsqueeze(1) == k, (u // n).unsqueeze(1) == k], 1).to(dtype)


def layer_readouts(W: torch.Tensor, T: torch.Tensor | None = None, keep: torch.Tensor | None = None,
                   beta: float = BETA) -> torch.Tensor:
    """The surrogate's layers as readouts ``Q = P^T A`` (:func:`marginal_readout`): row ``u`` holds the two
    character marginals of column ``u`` of ``P = softmax_columns(beta (W + T * keep))`` (:func:`layer_matrices`),
    which is all the shift uses. Shapes as in :func:`layer_matrices`, last two axes ``(m, 2n)`` instead of
    ``(m, m)``. With a per-sample ``keep`` the two softmaxes (rule in context, rule dropped) are taken once per
    run and selected per column, instead of one softmax per sample."""
    check_positive("beta", beta)
    m = W.shape[-1]
    n = math.isqrt(m)
    A = marginal_readout(n, W.dtype, W.device)
    free = torch.matmul(torch.softmax(beta * W, dim=-2).transpose(-1, -2), A).unsqueeze(1)       # (R, 1, d, m, 2n)
    if T is None:
        return free
    full = torch.matmul(torch.softmax(beta * (W + T), dim=-2).transpose(-1, -2), A).unsqueeze(1)
    if keep is None:
        return full
    return torch.where(keep.unsqueeze(-1) > 0, full, free)


def readouts_from_matrices(P: torch.Tensor) -> torch.Tensor:
    """``Q = P^T A`` for layer matrices ``P (..., m, m)`` (e.g. exact permutation matrices)."""
    n = math.isqrt(P.shape[-1])
    return torch.matmul(P.transpose(-1, -2), marginal_readout(n, P.dtype, P.device))


def surrogate_marginals(x: torch.Tensor, Q: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run SURR-MLT on strings ``x`` (``(R, B, L)`` bigram indices) through layers given as readouts ``Q``
    (``(R, B or 1, d, m, 2n)``, :func:`layer_readouts`).

    Each layer maps the distribution over bigrams at every position through ``P_i`` and then shifts: the new
    bigram at ``j`` has the product distribution (second-character marginal at ``j``) x (first-character marginal
    at ``j + 1``) -- the reference's ``shift`` (``Q @ x * Q^T @ (x @ shift_mat)``). Returns the last layer's
    character marginals before its shift, ``(second, first)``, each ``(R, B, L, n)``: output bigram ``j`` is
    ``second[j] (x) first[j + 1]``."""
    R, B, L = x.shape
    m = n * n
    if Q.shape[-2] != m or Q.shape[-1] != 2 * n:
        raise ValueError(f"layer readouts must be {m} x {2 * n} for n = {n}; got {tuple(Q.shape[-2:])}")
    d = Q.shape[2]
    if Q.shape[1] == 1:             # the same layers for every string: one (B * L, m) x (m, 2n) product per run
        Qs = Q[:, 0]
        S = torch.gather(Qs[:, 0], -2, x.reshape(R, B * L, 1).expand(R, B * L, 2 * n)).reshape(R, B, L, 2 * n)
    else:                           # layer 1 on one-hot inputs: row x_j of Q_1
        S = torch.gather(Q[:, :, 0], -2, x.unsqueeze(-1).expand(R, B, L, 2 * n))
    for i in range(1, d):
        second, first = S[..., :n], S[..., n:]
        X = second.unsqueeze(-1) * torch.roll(first, -1, dims=2).unsqueeze(-2)
        if Q.shape[1] == 1:
            S = torch.bmm(X.reshape(R, B * L, m), Qs[:, i]).reshape(R, B, L, 2 * n)
        else:
            S = torch.matmul(X.reshape(R, B, L, m), Q[:, :, i])
    return S[..., :n], S[..., n:]


def surrogate_loss(x: torch.Tensor, y: torch.Tensor, Q: torch.Tensor, n: int) -> torch.Tensor:
    """Cross-entropy of SURR-MLT's output against the true translation ``y`` (``(R, B, L)``), averaged over the
    ``B * L`` output bigrams of each run (the reference's ``F.cross_entropy`` on flattened positions); shape
    ``(R,)``. An output bigram's log-probability is the sum of its two characters' log-marginals."""
    second, first = surrogate_marginals(x, Q, n)
    ya, yb = y // n, y % n
    pa = torch.gather(second, -1, ya.unsqueeze(-1)).squeeze(-1)
    pb = torch.gather(torch.roll(first, -1, dims=2), -1, yb.unsqueeze(-1)).squeeze(-1)
    tiny = torch.finfo(pa.dtype).tiny        # a probability that underflowed to 0 costs -log(tiny), not inf
    return -(torch.log(pa.clamp_min(tiny)) + torch.log(pb.clamp_min(tiny))).mean((1, 2))


@torch.no_grad()
def char_accuracy(x: torch.Tensor, y: torch.Tensor, Q: torch.Tensor, n: int) -> torch.Tensor:
    """Fraction of output characters that SURR-MLT's argmax gets right, per run ``(R,)`` (chance is ``1 / n``;
    the paper's "test accuracy", per character, measured without context when ``Q`` has none)."""
    second, first = surrogate_marginals(x, Q, n)
    ya, yb = y // n, y % n
    ok = (second.argmax(-1) == ya).to(torch.float64) + (torch.roll(first, -1, dims=2).argmax(-1) == yb).to(
        torch.float64)
    return ok.mean((1, 2)) / 2


def closed_form_column_gradient(n: int, target: int, beta: float = BETA) -> torch.Tensor:
    """One layer (``d = 1``), ``W = 0``, the rule for bigram ``c`` missing from the context: the gradient of one
    occurrence of ``c`` (its two output characters' cross-entropy) on the logits of column ``c``, with
    ``t = pi(c) = target``. Entry ``u`` is ``-beta (n * ([u_1 = t_1] + [u_2 = t_2]) - 2) / n**2``: three levels,
    ``-2 beta (n - 1) / n**2`` at ``u = t``, ``-beta (n - 2) / n**2`` where one character is shared,
    ``2 beta / n**2`` elsewhere. Divide by the number of output bigrams and multiply by the number of occurrences
    for the mean loss. Derived in ``context-enhanced-learning.md`` (sympy cell)."""
    n = check_int("n", n, minimum=2)
    check_positive("beta", beta)
    u = torch.arange(n * n)
    shared = (u // n == target // n).to(torch.float64) + (u % n == target % n).to(torch.float64)
    return -beta * (n * shared - 2) / n**2


# ---------------------------------------------------------------------------------------------------------------
# Dropping rules from the context
# ---------------------------------------------------------------------------------------------------------------


def keep_mask(generator: torch.Generator, num_drop: torch.Tensor, m: int,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A 0/1 mask ``(..., m)`` with exactly ``num_drop[...]`` zeros at uniformly random places (the reference
    ``np.random.choice(keys, int(len(keys) * rate), replace=False)``); ``num_drop`` is an integer tensor."""
    scores = torch.rand((*num_drop.shape, m), generator=generator)
    rank = scores.argsort(-1).argsort(-1)
    return (rank >= num_drop.unsqueeze(-1)).to(dtype)


def anneal_rate(progress, end: float = 0.6):
    """The annealed drop rate ``min(1, progress / end)`` (reference curriculum ``"0.0@0.0-1.0@0.6"``)."""
    return np.clip(np.asarray(progress, dtype=float) / end, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# E1: the gradient signal on dropped rules
# ---------------------------------------------------------------------------------------------------------------


def gradient_accuracy(generator: torch.Generator, books: torch.Tensor, n: int, num_drop: int, layers_dropped: int,
                      trials: int, batch: int, length: int, beta: float = BETA, dtype: torch.dtype = torch.float64,
                      device: torch.device | str = "cpu") -> tuple[float, float]:
    """At ``W = 0``, drop ``num_drop`` random rules from each of the first ``layers_dropped`` phrasebooks (fresh
    for each of ``trials`` trials, each on its own batch of ``batch`` random strings of ``length`` bigrams), take
    the gradient of the loss on layer 1 and return, over all dropped rules of layer 1:

    * the fraction whose true entry gets a negative gradient (the paper's gradient prediction accuracy, reference
      ``var_dropout.py`` / ``var_nlayer.py``; equivalent to their "below the column's mean off-entry gradient");
    * the fraction whose true entry is the column's unique most negative entry (strict).

    Trials run side by side on the run axis."""
    d, n = _check_books(books, n)
    for name, v in (("num_drop", num_drop), ("layers_dropped", layers_dropped), ("trials", trials),
                    ("batch", batch), ("length", length)):
        check_int(name, v)
    if layers_dropped > d:
        raise ValueError(f"layers_dropped = {layers_dropped} exceeds the number of layers d = {d}")
    m = n * n
    if num_drop > m:
        raise ValueError(f"num_drop = {num_drop} exceeds the number of rules per layer n**2 = {m}")
    T = permutation_matrices(books, dtype).to(device).unsqueeze(0).expand(trials, d, m, m)
    counts = torch.zeros(trials, 1, d, dtype=torch.long)
    counts[:, :, :layers_dropped] = num_drop
    keep = keep_mask(generator, counts, m, dtype).to(device)                # (trials, 1, d, m)
    x = sample_strings(generator, (trials, batch), length, n)
    y = translate(x, books, n).to(device)
    W = torch.zeros(trials, d, m, m, dtype=dtype, device=device, requires_grad=True)
    loss = surrogate_loss(x.to(device), y, layer_readouts(W, T, keep, beta), n).sum()
    (g,) = torch.autograd.grad(loss, W)
    g1 = g[:, 0].cpu()                                                       # (trials, m, m): [v, u]
    dropped = keep[:, 0, 0].cpu() == 0                                       # (trials, m) columns u
    true_row = books[0]                                                      # (m,)
    true_g = g1.gather(-2, true_row.view(1, 1, m).expand(trials, 1, m)).squeeze(-2)   # (trials, m)
    neg = (true_g < 0)[dropped].to(torch.float64).mean().item()
    others = g1.clone()
    others.scatter_(-2, true_row.view(1, 1, m).expand(trials, 1, m), float("inf"))
    strict = (true_g < others.min(-2).values)[dropped].to(torch.float64).mean().item()
    return neg, strict


# ---------------------------------------------------------------------------------------------------------------
# E2: training SURR-MLT with and without context
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One training configuration: ``schedule`` is ``"anneal"`` (drop rate 0 -> 1 over the first ``anneal_end`` of
    training, ``even_disjoint_random``), ``"fixed"`` (drop rate ``rate`` in every layer), ``"none"`` (the whole
    context, no dropout) or ``"all"`` (no context at all: standard learning from input-output pairs)."""

    schedule: str
    lr: float
    rate: float = 0.2
    anneal_end: float = 0.6

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        check_positive("lr", self.lr)
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate must lie in [0, 1], got {self.rate!r}")
        if not 0 < self.anneal_end <= 1:
            raise ValueError(f"anneal_end must lie in (0, 1], got {self.anneal_end!r}")

    def drop_rate(self, progress: float) -> float:
        """The rule-drop rate at ``progress`` (the fraction of training done)."""
        if self.schedule == "anneal":
            return float(anneal_rate(progress, self.anneal_end))
        return {"fixed": self.rate, "none": 0.0, "all": 1.0}[self.schedule]


@dataclass(frozen=True)
class Run:
    """One training run: an arm, a seed (its phrasebooks, data, initialization and dropout draws) and a sample
    budget (the number of training strings, each seen once)."""

    arm: Arm
    seed: int
    samples: int


def init_weights(seeds: Sequence[int], d: int, n: int, scale: float) -> torch.Tensor:
    """``W = scale * randn`` per layer, one ``(d, n**2, n**2)`` stack per seed drawn from
    ``torch.Generator().manual_seed(seed)``; shape ``(R, d, m, m)``. The reference notebooks use
    ``scale = 1 / n`` (``torch.randn_like(translations[i]) / N``)."""
    d, n = check_int("d", d), check_int("n", n, minimum=2)
    check_positive("scale", scale)
    m = n * n
    return torch.stack([scale * torch.randn(d, m, m, generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds])


class _DropStream:
    """The dropout draws of one run, all at once (so a run's numbers do not depend on the runs beside it):
    per step and sample a coin (all layers, or one), the one layer, and a random order of the rules."""

    def __init__(self, seed: int, steps: int, batch: int, d: int, m: int):
        g = torch.Generator().manual_seed(seed)
        self.coin = torch.rand((steps, batch), generator=g) < 0.5
        self.one = torch.randint(d, (steps, batch), generator=g)
        self.rank = torch.rand((steps, batch, d, m), generator=g).argsort(-1).argsort(-1).to(torch.int16)


def _keep(rank: torch.Tensor, coin: torch.Tensor, one: torch.Tensor, rate: torch.Tensor, spread: torch.Tensor,
          m: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 0/1 context masks ``(R, B, d, m)`` from the pre-drawn ranks: ``int(rate * m)`` rules dropped per layer,
    in every layer or (``spread``, with probability 1/2) in one random layer only."""
    R, B, d, _ = rank.shape
    k = torch.floor(rate * m + 1e-9).long().view(R, 1, 1)
    only = torch.arange(d).view(1, 1, d) == one.unsqueeze(-1)
    active = coin.unsqueeze(-1) | only | ~spread.view(R, 1, 1)
    k = torch.where(active, k, torch.zeros_like(k))
    return (rank >= k.unsqueeze(-1)).to(dtype)


def train_runs(runs: Sequence[Run], books: dict[int, torch.Tensor], n: int, length: int, batch: int,
               test_x: dict[int, torch.Tensor], init_scale: float, optimizer: str = "adam", beta: float = BETA,
               eval_points: int = 0, device: torch.device | str = "cpu"):
    """Train SURR-MLT for every run side by side (chapter ``context-enhanced-learning.md``, experiment E2): one pass
    over the run's ``samples`` training strings, ``batch`` strings per step (``samples // batch`` steps); the
    curriculum's progress is the fraction of the run's own steps taken. Each step takes the gradient of the output
    loss *with the sample's context* (the dropped rules' columns of ``M`` zeroed) and updates ``W`` only:
    ``W <- clip(W - lr * update, 0, 1)`` with ``update`` the gradient (``optimizer="gd"``, the paper's projected GD,
    Algorithm 5) or Adam's step (``"adam"``, betas 0.9/0.999, :func:`dltheory.numerics.optimizers.adam_update`).

    ``books[seed]`` are the seed's phrasebooks ``(d, m)`` and ``test_x[seed]`` its test strings ``(N, L)``. A seed's
    training strings come from ``Generator(1000 * seed + 1)`` (shared by its runs: a larger budget extends a
    smaller one), its initial weights from ``Generator(1000 * seed + 2)`` and its dropout draws from
    ``Generator(1000 * seed + 3)`` (common random numbers across arms).

    Returns ``(final_acc (R,), curves, W)``: the test accuracy *without context*, the accuracy at ``eval_points``
    evenly spaced fractions of each run's training (``(R, eval_points)``, or ``None``) and the final weights."""
    if not runs:
        raise ValueError("runs must be a non-empty list of Run")
    if optimizer not in ("adam", "gd"):
        raise ValueError(f"optimizer must be 'adam' or 'gd'; got {optimizer!r}")
    length, batch, n = check_int("length", length), check_int("batch", batch), check_int("n", n, minimum=2)
    eval_points = int(check_nonnegative("eval_points", eval_points))
    R, m = len(runs), n * n
    d = next(iter(books.values())).shape[0]
    steps = np.array([r.samples // batch for r in runs])
    if (steps < 1).any():
        raise ValueError(f"every run needs samples >= batch = {batch}; got {[r.samples for r in runs]}")
    total = int(steps.max())
    seeds = sorted({r.seed for r in runs})
    need = {s: int(max(st for r, st in zip(runs, steps) if r.seed == s)) for s in seeds}
    data = {s: sample_strings(torch.Generator().manual_seed(1000 * s + 1), (need[s] * batch,), length, n)
            for s in seeds}
    target = {s: translate(data[s], books[s], n) for s in seeds}
    streams = [_DropStream(1000 * r.seed + 3, int(st), batch, d, m) if r.arm.schedule in ("anneal", "fixed")
               else None for r, st in zip(runs, steps)]
    run_seed = [r.seed for r in runs]
    T = torch.stack([permutation_matrices(books[s]) for s in run_seed]).to(device)           # (R, d, m, m)
    W = torch.cat([init_weights([1000 * s + 2], d, n, init_scale) for s in run_seed]).to(device)
    lr = torch.tensor([r.arm.lr for r in runs], device=device).view(R, 1, 1, 1)
    spread = torch.tensor([r.arm.schedule == "anneal" for r in runs])
    tx = torch.stack([test_x[s] for s in run_seed]).to(device)
    ty = torch.stack([translate(test_x[s], books[s], n) for s in run_seed]).to(device)
    state = adam_init(W) if optimizer == "adam" else None
    group = np.array([{"anneal": "masked", "fixed": "masked", "none": "full", "all": "empty"}[r.arm.schedule]
                      for r in runs])

    def evaluate(Wc):
        return char_accuracy(tx, ty, layer_readouts(Wc, beta=beta), n).cpu()

    eval_at = [np.unique(np.round(np.linspace(0, st, eval_points)).astype(int)) for st in steps]
    curves = np.full((R, eval_points), np.nan) if eval_points else None
    for step in range(total):
        if curves is not None:
            due = [i for i in range(R) if step in eval_at[i][:-1]]
            if due:
                acc = evaluate(W).numpy()
                for i in due:
                    curves[i, list(eval_at[i]).index(step)] = acc[i]
        idx = np.flatnonzero(step < steps)                        # the runs still training
        itd = torch.from_numpy(idx).to(device)
        lo = step * batch
        xb = torch.stack([data[run_seed[i]][lo:lo + batch] for i in idx]).to(device)
        yb = torch.stack([target[run_seed[i]][lo:lo + batch] for i in idx]).to(device)
        Wg = W[itd].requires_grad_(True)
        loss = 0.0
        for kind in ("masked", "full", "empty"):
            sel = np.flatnonzero(group[idx] == kind)               # positions within idx
            if not len(sel):
                continue
            ri, st = idx[sel], torch.from_numpy(sel).to(device)
            if kind == "masked":        # per-sample contexts: int(rate * m) rules dropped per layer
                rate = torch.tensor([runs[i].arm.drop_rate(step / steps[i]) for i in ri], dtype=torch.float64)
                keep = _keep(torch.stack([streams[i].rank[step] for i in ri]),
                             torch.stack([streams[i].coin[step] for i in ri]),
                             torch.stack([streams[i].one[step] for i in ri]), rate,
                             spread[torch.from_numpy(ri)], m).to(device)
                Q = layer_readouts(Wg[st], T[itd[st]], keep, beta)
            elif kind == "full":        # the whole context for every sample: one set of layers per run
                Q = layer_readouts(Wg[st], T[itd[st]], beta=beta)
            else:                       # no context: standard learning
                Q = layer_readouts(Wg[st], beta=beta)
            loss = loss + surrogate_loss(xb[st], yb[st], Q, n).sum()
        (g,) = torch.autograd.grad(loss, Wg)
        with torch.no_grad():
            Wa = Wg.detach()
            if state is None:
                upd = g
            else:
                sub = AdamState(state.m[itd], state.v[itd], state.step)
                Wn, sub = adam_update(Wa, g, sub, 1.0, 0.9, 0.999, 1e-8)
                upd = Wa - Wn
                state.m[itd], state.v[itd] = sub.m, sub.v
                state = AdamState(state.m, state.v, sub.step)
            W[itd] = (Wa - lr[itd] * upd).clamp_(0.0, 1.0)
    final = evaluate(W)
    if curves is not None:
        curves[:, -1] = final.numpy()
    return final, curves, W


@torch.no_grad()
def rule_accuracy(W: torch.Tensor, books: torch.Tensor) -> torch.Tensor:
    """Fraction of each layer's rules that the weights alone encode, ``argmax_v W[v, u] == pi(u)``, shape
    ``(R, d)`` for ``W (R, d, m, m)`` and ``books (R, d, m)`` (the reference notebooks' "HardMax(W) accuracy")."""
    return (W.argmax(-2) == books).to(torch.float64).mean(-1)


def budget_to_reach(budgets: Sequence[int], accuracy: Sequence[float], threshold: float) -> tuple[int, bool]:
    """The smallest sample budget on the (increasing) grid ``budgets`` whose accuracy reaches ``threshold``, and
    whether it was reached; if none does, twice the largest budget (the next point of a doubling grid), flagged
    ``False``: a ratio built from it is a lower bound. Used for ``sample_efficiency_ratio`` in
    ``context-enhanced-learning.md`` (the paper's Fig. 2, read as samples needed for high accuracy)."""
    budgets, accuracy = list(budgets), list(accuracy)
    if not budgets or len(budgets) != len(accuracy):
        raise ValueError("budgets and accuracy must be non-empty and of equal length")
    if any(b2 <= b1 for b1, b2 in zip(budgets, budgets[1:])):
        raise ValueError(f"budgets must be strictly increasing; got {budgets}")
    for b, a in zip(budgets, accuracy):
        if a >= threshold:
            return int(b), True
    return 2 * int(budgets[-1]), False


def run_arms(arms: dict[str, Arm], budgets: dict[str, Sequence[int]], seeds: Sequence[int], d: int, n: int,
             length: int, batch: int, n_test: int, init_scale: float, optimizer: str = "adam", beta: float = BETA,
             device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Experiment E2 of ``context-enhanced-learning.md``: train every arm at every one of its sample budgets at
    every seed (all side by side, :func:`train_runs`) on MLT(d, n) and return, per arm, the test accuracy without
    context as an array ``(len(budgets[arm]), len(seeds))``. Each seed has its own phrasebooks and test strings
    (:func:`make_task`); all arms of a seed share them, and its training strings, initialization and dropout
    draws."""
    if set(arms) != set(budgets):
        raise ValueError(f"arms and budgets must name the same arms; got {sorted(arms)} and {sorted(budgets)}")
    seeds = [check_int("seed", s, minimum=0) for s in seeds]
    tasks = {s: make_task(s, d, n, n_test, length) for s in seeds}
    books = {s: t[0] for s, t in tasks.items()}
    test_x = {s: t[1] for s, t in tasks.items()}
    runs = [Run(arms[a], s, int(D)) for a in arms for D in budgets[a] for s in seeds]
    final, _, _ = train_runs(runs, books, n, length, batch, test_x, init_scale, optimizer, beta, device=device)
    out, i = {}, 0
    for a in arms:
        k = len(budgets[a]) * len(seeds)
        out[a] = final[i:i + k].numpy().reshape(len(budgets[a]), len(seeds))
        i += k
    return out
