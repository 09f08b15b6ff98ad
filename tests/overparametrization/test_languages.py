"""Tests for dltheory.overparametrization.languages (chapter overparametrization/rnn-learning): every label function
is checked
against an explicit finite automaton and against plain string operations."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.overparametrization import languages as lang

HYP = settings(max_examples=40, deadline=None)


def texts(s, alphabet):
    return lang.to_text(s, alphabet)


# ------------------------------------------------------------------------------------------------ strings


def test_all_strings_is_lexicographic_and_complete():
    s = lang.all_strings(4, 3)
    assert s.shape == (81, 4)
    assert torch.equal(lang.string_ids(s, 3), torch.arange(81))
    assert len(set(texts(s, "abc"))) == 81
    assert texts(s[:4], "abc") == ["aaaa", "aaab", "aaac", "aaba"]


def test_sample_strings_deterministic_and_in_range():
    a = lang.sample_strings(50, 7, 3, torch.Generator().manual_seed(4))
    b = lang.sample_strings(50, 7, 3, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert int(a.min()) >= 0 and int(a.max()) <= 2


def test_unique_with_counts_sums_to_n():
    s = lang.sample_strings(300, 4, 2, torch.Generator().manual_seed(0))
    u, c = lang.unique_with_counts(s)
    assert int(c.sum()) == 300 and len(u) <= 16
    assert len(torch.unique(lang.string_ids(u, 2))) == len(u)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_simplex_embedding_unit_norm_equal_angles(k):
    e = lang.simplex_embedding(k)
    gram = e @ e.T
    expected = torch.full((k, k), -1.0 / (k - 1), dtype=torch.float64)
    expected.fill_diagonal_(1.0)
    torch.testing.assert_close(gram, expected, atol=1e-12, rtol=0)
    assert e.shape == (k, k - 1)


def test_binary_embedding_convention():
    assert lang.simplex_embedding(2).squeeze(1).tolist() == [-1.0, 1.0]
    x = lang.embed(torch.tensor([[0, 1, 1]]), 2)
    assert x.shape == (1, 3, 1) and x.squeeze().tolist() == [-1.0, 1.0, 1.0]


# ------------------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize("labels, modulus, strings, expected", [
    (lang.parity_labels, 2, [[0, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]], [0, 1, 0, 0]),
    (lang.mod_count_labels, 3, [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], [0, 1, 2, 0]),
], ids=["parity", "mod3"])
def test_counter_labels_hand_examples_dfa_and_strings(labels, modulus, strings, expected):
    assert labels(torch.tensor(strings)).tolist() == expected
    for L in range(1, 9):
        all_s = lang.all_strings(L, 2)
        assert torch.equal(labels(all_s), lang.run_dfa(all_s, lang.counter_dfa(modulus)))
        assert labels(all_s).tolist() == [t.count("1") % modulus for t in texts(all_s, "01")]


def test_contains_ab_hand_examples():
    s = torch.tensor([[2, 0, 1], [1, 0, 2], [0, 2, 1], [0, 0, 1], [1, 1, 0]])  # cab, bac, acb, aab, bba
    assert lang.contains_labels(s).tolist() == [1, 0, 0, 1, 0]


def test_contains_ab_matches_dfa_and_python_on_all_strings():
    for L in range(1, 8):
        all_s = lang.all_strings(L, 3)
        y = lang.contains_labels(all_s)
        assert torch.equal(y, lang.run_dfa(all_s, lang.contains_dfa((0, 1), 3)))
        assert y.tolist() == [int("ab" in t) for t in texts(all_s, "abc")]


@HYP
@given(st.lists(st.integers(0, 2), min_size=1, max_size=4), st.integers(1, 7), st.integers(0, 10_000))
def test_contains_any_pattern_matches_kmp_dfa_and_python(pattern, L, seed):
    s = lang.sample_strings(64, L, 3, torch.Generator().manual_seed(seed))
    y = lang.contains_labels(s, pattern)
    pat = "".join("abc"[c] for c in pattern)
    assert y.tolist() == [int(pat in t) for t in texts(s, "abc")]
    assert torch.equal(y, lang.run_dfa(s, lang.contains_dfa(pattern, 3)))


def test_majority_is_strict_and_a_threshold_of_the_sum():
    assert lang.majority_labels(torch.tensor([[1, 1, 0], [1, 0, 0]])).tolist() == [1, 0]
    assert lang.majority_labels(torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])).tolist() == [0, 1]  # a tie is 0
    for L in range(1, 10):
        all_s = lang.all_strings(L, 2)
        x = lang.embed(all_s, 2).squeeze(-1)
        assert torch.equal(lang.majority_labels(all_s), (x.sum(1) > 0).long())
        by_text = [int(t.count("1") > t.count("0")) for t in texts(all_s, "01")]
        assert lang.majority_labels(all_s).tolist() == by_text


def test_class_balance_exact():
    torch.testing.assert_close(lang.class_balance("parity", 6), torch.tensor([0.5, 0.5], dtype=torch.float64))
    bal = lang.class_balance("mod3", 6)
    assert bal.tolist() == [22 / 64, 21 / 64, 21 / 64]  # counts 0,3,6 / 1,4 / 2,5
    assert lang.majority_baseline("majority", 6) == pytest.approx(42 / 64)


def test_tasks_registry():
    assert set(lang.TASKS) == {"parity", "mod3", "substring", "majority"}
    assert lang.get_task("substring").k == 3 and lang.get_task("mod3").n_classes == 3
    assert lang.get_task("majority").additive and not lang.get_task("parity").additive
    with pytest.raises(ValueError, match="known tasks"):
        lang.get_task("dyck")


# ------------------------------------------------------------------------------------------------- errors


def test_clear_errors():
    with pytest.raises(ValueError, match="length must be"):
        lang.all_strings(0, 2)
    with pytest.raises(ValueError, match="k must be"):
        lang.sample_strings(3, 4, 1, torch.Generator())
    with pytest.raises(ValueError, match="outside the alphabet"):
        lang.embed(torch.tensor([[0, 3]]), 3)
    with pytest.raises(ValueError, match=r"shape \(n, L\)"):
        lang.parity_labels(torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="too many"):
        lang.all_strings(30, 2)
    with pytest.raises(ValueError, match="modulus"):
        lang.mod_count_labels(torch.zeros(2, 3, dtype=torch.long), modulus=1)
