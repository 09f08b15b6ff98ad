"""Masked-word prediction on data from a PCFG: exact inside-outside, brute force, sampling, probes and parsing.

Defined for the chapter *Do transformers parse while predicting the masked word?*
(``chapters/transfer/parsing-pcfg.md``), after Zhao, Panigrahi, Ge & Arora 2023, "Do Transformers Parse while
Predicting the Masked Word?" (EMNLP 2023, arXiv 2303.08117). Neither the paper's official code nor its full text is
in the book's offline stores; what follows is written from the paper's definitions (its Sec. 2: inside
probabilities ``alpha``, outside probabilities ``beta``, span marginals ``mu = alpha beta / Pr[x]``; its Sec. 3.3:
inside-outside gives the Bayes-optimal masked-word predictor; its Sec. 4: linear probes from the embeddings to the
span marginals, decoded into trees) and from the standard algorithms they cite.

* :class:`Grammar`: a PCFG in Chomsky normal form with exact rational rule probabilities; :func:`toy_english`
  (agreement across prepositional phrases, PP-attachment ambiguity, pronouns that make a nonterminal both branch
  and emit) and :func:`random_grammar` (many preterminals sharing one ambiguous vocabulary).
* :func:`inside_outside`: the textbook algorithm in pure python over any number type (``fractions.Fraction`` for
  exact rationals, ``float``, sympy expressions), with masked positions; :func:`string_trees` and
  :func:`derivations` enumerate derivation trees by brute force, to check it.
* :func:`torch_inside`: the batched inside pass in torch; its gradient with respect to span scores is the
  outside pass (Eisner 2016, "Inside-outside and forward-backward algorithms are just backprop"), giving the span
  marginals and the masked-word conditionals (:func:`torch_marginals`).
* :func:`sample_sentences`: exact sampling of trees conditioned on the sentence length.
* :func:`ngram_baselines`, :func:`ridge_probe`, :func:`span_features`, :func:`cky_decode`, :func:`span_f1`: the
  experiment's baselines, probe and parser.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from dltheory.numerics.validate import check_int, check_nonnegative, check_positive

MASK = None  # a masked position in a python token list


# ---------------------------------------------------------------------------------------------------------------
# grammars
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grammar:
    """A PCFG in Chomsky normal form: nonterminal 0 is the start symbol; ``binary`` maps ``(A, B, C)`` (indices)
    to ``P(A -> B C)`` and ``lexical`` maps ``(A, w)`` to ``P(A -> word w)``, exact ``Fraction`` values whose sum
    over the right-hand sides of each ``A`` is 1 (checked on construction; ``ValueError`` otherwise).

    Chapter: ``chapters/transfer/parsing-pcfg.md`` (the grammar); Zhao et al. 2023, Sec. 2 (PCFG definition). A
    nonterminal may both branch and emit; then the inside probability of a masked leaf is
    ``sum_w P(A -> w)``, which is below 1.
    """

    nonterminals: tuple
    words: tuple
    binary: dict
    lexical: dict

    def __post_init__(self) -> None:
        n, v = len(self.nonterminals), len(self.words)
        if n < 1 or v < 1:
            raise ValueError("a grammar needs at least one nonterminal and one word")
        total = [Fraction(0)] * n
        for rules, arity in ((self.binary, 3), (self.lexical, 2)):
            for key, p in rules.items():
                if len(key) != arity:
                    raise ValueError(f"rule key {key!r} must have {arity} indices")
                limits = (n, n, n) if arity == 3 else (n, v)
                if any(not 0 <= k < m for k, m in zip(key, limits)):
                    raise ValueError(f"rule {key!r} refers to a nonterminal or word that does not exist")
                if not isinstance(p, Fraction) or p < 0:
                    raise ValueError(f"rule {key!r}: probabilities must be non-negative Fractions, got {p!r}")
                total[key[0]] += p
        bad = [self.nonterminals[a] for a in range(n) if total[a] != 1]
        if bad:
            raise ValueError(f"the rule probabilities of {bad} do not sum to 1: fix them so each left-hand side sums "
                             f"to exactly 1")

    @property
    def n_nt(self) -> int:
        return len(self.nonterminals)

    @property
    def n_words(self) -> int:
        return len(self.words)

    def tensors(self, dtype: torch.dtype = torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(R, E)``: ``R[A, B, C] = P(A -> B C)`` of shape ``(N, N, N)`` and ``E[A, w] = P(A -> w)`` of shape
        ``(N, V)``, for :func:`torch_inside`."""
        R = torch.zeros(self.n_nt, self.n_nt, self.n_nt, dtype=dtype)
        E = torch.zeros(self.n_nt, self.n_words, dtype=dtype)
        for (a, b, c), p in self.binary.items():
            R[a, b, c] = float(p)
        for (a, w), p in self.lexical.items():
            E[a, w] = float(p)
        return R.to(device), E.to(device)

    def encode(self, sentence: str) -> list:
        """Word indices of a space-separated sentence; ``_`` is a masked position (:data:`MASK`)."""
        idx = {w: i for i, w in enumerate(self.words)}
        out = []
        for tok in sentence.split():
            if tok == "_":
                out.append(MASK)
            elif tok in idx:
                out.append(idx[tok])
            else:
                raise ValueError(f"unknown word {tok!r}; the vocabulary is {list(self.words)}")
        return out


def _grammar(nts: Sequence[str], words: Sequence[str], rules: dict) -> Grammar:
    nt = {a: i for i, a in enumerate(nts)}
    wd = {w: i for i, w in enumerate(words)}
    binary, lexical = {}, {}
    for lhs, rhss in rules.items():
        for rhs, p in rhss.items():
            parts = rhs.split()
            if len(parts) == 2:
                binary[(nt[lhs], nt[parts[0]], nt[parts[1]])] = Fraction(p)
            else:
                lexical[(nt[lhs], wd[parts[0]])] = Fraction(p)
    return Grammar(tuple(nts), tuple(words), binary, lexical)


def toy_english(attach_np: Fraction | str = "1/5", attach_vp: Fraction | str = "1/5",
                pronoun: Fraction | str = "1/5") -> Grammar:
    """A small toy-English PCFG in CNF with number agreement, PP attachment ambiguity and pronouns.

    ``S -> NPs VPs | NPp VPp``; ``NPx -> Det Nx | NPx PP | pronoun`` (so NPs and NPp both branch and emit);
    ``VPx -> Vx NP | VPx PP``; ``PP -> P NP``. The verb agrees with the head noun of the subject, however many
    PPs separate them; a PP after an object attaches to the object (``NP -> NP PP``, probability ``attach_np``)
    or to the verb phrase (``VP -> VP PP``, probability ``attach_vp``). ``pronoun`` is the probability of
    ``NPx -> she / they``.

    Chapter: ``chapters/transfer/parsing-pcfg.md`` (the toy grammar); stands in for the paper's PCFG learned from
    the Penn Treebank (Zhao et al. 2023, Sec. 4), which is not available offline.
    """
    a_np, a_vp, pr = Fraction(attach_np), Fraction(attach_vp), Fraction(pronoun)
    for name, v in (("attach_np", a_np), ("attach_vp", a_vp), ("pronoun", pr)):
        if not 0 < v < 1:
            raise ValueError(f"{name} must be a probability strictly between 0 and 1, got {v}")
    if a_np + pr >= 1:
        raise ValueError(f"attach_np + pronoun must be < 1 (NP -> Det N needs the rest), got {a_np + pr}")
    nts = ["S", "NPs", "NPp", "VPs", "VPp", "PP", "Det", "Ns", "Np", "Vs", "Vp", "P"]
    words = ["the", "dog", "cat", "dogs", "cats", "sees", "likes", "see", "like", "with", "near", "she", "they"]
    half = Fraction(1, 2)
    rules = {
        "S": {"NPs VPs": half, "NPp VPp": half},
        "NPs": {"Det Ns": 1 - a_np - pr, "NPs PP": a_np, "she": pr},
        "NPp": {"Det Np": 1 - a_np - pr, "NPp PP": a_np, "they": pr},
        "VPs": {"Vs NPs": (1 - a_vp) / 2, "Vs NPp": (1 - a_vp) / 2, "VPs PP": a_vp},
        "VPp": {"Vp NPs": (1 - a_vp) / 2, "Vp NPp": (1 - a_vp) / 2, "VPp PP": a_vp},
        "PP": {"P NPs": half, "P NPp": half},
        "Det": {"the": 1},
        "Ns": {"dog": half, "cat": half},
        "Np": {"dogs": half, "cats": half},
        "Vs": {"sees": half, "likes": half},
        "Vp": {"see": half, "like": half},
        "P": {"with": half, "near": half},
    }
    return _grammar(nts, words, rules)


def random_grammar(n_nt: int, n_pre: int, n_words: int, words_per_pre: int, seed: int,
                   lexical_branch: float = 0.0) -> Grammar:
    """A random CNF PCFG with heavy lexical ambiguity: ``n_nt`` branching nonterminals (0 is the start), ``n_pre``
    preterminals, each emitting ``words_per_pre`` words drawn from a shared vocabulary of ``n_words`` (so a word
    has several parts of speech). Rule probabilities are random rationals (integer weights 1..9, normalized). A
    fraction ``lexical_branch`` of each branching nonterminal's mass also emits words directly.

    Chapter: ``chapters/transfer/parsing-pcfg.md`` (the ``full`` preset: a grammar where constituents are not
    fixed by the words at the span ends); after the synthetic-PCFG setting of Zhao et al. 2023, Sec. 4.
    """
    n_nt, n_pre = check_int("n_nt", n_nt), check_int("n_pre", n_pre)
    n_words = check_int("n_words", n_words)
    words_per_pre = check_int("words_per_pre", words_per_pre)
    if words_per_pre > n_words:
        raise ValueError(f"words_per_pre ({words_per_pre}) must be at most n_words ({n_words})")
    seed = check_int("seed", seed, minimum=0)
    lexical_branch = check_nonnegative("lexical_branch", lexical_branch)
    if lexical_branch >= 1:
        raise ValueError(f"lexical_branch must be < 1, got {lexical_branch}")
    rng = random.Random(seed)
    n = n_nt + n_pre
    nts = [f"N{a}" for a in range(n_nt)] + [f"T{a}" for a in range(n_pre)]
    words = [f"w{i}" for i in range(n_words)]
    binary, lexical = {}, {}
    lb = Fraction(lexical_branch).limit_denominator(1000)
    for a in range(n_nt):
        pairs = [(b, c) for b in range(1, n) for c in range(1, n)]
        rhs = rng.sample(pairs, k=min(6, len(pairs)))
        ws = [rng.randint(1, 9) for _ in rhs]
        for (b, c), wt in zip(rhs, ws):
            binary[(a, b, c)] = (1 - lb) * Fraction(wt, sum(ws))
        if lb > 0:
            for w in rng.sample(range(n_words), words_per_pre):
                lexical[(a, w)] = lexical.get((a, w), Fraction(0)) + lb / words_per_pre
    for t in range(n_pre):
        chosen = rng.sample(range(n_words), words_per_pre)
        ws = [rng.randint(1, 9) for _ in chosen]
        for w, wt in zip(chosen, ws):
            lexical[(n_nt + t, w)] = Fraction(wt, sum(ws))
    return Grammar(tuple(nts), tuple(words), binary, lexical)


# ---------------------------------------------------------------------------------------------------------------
# exact inside-outside over any number type
# ---------------------------------------------------------------------------------------------------------------


def _check_tokens(g: Grammar, tokens) -> list:
    tokens = list(tokens)
    if not tokens:
        raise ValueError("tokens must be a non-empty sequence of word indices (None for a masked position)")
    for t in tokens:
        if t is not MASK and (isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < g.n_words):
            raise ValueError(f"token {t!r} is not a word index in [0, {g.n_words}) or None (masked)")
    return tokens


def inside_outside(g: Grammar, tokens: Sequence, cast: Callable = lambda p: p, inside_mask_one: bool = False,
                   override: dict | None = None):
    """Inside and outside probabilities of one sentence, in whatever number type ``cast`` maps the rule
    probabilities to (identity: exact ``Fraction``; ``float``; ``sympy.Rational`` or symbols).

    ``tokens`` are word indices, ``None`` for a masked position. The inside of a leaf is ``P(A -> x_i)``; at a
    masked leaf it is ``sum_w P(A -> w)`` (``inside_mask_one=True`` uses 1 instead, which is only right when every
    nonterminal that emits emits nothing else). Returns a dict with ``Z`` (the probability of the unmasked words,
    summed over the masked ones), ``inside`` and ``outside`` (dicts ``(A, i, j) -> value``, 0-based inclusive
    spans, zero entries omitted), ``marginal`` (``mu(A, i, j) / Z``: the probability that ``A`` spans ``i..j``
    given the words) and ``mlm`` (for each masked position ``i``, the list ``P(x_i = w | unmasked words)``, or
    None where ``Z = 0``). ``override`` maps rule keys (``(A, B, C)`` or ``(A, w)``) to values used instead of
    ``cast(P(rule))``, e.g. sympy symbols for a closed-form derivation.

    Chapter: ``chapters/transfer/parsing-pcfg.md`` (derivation); Zhao et al. 2023, Sec. 2 (inside, outside and
    marginal probabilities) and Sec. 3.3 (the masked-word predictor ``sum_A beta(A, i, i) P(A -> w) / Z``);
    the algorithm of Baker 1979 / Lari & Young 1990.
    """
    tokens = _check_tokens(g, tokens)
    n, L = g.n_nt, len(tokens)
    override = override or {}
    binary = [(a, b, c, override.get((a, b, c), cast(p))) for (a, b, c), p in g.binary.items() if p != 0]
    lex = defaultdict(list)
    for (a, w), p in g.lexical.items():
        if p != 0:
            lex[a].append((w, override.get((a, w), cast(p))))
    inside: dict = {}
    for i, t in enumerate(tokens):
        for a in range(n):
            if inside_mask_one and t is MASK:
                val = cast(Fraction(1)) if lex[a] else None
            else:
                terms = [p for w, p in lex[a] if t is MASK or w == t]
                val = sum(terms[1:], terms[0]) if terms else None
            if val is not None:
                inside[(a, i, i)] = val
    for width in range(2, L + 1):
        for i in range(L - width + 1):
            j = i + width - 1
            acc: dict = {}
            for a, b, c, p in binary:
                for k in range(i, j):
                    left, right = inside.get((b, i, k)), inside.get((c, k + 1, j))
                    if left is not None and right is not None:
                        term = p * left * right
                        acc[a] = term if a not in acc else acc[a] + term
            for a, v in acc.items():
                inside[(a, i, j)] = v
    zero = cast(Fraction(0))
    Z = inside.get((0, 0, L - 1), zero)
    outside: dict = {(0, 0, L - 1): cast(Fraction(1))}
    for width in range(L, 1, -1):
        for i in range(L - width + 1):
            j = i + width - 1
            for a, b, c, p in binary:
                out = outside.get((a, i, j))
                if out is None:
                    continue
                for k in range(i, j):
                    left, right = inside.get((b, i, k)), inside.get((c, k + 1, j))
                    if left is None or right is None:
                        continue
                    for key, term in (((b, i, k), out * p * right), ((c, k + 1, j), out * p * left)):
                        outside[key] = term if key not in outside else outside[key] + term
    nonzero = Z != 0
    marginal = {key: inside[key] * outside[key] / Z for key in inside if key in outside} if nonzero else {}
    mlm = {}
    for i, t in enumerate(tokens):
        if t is MASK:
            if not nonzero:
                mlm[i] = None
                continue
            probs = [zero] * g.n_words
            for a in range(n):
                out = outside.get((a, i, i))
                if out is not None:
                    for w, p in lex[a]:
                        probs[w] = probs[w] + out * p
            mlm[i] = [v / Z for v in probs]
    return {"Z": Z, "inside": inside, "outside": outside, "marginal": marginal, "mlm": mlm}


# ---------------------------------------------------------------------------------------------------------------
# brute force: explicit derivation trees
# ---------------------------------------------------------------------------------------------------------------


def string_trees(g: Grammar, tokens: Sequence) -> list[tuple[Fraction, frozenset]]:
    """Every derivation tree of ``tokens`` (``None`` = masked: any word), listed explicitly as ``(probability,
    labeled spans)`` where the spans are the ``(A, i, j)`` of every node (leaves included). Exponential in the
    length: the brute force that :func:`inside_outside` is checked against.

    Chapter: ``chapters/transfer/parsing-pcfg.md`` (derivation, brute force).
    """
    tokens = _check_tokens(g, tokens)
    L = len(tokens)
    memo: dict = {}

    def trees(a: int, i: int, j: int) -> list:
        key = (a, i, j)
        if key in memo:
            return memo[key]
        out = []
        if i == j:
            for (aa, w), p in g.lexical.items():
                if aa == a and p != 0 and (tokens[i] is MASK or tokens[i] == w):
                    out.append((p, frozenset([(a, i, i, w)])))
        else:
            for (aa, b, c), p in g.binary.items():
                if aa != a or p == 0:
                    continue
                for k in range(i, j):
                    for (pl, sl), (pr, sr) in itertools.product(trees(b, i, k), trees(c, k + 1, j)):
                        out.append((p * pl * pr, sl | sr | {(a, i, j, None)}))
        memo[key] = out
        return out

    return [(p, frozenset((a, i, j) for a, i, j, _ in s)) for p, s in trees(0, 0, L - 1)]


def derivations(g: Grammar, max_len: int) -> dict:
    """All derivation trees of the start symbol with at most ``max_len`` leaves, grouped by their yield:
    ``{yield (tuple of word indices): [(probability, labeled spans), ...]}``. The keys are exactly the strings of
    length ``<= max_len`` with nonzero probability.

    Chapter: ``chapters/transfer/parsing-pcfg.md`` (derivation, brute force over every string up to a length).
    """
    max_len = check_int("max_len", max_len)
    # table[a][l] = list of (prob, yield, spans with offsets relative to the subtree's first word)
    table = [[[] for _ in range(max_len + 1)] for _ in range(g.n_nt)]
    for (a, w), p in g.lexical.items():
        if p != 0:
            table[a][1].append((p, (w,), frozenset([(a, 0, 0)])))
    for length in range(2, max_len + 1):
        for (a, b, c), p in g.binary.items():
            if p == 0:
                continue
            for k in range(1, length):
                for (pl, yl, sl), (pr, yr, sr) in itertools.product(table[b][k], table[c][length - k]):
                    shifted = frozenset((x, i + k, j + k) for x, i, j in sr)
                    table[a][length].append((p * pl * pr, yl + yr, sl | shifted | {(a, 0, length - 1)}))
    out: dict = defaultdict(list)
    for length in range(1, max_len + 1):
        for p, y, s in table[0][length]:
            out[y].append((p, s))
    return dict(out)


def brute_force_marginals(trees: list) -> tuple[Fraction, dict]:
    """``(Z, {(A, i, j): P(A spans i..j | words)})`` from an explicit list of trees (:func:`string_trees`).
    Chapter: ``chapters/transfer/parsing-pcfg.md`` (brute force); Zhao et al. 2023, Sec. 2 (span marginals)."""
    Z = sum((p for p, _ in trees), Fraction(0))
    marg: dict = defaultdict(Fraction)
    for p, spans in trees:
        for s in spans:
            marg[s] += p
    return Z, ({k: v / Z for k, v in marg.items()} if Z else {})


# ---------------------------------------------------------------------------------------------------------------
# batched inside in torch; outside by autograd
# ---------------------------------------------------------------------------------------------------------------


def torch_inside(R: torch.Tensor, E: torch.Tensor, tokens: torch.Tensor, mask_id: int,
                 span_scores: torch.Tensor | None = None) -> torch.Tensor:
    """``log Z`` of each sentence, ``(B,)``, by the inside algorithm on ``tokens (B, L)`` (word indices; ``mask_id``
    marks masked positions, whose leaf inside is ``sum_w E[A, w]``). ``span_scores (B, L, L, N)``, if given, multiply
    the inside of span ``(i, j)`` with label ``A`` by ``exp(span_scores[b, i, j, A])``; at zero scores the gradient
    of ``log Z`` with respect to them is the span marginal ``mu(A, i, j) / Z`` (Eisner 2016).

    Chapter: ``chapters/transfer/parsing-pcfg.md``; Zhao et al. 2023, Sec. 2 (inside probabilities); computed in
    probability space (use float64; sentences of a few dozen words stay far from underflow).
    """
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have shape (B, L), got {tuple(tokens.shape)}")
    B, L = tokens.shape
    leaf_all = E.sum(1)                                            # (N,)
    safe = tokens.clamp(max=E.shape[1] - 1)
    leaf = E.t()[safe]                                             # (B, L, N)
    leaf = torch.where((tokens == mask_id).unsqueeze(-1), leaf_all.expand_as(leaf), leaf)
    if span_scores is not None:
        if span_scores.shape != (B, L, L, E.shape[0]):
            raise ValueError(f"span_scores must have shape {(B, L, L, E.shape[0])}, got {tuple(span_scores.shape)}")
        idx = torch.arange(L, device=tokens.device)
        leaf = leaf * span_scores[:, idx, idx].exp()
    chart = {1: leaf}                                              # width -> (B, L - width + 1, N)
    for w in range(2, L + 1):
        n_start = L - w + 1
        acc = 0
        for k in range(1, w):
            left = chart[k][:, :n_start]
            right = chart[w - k][:, k:k + n_start]
            acc = acc + torch.einsum("bsn,bsm,anm->bsa", left, right, R)
        if span_scores is not None:
            starts = torch.arange(n_start, device=tokens.device)
            acc = acc * span_scores[:, starts, starts + w - 1].exp()
        chart[w] = acc
    return chart[L][:, 0, 0].log()


def torch_marginals(R: torch.Tensor, E: torch.Tensor, tokens: torch.Tensor, mask_id: int) -> dict:
    """Span marginals and masked-word conditionals of a batch, by autograd through :func:`torch_inside`
    (outside = backprop, Eisner 2016). Returns ``logZ (B,)``, ``marginal (B, L, L, N)`` (``mu(A, i, j) / Z``),
    ``span (B, L, L)`` (the unlabeled constituent probability ``sum_A mu(A, i, j) / Z``) and ``mlm (B, L, V)``
    (``P(x_i = w | unmasked words)``; meaningful at masked positions).

    Chapter: ``chapters/transfer/parsing-pcfg.md`` (float64 and autograd checks; the Bayes-optimal predictor and
    the probe's targets); Zhao et al. 2023, Sec. 2-3.
    """
    B, L = tokens.shape
    scores = torch.zeros(B, L, L, E.shape[0], dtype=E.dtype, device=E.device, requires_grad=True)
    logZ = torch_inside(R, E, tokens, mask_id, scores)
    marg, = torch.autograd.grad(logZ.sum(), scores)
    idx = torch.arange(L, device=tokens.device)
    leaf_marg = marg[:, idx, idx]                                  # (B, L, N) = beta alpha / Z at the leaves
    leaf_all = E.sum(1)
    safe = tokens.clamp(max=E.shape[1] - 1)
    leaf_in = torch.where((tokens == mask_id).unsqueeze(-1), leaf_all.expand(B, L, -1), E.t()[safe])
    ratio = torch.where(leaf_in > 0, leaf_marg / leaf_in.clamp(min=1e-300), torch.zeros_like(leaf_marg))
    mlm = ratio @ E                                                # sum_A beta(A,i,i) E[A,w] / Z
    return {"logZ": logZ.detach(), "marginal": marg, "span": marg.sum(-1), "mlm": mlm}


# ---------------------------------------------------------------------------------------------------------------
# sampling at a fixed length
# ---------------------------------------------------------------------------------------------------------------


def sample_sentences(g: Grammar, length: int, n: int, seed: int) -> tuple[torch.Tensor, list]:
    """``n`` sentences of exactly ``length`` words drawn from the PCFG conditioned on the length, with their trees:
    top-down, each node picks its rule and split point with probability proportional to ``P(rule)`` times the
    probability that the children yield the required lengths (the inside table of an all-masked sentence). Returns
    ``tokens (n, length)`` and, per sentence, its labeled spans ``{(A, i, j)}`` (leaves included).

    Chapter: ``chapters/transfer/parsing-pcfg.md`` (the experiment's data); the paper samples sentences from its
    PCFG (Zhao et al. 2023, Sec. 4).
    """
    length, n = check_int("length", length), check_int("n", n)
    seed = check_int("seed", seed, minimum=0)
    q = [[0.0] * (length + 1) for _ in range(g.n_nt)]              # q[A][w] = P(A yields w words)
    lexw = defaultdict(list)
    for (a, w), p in g.lexical.items():
        if p:
            lexw[a].append((w, float(p)))
            q[a][1] += float(p)
    rules = [(a, b, c, float(p)) for (a, b, c), p in g.binary.items() if p]
    for w in range(2, length + 1):
        for a, b, c, p in rules:
            q[a][w] += p * sum(q[b][k] * q[c][w - k] for k in range(1, w))
    if q[0][length] == 0:
        raise ValueError(f"the grammar generates no sentence of length {length}; choose another length")
    options: dict = {}                                             # (A, w) -> (cumulative weights, choices)
    for a in range(g.n_nt):
        for w in range(1, length + 1):
            ch = [(None, x, None) for x, p in lexw[a]] if w == 1 else \
                [(b, c, k) for aa, b, c, p in rules if aa == a for k in range(1, w)]
            wt = [p for x, p in lexw[a]] if w == 1 else \
                [p * q[b][k] * q[c][w - k] for aa, b, c, p in rules if aa == a for k in range(1, w)]
            cum = list(itertools.accumulate(wt))
            options[(a, w)] = (cum, ch)
    rng = random.Random(seed)
    toks, trees = [], []
    for _ in range(n):
        words, spans, stack = [0] * length, set(), [(0, 0, length)]
        while stack:
            a, i, w = stack.pop()
            spans.add((a, i, i + w - 1))
            cum, ch = options[(a, w)]
            b, c, k = ch[bisect.bisect_right(cum, rng.random() * cum[-1])]
            if w == 1:
                words[i] = c
            else:
                stack.append((b, i, k))
                stack.append((c, i + k, w - k))
        toks.append(words)
        trees.append(frozenset(spans))
    return torch.tensor(toks, dtype=torch.long), trees


# ---------------------------------------------------------------------------------------------------------------
# baselines, probe, parser
# ---------------------------------------------------------------------------------------------------------------


def ngram_baselines(train: torch.Tensor, test: torch.Tensor, positions: torch.Tensor, n_words: int,
                    smoothing: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two masked-word predictors estimated by counting on ``train (N, L)``: the unigram and the *neighbour*
    model ``P(w | left word, right word)`` (sentence boundaries are their own symbol; add-``smoothing`` counts
    interpolated with the unigram). Returns both predictions ``(M, V)`` at ``test[m, positions[m]]``.

    Chapter: ``chapters/transfer/parsing-pcfg.md`` (the baselines); the neighbour model sees what a word-window
    predictor sees, without any structure.
    """
    smoothing = check_positive("smoothing", smoothing)
    V = n_words
    uni = torch.bincount(train.reshape(-1), minlength=V).double() + 1.0
    uni = uni / uni.sum()
    pad = torch.full((train.shape[0], 1), V, dtype=torch.long)
    tr = torch.cat([pad, train, pad], 1)
    left, mid, right = tr[:, :-2].reshape(-1), tr[:, 1:-1].reshape(-1), tr[:, 2:].reshape(-1)
    ctx = left * (V + 1) + right
    counts = torch.zeros((V + 1) ** 2, V, dtype=torch.float64)
    counts.index_put_((ctx, mid), torch.ones_like(mid, dtype=torch.float64), accumulate=True)
    M = test.shape[0]
    te = torch.cat([torch.full((M, 1), V, dtype=torch.long), test, torch.full((M, 1), V, dtype=torch.long)], 1)
    ar = torch.arange(M)
    c = counts[te[ar, positions] * (V + 1) + te[ar, positions + 2]]
    neigh = (c + smoothing * V * uni) / (c.sum(1, keepdim=True) + smoothing * V)
    return uni.expand(M, V).clone(), neigh


def span_index(L: int, min_width: int = 2, max_width: int | None = None) -> torch.Tensor:
    """The spans ``(i, j)`` (0-based inclusive) of widths ``min_width..max_width`` (default ``L - 1``: the trivial
    whole-sentence span is left out), as an ``(S, 2)`` tensor. Chapter: ``chapters/transfer/parsing-pcfg.md``
    (the spans the probe predicts)."""
    L = check_int("L", L)
    max_width = L - 1 if max_width is None else max_width
    return torch.tensor([(i, i + w - 1) for w in range(min_width, max_width + 1) for i in range(L - w + 1)],
                        dtype=torch.long).reshape(-1, 2)


def span_features(hidden: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """Probe features of every span from token representations ``hidden (B, L, d)``: the endpoint vectors and their
    elementwise product, ``[h_i, h_j, h_i * h_j]``, shape ``(B, S, 3 d)``.

    Chapter: ``chapters/transfer/parsing-pcfg.md`` (the probe); the paper probes a span from the embeddings at its
    endpoints (Zhao et al. 2023, Sec. 4).
    """
    hi, hj = hidden[:, spans[:, 0]], hidden[:, spans[:, 1]]
    return torch.cat([hi, hj, hi * hj], -1)


def onehot_features(tokens: torch.Tensor, spans: torch.Tensor, n_words: int, lexical: bool) -> torch.Tensor:
    """Control features ``(B, S, F)``: the one-hot of the span's position ``(i, j)`` and, with ``lexical=True``,
    one-hots of the words at ``i - 1, i, j, j + 1`` (boundary symbol outside the sentence) and of the pair
    ``(x_i, x_j)``. Chapter: ``chapters/transfer/parsing-pcfg.md`` (the probe's controls)."""
    B, L = tokens.shape
    S = spans.shape[0]
    pos = torch.eye(S, dtype=torch.float64).expand(B, S, S)
    if not lexical:
        return pos.clone()
    V1 = n_words + 1
    pad = torch.full((B, 1), n_words, dtype=torch.long)
    t = torch.cat([pad, tokens, pad], 1)
    i, j = spans[:, 0] + 1, spans[:, 1] + 1
    parts = [pos] + [torch.nn.functional.one_hot(t[:, k], V1).double() for k in (i - 1, i, j, j + 1)]
    parts.append(torch.nn.functional.one_hot(t[:, i] * V1 + t[:, j], V1 * V1).double())
    return torch.cat(parts, -1)


def ridge_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, ridge: float = 1e-3):
    """A linear probe fitted by ridge regression: standardize the features on the training rows, add a bias, solve
    ``(X^T X + ridge n I) w = X^T y``; return the predictions on ``x_test``.

    Chapter: ``chapters/transfer/parsing-pcfg.md`` (the probe); a linear probe, as in Zhao et al. 2023, Sec. 4.
    """
    ridge = check_positive("ridge", ridge)
    x_train, x_test = x_train.double(), x_test.double()
    mu, sd = x_train.mean(0), x_train.std(0).clamp(min=1e-8)
    xtr = torch.cat([(x_train - mu) / sd, torch.ones(len(x_train), 1, dtype=torch.float64)], 1)
    xte = torch.cat([(x_test - mu) / sd, torch.ones(len(x_test), 1, dtype=torch.float64)], 1)
    A = xtr.T @ xtr + ridge * len(xtr) * torch.eye(xtr.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(A, xtr.T @ y_train.double())
    return xte @ w


def r_squared(pred: torch.Tensor, target: torch.Tensor) -> float:
    """The coefficient of determination ``1 - SS_res / SS_tot`` of ``pred`` against ``target``.
    Chapter: ``chapters/transfer/parsing-pcfg.md`` (the probe's score)."""
    target = target.double()
    return float(1 - ((pred.double() - target) ** 2).sum() / ((target - target.mean()) ** 2).sum())


def cky_decode(scores: torch.Tensor) -> list[frozenset]:
    """For each sentence, the binary bracketing maximizing the sum of ``scores[b, i, j]`` over its spans (widths
    ``>= 2``; the leaves and the whole sentence are in every tree), by CKY. With the exact span marginals as scores
    this is the minimum-Bayes-risk (labeled-recall) parser of Goodman 1996, used by Zhao et al. 2023, Sec. 2, 4.
    Returns sets of spans ``(i, j)`` of widths ``2..L-1``.

    Chapter: ``chapters/transfer/parsing-pcfg.md`` (decoding the probe into trees).
    """
    B, L = scores.shape[0], scores.shape[1]
    sc = scores.double().tolist()
    out = []
    for b in range(B):
        s = sc[b]
        best = [[0.0] * L for _ in range(L)]
        split = [[0] * L for _ in range(L)]
        for w in range(2, L + 1):
            for i in range(L - w + 1):
                j = i + w - 1
                k_best, v_best = i, -math.inf
                for k in range(i, j):
                    v = best[i][k] + best[k + 1][j]
                    if v > v_best:
                        k_best, v_best = k, v
                best[i][j] = v_best + (s[i][j] if w < L else 0.0)
                split[i][j] = k_best
        spans, stack = set(), [(0, L - 1)]
        while stack:
            i, j = stack.pop()
            if j - i >= 1:
                if 0 < j - i < L - 1:
                    spans.add((i, j))
                k = split[i][j]
                stack.extend([(i, k), (k + 1, j)])
        out.append(frozenset(spans))
    return out


def unlabeled_spans(tree: frozenset, L: int) -> frozenset:
    """The unlabeled spans ``(i, j)`` of widths ``2..L-1`` of a labeled tree ``{(A, i, j)}``.
    Chapter: ``chapters/transfer/parsing-pcfg.md`` (the gold trees of the F1 score)."""
    return frozenset((i, j) for _, i, j in tree if 0 < j - i < L - 1)


def span_f1(pred: Sequence[frozenset], gold: Sequence[frozenset]) -> float:
    """Corpus-level unlabeled F1 of predicted against gold span sets (nontrivial spans only).
    Chapter: ``chapters/transfer/parsing-pcfg.md``; the parsing metric of Zhao et al. 2023, Sec. 4."""
    tp = sum(len(p & g) for p, g in zip(pred, gold))
    n_pred, n_gold = sum(len(p) for p in pred), sum(len(g) for g in gold)
    if n_pred == 0 or n_gold == 0:
        return 1.0 if n_pred == n_gold else 0.0
    prec, rec = tp / n_pred, tp / n_gold
    return 0.0 if tp == 0 else 2 * prec * rec / (prec + rec)
