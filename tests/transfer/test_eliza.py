"""ELIZA as a transformer program: template matching, the cycle counter, conversations and counterfactuals
(dltheory.transfer.eliza). Chapter: chapters/transfer/transformers-as-programs.md."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.transfer import eliza as E


@settings(max_examples=15, deadline=None)
@given(st.lists(st.text(alphabet="ab*", min_size=1, max_size=4), min_size=1, max_size=3))
def test_template_program_matches_re_at_sufficient_beta(templates):
    L = 5
    r = E.template_mismatches(templates, "ab", L, [E.beta_sufficient(L)])
    assert int(r["mismatches"][0]) == 0 and float(r["max_off"][0]) == 0.0


def test_template_program_fails_when_attention_is_soft():
    r = E.template_mismatches(["ab*", "*ab"], "ab", 5, [0.2, 5.0])
    assert int(r["mismatches"][0]) > 0 and int(r["mismatches"][1]) == 0


def test_min_exact_beta_below_the_sufficient_bound():
    L = 5
    b = E.min_exact_beta(["*a*b*", "ab*"], "abc", L, lo=0.3, hi=10.0, iters=10)
    assert 0.3 < b <= E.beta_sufficient(L) + 1e-2
    assert int(E.template_mismatches(["*a*b*", "ab*"], "abc", L, [0.95 * b])["mismatches"][0]) > 0


def test_regex_and_strings():
    assert E.template_regex("a*b") == "a.*b"
    assert len(E.all_strings("ab", 3)) == 2 + 4 + 8
    assert E.regex_matches(["a*"], ["a", "ab", "b"]).tolist() == [[True, True, False]]


def test_bad_templates_and_strings():
    with pytest.raises(ValueError, match="template"):
        E.template_matcher(["ax"], "ab", 3, [1.0])
    with pytest.raises(ValueError, match="templates"):
        E.template_matcher([], "ab", 3, [1.0])
    with pytest.raises(ValueError, match="beta"):
        E.template_matcher(["ab"], "ab", 3, [0.0])
    with pytest.raises(ValueError, match="longer"):
        E.encode_strings(["abab"], "ab", 3)
    with pytest.raises(ValueError, match="hi"):
        E.min_exact_beta(["ab*"], "ab", 4, lo=0.01, hi=0.02, iters=2)


@settings(max_examples=10, deadline=None)
@given(st.integers(2, 5), st.integers(1, 30))
def test_counter_relu_net_is_exact(n, c_max):
    in_bias, s, _, b0 = E.counter_relu_net(n, c_max)
    for c in range(c_max + 1):
        a = torch.tensor(1.0 / (c + 1), dtype=torch.float64)
        val = b0 + (s * torch.relu(a + in_bias)).sum()
        assert abs(float(val) - c % n) < 1e-8


def test_counter_program_counts_mod_n():
    g = torch.Generator().manual_seed(0)
    c = E.counter_conversations(100, 9, 3, g)
    model = E.counter_program(3, 4, 19, 40.0)
    with torch.no_grad():
        out = model(c["ids"])[0, :, c["marker_pos"], 0]
    assert float((out - c["counts"] % 4).abs().max()) < 1e-9
    att = model.attention_weights(c["ids"][:2])[0][0, :, 0].detach()
    assert float(att[0, 1, 1]) < 1e-12                          # a marker never attends to itself


def test_conversations_follow_the_cycle_rule():
    voc = E.eliza_vocab(3, 3)
    conv = E.eliza_conversations(voc, 50, 6, torch.Generator().manual_seed(1))
    tm, rules = conv["templates"], conv["rules"]
    for b in range(50):
        for t in range(6):
            assert int(rules[b, t]) == int((tm[b, :t] == tm[b, t]).sum()) % 3
    assert conv["ids"].max() < voc["size"]


def test_counterfactual_predictions_are_distinct():
    voc = E.eliza_vocab(3, 3)
    g = torch.Generator().manual_seed(2)
    conv = E.eliza_conversations(voc, 200, 6, g)
    cf = E.cycling_counterfactuals(voc, conv, g)
    assert len(cf["count"]) > 0
    assert bool((cf["count"] != cf["increment"]).all())
    assert torch.equal(cf["count"], cf["unedited"][:, -1])
    assert int((cf["edited"] != cf["unedited"]).sum(1).eq(1).all())


def test_training_is_deterministic():
    voc = E.eliza_vocab(2, 2)
    m1, l1 = E.train_eliza_model(voc, 3, 8, 1, 1, 5, 8, 1e-3, 0)
    m2, l2 = E.train_eliza_model(voc, 3, 8, 1, 1, 5, 8, 1e-3, 0)
    assert l1 == l2
    conv = E.eliza_conversations(voc, 20, 3, torch.Generator().manual_seed(3))
    assert E.response_accuracy(m1, conv) == E.response_accuracy(m2, conv)
    with pytest.raises(ValueError, match="n_rules"):
        E.eliza_vocab(2, 1)
