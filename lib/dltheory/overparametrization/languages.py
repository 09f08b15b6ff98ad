"""Regular-language recognition tasks with exact labels, for sequence models.

Defined for the chapter *What over-parametrized RNNs provably learn*
(``chapters/overparametrization/rnn-learning.md``), which illustrates Panigrahi & Goyal, "Learning and
Generalization in RNNs" (NeurIPS 2021, arXiv 2106.00047) on regular languages, as that paper does. The tasks
are chosen to separate *additive* targets (sums of per-token functions, the class of Allen-Zhu & Li 2019)
from general functions of the sequence:

* ``parity``: number of ``1``s mod 2 (binary alphabet); orthogonal to every additive function;
* ``mod3``: number of ``1``s mod 3, a three-class counter (binary alphabet);
* ``substring``: does the string contain ``ab`` as a contiguous substring (alphabet ``{a, b, c}``);
* ``majority``: strictly more ``1``s than ``0``s (binary alphabet); the additive control, a threshold of
  ``sum_t x_t``.

Strings are integer tensors of shape ``(n, L)`` with symbols ``0..k-1``; ``a, b, c`` are ``0, 1, 2``. Every
language here is regular; :func:`run_dfa` runs an explicit automaton and the tests check each label
function against it and against plain string operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from dltheory.numerics.validate import check_int


def _check_strings(s: torch.Tensor, k: int | None = None) -> torch.Tensor:
    s = torch.as_tensor(s)
    if s.ndim != 2 or s.dtype.is_floating_point or s.dtype == torch.bool:
        raise ValueError(f"strings must be an integer tensor of shape (n, L), got {s.dtype} {tuple(s.shape)}")
    if s.numel() and int(s.min()) < 0:
        raise ValueError("string symbols must be non-negative integers 0..k-1")
    if k is not None and s.numel() and int(s.max()) >= k:
        raise ValueError(f"a symbol {int(s.max())} is outside the alphabet 0..{k - 1}")
    return s


# ------------------------------------------------------------------------------------------------ strings


def all_strings(length: int, k: int) -> torch.Tensor:
    """Every string of ``length`` symbols over ``{0..k-1}``, in lexicographic order: shape ``(k**L, L)``."""
    check_int("length", length)
    check_int("k", k, 2)
    if k**length > 2**24:
        raise ValueError(f"k**length = {k**length} strings is too many to enumerate; use sample_strings")
    idx = torch.arange(k**length)
    powers = k ** torch.arange(length - 1, -1, -1)
    return (idx[:, None] // powers[None, :]) % k


def sample_strings(n: int, length: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` strings drawn i.i.d. uniformly from ``{0..k-1}^length`` (with repetitions)."""
    check_int("n", n)
    check_int("length", length)
    check_int("k", k, 2)
    return torch.randint(0, k, (n, length), generator=generator)


def string_ids(s: torch.Tensor, k: int) -> torch.Tensor:
    """The index of each string in :func:`all_strings` order (base-``k`` number, first symbol most
    significant)."""
    s = _check_strings(s, k)
    powers = k ** torch.arange(s.shape[1] - 1, -1, -1)
    return (s * powers).sum(1)


def unique_with_counts(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct strings (sorted) and how often each occurs: full-batch losses over a sample with repeats
    equal count-weighted losses over its distinct strings."""
    s = _check_strings(s)
    u, counts = torch.unique(s, dim=0, return_counts=True)
    return u, counts


def to_text(s: torch.Tensor, alphabet: str) -> list[str]:
    """Render strings with the given alphabet (``"01"`` or ``"abc"``)."""
    s = _check_strings(s, len(alphabet))
    return ["".join(alphabet[int(c)] for c in row) for row in s]


def simplex_embedding(k: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Token vectors for a ``k``-letter alphabet: the vertices of a regular simplex, unit norm, in
    ``R^{k-1}``, with ``<e_a, e_b> = -1/(k-1)`` for ``a != b``. For ``k = 2`` this is ``[[-1], [+1]]``
    (symbol ``0 -> -1``, ``1 -> +1``). Every token has norm 1, as the kernel recursion of
    :mod:`dltheory.overparametrization.rnn` assumes; distinct tokens are as far apart as ``k`` unit vectors can be."""
    check_int("k", k, 2)
    # Helmert basis of the sum-zero subspace: h_j = (1, ..., 1, -j, 0, ..., 0) / sqrt(j (j + 1)), j ones
    helmert = torch.zeros(k - 1, k, dtype=torch.float64)
    for j in range(1, k):
        helmert[j - 1, :j] = 1.0
        helmert[j - 1, j] = -float(j)
        helmert[j - 1] /= math.sqrt(j * (j + 1))
    emb = helmert.T / math.sqrt(1.0 - 1.0 / k)  # row a: the centred indicator of symbol a, normalized
    if k == 2:  # exactly [[-1], [+1]]: symbol 0 -> -1, 1 -> +1
        emb = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    return emb.to(dtype)


def embed(s: torch.Tensor, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Strings ``(n, L)`` to token vectors ``(n, L, k-1)`` with :func:`simplex_embedding`."""
    s = _check_strings(s, k)
    return simplex_embedding(k, dtype)[s]


# ------------------------------------------------------------------------------------------------- labels


def count_symbol(s: torch.Tensor, symbol: int = 1) -> torch.Tensor:
    """How many times ``symbol`` occurs in each string."""
    return (_check_strings(s) == symbol).sum(1)


def parity_labels(s: torch.Tensor, symbol: int = 1) -> torch.Tensor:
    """``(#symbol) mod 2``: the language of strings with an odd number of ``1``s (label 1)."""
    return count_symbol(s, symbol) % 2


def mod_count_labels(s: torch.Tensor, modulus: int = 3, symbol: int = 1) -> torch.Tensor:
    """``(#symbol) mod modulus``: the state of a ``modulus``-state counter automaton (``modulus`` classes)."""
    check_int("modulus", modulus, 2)
    return count_symbol(s, symbol) % modulus


def contains_labels(s: torch.Tensor, pattern: Sequence[int] = (0, 1)) -> torch.Tensor:
    """1 if ``pattern`` occurs as a contiguous substring (default ``ab`` = ``(0, 1)``), else 0."""
    s = _check_strings(s)
    p = list(pattern)
    if len(p) == 0:
        raise ValueError("pattern must have at least one symbol")
    n, length = s.shape
    if len(p) > length:
        return torch.zeros(n, dtype=torch.long)
    hit = torch.zeros(n, length - len(p) + 1, dtype=torch.bool)
    hit[:] = True
    for j, c in enumerate(p):
        hit &= s[:, j : length - len(p) + 1 + j] == c
    return hit.any(1).long()


def majority_labels(s: torch.Tensor, symbol: int = 1) -> torch.Tensor:
    """1 if ``symbol`` fills strictly more than half of the string (a tie, possible at even length, is 0).
    With ``x_t = +1`` for ``symbol`` and ``-1`` otherwise the label is ``1{sum_t x_t > 0}``: a threshold of
    an additive function (the chapter's additive control)."""
    s = _check_strings(s)
    return (2 * count_symbol(s, symbol) > s.shape[1]).long()


# ---------------------------------------------------------------------------------------------- automata


@dataclass(frozen=True)
class DFA:
    """A deterministic finite automaton: ``delta[state][symbol] -> state``; ``output[state]`` is the label
    of a string that ends in ``state`` (a class index, so counters have more than two outputs)."""

    delta: tuple[tuple[int, ...], ...]
    output: tuple[int, ...]
    start: int = 0


def run_dfa(s: torch.Tensor, dfa: DFA) -> torch.Tensor:
    """Run ``dfa`` on every string: a plain python loop, the independent reference for the label functions."""
    s = _check_strings(s, len(dfa.delta[0]))
    out = []
    for row in s.tolist():
        q = dfa.start
        for c in row:
            q = dfa.delta[q][c]
        out.append(dfa.output[q])
    return torch.tensor(out, dtype=torch.long)


def counter_dfa(modulus: int, k: int = 2, symbol: int = 1) -> DFA:
    """The ``modulus``-state automaton that counts ``symbol`` mod ``modulus`` (parity for ``modulus = 2``)."""
    delta = tuple(tuple((q + (c == symbol)) % modulus for c in range(k)) for q in range(modulus))
    return DFA(delta=delta, output=tuple(range(modulus)))


def contains_dfa(pattern: Sequence[int], k: int) -> DFA:
    """The Knuth–Morris–Pratt automaton of ``pattern`` over ``k`` symbols; state ``len(pattern)`` absorbs."""
    p = list(pattern)
    n = len(p)
    delta = []
    for q in range(n + 1):
        row = []
        for c in range(k):
            if q == n:
                row.append(n)
                continue
            # longest suffix of p[:q] + [c] that is a prefix of p
            w = p[:q] + [c]
            j = min(len(w), n)
            while j > 0 and w[len(w) - j :] != p[:j]:
                j -= 1
            row.append(j)
        delta.append(tuple(row))
    return DFA(delta=tuple(delta), output=tuple([0] * n + [1]))


# ------------------------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """A sequence classification task: alphabet (its letters, for display), number of classes, labels."""

    name: str
    alphabet: str
    n_classes: int
    labels: Callable[[torch.Tensor], torch.Tensor]
    additive: bool
    description: str

    @property
    def k(self) -> int:
        return len(self.alphabet)


TASKS: dict[str, Task] = {
    "parity": Task("parity", "01", 2, parity_labels, False, "number of 1s mod 2"),
    "mod3": Task("mod3", "01", 3, mod_count_labels, False, "number of 1s mod 3 (three classes)"),
    "substring": Task("substring", "abc", 2, contains_labels, False, "contains the substring 'ab'"),
    "majority": Task("majority", "01", 2, majority_labels, True, "more 1s than 0s (additive control)"),
}


def get_task(name: str) -> Task:
    """Look up a task of :data:`TASKS` by name; the error lists the known names."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def class_balance(task: str | Task, length: int) -> torch.Tensor:
    """Exact class frequencies under the uniform distribution on strings of ``length`` (by enumeration)."""
    t = get_task(task) if isinstance(task, str) else task
    y = t.labels(all_strings(length, t.k))
    return torch.bincount(y, minlength=t.n_classes).double() / y.numel()


def majority_baseline(task: str | Task, length: int) -> float:
    """Accuracy of always predicting the most frequent class (uniform strings of ``length``)."""
    return float(class_balance(task, length).max())


def log2_strings(length: int, k: int) -> float:
    """``log2`` of the number of strings, ``L log2 k`` (to say how large the input space is)."""
    return length * math.log2(k)
