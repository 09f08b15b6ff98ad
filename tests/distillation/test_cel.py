"""MLT(d, n), the surrogate SURR-MLT and context-enhanced learning on it (dltheory.distillation.cel)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.distillation import cel as C


def _gen(s=0):
    return torch.Generator().manual_seed(s)


def _naive_translate(x, books, n):
    """MLT on character lists: translate every bigram, then rotate the characters left by one."""
    chars = [c for z in x.tolist() for c in (z // n, z % n)]
    for book in books.tolist():
        out = []
        for j in range(0, len(chars), 2):
            v = book[chars[j] * n + chars[j + 1]]
            out += [v // n, v % n]
        chars = out[1:] + out[:1]
    return [chars[j] * n + chars[j + 1] for j in range(0, len(chars), 2)]


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 5), d=st.integers(1, 4), length=st.integers(1, 7), s=st.integers(0, 10**6))
def test_translate_matches_character_level_definition(n, d, length, s):
    g = _gen(s)
    books = C.random_phrasebooks(g, d, n)
    x = C.sample_strings(g, (), length, n)
    assert C.translate(x, books, n).tolist() == _naive_translate(x, books, n)
    assert torch.equal(C.translate_steps(x, books, n)[-1], C.translate(x, books, n))


def test_phrasebooks_are_permutations_and_matrices_match():
    books = C.random_phrasebooks(_gen(), 3, 4)
    assert books.shape == (3, 16)
    assert all(sorted(b.tolist()) == list(range(16)) for b in books)
    T = C.permutation_matrices(books)
    assert torch.equal(T.sum(-2), torch.ones(3, 16)) and torch.equal(T.sum(-1), torch.ones(3, 16))
    assert all(T[i, books[i, u], u] == 1 for i in range(3) for u in range(16))


def test_bad_sizes_raise_naming_the_fix():
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        C.random_phrasebooks(_gen(), 2, 1)
    with pytest.raises(ValueError, match="d must be a positive integer"):
        C.random_phrasebooks(_gen(), 0, 3)
    with pytest.raises(ValueError, match="phrasebooks must have shape"):
        C.translate(torch.zeros(3, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="n <= 26"):
        C.bigrams_to_text(torch.zeros(2, dtype=torch.long), 27)
    books = C.random_phrasebooks(_gen(), 2, 3)
    with pytest.raises(ValueError, match="layers_dropped"):
        C.gradient_accuracy(_gen(), books, 3, 1, 3, 2, 2, 4)
    with pytest.raises(ValueError, match="num_drop"):
        C.gradient_accuracy(_gen(), books, 3, 10, 1, 2, 2, 4)
    with pytest.raises(ValueError, match="beta"):
        C.layer_matrices(torch.zeros(1, 1, 4, 4), beta=0)
    with pytest.raises(ValueError, match="readouts must be"):
        C.surrogate_marginals(torch.zeros(1, 1, 3, dtype=torch.long), torch.zeros(1, 1, 2, 9, 5), 3)


def test_surrogate_with_full_context_is_the_task():
    n, d = 3, 3
    books = C.random_phrasebooks(_gen(1), d, n)
    x = C.sample_strings(_gen(2), (2, 5), 7, n)
    y = C.translate(x, books, n)
    T = C.permutation_matrices(books, torch.float64).expand(2, d, 9, 9)
    Q = C.layer_readouts(torch.zeros(2, d, 9, 9, dtype=torch.float64), T)
    assert torch.equal(C.char_accuracy(x, y, Q, n), torch.ones(2, dtype=torch.float64))
    assert C.surrogate_loss(x, y, Q, n).max() < 1e-6
    # exact permutation layers (beta -> infinity) give loss exactly 0
    assert C.surrogate_loss(x, y, C.readouts_from_matrices(T.unsqueeze(1)), n).abs().max() == 0
    # no context, uniform layers: every character at chance
    U = C.layer_readouts(torch.zeros(2, d, 9, 9, dtype=torch.float64))
    assert torch.allclose(C.surrogate_loss(x, y, U, n), torch.full((2,), 2 * np.log(n), dtype=torch.float64))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 5), ndrop=st.integers(1, 6), s=st.integers(0, 10**6))
def test_one_layer_gradient_is_the_closed_form_for_every_dropped_rule(n, ndrop, s):
    """d = 1: the loss separates by column, so every dropped column's gradient is (frequency) x closed form."""
    g, m = _gen(s), n * n
    book = C.random_phrasebooks(g, 1, n)
    x = C.sample_strings(g, (1, 3), 9, n)
    keep = C.keep_mask(g, torch.full((1, 1, 1), min(ndrop, m)), m, torch.float64)
    W = torch.zeros(1, 1, m, m, dtype=torch.float64, requires_grad=True)
    Q = C.layer_readouts(W, C.permutation_matrices(book, torch.float64).unsqueeze(0), keep)
    (grad,) = torch.autograd.grad(C.surrogate_loss(x, C.translate(x, book, n), Q, n).sum(), W)
    for c in torch.nonzero(keep[0, 0, 0] == 0).flatten().tolist():
        freq = (x == c).sum().item() / x.numel()
        expected = C.closed_form_column_gradient(n, int(book[0, c])) * freq
        assert torch.allclose(grad[0, 0, :, c], expected, atol=1e-12, rtol=0)


def test_readouts_equal_the_marginals_of_the_masked_layer_matrices():
    """The fast path (two softmaxes per run, selected per column) is the reference's per-sample masked softmax."""
    g, n, d = _gen(7), 3, 2
    books = C.random_phrasebooks(g, d, n)
    T = C.permutation_matrices(books, torch.float64).expand(2, d, 9, 9)
    W = torch.rand(2, d, 9, 9, generator=g, dtype=torch.float64, requires_grad=True)
    keep = C.keep_mask(g, torch.randint(0, 9, (2, 4, d), generator=g), 9, torch.float64)
    slow = C.readouts_from_matrices(C.layer_matrices(W, T, keep))
    fast = C.layer_readouts(W, T, keep)
    assert torch.allclose(slow, fast, atol=1e-14)
    x = C.sample_strings(g, (2, 4), 5, n)
    y = C.translate(x, books, n)
    gs = torch.autograd.grad(C.surrogate_loss(x, y, slow, n).sum(), W)[0]
    gf = torch.autograd.grad(C.surrogate_loss(x, y, fast, n).sum(), W)[0]
    assert torch.allclose(gs, gf, atol=1e-12)
    A = C.marginal_readout(n)
    assert A.shape == (9, 6) and torch.equal(A.sum(0), torch.full((6,), 3.0))


def test_closed_form_has_three_levels_with_a_unique_minimum():
    n = 6
    gcol = C.closed_form_column_gradient(n, 13)
    assert gcol.argmin() == 13 and (gcol == gcol.min()).sum() == 1
    assert sorted(set(np.round(gcol.numpy(), 12))) == sorted(np.round([-2 * 25 * (n - 1) / n**2,
                                                                       -25 * (n - 2) / n**2, 2 * 25 / n**2], 12))
    assert abs(gcol.sum().item()) < 1e-12


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_no_context_at_zero_has_no_gradient_below_the_last_layer(n):
    """Exactly zero in exact arithmetic, rounding-level in float64."""
    d, m = 4, n * n
    books = C.random_phrasebooks(_gen(3), d, n)
    x = C.sample_strings(_gen(4), (1, 6), 8, n)
    W = torch.zeros(1, d, m, m, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(C.surrogate_loss(x, C.translate(x, books, n), C.layer_readouts(W), n).sum(), W)
    norms = g[0].flatten(1).norm(dim=1)
    assert norms[-1] > 0 and norms[:-1].max() <= 1e-12 * norms[-1]


def test_gradient_accuracy_one_missing_rule_one_layer_is_perfect():
    books = C.random_phrasebooks(_gen(5), 1, 3)
    neg, strict = C.gradient_accuracy(_gen(6), books, 3, 1, 1, trials=20, batch=16, length=16)
    assert neg == 1.0 and strict == 1.0
    books = C.random_phrasebooks(_gen(5), 3, 3)
    neg, strict = C.gradient_accuracy(_gen(6), books, 3, 8, 3, trials=10, batch=4, length=8)
    assert 0 <= strict <= neg <= 1


def test_keep_masks_drop_exact_counts_and_spread_semantics():
    counts = torch.tensor([[0, 3, 16]])
    keep = C.keep_mask(_gen(), counts, 16)
    assert keep.sum(-1).tolist() == [[16, 13, 0]]
    R, B, d, m = 2, 500, 3, 16
    rank = torch.rand(R, B, d, m, generator=_gen(1)).argsort(-1).argsort(-1)
    coin = torch.rand(R, B, generator=_gen(2)) < 0.5
    one = torch.randint(d, (R, B), generator=_gen(3))
    keep = C._keep(rank, coin, one, torch.tensor([0.25, 0.25], dtype=torch.float64), torch.tensor([True, False]), m)
    dropped = (keep == 0).sum(-1)                                     # (R, B, d)
    assert set(dropped.unique().tolist()) <= {0, 4}
    assert torch.all(dropped[1] == 4)                                 # "even": every layer, every sample
    all_layers = (dropped[0] == 4).all(-1)
    assert torch.equal(all_layers, coin[0]) and torch.all((dropped[0] == 4).sum(-1)[~coin[0]] == 1)


def test_anneal_rate_and_arms():
    assert np.allclose(C.anneal_rate([0, 0.3, 0.6, 0.9]), [0, 0.5, 1, 1])
    assert C.Arm("anneal", 0.1).drop_rate(0.3) == pytest.approx(0.5)
    assert C.Arm("fixed", 0.1, rate=0.2).drop_rate(0.9) == 0.2
    assert C.Arm("none", 0.1).drop_rate(0.5) == 0 and C.Arm("all", 0.1).drop_rate(0.0) == 1
    with pytest.raises(ValueError, match="schedule must be one of"):
        C.Arm("sometimes", 0.1)
    with pytest.raises(ValueError, match="lr must be a positive"):
        C.Arm("anneal", 0)
    with pytest.raises(ValueError, match="rate must lie"):
        C.Arm("fixed", 0.1, rate=2)


def test_budget_to_reach():
    assert C.budget_to_reach([1, 2, 4], [0.1, 0.95, 0.99], 0.9) == (2, True)
    assert C.budget_to_reach([1, 2, 4], [0.1, 0.2, 0.3], 0.9) == (8, False)
    with pytest.raises(ValueError, match="strictly increasing"):
        C.budget_to_reach([2, 1], [0, 0], 0.5)
    with pytest.raises(ValueError, match="equal length"):
        C.budget_to_reach([1, 2], [0], 0.5)


def _tiny(runs, optimizer="adam"):
    seeds = sorted({r.seed for r in runs})
    tasks = {s: C.make_task(s, 2, 3, 16, 6) for s in seeds}
    return C.train_runs(runs, {s: t[0] for s, t in tasks.items()}, 3, 6, 4, {s: t[1] for s, t in tasks.items()},
                        0.01, optimizer, eval_points=3)


def test_training_is_deterministic_and_a_run_does_not_depend_on_its_neighbours():
    arm = C.Arm("anneal", 0.05)
    runs = [C.Run(arm, 0, 64), C.Run(C.Arm("all", 0.03), 1, 32), C.Run(C.Arm("fixed", 0.05), 0, 48)]
    a, ca, Wa = _tiny(runs)
    b, cb, Wb = _tiny(runs)
    assert torch.equal(a, b) and np.array_equal(ca, cb, equal_nan=True) and torch.equal(Wa, Wb)
    alone, _, Walone = _tiny([runs[0]])
    assert torch.equal(alone[0], a[0]) and torch.equal(Walone[0], Wa[0])
    assert ca.shape == (3, 3) and np.array_equal(ca[:, -1], a.numpy())
    assert torch.all((Wa >= 0) & (Wa <= 1))


def test_context_enhanced_learning_learns_a_small_task():
    """MLT(2, 3): annealed dropout internalizes both phrasebooks; no dropout learns nothing."""
    runs = [C.Run(C.Arm("anneal", 0.05), 0, 256), C.Run(C.Arm("none", 0.05), 0, 256)]
    final, _, W = _tiny(runs)
    books = C.make_task(0, 2, 3, 16, 6)[0]
    assert final[0] == 1.0 and final[1] < 0.6
    assert torch.all(C.rule_accuracy(W[:1], books.unsqueeze(0)) == 1)
    gd, _, _ = _tiny([C.Run(C.Arm("anneal", 2.0), 0, 256)], optimizer="gd")
    assert gd[0] == 1.0


def test_train_runs_rejects_bad_input():
    tasks = {0: C.make_task(0, 2, 3, 4, 6)}
    books, tx = {0: tasks[0][0]}, {0: tasks[0][1]}
    with pytest.raises(ValueError, match="non-empty"):
        C.train_runs([], books, 3, 6, 4, tx, 0.01)
    with pytest.raises(ValueError, match="optimizer"):
        C.train_runs([C.Run(C.Arm("all", 0.1), 0, 8)], books, 3, 6, 4, tx, 0.01, optimizer="sgd")
    with pytest.raises(ValueError, match="samples >= batch"):
        C.train_runs([C.Run(C.Arm("all", 0.1), 0, 2)], books, 3, 6, 4, tx, 0.01)
    with pytest.raises(ValueError, match="same arms"):
        C.run_arms({"a": C.Arm("all", 0.1)}, {"b": [8]}, [0], 2, 3, 6, 4, 4, 0.01)


def test_run_arms_shapes_and_text_helpers():
    out = C.run_arms({"a": C.Arm("anneal", 0.05), "s": C.Arm("all", 0.05)}, {"a": [8, 16], "s": [8]}, [0, 1],
                     2, 3, 6, 4, 8, 0.01)
    assert out["a"].shape == (2, 2) and out["s"].shape == (1, 2)
    assert C.bigrams_to_text(torch.tensor([0, 5]), 3) == "aa bc"
    books, tx = C.make_task(3, 2, 3, 5, 6)
    assert books.shape == (2, 9) and tx.shape == (5, 6)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(2, 5), s=st.integers(0, 10**6))
def test_relabelling_an_intermediate_alphabet_leaves_the_task_unchanged(n, s):
    """Exercise cel-ex-relabel: standard learning cannot identify the phrasebooks."""
    g, m = _gen(s), n * n
    books = C.random_phrasebooks(g, 3, n)
    sig = torch.randperm(n, generator=g)
    S = sig[torch.arange(m) // n] * n + sig[torch.arange(m) % n]
    alt = books.clone()
    alt[0], alt[1] = S[books[0]], books[1][torch.argsort(S)]
    x = C.sample_strings(g, (3,), 5, n)
    assert torch.equal(C.translate(x, books, n), C.translate(x, alt, n))
