"""The two-modality simple-to-hard toy (dltheory.transfer.modalities): task, model, bridges, gradient alignment,
the one-step check and batched training. Chapter: chapters/transfer/simple-to-hard.md."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltheory.transfer import modalities as M

F64 = torch.float64
SMALL = M.ToyConfig(p=3, simple_len=1, hard_len=2, d=4, d_img=5, noise=0.3, enc_width=6, core_width=8)


def _gen(s):
    return torch.Generator().manual_seed(s)


# ---------------------------------------------------------------------------------------------------------------
# Bridges and configuration
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, kind, weight", [("none", "none", 0.0), ("ce", "ce", 0.0),
                                                ("mse_0p1", "mse", 0.1), ("mse_0p03", "mse", 0.03),
                                                ("mse_2", "mse", 2.0)])
def test_parse_bridge_round_trips(name, kind, weight):
    b = M.parse_bridge(name)
    assert b.kind == kind and math.isclose(b.weight, weight) and b.name == name


@settings(max_examples=40, deadline=None)
@given(st.floats(1e-4, 100.0))
def test_bridge_names_round_trip(lam):
    b = M.Bridge("mse", lam)
    assert M.parse_bridge(b.name).name == b.name


@pytest.mark.parametrize("bad", ["mse", "mse_", "mse_-1", "mse_0", "kl", 3, "mse_abc"])
def test_parse_bridge_rejects(bad):
    with pytest.raises(ValueError, match="bridge"):
        M.parse_bridge(bad)


@pytest.mark.parametrize("kwargs, match", [(dict(p=1), "p must"), (dict(hard_len=2, simple_len=2), "hard_len"),
                                           (dict(d=0), "d must"), (dict(noise=-0.1), "noise must"),
                                           (dict(core_width=1.5), "core_width must")])
def test_config_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        M.ToyConfig(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Task and model
# ---------------------------------------------------------------------------------------------------------------


def test_sample_batch_labels_and_images():
    P = M.make_prototypes(SMALL, 0, dtype=F64)
    tok, img, lab = M.sample_batch(SMALL, P, 500, 2, _gen(1))
    assert tok.shape == (500, 2) and img.shape == (500, 2, 5) and lab.shape == (500,)
    assert torch.equal(lab, tok.sum(-1) % 3)
    resid = img - P[tok]
    assert abs(float(resid.std()) - 0.3) < 0.03 and abs(float(resid.mean())) < 0.03
    with pytest.raises(ValueError, match="length"):
        M.sample_batch(SMALL, P, 4, 3, _gen(1))
    with pytest.raises(ValueError, match="n must"):
        M.sample_batch(SMALL, P, 0, 2, _gen(1))


def test_init_replicas_do_not_depend_on_neighbours():
    a = M.init_params(SMALL, [3, 7], F64)
    b = M.init_params(SMALL, [7], F64)
    assert all(torch.equal(a[k][1], b[k][0]) for k in a)
    assert set(a) == set(M.param_shapes(SMALL)) and a["core.w1"].shape == (2, 2 * 4, 8)
    with pytest.raises(ValueError, match="seeds"):
        M.init_params(SMALL, [])


def test_core_pads_simple_inputs_with_the_pad_embedding():
    params = M.init_params(SMALL, [0, 1], F64)
    tok = torch.tensor([[2], [0]])
    padded = torch.cat([M.embed_text(params, tok), params["emb"][:, -1].view(2, 1, 1, 4).expand(2, 2, 1, 4)], 2)
    torch.testing.assert_close(M.core_logits(params, M.embed_text(params, tok), 2), M.core_logits(params, padded, 2))


def test_replica_forward_matches_a_plain_loop():
    params = M.init_params(SMALL, [0, 1, 2], F64)
    P = M.make_prototypes(SMALL, 0, dtype=F64)
    tok, img, lab = M.sample_batch(SMALL, P, 7, 2, _gen(2))
    z = M.encode_images(params, img)
    for r in range(3):
        h = torch.relu(img @ params["enc.w1"][r] + params["enc.b1"][r])
        torch.testing.assert_close(z[r], h @ params["enc.w2"][r] + params["enc.b2"][r])
        x = z[r].reshape(7, -1)
        ref = torch.relu(x @ params["core.w1"][r] + params["core.b1"][r]) @ params["core.w2"][r] + params["core.b2"][r]
        torch.testing.assert_close(M.core_logits(params, z, 2)[r], ref)
        torch.testing.assert_close(M.transcribe_logits(params, img)[r], z[r] @ params["emb"][r, :-1].T)


# ---------------------------------------------------------------------------------------------------------------
# Losses and bridges
# ---------------------------------------------------------------------------------------------------------------


def test_bridge_terms_by_kind():
    params = M.init_params(SMALL, [0, 1, 2], F64)
    P = M.make_prototypes(SMALL, 0, dtype=F64)
    mb = M.sample_mix(SMALL, P, 16, _gen(3))
    br = [M.parse_bridge(n) for n in ("none", "ce", "mse_0p5")]
    terms = M.bridge_terms(params, mb, br)
    assert terms[0] == 0
    logits = M.transcribe_logits(params, mb.simple_b_images)[1]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), mb.simple_b_tokens.reshape(-1))
    torch.testing.assert_close(terms[1], ce)
    z = M.encode_images(params, mb.simple_b_images)[2]
    e = params["emb"][2][mb.simple_b_tokens]
    torch.testing.assert_close(terms[2], 0.5 * (z - e).pow(2).sum(-1).mean())
    with pytest.raises(ValueError, match="one bridge per replica"):
        M.bridge_terms(params, mb, br[:2])


def test_mse_bridge_is_zero_when_aligned():
    params = M.init_params(SMALL, [0], F64)
    params["enc.w1"].zero_()
    params["enc.b1"].zero_()
    params["enc.b2"].copy_(params["emb"][:, 0])               # every image encodes to token 0's embedding
    P = M.make_prototypes(SMALL, 0, dtype=F64)
    mb = M.sample_mix(SMALL, P, 8, _gen(4))
    mb.simple_b_tokens.zero_()
    assert float(M.bridge_terms(params, mb, [M.parse_bridge("mse_1")])) == 0.0


# ---------------------------------------------------------------------------------------------------------------
# Gradient alignment and the one-step check
# ---------------------------------------------------------------------------------------------------------------


def test_core_grad_alignment_matches_autograd_per_replica():
    params = M.init_params(SMALL, [0, 1], F64)
    P = M.make_prototypes(SMALL, 0, dtype=F64)
    mb = M.sample_mix(SMALL, P, 16, _gen(5))
    hb = M.sample_batch(SMALL, P, 32, 2, _gen(6))
    br = [M.parse_bridge("none"), M.parse_bridge("mse_0p1")]
    cos, parts = M.core_grad_alignment(params, mb, hb, SMALL, br)
    for r in range(2):
        pr = {k: v[r:r + 1].clone().requires_grad_(True) for k, v in params.items()}
        core = [pr[k] for k in M.CORE]
        gt = torch.cat([g.reshape(-1) for g in torch.autograd.grad(M.train_loss(pr, mb, SMALL, [br[r]]).sum(), core)])
        gb = torch.cat([g.reshape(-1) for g in torch.autograd.grad(M.hard_b_loss(pr, *hb, SMALL).sum(), core)])
        torch.testing.assert_close(cos[r], torch.nn.functional.cosine_similarity(gt, gb, dim=0))
        torch.testing.assert_close(parts["dot"][r], gt @ gb)
    assert torch.all(cos.abs() <= 1 + 1e-12)


def test_one_step_change_matches_taylor():
    params = M.init_params(SMALL, [0, 1], F64)
    P = M.make_prototypes(SMALL, 0, dtype=F64)
    mb = M.sample_mix(SMALL, P, 32, _gen(7))
    hb = M.sample_batch(SMALL, P, 64, 2, _gen(8))
    br = [M.parse_bridge("ce"), M.parse_bridge("mse_0p1")]
    errs = []
    for eta in (1e-3, 1e-4):
        actual, first, second = M.one_step_change(params, mb, hb, SMALL, br, eta)
        errs.append(((actual - first).abs().max().item(), (actual - second).abs().max().item()))
        assert torch.all((actual - second).abs() <= (actual - first).abs() + 1e-15)
    # first-order error ~ eta^2 (drops ~100x for 10x smaller eta), second-order error ~ eta^3 (~1000x)
    assert errs[1][0] < errs[0][0] / 30
    assert errs[1][1] < errs[0][1] / 100 or errs[1][1] < 1e-15
    with pytest.raises(ValueError, match="eta must"):
        M.one_step_change(params, mb, hb, SMALL, br, 0.0)


def test_hessian_vector_product_by_autograd_on_quadratic():
    # the double-backward HVP used by one_step_change, against an explicit Hessian of a quadratic
    H = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    th = torch.tensor([0.3, -0.2], dtype=F64, requires_grad=True)
    v = torch.tensor([1.0, 2.0], dtype=F64)
    g, = torch.autograd.grad(0.5 * th @ H @ th, th, create_graph=True)
    hv, = torch.autograd.grad(g @ v, th)
    torch.testing.assert_close(hv, H @ v)


def test_spearman():
    assert M.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert M.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert M.spearman([1, 1, 1], [1, 2, 3]) == 0.0                # constant input: no ranking
    with pytest.raises(ValueError, match="spearman"):
        M.spearman([1, 2], [1, 2])


# ---------------------------------------------------------------------------------------------------------------
# Training: determinism, independence of replicas, learning
# ---------------------------------------------------------------------------------------------------------------


def _train(bridges, seeds, steps=30):
    P = M.make_prototypes(SMALL, 0)
    return M.train(SMALL, P, [M.parse_bridge(b) for b in bridges], seeds, steps, 16, 1e-2, early_step=10,
                   align_every=5, eval_n=32, data_seed=0)


def test_train_is_deterministic_and_replicas_are_independent():
    a = _train(["none", "mse_0p1"], [0, 1])
    b = _train(["none", "mse_0p1"], [0, 1])
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert torch.equal(a.align, b.align) and a.align_steps == [0, 5, 10] and a.align.shape == (3, 2)
    c = _train(["mse_0p1"], [1])
    torch.testing.assert_close(c.params["core.w1"][0], a.params["core.w1"][1], rtol=1e-5, atol=1e-6)


def test_train_learns_and_mse_bridge_aligns():
    h = _train(["none", "mse_1"], [0, 0], steps=300)
    P = M.make_prototypes(SMALL, 0)
    acc = M.accuracies(h.params, SMALL, P, 500, _gen(9))
    assert float(acc["hard_a"].min()) > 0.9 and float(acc["simple_b"].min()) > 0.9
    cos = M.embedding_cosine(h.params, SMALL, P, 500, _gen(9))
    assert float(cos[1]) > 0.9 and float(cos[1]) > float(cos[0])
    assert float(acc["hard_b"][1]) > 0.9
    assert set(acc) == {"hard_a", "simple_a", "hard_b", "simple_b", "hard_b_via_conversion", "transcription"}


@pytest.mark.parametrize("kwargs, match", [(dict(steps=0), "steps must"), (dict(lr=0.0), "lr must"),
                                           (dict(early_step=50), "early_step"), (dict(seeds=[0]), "one seed per")])
def test_train_rejects(kwargs, match):
    args = dict(cfg=SMALL, prototypes=M.make_prototypes(SMALL, 0), bridges=[M.parse_bridge("none")] * 2,
                seeds=[0, 1], steps=10, batch=4, lr=1e-2, early_step=5, align_every=5, eval_n=8, data_seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        M.train(**args)
