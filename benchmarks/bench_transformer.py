"""The book's transformer against torch's own layers, and batched replicas against a loop, measured side by side
in one run (ratios only).

Every chapter that needs attention uses ``dltheory.numerics.transformer.Transformer``, whose parameters carry a
leading replica dimension so that seeds train side by side. This script times one training step (forward,
cross-entropy, backward, Adam step) at d_model 128, 4 heads, 2 layers, MLP width 512, T = 64, B = 32, vocab 64,
causal, float32, on one CPU thread, on the same pre-drawn batches:

1. ours (``replicas=1``) against the same model built from ``torch.nn.TransformerEncoderLayer(batch_first=True,
   norm_first=True, activation="gelu")`` stacks with token and position embeddings, a final LayerNorm and a
   linear head (the weights are copied from ours, so both compute the same function; checked before timing);
2. ``replicas=8`` in one batched step against 8 single models stepped one after the other (same weights; the
   parameters after the steps must agree). The batched model runs as the library runs it by default, which on
   the CPU splits the replicas into chunks whose largest activation fits in 4 MiB (here: chunks of 1 replica;
   see ``Transformer.replica_slices``), and, for comparison, with all 8 replicas in every batched matmul
   (``replica_chunk=8``, what a GPU does).

The variants are timed interleaved (A, B, A, B, ...) and the median over repeats is reported.

Run: ``.venv/bin/python benchmarks/bench_transformer.py`` (about half a minute on one core).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from dltheory.numerics.transformer import Transformer, TransformerConfig, replica_cross_entropy

V, D, H, L, T, B = 64, 128, 4, 2, 64, 32


class TorchLM(nn.Module):
    """The same architecture from torch's building blocks."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(cfg.max_len, cfg.d_model))
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.mlp_width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(T)
        h = self.enc(self.tok(x) + self.pos[:T], mask=mask, is_causal=True)
        return self.head(self.ln_f(h))

    @torch.no_grad()
    def copy_from(self, m: Transformer) -> None:
        """Copy replica 0 of ``m``."""
        w = lambda n: m.get_weight(n, 0)
        self.tok.weight.copy_(w("tok_emb.weight"))
        self.pos.copy_(w("pos_emb.weight"))
        for l, layer in enumerate(self.enc.layers):
            p = f"blocks.{l}."
            a = layer.self_attn
            a.in_proj_weight.copy_(torch.cat([w(p + f"attn.{c}.weight") for c in "qkv"]))
            a.in_proj_bias.copy_(torch.cat([w(p + f"attn.{c}.bias") for c in "qkv"]))
            a.out_proj.weight.copy_(w(p + "attn.o.weight"))
            a.out_proj.bias.copy_(w(p + "attn.o.bias"))
            for ours, theirs in (("ln1", layer.norm1), ("ln2", layer.norm2)):
                theirs.weight.copy_(w(p + ours + ".weight"))
                theirs.bias.copy_(w(p + ours + ".bias"))
            for ours, theirs in (("fc_in", layer.linear1), ("fc_out", layer.linear2)):
                theirs.weight.copy_(w(p + f"mlp.{ours}.weight"))
                theirs.bias.copy_(w(p + f"mlp.{ours}.bias"))
        self.ln_f.weight.copy_(w("ln_f.weight"))
        self.ln_f.bias.copy_(w("ln_f.bias"))
        self.head.weight.copy_(w("head.weight"))
        self.head.bias.copy_(w("head.bias"))


def step_ours(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    replica_cross_entropy(model(x), y).sum().backward()
    opt.step()


def step_torch(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)).backward()
    opt.step()


def step_loop(models_opts, x, y):
    for model, opt in models_opts:
        step_ours(model, opt, x, y)


def interleaved(fns, repeats, steps):
    """Median seconds per step of each of ``fns`` (each called as ``fn(k)`` for step ``k``), timed interleaved."""
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            for k in range(steps):
                fn(k)
            ts[i].append((time.perf_counter() - t) / steps)
    return [statistics.median(t) for t in ts]


def main():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    steps = 4
    xs = torch.randint(0, V, (steps, B, T), generator=g)
    ys = torch.randint(0, V, (steps, B, T), generator=g)

    # 1. ours against torch.nn.TransformerEncoderLayer
    cfg = TransformerConfig(V, D, H, L, T)
    ours = Transformer(cfg, torch.Generator().manual_seed(1))
    theirs = TorchLM(cfg)
    theirs.copy_from(ours)
    with torch.no_grad():
        err = (ours(xs[0])[0] - theirs(xs[0])).abs().max().item()
    assert err < 1e-4, f"the two models must compute the same function (max difference {err:.2e})"
    opt_o = torch.optim.Adam(ours.parameters(), lr=1e-3)
    opt_t = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    t_ours, t_torch = interleaved([lambda k: step_ours(ours, opt_o, xs[k], ys[k]),
                                   lambda k: step_torch(theirs, opt_t, xs[k], ys[k])], repeats=7, steps=steps)
    print(f"one training step (forward + cross-entropy + backward + Adam), d_model {D}, {H} heads, {L} layers, "
          f"T = {T}, B = {B}, vocab {V}, causal, float32, 1 thread")
    print(f"per step: ours {1e3 * t_ours:.1f} ms, torch.nn.TransformerEncoderLayer {1e3 * t_torch:.1f} ms")
    print(f"RATIO ours / torch: {t_ours / t_torch:.2f}x (goal: <= 1.2x)")

    # 2. R = 8 replicas in one batched step against 8 single models stepped one after the other
    R = 8
    batched = Transformer(TransformerConfig(V, D, H, L, T, replicas=R), torch.Generator().manual_seed(2))
    whole = Transformer(batched.config, torch.Generator().manual_seed(2), replica_chunk=R)
    singles = [batched.extract_replica(r) for r in range(R)]
    opt_b = torch.optim.Adam(batched.parameters(), lr=1e-3)
    opt_w = torch.optim.Adam(whole.parameters(), lr=1e-3)
    loop = [(m, torch.optim.Adam(m.parameters(), lr=1e-3)) for m in singles]
    t_batch, t_loop, t_whole = interleaved([lambda k: step_ours(batched, opt_b, xs[k], ys[k]),
                                            lambda k: step_loop(loop, xs[k], ys[k]),
                                            lambda k: step_ours(whole, opt_w, xs[k], ys[k])], repeats=3, steps=2)
    err = max(max((batched.get_weight(n, r) - m.get_weight(n, 0)).abs().max().item(),
                  (whole.get_weight(n, r) - m.get_weight(n, 0)).abs().max().item())
              for r, m in enumerate(singles) for n in batched.weight_names())
    assert err < 1e-4, f"batched replicas and single models must agree after the same steps (max diff {err:.2e})"
    chunks = len(batched.replica_slices(B, T))
    print(f"{R} replicas: one batched step {1e3 * t_batch:.1f} ms (default: {chunks} chunk(s) on the CPU), "
          f"{1e3 * t_whole:.1f} ms (all {R} in every matmul), {R} sequential single-model steps {1e3 * t_loop:.1f} ms")
    print(f"RATIO batched / sequential: {t_batch / t_loop:.2f}x  (sequential / batched: {t_loop / t_batch:.2f}x)")
    print(f"RATIO batched, all {R} in every matmul / sequential: {t_whole / t_loop:.2f}x")


if __name__ == "__main__":
    main()
