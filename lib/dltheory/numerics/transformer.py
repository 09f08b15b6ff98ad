"""The one small transformer of the book: a GPT-2-style pre-LayerNorm transformer whose every weight can be read
and set by name, with a leading *replica* dimension so that several independent models train in one batched step.

Every chapter that needs attention uses this module -- the chapters on parsing PCFGs, transformers as programs,
attention-to-SSM distillation, context-enhanced learning and the transformer variant of progressive distillation.
Chapters that build a transformer by hand (an explicit construction, such as a layer that copies the previous
token) create a :class:`Transformer` and write its weights with :meth:`Transformer.set_weights`; chapters that
train one use it as an ordinary ``torch.nn.Module``.

Architecture (Vaswani et al., "Attention Is All You Need", NeurIPS 2017, with the pre-LayerNorm layout of GPT-2,
Radford et al., "Language Models are Unsupervised Multitask Learners", 2019)::

    h_0 = tok_emb[x] + pos_emb[0:T]                      (or given float input embeddings + pos_emb[0:T])
    h_l = h_{l-1} + attn_l(ln1_l(h_{l-1}))
    h_l = h_l + mlp_l(ln2_l(h_l))                        mlp(z) = fc_out(act(fc_in(z))),  act = GELU or ReLU
    out = head(ln_f(h_L))                                (R, B, T, n_out)

``attn`` is multi-head attention, ``softmax(Q K^T / sqrt(d_head) + mask) V`` per head, computed by
``torch.nn.functional.scaled_dot_product_attention`` (or explicitly, when the attention probabilities are asked
for), followed by the output projection ``o``. The mask is causal or bidirectional (``TransformerConfig.causal``),
intersected with an optional boolean key mask ``(B, T)`` and attention mask ``(T, T)`` / ``(B, T, T)`` given to
``forward`` (True = may attend, the convention of ``scaled_dot_product_attention``; note that
``torch.nn.MultiheadAttention``'s ``key_padding_mask`` uses the opposite convention). A query that may attend to
no key at all gets a zero attention output (instead of NaN). There is no dropout: the model is deterministic.

Parameters (names as in ``named_parameters()``, shapes *without* the leading replica dimension ``R``; linear
weights in the ``nn.Linear`` convention ``(out, in)``)::

    tok_emb.weight (V, d)            pos_emb.weight (max_len, d)          [pos_emb=True]
    blocks.{l}.ln1.weight/bias (d,)                                      [layer_norm=True]
    blocks.{l}.attn.{q,k,v,o}.weight (d, d)   .bias (d,)                 [bias=True]
    blocks.{l}.ln2.weight/bias (d,)                                      [mlp=True and layer_norm=True]
    blocks.{l}.mlp.fc_in.weight (d_mlp, d) .bias (d_mlp,)   blocks.{l}.mlp.fc_out.weight (d, d_mlp) .bias (d,)
    ln_f.weight/bias (d,)            head.weight (n_out, d)  head.bias (n_out,)

Every stored parameter has shape ``(R, *shape)``; replica ``r`` is the model ``param[r]``. The replicas never
interact: summing their losses and taking one step of an elementwise optimizer (SGD, Adam, AdamW, ...) trains
``R`` independent models (global-norm gradient clipping would couple them). All matrix products are batched over
the replica dimension (``torch.baddbmm``), so ``R = 1`` costs what a plain model costs. On the CPU, ``forward``
processes the replicas in chunks whose largest activation fits in 4 MiB (all at once elsewhere; see
:meth:`Transformer.replica_slices`): at small sizes all replicas share each matmul, which removes the per-call
overhead (measured on one CPU thread: 8 replicas of a d_model 16 model step in a quarter of the time of 8
separate models), while at sizes where one replica already fills the cache, batching more only enlarges the
working set and would be slower than separate models (``benchmarks/bench_transformer.py``).

Initialization (GPT-2): embeddings and linear weights ``N(0, 0.02^2)``, the residual projections ``attn.o`` and
``mlp.fc_out`` scaled by ``1 / sqrt(2 n_layers)``, biases 0, LayerNorm gains 1. Everything is drawn from an
explicit ``torch.Generator`` (never the global RNG), in float32 on the CPU, then cast: the construction draws one
integer ``s`` from the generator, and replica ``r`` is drawn from a fresh generator seeded by a hash of ``(s, r)``.
Hence replica ``r``'s initial weights depend only on the generator's state and ``r`` (and the configuration), not
on ``R``, the device or the dtype; the same seed gives bit-identical weights.

Public API: :class:`TransformerConfig`, :class:`Transformer` (``forward``, ``attention_weights``, ``get_weight``,
``set_weights``, ``weight_names``, ``weight_shapes``, ``extract_replica``, ``stack``, ``replica_slices``), and
the helpers :func:`causal_mask`, :func:`linear_attention_scores` (attention without a softmax) and
:func:`replica_cross_entropy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from dltheory.numerics.validate import check_int, check_nonnegative

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
_MASK64 = (1 << 64) - 1
_CPU_CHUNK_BYTES = 4 << 20


# ---------------------------------------------------------------------------------------------------------------
# configuration




def _check_bool(name: str, v) -> None:
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be True or False, got {v!r}")


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes and switches of a :class:`Transformer`, validated on construction (``ValueError`` otherwise).

    ``vocab_size`` tokens, residual width ``d_model`` split into ``n_heads`` heads of ``d_model // n_heads``,
    ``n_layers`` blocks, sequences of at most ``max_len`` positions. ``d_mlp`` is the MLP width (None: ``4 d_model``)
    and ``n_out`` the number of outputs of the head (None: ``vocab_size``); read the resolved values from
    :attr:`mlp_width` and :attr:`out_dim`. ``causal`` selects the causal (True) or bidirectional mask; ``replicas``
    is the number ``R`` of independent models stored side by side; ``activation`` is one of ``"gelu"`` (exact,
    erf), ``"gelu_tanh"`` (GPT-2's approximation) or ``"relu"``.

    Switches for explicit constructions: ``layer_norm=False`` makes every LayerNorm the identity (no ``ln*``
    parameters), ``mlp=False`` drops the MLP sublayers (and ``ln2``), ``pos_emb=False`` drops the position
    embedding, ``bias=False`` drops the biases of all linear maps (q, k, v, o, MLP, head). ``ln_eps`` is the
    LayerNorm epsilon and ``init_std`` the standard deviation of the initialization (0.02 in GPT-2).
    """

    vocab_size: int
    d_model: int
    n_heads: int
    n_layers: int
    max_len: int
    d_mlp: int | None = None
    causal: bool = True
    n_out: int | None = None
    replicas: int = 1
    activation: str = "gelu"
    layer_norm: bool = True
    mlp: bool = True
    pos_emb: bool = True
    bias: bool = True
    ln_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "max_len", "replicas"):
            check_int(name, getattr(self, name))
        for name in ("d_mlp", "n_out"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}): choose n_heads among the "
                f"divisors of d_model, {[h for h in range(1, self.d_model + 1) if self.d_model % h == 0]}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; allowed values: {', '.join(ACTIVATIONS)}")
        for name in ("causal", "layer_norm", "mlp", "pos_emb", "bias"):
            _check_bool(name, getattr(self, name))
        for name in ("ln_eps", "init_std"):
            check_nonnegative(name, getattr(self, name))
        if self.ln_eps == 0 and self.layer_norm:
            raise ValueError("ln_eps must be > 0 when layer_norm=True (a constant input would divide by zero)")

    @property
    def d_head(self) -> int:
        """Width of one attention head, ``d_model // n_heads``."""
        return self.d_model // self.n_heads

    @property
    def mlp_width(self) -> int:
        """The MLP width: ``d_mlp``, or ``4 d_model`` when ``d_mlp`` is None."""
        return 4 * self.d_model if self.d_mlp is None else self.d_mlp

    @property
    def out_dim(self) -> int:
        """The number of outputs of the head: ``n_out``, or ``vocab_size`` when ``n_out`` is None."""
        return self.vocab_size if self.n_out is None else self.n_out


# ---------------------------------------------------------------------------------------------------------------
# pure helpers


def causal_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The ``(T, T)`` boolean causal mask: entry ``(i, j)`` is True when query ``i`` may attend to key ``j``,
    i.e. ``j <= i`` (the convention of ``scaled_dot_product_attention``)."""
    check_int("T", T)
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def linear_attention_scores(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None,
                            normalize: bool = False) -> torch.Tensor:
    """Attention scores *without* a softmax: ``S = (q k^T) * mask`` (``q (..., T, d)``, ``k (..., T', d)``, ``mask``
    a 0/1 or boolean ``(T, T')`` or None), each row divided by its sum when ``normalize`` (causal linear attention,
    Katharopoulos et al. 2020, Eq. 4-6, with feature maps applied to ``q`` and ``k`` by the caller).

    The book's one linear attention, used by the chapters that need attention without a softmax: the exact TinT
    modules (``chapters/transfer/transformers-as-programs.md``: unnormalized, as TinT's ``Attention(normalize=False)``)
    and the linear-attention student (``chapters/learned-algorithms/attention-to-ssm.md``: normalized, causal)."""
    s = q @ k.transpose(-1, -2)
    if mask is not None:
        s = s.masked_fill(~mask, 0.0) if mask.dtype == torch.bool else s * mask
    return s / s.sum(-1, keepdim=True) if normalize else s


def replica_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of each replica: ``logits (R, B, T, C)``, integer ``targets (B, T)`` shared by the
    replicas or ``(R, B, T)``; positions whose target is ``ignore_index`` are left out. Returns ``(R,)``; its sum
    is the loss whose gradient trains the ``R`` replicas independently."""
    if logits.dim() != 4:
        raise ValueError(f"logits must have shape (R, B, T, C), got {tuple(logits.shape)}")
    R, B, T, C = logits.shape
    if targets.dim() == 2:
        targets = targets.unsqueeze(0)
    if targets.dim() != 3 or targets.shape[1:] != (B, T) or targets.shape[0] not in (1, R):
        raise ValueError(f"targets must have shape (B, T) = {(B, T)} or (R, B, T) = {(R, B, T)}, "
                         f"got {tuple(targets.shape)}")
    targets = targets.expand(R, B, T)
    losses = F.cross_entropy(logits.reshape(R * B * T, C), targets.reshape(-1), reduction="none",
                             ignore_index=ignore_index)
    counts = (targets != ignore_index).reshape(R, -1).sum(1)
    return losses.view(R, -1).sum(1) / counts.clamp(min=1)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


# ---------------------------------------------------------------------------------------------------------------
# layers with a leading replica dimension (private: the public surface is the Transformer and its names)


class _Linear(nn.Module):
    """``R`` affine maps ``x W_r^T + b_r`` (``weight (R, out, in)``, ``bias (R, out)``): (R, N, in) -> (R, N, out)."""

    def __init__(self, R: int, d_in: int, d_out: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(R, d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(R, d_out)) if bias else None

    def forward(self, x: torch.Tensor, rs: slice) -> torch.Tensor:
        w = self.weight[rs].transpose(1, 2)
        if self.bias is None:
            return torch.bmm(x, w)
        return torch.baddbmm(self.bias[rs].unsqueeze(1), x, w)


class _LayerNorm(nn.Module):
    """``R`` LayerNorms over the last dimension: ``weight, bias (R, d)``; ``x (R, ..., d)``."""

    def __init__(self, R: int, d: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(R, d))
        self.bias = nn.Parameter(torch.zeros(R, d))
        self.eps = eps

    def forward(self, x: torch.Tensor, rs: slice) -> torch.Tensor:
        d = x.shape[-1]
        w, b = self.weight[rs], self.bias[rs]
        if w.shape[0] == 1:
            return F.layer_norm(x, (d,), w[0], b[0], self.eps)
        shape = (w.shape[0],) + (1,) * (x.dim() - 2) + (d,)
        return torch.addcmul(b.view(shape), F.layer_norm(x, (d,), None, None, self.eps), w.view(shape))


class _Embedding(nn.Module):
    """``R`` embedding tables: ``weight (R, n, d)``."""

    def __init__(self, R: int, n: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(R, n, d))


class _Attention(nn.Module):
    """Multi-head attention with per-replica projections ``q, k, v, o``."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        R, d = cfg.replicas, cfg.d_model
        self.n_heads, self.causal = cfg.n_heads, cfg.causal
        self.q = _Linear(R, d, d, cfg.bias)
        self.k = _Linear(R, d, d, cfg.bias)
        self.v = _Linear(R, d, d, cfg.bias)
        self.o = _Linear(R, d, d, cfg.bias)

    def forward(self, x: torch.Tensor, rs: slice, allowed: torch.Tensor | None, row_ok: torch.Tensor | None,
                explicit: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        R, B, T, d = x.shape
        H = self.n_heads
        flat = x.reshape(R, B * T, d)
        # (R, B*T, d) -> (R*B, H, T, d_head): the reshape of (R, B) is a view, the transpose a stride change
        q, k, v = (lin(flat, rs).view(R * B, T, H, d // H).transpose(1, 2) for lin in (self.q, self.k, self.v))
        probs = None
        if explicit:
            scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d // H))
            if allowed is None and self.causal:
                allowed = causal_mask(T, x.device)
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            probs = torch.softmax(scores, dim=-1)
            if row_ok is not None:
                probs = probs * row_ok
            y = torch.matmul(probs, v)
            probs = probs.view(R, B, H, T, T)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=allowed is None and self.causal)
            if row_ok is not None:
                y = y * row_ok
        y = self.o(y.transpose(1, 2).reshape(R, B * T, d), rs)
        return y.view(R, B, T, d), probs


class _MLP(nn.Module):
    """``fc_out(act(fc_in(z)))`` with per-replica weights."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        R, d, m = cfg.replicas, cfg.d_model, cfg.mlp_width
        self.fc_in = _Linear(R, d, m, cfg.bias)
        self.fc_out = _Linear(R, m, d, cfg.bias)
        self.activation = cfg.activation

    def forward(self, x: torch.Tensor, rs: slice) -> torch.Tensor:
        R, B, T, d = x.shape
        h = self.fc_in(x.reshape(R, B * T, d), rs)
        if self.activation == "relu":
            h = torch.relu(h)
        else:
            h = F.gelu(h, approximate="tanh" if self.activation == "gelu_tanh" else "none")
        return self.fc_out(h, rs).view(R, B, T, d)


class _Block(nn.Module):
    """One pre-LayerNorm block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        R, d = cfg.replicas, cfg.d_model
        self.ln1 = _LayerNorm(R, d, cfg.ln_eps) if cfg.layer_norm else None
        self.attn = _Attention(cfg)
        self.ln2 = _LayerNorm(R, d, cfg.ln_eps) if cfg.layer_norm and cfg.mlp else None
        self.mlp = _MLP(cfg) if cfg.mlp else None

    def forward(self, x: torch.Tensor, rs: slice, allowed: torch.Tensor | None, row_ok: torch.Tensor | None,
                explicit: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, probs = self.attn(x if self.ln1 is None else self.ln1(x, rs), rs, allowed, row_ok, explicit)
        x = x + a
        if self.mlp is not None:
            x = x + self.mlp(x if self.ln2 is None else self.ln2(x, rs), rs)
        return x, probs


# ---------------------------------------------------------------------------------------------------------------
# the model


class Transformer(nn.Module):
    """The book's transformer: ``R = config.replicas`` independent pre-LN transformers stored side by side.

    ``Transformer(config, generator)`` initializes the weights GPT-2-style from ``generator`` (a
    ``torch.Generator``; None means a fresh one seeded with 0 -- the global RNG is never used), in float32 on
    the CPU, then moves them to ``dtype`` / ``device``. ``replica_chunk`` (an attribute, changeable later) caps
    how many replicas share one batched matmul; None chooses by device and size (:meth:`replica_slices`). See the
    module docstring for the architecture, the parameter names and what the initialization guarantees.
    """

    def __init__(self, config: TransformerConfig, generator: torch.Generator | None = None, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                 replica_chunk: int | None = None) -> None:
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise ValueError(f"config must be a TransformerConfig, got {type(config).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if replica_chunk is not None:
            check_int("replica_chunk", replica_chunk)
        self.replica_chunk = replica_chunk
        self.config = cfg = config
        R, d = cfg.replicas, cfg.d_model
        self.tok_emb = _Embedding(R, cfg.vocab_size, d)
        self.pos_emb = _Embedding(R, cfg.max_len, d) if cfg.pos_emb else None
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = _LayerNorm(R, d, cfg.ln_eps) if cfg.layer_norm else None
        self.head = _Linear(R, d, cfg.out_dim, cfg.bias)
        self._init_weights(torch.Generator().manual_seed(0) if generator is None else generator)
        self.to(dtype=dtype, device=device)

    # -- initialization -------------------------------------------------------------------------------------

    def _init_weights(self, generator: torch.Generator) -> None:
        cfg = self.config
        base = int(torch.randint(0, 2**62, (), generator=generator))
        residual_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        drawn = [(n, p) for n, p in self.named_parameters() if p.dim() == 3]  # embeddings and linear weights
        with torch.no_grad():
            for r in range(cfg.replicas):
                g = torch.Generator().manual_seed(_splitmix64(base * 0x100000001B3 + r) >> 1)
                for name, p in drawn:
                    std = residual_std if name.endswith(("attn.o.weight", "mlp.fc_out.weight")) else cfg.init_std
                    p[r].copy_(torch.randn(p.shape[1:], generator=g) * std)

    # -- weights by name ------------------------------------------------------------------------------------

    @property
    def replicas(self) -> int:
        """The number ``R`` of replicas."""
        return self.config.replicas

    def weight_names(self) -> list[str]:
        """The names of all parameters, in ``named_parameters()`` order."""
        return [n for n, _ in self.named_parameters()]

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each parameter's shape for one replica (without the leading ``R``), by name."""
        return {n: tuple(p.shape[1:]) for n, p in self.named_parameters()}

    def _param(self, name: str) -> nn.Parameter:
        params = dict(self.named_parameters())
        if not isinstance(name, str) or name not in params:
            raise ValueError(f"unknown weight name {name!r}; valid names: {', '.join(params)}")
        return params[name]

    def _check_replica(self, replica: int | None) -> None:
        if replica is not None and (isinstance(replica, bool) or not isinstance(replica, int)
                                    or not 0 <= replica < self.replicas):
            raise ValueError(f"replica must be None or an integer in [0, {self.replicas}), got {replica!r}")

    def get_weight(self, name: str, replica: int | None = None) -> torch.Tensor:
        """A detached copy of parameter ``name``: shape ``(R, *shape)``, or ``shape`` for one ``replica``."""
        self._check_replica(replica)
        p = self._param(name)
        return (p if replica is None else p[replica]).detach().clone()

    def set_weights(self, weights: dict[str, torch.Tensor], replica: int | None = None) -> None:
        """Write parameters by name (in place, without gradient tracking; optimizers holding them stay valid).

        With ``replica=None`` a value of shape ``(R, *shape)`` sets every replica and one of shape ``shape`` is
        broadcast to all replicas; with ``replica=r`` a value of shape ``shape`` is written to replica ``r`` only.
        Values are cast to the parameter's dtype and device. Every name and shape is checked before anything is
        written: an unknown name or a wrong shape raises ``ValueError`` (naming the valid names / expected shape).
        """
        if not isinstance(weights, dict):
            raise ValueError(f"weights must be a dict {{name: tensor}}, got {type(weights).__name__}")
        self._check_replica(replica)
        writes = []
        for name, value in weights.items():
            p = self._param(name)
            value = torch.as_tensor(value)
            shape, full = tuple(p.shape[1:]), tuple(p.shape)
            if replica is None and tuple(value.shape) not in (shape, full):
                raise ValueError(f"weight {name!r}: expected shape {shape} (broadcast to all replicas) or {full}, "
                                 f"got {tuple(value.shape)}")
            if replica is not None and tuple(value.shape) != shape:
                raise ValueError(f"weight {name!r} of replica {replica}: expected shape {shape}, "
                                 f"got {tuple(value.shape)}")
            if not value.is_floating_point():
                value = value.to(torch.float64)
            if not torch.isfinite(value).all():
                raise ValueError(f"weight {name!r}: value contains NaN or infinity")
            writes.append((p, value))
        with torch.no_grad():
            for p, value in writes:
                (p if replica is None else p[replica]).copy_(value.to(dtype=p.dtype, device=p.device))

    def extract_replica(self, replica: int) -> Transformer:
        """A new ``R = 1`` model holding a copy of replica ``replica``'s weights (same dtype and device)."""
        if replica is None:
            raise ValueError("extract_replica needs an integer replica index")
        self._check_replica(replica)
        p0 = next(self.parameters())
        cfg = _replace_replicas(self.config, 1)
        model = Transformer(cfg, torch.Generator().manual_seed(0), dtype=p0.dtype, device=p0.device)
        model.set_weights({n: p[replica] for n, p in self.named_parameters()})
        return model

    @staticmethod
    def stack(models: list[Transformer]) -> Transformer:
        """One model whose replicas are those of ``models`` in order (configurations equal but for ``replicas``;
        dtype and device of the first)."""
        models = list(models)
        if not models or not all(isinstance(m, Transformer) for m in models):
            raise ValueError("stack needs a non-empty list of Transformer models")
        ref = _replace_replicas(models[0].config, 1)
        for m in models[1:]:
            if _replace_replicas(m.config, 1) != ref:
                raise ValueError(f"stack needs equal configurations (replicas aside); got {ref} and {m.config}")
        p0 = next(models[0].parameters())
        cfg = _replace_replicas(ref, sum(m.replicas for m in models))
        out = Transformer(cfg, torch.Generator().manual_seed(0), dtype=p0.dtype, device=p0.device,
                          replica_chunk=models[0].replica_chunk)
        out.set_weights({n: torch.cat([dict(m.named_parameters())[n].detach().to(p0.device) for m in models])
                         for n in out.weight_names()})
        return out

    # -- forward --------------------------------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor) -> tuple[int, int]:
        """Validate the tokens / input embeddings; return ``(B, T)``."""
        cfg, R = self.config, self.replicas
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"input must be a tensor of token ids or embeddings, got {type(x).__name__}")
        if x.is_floating_point():
            if x.dim() not in (3, 4) or x.shape[-1] != cfg.d_model:
                raise ValueError(f"input embeddings must have shape (B, T, d_model) or (R, B, T, d_model) with "
                                 f"d_model = {cfg.d_model}, got {tuple(x.shape)}")
            if x.dim() == 4 and x.shape[0] != R:
                raise ValueError(f"input embeddings have a replica dimension of {x.shape[0]}, the model has "
                                 f"R = {R} replicas (drop the leading dimension to share the input)")
            dtype = self.tok_emb.weight.dtype
            if x.dtype != dtype:
                raise ValueError(f"input embeddings have dtype {x.dtype}, the model {dtype}: convert one of them")
            B, T = x.shape[-3], x.shape[-2]
        elif x.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            if x.dim() not in (2, 3):
                raise ValueError(f"tokens must have shape (B, T) or (R, B, T), got {tuple(x.shape)}")
            if x.dim() == 3 and x.shape[0] != R:
                raise ValueError(f"tokens have a replica dimension of {x.shape[0]}, the model has R = {R} "
                                 f"replicas (drop the leading dimension to share the tokens)")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= cfg.vocab_size):
                raise ValueError(f"token ids must lie in [0, vocab_size = {cfg.vocab_size}), got values in "
                                 f"[{int(x.min())}, {int(x.max())}]")
            B, T = x.shape[-2], x.shape[-1]
        else:
            raise ValueError(f"input must be integer token ids or floating embeddings, got dtype {x.dtype}")
        if T < 1 or T > cfg.max_len:
            raise ValueError(f"sequence length must be in [1, max_len = {cfg.max_len}], got {T}")
        if B < 1:
            raise ValueError("the batch is empty (B = 0); pass at least one sequence")
        return B, T

    def _embed(self, x: torch.Tensor, rs: slice, Rc: int) -> torch.Tensor:
        """The embedding ``(Rc, B, T, d)`` of replicas ``rs`` (``Rc`` of them) for a validated input."""
        cfg = self.config
        if x.is_floating_point():
            h = x[rs] if x.dim() == 4 else x.unsqueeze(0)
        else:
            idx = (x[rs] if x.dim() == 3 else x.unsqueeze(0)).long()
            if Rc > 1:  # one flat table (Rc * V, d): replica r's token t is row r * V + t
                idx = idx + torch.arange(Rc, device=x.device).view(Rc, 1, 1) * cfg.vocab_size
            h = F.embedding(idx, self.tok_emb.weight[rs].reshape(Rc * cfg.vocab_size, cfg.d_model))
        if self.pos_emb is not None:
            h = h + self.pos_emb.weight[rs, : h.shape[2]].unsqueeze(1)
        return h.expand(Rc, *h.shape[1:])

    def _mask(self, B: int, T: int, key_mask: torch.Tensor | None, attn_mask: torch.Tensor | None,
              device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The combined boolean mask ``(R or 1, B or 1, T, T)`` (None: the causal/bidirectional mask alone) and,
        when some query may attend to no key, the ``(R or 1, B or 1, T, 1)`` indicator of the queries that may
        attend to some key (such rows of the mask are then opened, and their output zeroed)."""
        if key_mask is None and attn_mask is None:
            return None, None
        R = self.replicas
        allowed = (causal_mask(T, device) if self.config.causal else torch.ones(T, T, dtype=torch.bool,
                                                                                device=device)).view(1, 1, T, T)
        if key_mask is not None:
            if not isinstance(key_mask, torch.Tensor) or key_mask.dtype != torch.bool:
                raise ValueError("key_mask must be a boolean tensor (True = a real key that may be attended to)")
            if key_mask.dim() not in (2, 3) or key_mask.shape[-2:] != (B, T) or (
                    key_mask.dim() == 3 and key_mask.shape[0] != R):
                raise ValueError(f"key_mask must have shape (B, T) = {(B, T)} or (R, B, T) = {(R, B, T)}, "
                                 f"got {tuple(key_mask.shape)}")
            km = key_mask if key_mask.dim() == 3 else key_mask.unsqueeze(0)
            allowed = allowed & km.to(device).unsqueeze(2)
        if attn_mask is not None:
            if not isinstance(attn_mask, torch.Tensor) or attn_mask.dtype != torch.bool:
                raise ValueError("attn_mask must be a boolean tensor (True = query i may attend to key j)")
            shapes = {2: (T, T), 3: (B, T, T), 4: (R, B, T, T)}
            if attn_mask.dim() not in shapes or tuple(attn_mask.shape) != shapes[attn_mask.dim()]:
                raise ValueError(f"attn_mask must have shape (T, T) = {(T, T)}, (B, T, T) = {(B, T, T)} or "
                                 f"(R, B, T, T) = {(R, B, T, T)}, got {tuple(attn_mask.shape)}")
            am = attn_mask.to(device)
            allowed = allowed & am.view((1,) * (4 - am.dim()) + tuple(am.shape))
        row_ok = allowed.any(-1, keepdim=True)
        if bool(row_ok.all()):
            return allowed, None
        return allowed | ~row_ok, row_ok

    def replica_slices(self, B: int, T: int, explicit: bool = False) -> list[slice]:
        """How ``forward`` splits the replicas for a ``(B, T)`` input: one slice (all replicas in every batched
        matmul) off the CPU, and on the CPU chunks of ``replica_chunk`` replicas, or (``replica_chunk=None``)
        chunks whose largest activation stays within 4 MiB. On the CPU, batching replicas beyond that only
        enlarges the working set (out of cache, and above glibc's mmap threshold) and is slower than chunks;
        the results do not depend on the chunking (the replicas are independent)."""
        R = self.replicas
        p = self.tok_emb.weight
        if self.replica_chunk is not None:
            chunk = self.replica_chunk
        elif p.device.type != "cpu":
            chunk = R
        else:
            cfg = self.config
            width = max(cfg.d_model, cfg.mlp_width if cfg.mlp else 0, cfg.out_dim,
                        cfg.n_heads * T if explicit else 0)
            chunk = max(1, _CPU_CHUNK_BYTES // max(1, B * T * width * p.element_size()))
        return [slice(r, min(r + chunk, R)) for r in range(0, R, chunk)]

    def forward(self, x: torch.Tensor, *, key_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, return_hidden: bool = False,
                return_attn: bool = False) -> torch.Tensor | tuple:
        """Outputs ``(R, B, T, n_out)`` for token ids ``x`` of shape ``(B, T)`` (shared by the replicas) or
        ``(R, B, T)``, or for float input embeddings ``(B, T, d_model)`` / ``(R, B, T, d_model)`` (used instead
        of the token embedding; the position embedding is still added).

        ``key_mask`` (bool ``(B, T)`` or ``(R, B, T)``, True = a real key) and ``attn_mask`` (bool ``(T, T)``,
        ``(B, T, T)`` or ``(R, B, T, T)``, True = may attend) are intersected with the causal/bidirectional mask.

        With ``return_hidden`` the residual stream is returned too, as a tuple of ``n_layers + 1`` tensors
        ``(R, B, T, d_model)``: entry 0 is the embedding, entry ``l`` the stream after block ``l``. With
        ``return_attn`` attention is computed explicitly, ``softmax(Q K^T / sqrt(d_head) + mask)``, and each
        layer's probabilities ``(R, B, n_heads, T, T)`` are returned (differentiable) as a tuple. The result is
        ``out``, ``(out, hidden)``, ``(out, attn)`` or ``(out, hidden, attn)``.
        """
        B, T = self._check_input(x)
        allowed, row_ok = self._mask(B, T, key_mask, attn_mask, x.device)
        parts = [self._forward_chunk(x, rs, B, T, allowed, row_ok, return_attn)
                 for rs in self.replica_slices(B, T, return_attn)]
        if len(parts) == 1:
            out, hidden, attn = parts[0]
        else:
            out = torch.cat([p[0] for p in parts])
            hidden = [torch.cat(hs) for hs in zip(*(p[1] for p in parts))]
            attn = [torch.cat(a) for a in zip(*(p[2] for p in parts))] if return_attn else [None]
        extras = ((tuple(hidden),) if return_hidden else ()) + ((tuple(attn),) if return_attn else ())
        return (out, *extras) if extras else out

    def _forward_chunk(self, x: torch.Tensor, rs: slice, B: int, T: int, allowed: torch.Tensor | None,
                       row_ok: torch.Tensor | None, explicit: bool) -> tuple:
        Rc = len(range(*rs.indices(self.replicas)))

        def for_chunk(m: torch.Tensor | None) -> torch.Tensor | None:  # (R | 1, B | 1, T, .) -> (Rc * B, 1, T, .)
            if m is None:
                return None
            m = m[rs] if m.shape[0] > 1 else m
            return m.expand(Rc, B, *m.shape[2:]).reshape(Rc * B, 1, *m.shape[2:])

        allowed_c, row_ok_c = for_chunk(allowed), for_chunk(row_ok)
        h = self._embed(x, rs, Rc)
        hidden, attn = [h], []
        for block in self.blocks:
            h, probs = block(h, rs, allowed_c, row_ok_c, explicit)
            hidden.append(h)
            attn.append(probs)
        if self.ln_f is not None:
            h = self.ln_f(h, rs)
        out = self.head(h.reshape(Rc, B * T, self.config.d_model), rs).view(Rc, B, T, -1)
        return out, hidden, attn

    def attention_weights(self, x: torch.Tensor, *, key_mask: torch.Tensor | None = None,
                          attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Each layer's attention probabilities ``(R, B, n_heads, T, T)``, computed explicitly (see
        :meth:`forward` with ``return_attn=True``, which also returns the outputs)."""
        return self.forward(x, key_mask=key_mask, attn_mask=attn_mask, return_attn=True)[1]


def _replace_replicas(cfg: TransformerConfig, replicas: int) -> TransformerConfig:
    return replace(cfg, replicas=replicas)
