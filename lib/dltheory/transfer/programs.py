"""Transformers that run training: TinT's linear modules, its first-order backward rules, and one-step GD for
in-context regression.

Defined for the chapter *Transformers as programs: simulating training and ELIZA*
(``chapters/transfer/transformers-as-programs.md``), after Panigrahi, Malladi, Xia & Arora 2024, "Trainable
Transformer in Transformer" (TinT, ICML 2024; reference code ``abhishekpanigrahi1996/transformer_in_transformer``)
and von Oswald et al. 2023, "Transformers learn in-context by gradient descent" (ICML 2023): experiment (2) repeats
their comparison of a trained linear self-attention layer with one step of gradient descent.

**Linear modules by attention over prefix tokens** (TinT Sec. 2.2-2.4; ``tint_main/utils/linear/forward.py``
``LinearForward``, ``tint_main/utils/linear/backward.py`` ``LinearBackward`` and ``LinearDescent``). The weight
``W (d_out, d_in)`` of an inner linear layer lives in the activations: ``K = d_out / S`` *prefix tokens*, each
holding ``S`` rows of ``W`` side by side ("stacking"). ``S`` attention heads share these tokens: head ``s`` reads
block ``s`` of every prefix token, so ``K`` prefix tokens replace the ``d_out`` of one row per token. Three linear
self-attention layers then compute, on the data tokens, the forward ``y = W x``, the backward ``dx = W^T dy`` and,
on the prefix tokens, the descent ``W <- W - eta sum_t dy_t x_t^T``. TinT's reference uses *linear* attention for
these modules ("Currently only works without softmax!"). The book's shared transformer
(:mod:`dltheory.numerics.transformer`) has softmax attention only, so the linear attention is the small function
:func:`linear_attention` here (a linear-attention option would belong in the shared numerics).

**First-order backward** (TinT Sec. 2.5-2.6; ``tint_main/utils/layernorm/backward.py`` ``LayerNormBackward``,
``tint_main/utils/activation/backward.py`` ``ActivationBackward``): for a map ``f`` with a *symmetric* Jacobian
(layer normalization, an elementwise activation), ``J^T dy = J dy ~ N (f(x + dy / N) - f(x))``, an error
``O(1 / N)``: :func:`fd_backward`.

**Stop-gradient through attention scores** (TinT Sec. 2.7; ``tint_main/utils/self_attention/backward.py``
``AttentionBackward``): the backward through softmax attention keeps the path through the values and drops the
path through the scores, ``dx_j = sum_i a_ij V^T dy_i``: :func:`stopgrad_attention_cosines` measures it on the
shared transformer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dltheory.numerics.transformer import Transformer, TransformerConfig, linear_attention_scores
from dltheory.numerics.validate import check_int, check_positive, check_seeds

CHAPTER = "chapters/transfer/transformers-as-programs.md"


# ---------------------------------------------------------------------------------------------------------------
# linear attention and the token layout
# ---------------------------------------------------------------------------------------------------------------


def linear_attention(h: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor, wo: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head *linear* self-attention with a residual connection, ``h + sum_s ((h Q_s)(h K_s)^T * M) (h V_s) O_s``.

    ``h (B, T, D)``; per head ``s``: ``wq[s], wk[s] (D, d_k)``, ``wv[s] (D, d_v)``, ``wo[s] (d_v, D)``; ``mask``
    ``(T, T)`` of 0/1 (None: all ones). No softmax and no normalization, as in TinT's ``LinearForward`` /
    ``LinearBackward`` / ``LinearDescent`` (``tint_main/utils/linear/*.py``, ``Attention(normalize=False)``).
    Chapter: chapters/transfer/transformers-as-programs.md (experiment 1).
    """
    if h.dim() != 3:
        raise ValueError(f"h must have shape (B, T, D), got {tuple(h.shape)}")
    heads = len(wq)
    if not (len(wk) == len(wv) == len(wo) == heads) or heads == 0:
        raise ValueError("wq, wk, wv, wo must list the same positive number of heads")
    out = h
    for s in range(heads):
        scores = linear_attention_scores(h @ wq[s], h @ wk[s], mask)
        out = out + scores @ (h @ wv[s]) @ wo[s]
    return out


@dataclass(frozen=True)
class Layout:
    """Where things live in a TinT token of width :attr:`width` (chapter, experiment 1).

    ``K = d_out / S`` prefix tokens hold ``W``: prefix ``k``, block ``s`` (columns ``s d_in .. (s + 1) d_in`` of
    slot ``w``) is row ``r = k S + s``. Slot ``pid`` is the prefix token's one-hot index, ``x`` the data token's
    input, ``y`` the forward output, ``tgt`` the regression target, ``dy`` the output gradient, ``dx`` the input
    gradient. Data tokens are zero in ``w`` and ``pid``; prefix tokens are zero elsewhere."""

    d_in: int
    d_out: int
    stack: int

    @property
    def n_prefix(self) -> int:
        return self.d_out // self.stack

    def slots(self) -> dict[str, slice]:
        sizes = [("w", self.stack * self.d_in), ("pid", self.n_prefix), ("x", self.d_in), ("y", self.d_out),
                 ("tgt", self.d_out), ("dy", self.d_out), ("dx", self.d_in)]
        out, start = {}, 0
        for name, n in sizes:
            out[name] = slice(start, start + n)
            start += n
        return out

    @property
    def width(self) -> int:
        return self.slots()["dx"].stop


def make_layout(d_in: int, d_out: int, stack: int) -> Layout:
    """A validated :class:`Layout`: ``stack`` rows of ``W`` per prefix token must divide ``d_out``.
    Chapter: chapters/transfer/transformers-as-programs.md; TinT Sec. 2.3 ("stacking"), ``LinearForward``'s
    ``num_wts_per_blank = dout // num_prefixes``."""
    d_in, d_out, stack = check_int("d_in", d_in), check_int("d_out", d_out), check_int("stack", stack)
    if d_out % stack:
        raise ValueError(f"stack ({stack}) must divide d_out ({d_out}); choose one of "
                         f"{[s for s in range(1, d_out + 1) if d_out % s == 0]}")
    return Layout(d_in, d_out, stack)


def encode(lay: Layout, W: torch.Tensor, X: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """The token matrix ``(B, K + T, width)``: ``K`` prefix tokens holding ``W (B, d_out, d_in)`` stacked, then
    ``T`` data tokens holding ``X (B, T, d_in)`` (and ``targets (B, T, d_out)`` if given).
    Chapter: chapters/transfer/transformers-as-programs.md; TinT Sec. 2.3 (prefix embeddings)."""
    if W.dim() != 3 or W.shape[1:] != (lay.d_out, lay.d_in):
        raise ValueError(f"W must have shape (B, d_out, d_in) = (B, {lay.d_out}, {lay.d_in}), got {tuple(W.shape)}")
    if X.dim() != 3 or X.shape[0] != W.shape[0] or X.shape[2] != lay.d_in:
        raise ValueError(f"X must have shape (B, T, d_in) with B = {W.shape[0]}, d_in = {lay.d_in}, "
                         f"got {tuple(X.shape)}")
    B, T, K, S = X.shape[0], X.shape[1], lay.n_prefix, lay.stack
    sl = lay.slots()
    h = torch.zeros(B, K + T, lay.width, dtype=X.dtype)
    h[:, :K, sl["w"]] = W.reshape(B, K, S * lay.d_in)           # row k S + s -> prefix k, block s
    h[:, :K, sl["pid"]] = torch.eye(K, dtype=X.dtype)
    h[:, K:, sl["x"]] = X
    if targets is not None:
        h[:, K:, sl["tgt"]] = targets
    return h


def decode_weights(lay: Layout, h: torch.Tensor) -> torch.Tensor:
    """Read ``W (B, d_out, d_in)`` back from the prefix tokens of ``h`` (inverse of :func:`encode`).
    Chapter: chapters/transfer/transformers-as-programs.md."""
    K = lay.n_prefix
    return h[:, :K, lay.slots()["w"]].reshape(h.shape[0], lay.d_out, lay.d_in)


def _zeros(lay: Layout, cols: int, heads: int, dtype) -> list[torch.Tensor]:
    return [torch.zeros(lay.width, cols, dtype=dtype) for _ in range(heads)]


def forward_weights(lay: Layout, dtype=torch.float64) -> tuple[list, list, list, list]:
    """Linear-attention weights ``(wq, wk, wv, wo)`` of TinT's *Linear Forward* module: ``S`` heads; head ``s`` has
    query ``x_t`` (data tokens), key block ``s`` of ``w`` (prefix tokens), value ``pid``; its output coordinate
    ``k`` is ``<w_{kS+s}, x_t> = y_{kS+s}``, written to slot ``y``.
    Chapter: chapters/transfer/transformers-as-programs.md; TinT Sec. 2.4 and Fig. 2,
    ``tint_main/utils/linear/forward.py`` (``LinearForward``)."""
    sl, S, K, d = lay.slots(), lay.stack, lay.n_prefix, lay.d_in
    wq, wk = _zeros(lay, d, S, dtype), _zeros(lay, d, S, dtype)
    wv = _zeros(lay, K, S, dtype)
    wo = [torch.zeros(K, lay.width, dtype=dtype) for _ in range(S)]
    for s in range(S):
        wq[s][sl["x"], :] = torch.eye(d, dtype=dtype)
        wk[s][sl["w"].start + s * d: sl["w"].start + (s + 1) * d, :] = torch.eye(d, dtype=dtype)
        wv[s][sl["pid"], :] = torch.eye(K, dtype=dtype)
        for k in range(K):
            wo[s][k, sl["y"].start + k * S + s] = 1.0
    return wq, wk, wv, wo


def backward_weights(lay: Layout, dtype=torch.float64) -> tuple[list, list, list, list]:
    """Weights of TinT's *Linear Backward* module: head ``s`` has query ``(dy_{kS+s})_k`` (data tokens), key ``pid``
    (prefix tokens), value block ``s`` of ``w``; the heads add up to ``sum_r dy_r w_r = W^T dy`` in slot ``dx``.
    Chapter: chapters/transfer/transformers-as-programs.md; TinT Sec. 2.4 and Fig. 4,
    ``tint_main/utils/linear/backward.py`` (``LinearBackward``)."""
    sl, S, K, d = lay.slots(), lay.stack, lay.n_prefix, lay.d_in
    wq, wk = _zeros(lay, K, S, dtype), _zeros(lay, K, S, dtype)
    wv = _zeros(lay, d, S, dtype)
    wo = [torch.zeros(d, lay.width, dtype=dtype) for _ in range(S)]
    for s in range(S):
        for k in range(K):
            wq[s][sl["dy"].start + k * S + s, k] = 1.0
        wk[s][sl["pid"], :] = torch.eye(K, dtype=dtype)
        wv[s][sl["w"].start + s * d: sl["w"].start + (s + 1) * d, :] = torch.eye(d, dtype=dtype)
        wo[s][:, sl["dx"]] = torch.eye(d, dtype=dtype)
    return wq, wk, wv, wo


def descent_weights(lay: Layout, lr: float, dtype=torch.float64) -> tuple[list, list, list, list]:
    """Weights of TinT's *Linear Descent* module: head ``s`` has query ``pid`` (prefix tokens), key
    ``(dy_{kS+s})_k`` (data tokens), value ``x_t``; prefix ``k`` receives ``sum_t dy_{t,kS+s} x_t``, the gradient
    of row ``kS+s``, added to block ``s`` of ``w`` with weight ``-lr``.
    Chapter: chapters/transfer/transformers-as-programs.md; TinT Sec. 2.4 and Fig. 5,
    ``tint_main/utils/linear/backward.py`` (``LinearDescent``)."""
    lr = check_positive("lr", lr)
    sl, S, K, d = lay.slots(), lay.stack, lay.n_prefix, lay.d_in
    wq, wk = _zeros(lay, K, S, dtype), _zeros(lay, K, S, dtype)
    wv = _zeros(lay, d, S, dtype)
    wo = [torch.zeros(d, lay.width, dtype=dtype) for _ in range(S)]
    for s in range(S):
        wq[s][sl["pid"], :] = torch.eye(K, dtype=dtype)
        for k in range(K):
            wk[s][sl["dy"].start + k * S + s, k] = 1.0
        wv[s][sl["x"], :] = torch.eye(d, dtype=dtype)
        wo[s][:, sl["w"].start + s * d: sl["w"].start + (s + 1) * d] = -lr * torch.eye(d, dtype=dtype)
    return wq, wk, wv, wo


def loss_grad_map(lay: Layout, n_data: int, h: torch.Tensor) -> torch.Tensor:
    """Write ``dy_t = (y_t - tgt_t) / T`` into slot ``dy`` of the data tokens: the gradient of the squared loss
    ``L = (1 / 2T) sum_t ||W x_t - tgt_t||^2``. A token-wise linear map, which a ReLU MLP computes exactly as
    ``relu(a) - relu(-a)``; applied here as that MLP. Chapter: chapters/transfer/transformers-as-programs.md
    (TinT Sec. 2.1: the loss gradient is formed on the data tokens before the backward pass)."""
    n_data = check_int("n_data", n_data)
    sl = lay.slots()
    A = torch.zeros(lay.width, lay.width, dtype=h.dtype)          # a = h A: the linear pre-activation
    A[sl["y"], sl["dy"]] = torch.eye(lay.d_out, dtype=h.dtype) / n_data
    A[sl["tgt"], sl["dy"]] = -torch.eye(lay.d_out, dtype=h.dtype) / n_data
    a = h @ A
    return h + torch.relu(a) - torch.relu(-a)


def tint_sgd_step(lay: Layout, W: torch.Tensor, X: torch.Tensor, targets: torch.Tensor, lr: float) -> dict:
    """One SGD step of the inner model ``y = W x`` on the squared loss, run as a program of linear-attention
    layers over prefix + data tokens: forward, loss gradient, backward, descent, and a forward with the updated
    prefix. Returns the token matrices' readouts: ``y``, ``dx``, ``grad_W`` (from the descent), ``W_new`` and
    ``y_new``. Chapter: chapters/transfer/transformers-as-programs.md (experiment 1); TinT Sec. 2 and Thm. 1.1,
    ``tint_main/tint_creator.py`` (the order forward, backward, descent)."""
    lr = check_positive("lr", lr)
    sl, K = lay.slots(), lay.n_prefix
    T = X.shape[1]
    h = encode(lay, W, X, targets)
    h = linear_attention(h, *forward_weights(lay, h.dtype))
    h = loss_grad_map(lay, T, h)
    h = linear_attention(h, *backward_weights(lay, h.dtype))
    h_desc = linear_attention(h, *descent_weights(lay, lr, h.dtype))
    W_new = decode_weights(lay, h_desc)
    h2 = linear_attention(encode(lay, W_new, X), *forward_weights(lay, h.dtype))
    return {"y": h[:, K:, sl["y"]], "dy": h[:, K:, sl["dy"]], "dx": h[:, K:, sl["dx"]],
            "grad_W": (W - W_new) / lr, "W_new": W_new, "y_new": h2[:, K:, sl["y"]], "tokens": h}


def tint_softmax_forward(lay: Layout, W: torch.Tensor, X: torch.Tensor, eps_list) -> torch.Tensor:
    """TinT's Linear Forward on the *shared softmax transformer*, weights set by name: ``y ~ W x`` up to
    ``O(eps^2)``, one replica per temperature ``eps`` in ``eps_list``. Returns ``y (R, B, T, d_out)``.

    Softmax is not linear, so the prefix is *mirrored*: ``K`` tokens hold the rows of ``W`` with value ``+e_k`` and
    ``K`` more hold ``-W`` with value ``-e_k``. Head ``s`` scores ``eps <w_{kS+s}, x>`` and its output is
    ``2 sinh(eps s_k) / Z`` with ``Z = 2 sum_j cosh(eps s_j) = 2K (1 + O(eps^2))``; the output projection multiplies
    by ``K / eps``, leaving ``s_k (1 + O(eps^2))``. Data tokens attend only to the prefix (``attn_mask``).
    Chapter: chapters/transfer/transformers-as-programs.md (experiment 1); TinT Sec. 2.4 (the reference's
    ``LinearForward`` asserts ``use_softmax == False``: this is how far softmax attention gets)."""
    eps_list = [check_positive("eps", e) for e in eps_list]
    if not eps_list:
        raise ValueError("eps_list must be a non-empty list of positive temperatures")
    S, K, d_in, d_out = lay.stack, lay.n_prefix, lay.d_in, lay.d_out
    B, T = X.shape[0], X.shape[1]
    sw, sp_, sx, sy = 0, S * d_in, S * d_in + K, S * d_in + K + d_in    # slots: w | signed pid | x | y
    width = sy + d_out
    dh = max(d_in, K, -(-width // S))
    d = S * dh
    R = len(eps_list)
    cfg = TransformerConfig(vocab_size=2, d_model=d, n_heads=S, n_layers=1, max_len=2 * K + T, causal=False,
                            n_out=d, replicas=R, layer_norm=False, mlp=False, pos_emb=False, bias=False)
    model = Transformer(cfg, torch.Generator().manual_seed(0), dtype=X.dtype)
    e = torch.tensor(eps_list, dtype=X.dtype).view(R, 1, 1)
    q, k, v, o = (torch.zeros(R, d, d, dtype=X.dtype) for _ in range(4))
    for s in range(S):
        rows = slice(s * dh, s * dh + d_in)
        q[:, rows, sx:sx + d_in] = torch.eye(d_in, dtype=X.dtype) * math.sqrt(dh)   # undo the 1/sqrt(d_head)
        k[:, rows, sw + s * d_in: sw + (s + 1) * d_in] = torch.eye(d_in, dtype=X.dtype)
        v[:, s * dh: s * dh + K, sp_:sp_ + K] = torch.eye(K, dtype=X.dtype)
        for kk in range(K):
            o[:, sy + kk * S + s, s * dh + kk] = 1.0
    model.set_weights({"blocks.0.attn.q.weight": q * e, "blocks.0.attn.k.weight": k,
                       "blocks.0.attn.v.weight": v, "blocks.0.attn.o.weight": o * (K / e),
                       "head.weight": torch.eye(d, dtype=X.dtype)})
    h = torch.zeros(B, 2 * K + T, d, dtype=X.dtype)
    rows_w = W.reshape(B, K, S * d_in)
    h[:, :K, sw:sw + S * d_in], h[:, K:2 * K, sw:sw + S * d_in] = rows_w, -rows_w
    h[:, :K, sp_:sp_ + K], h[:, K:2 * K, sp_:sp_ + K] = torch.eye(K), -torch.eye(K)
    h[:, 2 * K:, sx:sx + d_in] = X
    mask = torch.zeros(2 * K + T, 2 * K + T, dtype=torch.bool)
    mask[:, :2 * K] = True                                           # everyone attends to the prefix only
    with torch.no_grad():
        out = model(h, attn_mask=mask)
    return out[:, :, 2 * K:, sy:sy + d_out]


# ---------------------------------------------------------------------------------------------------------------
# first-order backward through layer norm and GeLU
# ---------------------------------------------------------------------------------------------------------------


def normalize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Layer normalization without gain and bias, ``(x - mean x) / sqrt(var x + eps)`` over the last axis (the part
    TinT's ``LayerNormBackward`` differentiates by finite differences; the gain is a linear map).
    Chapter: chapters/transfer/transformers-as-programs.md; TinT Sec. 2.5, ``tint_main/utils/layernorm/backward.py``."""
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps)


def fd_backward(f, x: torch.Tensor, dy: torch.Tensor, N: float) -> torch.Tensor:
    """TinT's first-order backward ``N (f(x + dy / N) - f(x))``, equal to ``J^T dy`` up to ``O(1 / N)`` when the
    Jacobian ``J`` of ``f`` at ``x`` is symmetric. Chapter: chapters/transfer/transformers-as-programs.md; TinT
    Defs. 2.5-2.6, ``tint_main/utils/layernorm/backward.py`` and ``tint_main/utils/activation/backward.py`` (their
    ``c_fc`` adds ``dy / scale_embeddings`` to the stored input, ``proj_fc`` multiplies the difference back)."""
    N = check_positive("N", N)
    return N * (f(x + dy / N) - f(x))


def fd_backward_errors(f, x: torch.Tensor, dy: torch.Tensor, Ns) -> torch.Tensor:
    """Relative error ``||fd_backward - J^T dy|| / ||J^T dy||`` at each ``N`` in ``Ns``, against autograd's
    vector-Jacobian product. Chapter: chapters/transfer/transformers-as-programs.md (experiment 1)."""
    xr = x.detach().clone().requires_grad_()
    vjp, = torch.autograd.grad(f(xr), xr, dy)
    return torch.tensor([float((fd_backward(f, x, dy, n) - vjp).norm() / vjp.norm()) for n in Ns],
                        dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------------------
# stop-gradient through attention scores, on the shared transformer
# ---------------------------------------------------------------------------------------------------------------


def attention_layer(betas, d: int, T: int, seed: int, dtype=torch.float64) -> Transformer:
    """One bidirectional softmax attention layer of the shared transformer, ``R = len(betas)`` replicas with the
    same random ``Q, K, V, O`` (entries ``N(0, 1/d)``) except that replica ``r``'s query is scaled by
    ``betas[r]`` (the attention *sharpness*: for inputs ``x ~ N(0, I_d)`` the scores have standard deviation
    about ``beta``); no layer norm, MLP, position embedding or bias, identity head.
    Chapter: chapters/transfer/transformers-as-programs.md (experiment 1, stop-gradient)."""
    betas = [check_positive("beta", b) for b in betas]
    d, T = check_int("d", d), check_int("T", T)
    seed = check_seeds([seed])[0]
    cfg = TransformerConfig(vocab_size=2, d_model=d, n_heads=1, n_layers=1, max_len=T, causal=False, n_out=d,
                            replicas=len(betas), layer_norm=False, mlp=False, pos_emb=False, bias=False)
    model = Transformer(cfg, torch.Generator().manual_seed(seed), dtype=dtype)
    g = torch.Generator().manual_seed(seed + 1)
    mats = {n: torch.randn(d, d, generator=g, dtype=dtype) / math.sqrt(d) for n in "qkvo"}
    b = torch.tensor(betas, dtype=dtype).view(-1, 1, 1)
    # the shared transformer divides the scores by sqrt(d_head) = sqrt(d): for x ~ N(0, I_d) the scores
    # beta (M_q x) . (M_k x) / sqrt(d) then have standard deviation about beta
    model.set_weights({"blocks.0.attn.q.weight": b * mats["q"], "blocks.0.attn.k.weight": mats["k"],
                       "blocks.0.attn.v.weight": mats["v"], "blocks.0.attn.o.weight": mats["o"],
                       "head.weight": torch.eye(d, dtype=dtype)})
    return model


def stopgrad_attention_cosines(model: Transformer, x: torch.Tensor, dy: torch.Tensor) -> dict:
    """Per replica, the cosine between TinT's stop-gradient backward through the attention sublayer,
    ``dx_j = sum_i a_ij V^T O^T dy_i`` (attention probabilities held fixed), and the true gradient through it
    (autograd minus the residual path), plus each replica's mean maximal attention probability.
    ``x (B, T, d)``, ``dy (B, T, d)``. Chapter: chapters/transfer/transformers-as-programs.md; TinT Sec. 2.7,
    ``tint_main/utils/self_attention/backward.py`` (``AttentionBackward`` recomputes the scores and disperses the
    gradient through the transposed attention, never through the scores)."""
    R = model.replicas
    xr = x.detach().unsqueeze(0).expand(R, *x.shape).clone().requires_grad_()   # one leaf per replica
    out, attn = model(xr, return_attn=True)
    grad, = torch.autograd.grad((out * dy).sum(), xr)
    true_att = grad - dy                                           # drop the residual path (identical in both)
    A = attn[0].detach()[:, :, 0]                                  # (R, B, T, T)
    V = model.get_weight("blocks.0.attn.v.weight")
    O = model.get_weight("blocks.0.attn.o.weight")
    sg = torch.einsum("rbij,bie->rbje", A, dy)                     # sum_i a_ij dy_i
    sg = torch.einsum("rbje,reh,rhd->rbjd", sg, O, V)              # ... V^T O^T
    cos = (sg * true_att).flatten(1).sum(1) / (sg.flatten(1).norm(dim=1) * true_att.flatten(1).norm(dim=1))
    return {"cos": cos, "max_attn": A.max(-1).values.mean((1, 2))}


# ---------------------------------------------------------------------------------------------------------------
# in-context linear regression: one step of GD and a trained linear self-attention layer
# ---------------------------------------------------------------------------------------------------------------


def icl_tasks(n_tasks: int, N: int, d: int, generator: torch.Generator, dtype=torch.float64) -> dict:
    """``n_tasks`` noiseless regression prompts: ``w ~ N(0, I_d)``, ``x_i, x_q ~ N(0, I_d)``, ``y = w . x``.
    Returns ``X (n, N, d)``, ``y (n, N)``, ``xq (n, d)``, ``yq (n,)``. Chapter:
    chapters/transfer/transformers-as-programs.md; von Oswald et al. 2023, Sec. 3 (their regression tasks)."""
    n, N, d = check_int("n_tasks", n_tasks), check_int("N", N), check_int("d", d)
    w = torch.randn(n, d, generator=generator, dtype=dtype)
    X = torch.randn(n, N, d, generator=generator, dtype=dtype)
    xq = torch.randn(n, d, generator=generator, dtype=dtype)
    return {"X": X, "y": torch.einsum("nid,nd->ni", X, w), "xq": xq, "yq": (xq * w).sum(-1)}


def gd_one_step_prediction(X: torch.Tensor, y: torch.Tensor, xq: torch.Tensor, eta: float) -> torch.Tensor:
    """One GD step from ``w = 0`` on ``(1/2) sum_i (w . x_i - y_i)^2`` with step ``eta``, evaluated at ``xq``:
    ``eta sum_i y_i x_i . xq``. Chapter: chapters/transfer/transformers-as-programs.md; von Oswald et al. 2023,
    Prop. 1 (the construction a linear self-attention layer implements)."""
    return eta * torch.einsum("ni,nid,nd->n", y, X, xq)


def optimal_step(N: int, d: int) -> float:
    """The risk-minimizing step of one GD step from 0 for isotropic Gaussian data, ``1 / (N + d + 1)``, from
    ``E[(X^T X)^2] = N (N + d + 1) I``. Chapter: chapters/transfer/transformers-as-programs.md (derivation)."""
    return 1.0 / (check_int("N", N) + check_int("d", d) + 1)


def optimal_risk(N: int, d: int) -> float:
    """The risk ``E (y_hat - y_q)^2`` of one GD step at the optimal step, ``d (d + 1) / (N + d + 1)``.
    Chapter: chapters/transfer/transformers-as-programs.md (derivation)."""
    N, d = check_int("N", N), check_int("d", d)
    return d * (d + 1) / (N + d + 1)


def lsa_predict(params: dict, X: torch.Tensor, y: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """A one-layer linear self-attention layer on tokens ``e_i = (x_i, y_i)`` and the query ``e_q = (x_q, 0)``:
    ``y_hat = [P sum_i e_i e_i^T Q e_q]_{d+1}`` with ``P, Q (d+1, d+1)`` (``params["P"], params["Q"]``; a leading
    replica axis is allowed). Chapter: chapters/transfer/transformers-as-programs.md; von Oswald et al. 2023,
    Eq. (6) (linear self-attention, no softmax). Written here because the shared transformer has softmax
    attention only."""
    E = torch.cat([X, y.unsqueeze(-1)], -1)                                  # (n, N, d+1)
    eq = torch.cat([xq, torch.zeros_like(xq[..., :1])], -1)                  # (n, d+1)
    C = torch.einsum("nie,nif->nef", E, E)                                   # sum_i e_i e_i^T
    P, Q = params["P"], params["Q"]
    u = torch.einsum("...hk,nk->...nh", Q, eq)                               # Q e_q
    v = torch.einsum("ngh,...nh->...ng", C, u)                               # C Q e_q
    return torch.einsum("...g,...ng->...n", P[..., -1, :], v)


def train_lsa(N: int, d: int, steps: int, batch: int, lr: float, seeds, init_std: float = 0.01,
              dtype=torch.float64) -> dict:
    """Train ``len(seeds)`` linear self-attention layers side by side (replica axis) with Adam on fresh prompts
    (mean squared error at the query; learning rate decayed linearly to 0). Returns the trained
    ``P, Q (R, d+1, d+1)`` and the loss curve ``(steps, R)``.
    Chapter: chapters/transfer/transformers-as-programs.md (experiment 2); von Oswald et al. 2023, Sec. 3
    (their trained single linear self-attention layer)."""
    N, d, steps, batch = (check_int(n, v) for n, v in (("N", N), ("d", d), ("steps", steps), ("batch", batch)))
    lr, init_std = check_positive("lr", lr), check_positive("init_std", init_std)
    seeds = check_seeds(seeds)
    gens = [torch.Generator().manual_seed(10_007 * s + 3) for s in seeds]
    P = torch.stack([torch.randn(d + 1, d + 1, generator=g, dtype=dtype) for g in gens]) * init_std
    Q = torch.stack([torch.randn(d + 1, d + 1, generator=g, dtype=dtype) for g in gens]) * init_std
    P.requires_grad_()
    Q.requires_grad_()
    opt = torch.optim.Adam([P, Q], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 - k / steps)   # linear decay to 0
    data_gen = torch.Generator().manual_seed(10_007 * seeds[0] + 5)
    losses = []
    for _ in range(steps):
        t = icl_tasks(batch, N, d, data_gen, dtype)
        pred = lsa_predict({"P": P, "Q": Q}, t["X"], t["y"], t["xq"])        # (R, batch)
        loss = ((pred - t["yq"]) ** 2).mean(-1)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
    return {"P": P.detach(), "Q": Q.detach(), "losses": torch.stack(losses)}


def lsa_effective_step(P: torch.Tensor, Q: torch.Tensor, d: int) -> torch.Tensor:
    """The step of the GD step a trained LSA implements: its prediction is ``sum_i y_i x_i^T G x_q`` with
    ``G = p_y Q_xx`` (``p_y = P[d, d]``, the weight of the ``y`` coordinate of the last row, ``Q_xx`` the top-left
    block) plus terms that vanish in expectation; returns ``trace(G) / d``. Chapter:
    chapters/transfer/transformers-as-programs.md; von Oswald et al. 2023, Sec. 3 (reading off the learned step)."""
    G = P[..., d, d].unsqueeze(-1).unsqueeze(-1) * Q[..., :d, :d]
    return torch.diagonal(G, dim1=-2, dim2=-1).sum(-1) / d
