"""PCFGs, exact inside-outside, brute force, sampling, probe and parser (dltheory.transfer.pcfg).
Chapter: chapters/transfer/parsing-pcfg.md."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.transfer import pcfg as P

TOY = P.toy_english()
R64, E64 = TOY.tensors(torch.float64)
MASK_ID = TOY.n_words


# ---------------------------------------------------------------------------------------------------------------
# grammars
# ---------------------------------------------------------------------------------------------------------------


def test_toy_grammar_is_normalized_and_has_branching_emitters():
    nt = {a: i for i, a in enumerate(TOY.nonterminals)}
    emit = sum((p for (a, _), p in TOY.lexical.items() if a == nt["NPs"]), Fraction(0))
    assert emit == Fraction(1, 5)
    assert any(a == nt["NPs"] for a, _, _ in TOY.binary)


def test_grammar_rejects_unnormalized_rules():
    with pytest.raises(ValueError, match="sum"):
        P.Grammar(("S",), ("a",), {(0, 0, 0): Fraction(1, 2)}, {(0, 0): Fraction(1, 3)})
    with pytest.raises(ValueError, match="Fractions"):
        P.Grammar(("S",), ("a",), {}, {(0, 0): 1.0})
    with pytest.raises(ValueError, match="does not exist"):
        P.Grammar(("S",), ("a",), {}, {(0, 3): Fraction(1)})


@pytest.mark.parametrize("kwargs, match", [
    (dict(attach_np="0"), "attach_np"), (dict(attach_vp="1"), "attach_vp"),
    (dict(attach_np="1/2", pronoun="1/2"), "attach_np \\+ pronoun"),
])
def test_toy_english_rejects_bad_probabilities(kwargs, match):
    with pytest.raises(ValueError, match=match):
        P.toy_english(**kwargs)


def test_random_grammar_is_valid_and_deterministic():
    g1 = P.random_grammar(4, 5, 12, 4, seed=3, lexical_branch=0.1)
    g2 = P.random_grammar(4, 5, 12, 4, seed=3, lexical_branch=0.1)
    assert g1 == g2 and g1.n_nt == 9 and g1.n_words == 12
    with pytest.raises(ValueError, match="words_per_pre"):
        P.random_grammar(4, 5, 3, 4, seed=0)
    with pytest.raises(ValueError, match="n_nt"):
        P.random_grammar(0, 5, 12, 4, seed=0)


def test_encode_rejects_unknown_words():
    assert TOY.encode("she sees _") == [11, 5, None]
    with pytest.raises(ValueError, match="unknown word"):
        TOY.encode("she eats")


# ---------------------------------------------------------------------------------------------------------------
# exact inside-outside against brute force
# ---------------------------------------------------------------------------------------------------------------


def test_inside_outside_matches_enumeration_up_to_length_5():
    derivs = P.derivations(TOY, 5)
    total = sum((p for trees in derivs.values() for p, _ in trees), Fraction(0))
    assert 0 < total < 1
    for y, trees in derivs.items():
        res = P.inside_outside(TOY, list(y))
        Z, marg = P.brute_force_marginals(trees)
        assert res["Z"] == Z and res["marginal"] == marg
        assert P.brute_force_marginals(P.string_trees(TOY, list(y)))[0] == Z


def test_ungrammatical_string_has_zero_probability():
    res = P.inside_outside(TOY, TOY.encode("sees the dog"))
    assert res["Z"] == 0 and res["marginal"] == {}
    assert P.inside_outside(TOY, TOY.encode("_ the"))["mlm"][0] is None


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(sorted(k for k in P.derivations(TOY, 6) if len(k) >= 4)), st.data())
def test_masked_conditional_is_bayes(y, data):
    i = data.draw(st.integers(0, len(y) - 1))
    ctx = list(y)
    ctx[i] = None
    joint = []
    for w in range(TOY.n_words):
        filled = ctx.copy()
        filled[i] = w
        joint.append(P.inside_outside(TOY, filled)["Z"])
    cond = P.inside_outside(TOY, ctx)["mlm"][i]
    assert cond == [p / sum(joint) for p in joint] and sum(cond) == 1


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(sorted(P.derivations(TOY, 6))))
def test_marginals_are_probabilities_and_leaves_sum_to_one(y):
    res = P.inside_outside(TOY, list(y))
    L = len(y)
    assert all(0 < m <= 1 for m in res["marginal"].values())
    for i in range(L):      # exactly one label emits each word in every tree
        assert sum(m for (a, ii, jj), m in res["marginal"].items() if ii == jj == i) == 1
    assert res["marginal"][(0, 0, L - 1)] == 1


def test_pp_attachment_closed_form_in_sympy():
    n, v = sp.symbols("n v", positive=True)
    nt = {a: i for i, a in enumerate(TOY.nonterminals)}
    sym = {(nt["NPs"], nt["NPs"], nt["PP"]): n, (nt["VPs"], nt["VPs"], nt["PP"]): v}
    res = P.inside_outside(TOY, TOY.encode("she sees the dog with the cat"),
                           cast=lambda p: sp.Rational(p.numerator, p.denominator), override=sym)
    assert sp.simplify(res["marginal"][(nt["NPs"], 2, 6)] - n / (n + v)) == 0


def test_inside_mask_one_is_wrong_for_branching_emitters():
    tok = TOY.encode("she sees _")
    assert P.inside_outside(TOY, tok, inside_mask_one=True)["Z"] == 5 * P.inside_outside(TOY, tok)["Z"]
    tok = TOY.encode("she sees the _")
    assert P.inside_outside(TOY, tok, inside_mask_one=True)["Z"] == P.inside_outside(TOY, tok)["Z"]


def test_inside_outside_rejects_bad_tokens():
    with pytest.raises(ValueError, match="word index"):
        P.inside_outside(TOY, [0, 99])
    with pytest.raises(ValueError, match="non-empty"):
        P.inside_outside(TOY, [])
    with pytest.raises(ValueError, match="max_len"):
        P.derivations(TOY, 0)


# ---------------------------------------------------------------------------------------------------------------
# torch: inside, autograd outside
# ---------------------------------------------------------------------------------------------------------------


def _batch(texts):
    return torch.tensor([[MASK_ID if t is None else t for t in TOY.encode(s)] for s in texts])


def test_torch_marginals_match_rationals():
    for s in ["the dog near the cats sees the cat", "they like the dogs with _"]:
        tok = TOY.encode(s)
        exact = P.inside_outside(TOY, tok)
        tm = P.torch_marginals(R64, E64, _batch([s]), MASK_ID)
        assert abs(math.log(exact["Z"]) - float(tm["logZ"][0])) < 1e-12
        for (a, i, j), m in exact["marginal"].items():
            assert abs(float(m) - float(tm["marginal"][0, i, j, a])) < 1e-12
        for i, cond in exact["mlm"].items():
            assert max(abs(float(p) - float(q)) for p, q in zip(cond, tm["mlm"][0, i])) < 1e-12


def test_outside_by_autograd_passes_gradcheck():
    tokens = _batch(["she sees the dog with the cat"])
    B, L = tokens.shape
    s = (0.1 * torch.randn(B, L, L, TOY.n_nt, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(0))).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: P.torch_inside(R64, E64, tokens, MASK_ID, x), (s,))


def test_torch_inside_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        P.torch_inside(R64, E64, torch.zeros(3, dtype=torch.long), MASK_ID)
    with pytest.raises(ValueError, match="span_scores"):
        P.torch_inside(R64, E64, _batch(["she sees she"]), MASK_ID, torch.zeros(1, 3, 3, 2, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------------------
# sampling, baselines, probe, parser
# ---------------------------------------------------------------------------------------------------------------


def test_sampler_is_deterministic_and_grammatical():
    x1, t1 = P.sample_sentences(TOY, 7, 50, seed=4)
    x2, t2 = P.sample_sentences(TOY, 7, 50, seed=4)
    assert torch.equal(x1, x2) and t1 == t2 and x1.shape == (50, 7)
    for row, tree in zip(x1.tolist(), t1):
        assert P.inside_outside(TOY, row)["Z"] > 0
        assert (0, 0, 6) in tree and len(tree) == 2 * 7 - 1       # a binary tree has 2L - 1 nodes


def test_sampler_matches_length_conditioned_distribution():
    x, _ = P.sample_sentences(TOY, 3, 4000, seed=1)
    derivs = {y: sum(p for p, _ in t) for y, t in P.derivations(TOY, 3).items() if len(y) == 3}
    total = sum(derivs.values())
    counts = {}
    for row in x.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    for y, p in derivs.items():
        expect = float(p / total)
        assert abs(counts.get(y, 0) / 4000 - expect) < 4 * math.sqrt(expect * (1 - expect) / 4000) + 1e-9
    with pytest.raises(ValueError, match="no sentence"):
        P.sample_sentences(TOY, 2, 5, seed=0)
    with pytest.raises(ValueError, match="seed"):
        P.sample_sentences(TOY, 5, 5, seed=-1)


def test_ngram_baselines_are_distributions():
    x, _ = P.sample_sentences(TOY, 6, 300, seed=2)
    uni, nb = P.ngram_baselines(x[:200], x[200:], torch.zeros(100, dtype=torch.long), TOY.n_words)
    assert torch.allclose(uni.sum(1), torch.ones(100, dtype=torch.float64))
    assert torch.allclose(nb.sum(1), torch.ones(100, dtype=torch.float64))
    nouns = torch.isin(x[200:, 1], torch.tensor([TOY.words.index(w) for w in ("dog", "cat", "dogs", "cats")]))
    assert bool(nouns.any()) and float(nb[nouns, TOY.words.index("the")].min()) > 0.9   # "_ dog ..." is "the"


def test_cky_recovers_a_tree_from_its_own_indicator():
    x, trees = P.sample_sentences(TOY, 8, 20, seed=5)
    scores = torch.zeros(20, 8, 8, dtype=torch.float64)
    gold = [P.unlabeled_spans(t, 8) for t in trees]
    for b, g in enumerate(gold):
        for i, j in g:
            scores[b, i, j] = 1.0
    assert P.cky_decode(scores) == gold
    assert P.span_f1(gold, gold) == 1.0


def test_ridge_probe_recovers_a_linear_target_and_r2():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(500, 5, generator=g, dtype=torch.float64)
    y = X @ torch.arange(1.0, 6.0, dtype=torch.float64) + 2.0
    pred = P.ridge_probe(X[:400], y[:400], X[400:], ridge=1e-9)
    assert P.r_squared(pred, y[400:]) > 1 - 1e-9
    with pytest.raises(ValueError, match="ridge"):
        P.ridge_probe(X, y, X, ridge=0.0)


def test_features_shapes():
    x, _ = P.sample_sentences(TOY, 6, 4, seed=0)
    spans = P.span_index(6)
    assert spans.shape == (sum(6 - w + 1 for w in range(2, 6)), 2)
    h = torch.randn(4, 6, 3, dtype=torch.float64)
    assert P.span_features(h, spans).shape == (4, len(spans), 9)
    assert P.onehot_features(x, spans, TOY.n_words, lexical=False).shape == (4, len(spans), len(spans))
    lex = P.onehot_features(x, spans, TOY.n_words, lexical=True)
    assert lex.shape[-1] == len(spans) + 4 * 14 + 14 * 14 and torch.all(lex.sum(-1) == 6)


def test_every_span_marginal_of_length_4_strings_via_product():
    for y in itertools.islice((k for k in P.derivations(TOY, 4) if len(k) == 4), 5):
        tm = P.torch_marginals(R64, E64, torch.tensor([list(y)]), MASK_ID)
        assert torch.allclose(tm["span"][0, 0, 3], torch.tensor(1.0, dtype=torch.float64))
