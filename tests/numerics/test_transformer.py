"""The book's transformer (dltheory.numerics.transformer): masks, agreement with torch's attention and with a
plain reference implementation, explicit attention probabilities, independent replicas, weights by name, an
explicit construction, determinism, and argument errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.numerics.transformer import (
    ACTIVATIONS,
    Transformer,
    TransformerConfig,
    causal_mask,
    replica_cross_entropy,
)

F64 = torch.float64


def small(causal: bool = True, replicas: int = 1, seed: int = 0, dtype=F64, **kw) -> Transformer:
    kw = {"vocab_size": 7, "d_model": 8, "n_heads": 2, "n_layers": 2, "max_len": 10, **kw}
    cfg = TransformerConfig(causal=causal, replicas=replicas, **kw)
    return Transformer(cfg, torch.Generator().manual_seed(seed), dtype=dtype)


def tokens(*shape: int, vocab: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def reference_forward(m: Transformer, x: torch.Tensor, r: int = 0) -> torch.Tensor:
    """Replica ``r`` of ``m`` on tokens ``(B, T)``, written out with plain torch ops (no replica dimension)."""
    cfg = m.config
    w = lambda n: m.get_weight(n, r)
    T = x.shape[1]
    h = w("tok_emb.weight")[x] + w("pos_emb.weight")[:T]
    act = {"gelu": F.gelu, "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"), "relu": F.relu}[cfg.activation]
    for l in range(cfg.n_layers):
        p = f"blocks.{l}."
        z = F.layer_norm(h, (cfg.d_model,), w(p + "ln1.weight"), w(p + "ln1.bias"), cfg.ln_eps)
        q, k, v = (F.linear(z, w(p + f"attn.{c}.weight"), w(p + f"attn.{c}.bias")) for c in "qkv")
        split = lambda t: t.view(*t.shape[:2], cfg.n_heads, cfg.d_head).transpose(1, 2)
        s = split(q) @ split(k).transpose(-1, -2) / math.sqrt(cfg.d_head)
        if cfg.causal:
            s = s.masked_fill(~causal_mask(T), float("-inf"))
        a = (s.softmax(-1) @ split(v)).transpose(1, 2).reshape(*h.shape)
        h = h + F.linear(a, w(p + "attn.o.weight"), w(p + "attn.o.bias"))
        z = F.layer_norm(h, (cfg.d_model,), w(p + "ln2.weight"), w(p + "ln2.bias"), cfg.ln_eps)
        z = act(F.linear(z, w(p + "mlp.fc_in.weight"), w(p + "mlp.fc_in.bias")))
        h = h + F.linear(z, w(p + "mlp.fc_out.weight"), w(p + "mlp.fc_out.bias"))
    h = F.layer_norm(h, (cfg.d_model,), w("ln_f.weight"), w("ln_f.bias"), cfg.ln_eps)
    return F.linear(h, w("head.weight"), w("head.bias"))


# --- the architecture -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("causal", [True, False])
def test_matches_plain_reference_implementation(activation, causal):
    m = small(causal=causal, replicas=2, activation=activation)
    x = tokens(3, 9)
    out = m(x)
    assert out.shape == (2, 3, 9, 7)
    for r in range(2):
        torch.testing.assert_close(out[r], reference_forward(m, x, r), rtol=0, atol=1e-12)


def test_parameter_names_and_shapes():
    m = small(n_out=3, d_mlp=5)
    shapes = m.weight_shapes()
    assert list(shapes)[:2] == ["tok_emb.weight", "pos_emb.weight"]
    assert shapes["tok_emb.weight"] == (7, 8) and shapes["pos_emb.weight"] == (10, 8)
    assert shapes["blocks.1.attn.q.weight"] == (8, 8) and shapes["blocks.0.attn.o.bias"] == (8,)
    assert shapes["blocks.0.mlp.fc_in.weight"] == (5, 8) and shapes["blocks.0.mlp.fc_out.weight"] == (8, 5)
    assert shapes["blocks.0.ln2.bias"] == (8,) and shapes["ln_f.weight"] == (8,)
    assert shapes["head.weight"] == (3, 8) and shapes["head.bias"] == (3,)
    assert all(p.shape[0] == 1 for p in m.parameters())
    bare = small(layer_norm=False, mlp=False, pos_emb=False, bias=False)
    assert bare.weight_names() == ["tok_emb.weight", "blocks.0.attn.q.weight", "blocks.0.attn.k.weight",
                                   "blocks.0.attn.v.weight", "blocks.0.attn.o.weight", "blocks.1.attn.q.weight",
                                   "blocks.1.attn.k.weight", "blocks.1.attn.v.weight", "blocks.1.attn.o.weight",
                                   "head.weight"]


def test_causal_mask_helper():
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))


_CAUSAL = small(causal=True, replicas=2)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), pos=st.integers(0, 9), new=st.integers(0, 6))
def test_causal_later_tokens_never_change_earlier_outputs(seed, pos, new):
    m = _CAUSAL
    x = tokens(2, 10, seed=seed)
    y = x.clone()
    y[:, pos] = new
    a, b = m(x, return_hidden=True), m(y, return_hidden=True)
    assert torch.equal(a[0][..., :pos, :], b[0][..., :pos, :])
    for ha, hb in zip(a[1], b[1]):
        assert torch.equal(ha[..., :pos, :], hb[..., :pos, :])


def test_bidirectional_later_tokens_change_earlier_outputs():
    m = small(causal=False, replicas=2)
    x = tokens(2, 10)
    y = x.clone()
    y[:, 7] = (x[:, 7] + 1) % 7
    diff = (m(x) - m(y)).abs()[..., :7, :].amax(dim=(-1, -3))  # (R, T) max over batch and outputs
    assert (diff > 1e-6).all()


def _single_attention(causal: bool, d: int = 8, heads: int = 2, T: int = 6) -> Transformer:
    """One attention layer, nothing else: out = x + attn(x) for input embeddings x (identity head)."""
    m = small(causal=causal, d_model=d, n_heads=heads, n_layers=1, max_len=T, layer_norm=False, mlp=False,
              pos_emb=False, n_out=d)
    m.set_weights({"head.weight": torch.eye(d), "head.bias": torch.zeros(d)})
    g = torch.Generator().manual_seed(3)
    m.set_weights({f"blocks.0.attn.{c}.{kind}": torch.randn(*((d, d) if kind == "weight" else (d,)), generator=g,
                                                             dtype=F64)
                   for c in "qkvo" for kind in ("weight", "bias")})
    return m


@pytest.mark.parametrize("causal", [True, False])
def test_agrees_with_torch_multihead_attention(causal):
    d, heads, T = 8, 2, 6
    m = _single_attention(causal, d, heads, T)
    mha = torch.nn.MultiheadAttention(d, heads, batch_first=True, dtype=F64)
    w = lambda n: m.get_weight(f"blocks.0.attn.{n}", 0)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([w("q.weight"), w("k.weight"), w("v.weight")]))
        mha.in_proj_bias.copy_(torch.cat([w("q.bias"), w("k.bias"), w("v.bias")]))
        mha.out_proj.weight.copy_(w("o.weight"))
        mha.out_proj.bias.copy_(w("o.bias"))
    x = torch.randn(4, T, d, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch_mask = ~causal_mask(T) if causal else None  # torch: True = may NOT attend
    ref = x + mha(x, x, x, attn_mask=torch_mask, need_weights=False)[0]
    torch.testing.assert_close(m(x)[0], ref, rtol=0, atol=1e-10)
    # key padding: torch's key_padding_mask is True at padded keys; ours (key_mask) is True at real keys
    pad = torch.zeros(4, T, dtype=torch.bool)
    pad[1, 4:] = True
    pad[2, 3] = True
    ref = x + mha(x, x, x, attn_mask=torch_mask, key_padding_mask=pad, need_weights=False)[0]
    torch.testing.assert_close(m(x, key_mask=~pad)[0], ref, rtol=0, atol=1e-10)
    _, probs = mha(x, x, x, attn_mask=torch_mask, key_padding_mask=pad, average_attn_weights=False)
    torch.testing.assert_close(m.attention_weights(x, key_mask=~pad)[0][0], probs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("causal", [True, False])
def test_explicit_attention_agrees_with_sdpa(causal):
    m = small(causal=causal, replicas=2, n_layers=3)
    x = tokens(3, 9)
    km = torch.ones(3, 9, dtype=torch.bool)
    km[0, 6:] = False
    am = torch.rand(9, 9, generator=torch.Generator().manual_seed(0)) < 0.7
    am.fill_diagonal_(True)
    for kwargs in ({}, {"key_mask": km}, {"attn_mask": am}, {"key_mask": km, "attn_mask": am}):
        out, hidden = m(x, return_hidden=True, **kwargs)
        out_e, hidden_e, attn = m(x, return_hidden=True, return_attn=True, **kwargs)
        torch.testing.assert_close(out_e, out, rtol=0, atol=1e-12)
        for a, b in zip(hidden_e, hidden):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        assert len(attn) == 3 and len(hidden) == 4
        for p in attn:
            assert p.shape == (2, 3, 2, 9, 9)
            torch.testing.assert_close(p.sum(-1), torch.ones(2, 3, 2, 9, dtype=F64))
            allowed = (causal_mask(9) if causal else torch.ones(9, 9, dtype=torch.bool))
            allowed = allowed & kwargs.get("attn_mask", True) & kwargs.get("key_mask", torch.ones(3, 9, dtype=bool))[
                :, None, None, :]
            assert (p.masked_select(~allowed.expand_as(p)) == 0).all()
    # the probabilities, recomputed by hand from the residual stream for layer 1, replica 1
    _, hidden, attn = m(x, return_hidden=True, return_attn=True)
    w = lambda n: m.get_weight(f"blocks.1.{n}", 1)
    z = F.layer_norm(hidden[1][1], (8,), w("ln1.weight"), w("ln1.bias"))
    q, k = (F.linear(z, w(f"attn.{c}.weight"), w(f"attn.{c}.bias")).view(3, 9, 2, 4).transpose(1, 2) for c in "qk")
    s = q @ k.transpose(-1, -2) / 2.0
    if causal:
        s = s.masked_fill(~causal_mask(9), float("-inf"))
    torch.testing.assert_close(attn[1][1], s.softmax(-1), rtol=0, atol=1e-12)


def test_query_with_no_allowed_key_gets_zero_attention_and_finite_gradients():
    m = small(causal=True, dtype=torch.float32)
    x = tokens(2, 6)
    km = torch.ones(2, 6, dtype=torch.bool)
    km[0, :2] = False  # left padding: under the causal mask queries 0 and 1 of sequence 0 see no key
    out, attn = m(x, key_mask=km, return_attn=True)
    torch.testing.assert_close(m(x, key_mask=km), out, rtol=0, atol=1e-6)
    assert torch.isfinite(out).all()
    assert (attn[0][0, 0, :, :2] == 0).all() and torch.allclose(attn[0][0, 0, :, 2:].sum(-1), torch.ones(2, 4))
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_float_input_embeddings_bypass_the_token_embedding():
    m = small(replicas=2)
    x = tokens(3, 5)
    emb = m.get_weight("tok_emb.weight")  # (R, V, d)
    per_replica = torch.stack([emb[r][x] for r in range(2)])
    torch.testing.assert_close(m(per_replica), m(x), rtol=0, atol=1e-12)
    shared = torch.randn(3, 5, 8, dtype=F64)
    out = m(shared)
    torch.testing.assert_close(out, m(shared.expand(2, 3, 5, 8).clone()), rtol=0, atol=1e-12)
    assert out.shape == (2, 3, 5, 7)


# --- replicas -------------------------------------------------------------------------------------------------


def test_replicas_equal_independent_single_models_outputs_and_adam_step():
    big = small(replicas=3, seed=5)
    singles = [big.extract_replica(r) for r in range(3)]
    x, xs, y = tokens(4, 8), tokens(3, 4, 8, seed=1), tokens(3, 4, 8, seed=2)
    out = big(x)
    for r, s in enumerate(singles):
        torch.testing.assert_close(out[r], s(x)[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(big(xs)[r], s(xs[r])[0], rtol=0, atol=1e-12)
    opt = torch.optim.Adam(big.parameters(), lr=1e-2)
    replica_cross_entropy(big(xs), y).sum().backward()
    opt.step()
    for r, s in enumerate(singles):
        opt_s = torch.optim.Adam(s.parameters(), lr=1e-2)
        replica_cross_entropy(s(xs[r]), y[r]).sum().backward()
        opt_s.step()
        for n in big.weight_names():
            torch.testing.assert_close(big.get_weight(n, r), s.get_weight(n, 0), rtol=0, atol=1e-12)
    restacked = Transformer.stack(singles)
    for n in big.weight_names():
        assert torch.equal(restacked.get_weight(n), torch.cat([s.get_weight(n) for s in singles]))


def test_gradient_of_one_replica_does_not_touch_the_others():
    m = small(replicas=3)
    replica_cross_entropy(m(tokens(2, 6)), tokens(2, 6, seed=1))[0].backward()
    for n, p in m.named_parameters():
        assert p.grad[1:].abs().max() == 0, n
        assert p.grad[0].abs().max() > 0, n


def test_replica_chunking_does_not_change_results():
    chunked = small(replicas=5, seed=2)
    chunked.replica_chunk = 2
    assert chunked.replica_slices(2, 6) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    whole = small(replicas=5, seed=2)
    whole.replica_chunk = 5
    x = tokens(5, 2, 6)
    km = tokens(5, 2, 6, vocab=2, seed=3).bool()
    km[:, :, -1] = True
    a = chunked(x, key_mask=km, return_hidden=True, return_attn=True)
    b = whole(x, key_mask=km, return_hidden=True, return_attn=True)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-12)
    for u, v in zip(a[1] + a[2], b[1] + b[2]):
        torch.testing.assert_close(u, v, rtol=0, atol=1e-12)


def test_replica_cross_entropy():
    logits = torch.randn(2, 3, 4, 5, dtype=F64)
    y = tokens(3, 4, vocab=5)
    y[0, 0] = -100
    ce = replica_cross_entropy(logits, y)
    for r in range(2):
        torch.testing.assert_close(ce[r], F.cross_entropy(logits[r].reshape(-1, 5), y.reshape(-1)))


# --- weights by name and an explicit construction --------------------------------------------------------------


def test_set_and_get_weights_round_trip():
    m = small(replicas=3)
    w = torch.arange(64, dtype=F64).view(8, 8)
    m.set_weights({"blocks.0.attn.q.weight": w})  # broadcast to all replicas
    assert torch.equal(m.get_weight("blocks.0.attn.q.weight"), w.expand(3, 8, 8))
    m.set_weights({"blocks.0.attn.q.weight": -w}, replica=1)
    assert torch.equal(m.get_weight("blocks.0.attn.q.weight", 1), -w)
    assert torch.equal(m.get_weight("blocks.0.attn.q.weight", 2), w)
    full = torch.randn(3, 7, dtype=F64)
    m.set_weights({"head.bias": full})
    assert torch.equal(m.get_weight("head.bias"), full)
    got = m.get_weight("head.bias")
    got.zero_()  # a copy: the model is unchanged
    assert torch.equal(m.get_weight("head.bias"), full)
    before = {n: m.get_weight(n) for n in m.weight_names()}
    with pytest.raises(ValueError, match=r"expected shape \(8,\)"):
        m.set_weights({"ln_f.bias": torch.zeros(8), "ln_f.weight": torch.zeros(9)})
    assert all(torch.equal(before[n], m.get_weight(n)) for n in before)  # nothing written when one is wrong


def test_weight_name_and_shape_errors():
    m = small(replicas=2)
    with pytest.raises(ValueError, match="unknown weight name 'blocks.0.attn.qq.weight'; valid names: tok_emb"):
        m.set_weights({"blocks.0.attn.qq.weight": torch.zeros(8, 8)})
    with pytest.raises(ValueError, match="valid names"):
        m.get_weight("nope")
    with pytest.raises(ValueError, match=r"expected shape \(8, 8\) \(broadcast to all replicas\) or \(2, 8, 8\)"):
        m.set_weights({"blocks.0.attn.k.weight": torch.zeros(3, 8, 8)})
    with pytest.raises(ValueError, match=r"of replica 1: expected shape \(7, 8\)"):
        m.set_weights({"tok_emb.weight": torch.zeros(2, 7, 8)}, replica=1)
    with pytest.raises(ValueError, match=r"replica must be None or an integer in \[0, 2\)"):
        m.get_weight("head.bias", replica=2)
    with pytest.raises(ValueError, match="NaN"):
        m.set_weights({"head.bias": torch.full((7,), float("nan"))})
    with pytest.raises(ValueError, match="dict"):
        m.set_weights([("head.bias", torch.zeros(7))])


def test_explicit_construction_previous_token_copier():
    """One attention layer, weights written by hand, that outputs at position i the token at position i - 1.

    Residual stream [token one-hot (V) | position one-hot (T) | output slot (V)]. The query of position i is
    beta * e_{i-1} in position space, the key of position j is e_j, so the score is beta / sqrt(d_head) at key
    i - 1 and 0 elsewhere: position i attends (up to e^-40) only to i - 1.
    The value copies the token one-hot into the output slot, which the head reads."""
    V, T = 5, 8
    d = 2 * V + T
    beta = 40.0 * math.sqrt(d)
    cfg = TransformerConfig(V, d, 1, 1, T, layer_norm=False, mlp=False, bias=False)
    m = Transformer(cfg, dtype=F64)
    tok, pos, slot = slice(0, V), slice(V, V + T), slice(V + T, d)
    emb_t, emb_p = torch.zeros(V, d), torch.zeros(T, d)
    emb_t[:, tok] = torch.eye(V)
    emb_p[:, pos] = torch.eye(T)
    wq, wk, wv = torch.zeros(d, d), torch.zeros(d, d), torch.zeros(d, d)
    wq[pos, pos] = beta * torch.eye(T, T).roll(-1, dims=0)  # position i -> beta e_{i-1} (row i-1, column i)
    wk[pos, pos] = torch.eye(T)
    wv[slot, tok] = torch.eye(V)
    head = torch.zeros(V, d)
    head[:, slot] = torch.eye(V)
    m.set_weights({"tok_emb.weight": emb_t, "pos_emb.weight": emb_p, "blocks.0.attn.q.weight": wq,
                   "blocks.0.attn.k.weight": wk, "blocks.0.attn.v.weight": wv,
                   "blocks.0.attn.o.weight": torch.eye(d), "head.weight": head})
    x = tokens(16, T, vocab=V, seed=4)
    out = m(x)[0]
    assert torch.equal(out[:, 1:].argmax(-1), x[:, :-1])
    attn = m.attention_weights(x)[0][0, :, 0]  # (B, T, T)
    shift = torch.eye(T, dtype=F64).roll(-1, dims=1).tril()
    shift[0, 0] = 1.0
    torch.testing.assert_close(attn, shift.expand_as(attn), rtol=0, atol=1e-12)


# --- initialization and determinism ---------------------------------------------------------------------------


def test_same_seed_is_bit_identical_through_training():
    def run(seed):
        m = small(replicas=2, seed=seed, dtype=torch.float32)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        outs = []
        for k in range(3):
            out = m(tokens(4, 8, seed=k))
            outs.append(out.detach())
            opt.zero_grad()
            replica_cross_entropy(out, tokens(4, 8, seed=10 + k)).sum().backward()
            opt.step()
        return outs, {n: m.get_weight(n) for n in m.weight_names()}

    (o1, w1), (o2, w2), (_, w3) = run(0), run(0), run(1)
    assert all(torch.equal(a, b) for a, b in zip(o1, o2))
    assert all(torch.equal(w1[n], w2[n]) for n in w1)
    assert not torch.equal(w1["tok_emb.weight"], w3["tok_emb.weight"])


def test_replica_init_depends_only_on_seed_and_index():
    a = small(replicas=2, seed=9)
    b = small(replicas=3, seed=9)
    c = small(replicas=1, seed=9, dtype=torch.float32)
    for n in a.weight_names():
        assert torch.equal(a.get_weight(n), b.get_weight(n)[:2])
        assert torch.equal(c.get_weight(n, 0), b.get_weight(n, 0).float())
    assert not torch.equal(b.get_weight("head.weight", 0), b.get_weight("head.weight", 1))


def test_gpt2_initialization():
    L = 3
    cfg = TransformerConfig(256, 64, 4, L, 128, replicas=2)
    m = Transformer(cfg, torch.Generator().manual_seed(0))
    for name in ("tok_emb.weight", "pos_emb.weight", "blocks.0.attn.q.weight", "blocks.2.mlp.fc_in.weight",
                 "head.weight"):
        assert abs(m.get_weight(name).std().item() / 0.02 - 1) < 0.05, name
    for name in ("blocks.1.attn.o.weight", "blocks.0.mlp.fc_out.weight"):
        assert abs(m.get_weight(name).std().item() * math.sqrt(2 * L) / 0.02 - 1) < 0.05, name
    assert (m.get_weight("blocks.0.attn.q.bias") == 0).all() and (m.get_weight("ln_f.weight") == 1).all()
    assert (m.get_weight("blocks.1.ln2.bias") == 0).all() and (m.get_weight("head.bias") == 0).all()


def test_global_rng_untouched():
    state = torch.get_rng_state()
    small(replicas=2)(tokens(2, 4))
    assert torch.equal(torch.get_rng_state(), state)


# --- argument errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vocab_size": 0}, "vocab_size must be a positive integer"),
        ({"d_model": -8}, "d_model must be a positive integer"),
        ({"n_layers": 0}, "n_layers must be a positive integer"),
        ({"max_len": 2.5}, "max_len must be a positive integer"),
        ({"replicas": 0}, "replicas must be a positive integer"),
        ({"d_mlp": 0}, "d_mlp must be a positive integer"),
        ({"n_out": 0}, "n_out must be a positive integer"),
        ({"n_heads": 3}, r"d_model \(8\) must be divisible by n_heads \(3\).*\[1, 2, 4, 8\]"),
        ({"activation": "swish"}, "unknown activation 'swish'; allowed values: gelu, gelu_tanh, relu"),
        ({"causal": 1}, "causal must be True or False"),
        ({"ln_eps": 0.0}, "ln_eps must be > 0"),
    ],
)
def test_config_errors(kwargs, match):
    base = {"vocab_size": 7, "d_model": 8, "n_heads": 2, "n_layers": 2, "max_len": 10}
    with pytest.raises(ValueError, match=match):
        TransformerConfig(**{**base, **kwargs})


def test_forward_errors():
    m = small(replicas=2)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, vocab_size = 7\)"):
        m(torch.tensor([[0, 7]]))
    with pytest.raises(ValueError, match=r"token ids must lie in"):
        m(torch.tensor([[-1, 0]]))
    with pytest.raises(ValueError, match=r"sequence length must be in \[1, max_len = 10\], got 11"):
        m(tokens(2, 11))
    with pytest.raises(ValueError, match=r"the batch is empty"):
        m(tokens(0, 4))
    with pytest.raises(ValueError, match=r"tokens must have shape \(B, T\) or \(R, B, T\), got \(5,\)"):
        m(tokens(5))
    with pytest.raises(ValueError, match="tokens have a replica dimension of 3, the model has R = 2"):
        m(tokens(3, 2, 4))
    with pytest.raises(ValueError, match=r"input embeddings must have shape .* d_model = 8, got \(2, 4, 6\)"):
        m(torch.randn(2, 4, 6, dtype=F64))
    with pytest.raises(ValueError, match="input embeddings have a replica dimension of 1"):
        m(torch.randn(1, 2, 4, 8, dtype=F64))
    with pytest.raises(ValueError, match="dtype torch.float32, the model torch.float64"):
        m(torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="integer token ids or floating embeddings"):
        m(torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_mask must be a boolean tensor"):
        m(tokens(2, 4), key_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"key_mask must have shape \(B, T\) = \(2, 4\)"):
        m(tokens(2, 4), key_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask must have shape \(T, T\) = \(4, 4\)"):
        m(tokens(2, 4), attn_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="config must be a TransformerConfig"):
        Transformer({"vocab_size": 7})
    with pytest.raises(ValueError, match="stack needs equal configurations"):
        Transformer.stack([small(), small(d_model=4)])
    with pytest.raises(ValueError, match=r"targets must have shape \(B, T\)"):
        replica_cross_entropy(torch.zeros(2, 3, 4, 5), torch.zeros(3, 5, dtype=torch.long))


def test_linear_attention_scores_unnormalized_masked_and_normalized():
    from dltheory.numerics.transformer import causal_mask, linear_attention_scores

    g = torch.Generator().manual_seed(0)
    q, k = torch.rand(2, 5, 3, generator=g, dtype=torch.float64), torch.rand(2, 5, 3, generator=g, dtype=torch.float64)
    s = linear_attention_scores(q, k)
    assert torch.allclose(s, torch.einsum("btd,bsd->bts", q, k))
    m = causal_mask(5)
    sm = linear_attention_scores(q, k, m)
    assert torch.equal(sm, linear_attention_scores(q, k, m.double())) and torch.all(sm.triu(1) == 0)
    a = linear_attention_scores(q, k, m, normalize=True)
    assert torch.allclose(a.sum(-1), torch.ones(2, 5, dtype=torch.float64)) and torch.all(a >= 0)
