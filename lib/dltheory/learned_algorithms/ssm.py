"""From attention to state-space models: two-stage distillation of a softmax-attention teacher into an SSM.

Defined for the chapter *From attention to state-space models* (``chapters/learned-algorithms/attention-to-ssm.md``),
after Moudgil's thesis (2026), "Advancing Learnable Neural Network Training Algorithms", and its paper Moudgil,
Huang, Dhekane, Rodriguez, Zappella & Danieli 2026, "Attention to Mamba: A Recipe for Cross-Architecture
Distillation" (arXiv 2604.14191): distil a Transformer into *linearized attention* first (stage 1, the kernel trick
with learned feature maps), then into a Mamba-like SSM initialized to compute the stage-1 function (stage 2). No
official code of the thesis was found; the pieces follow published code:

* stage 1 is *attention transfer* with Hedgehog feature maps, as in LoLCATs (Zhang et al. 2025; code
  ``HazyResearch/lolcats``): ``src/model/feature_map.py`` (``SoftmaxDim``: ``phi(x) = [softmax(xW), softmax(-xW)]``,
  ``FeatureMapMLP`` with ``zero_init`` = identity ``W``), ``src/model/linear_attention/linear_attention.py``
  (``quadratic_attention``: the normalized causal linear-attention weights) and
  ``src/trainer/distill_attention_xent_mse.py`` (cross-entropy between the softmax and the linear attention
  weights of every layer and head, on the teacher's own hidden states);
* the SSM is the scalar-decay SSM of Mamba-2 / SSD (Dao & Gu 2024; code ``state-spaces/mamba``):
  ``mamba_ssm/modules/ssd_minimal.py`` (``segsum`` and the masked "quadratic" form ``Y = (L o C B^T) X`` with
  ``L_ij = prod_{j<l<=i} a_l``), the recurrence ``h_t = a_t h_{t-1} + B_t x_t^T``, ``y_t = h_t^T C_t``, and the
  decay ``a_t = exp(dt_t A)`` of ``mamba_ssm/modules/mamba2_simple.py``. Mamba's causal convolution, its output gate
  and its ``D`` skip are left out; a constant *ones channel* appended to ``x`` carries the normalizer of linear
  attention, and the output is the state readout divided by that channel.

The teacher is the book's transformer (:mod:`dltheory.numerics.transformer`). The students are *not* transformers:
they keep the teacher's embeddings, LayerNorms, MLPs and head (copied by name) and replace each attention sublayer
by a sequence mixer written here. All parameters carry a leading replica axis ``R`` (students / arms / seeds side
by side); every operation is batched over it, and since Adam is elementwise the replicas train independently.

Parameters of a student are a ``dict`` name -> tensor ``(R, *shape)``. The teacher's names are kept for the
backbone; the mixers' names are

* linear attention (``kind="linattn"``): ``blocks.{l}.attn.{q,k,v,o}.weight/bias`` (as the teacher) and the feature
  maps ``blocks.{l}.attn.fmap_q``, ``blocks.{l}.attn.fmap_k`` of shape ``(H, d_head, d_head)``;
* SSM (``kind="ssm"``): ``blocks.{l}.ssm.{C_proj,B_proj,x_proj,out_proj}.weight/bias``, the feature maps
  ``blocks.{l}.ssm.fmap_C``, ``blocks.{l}.ssm.fmap_B``, the decay rate ``blocks.{l}.ssm.A`` ``(H,)`` (clamped at
  ``>= 0``, so ``a_t <= 1``) and ``blocks.{l}.ssm.dt_proj.weight (H, d)``, ``.bias (H,)`` (``dt = softplus(.)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from dltheory.numerics.transformer import Transformer, TransformerConfig, causal_mask, linear_attention_scores
from dltheory.numerics.validate import check_int, check_positive

KINDS = ("softmax", "linattn", "ssm")
_MIXER_LA = ("q", "k", "v", "o")
_MIXER_SSM = ("C_proj", "B_proj", "x_proj", "out_proj")  # SSM name <- attention name, in the order of _MIXER_LA


# ---------------------------------------------------------------------------------------------------------------
# The task: associative recall
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecallTask:
    """Associative recall with ``pairs`` key-value pairs per sequence (distinct keys out of ``n_keys``, values out of
    ``n_values``) and a query equal to one of the keys; the answer is the query's value (``n_values`` classes).

    Each pair is one position of the sequence, embedded as ``E_key[k] + E_val[v]``; the query, last, is
    ``E_key[q] + e_query``. The codes are fixed random Gaussian vectors of norm about 1 in ``R^d_model``, part of the
    task (``codes``: ``E_key (n_keys, d)``, ``E_val (n_values, d)``, ``e_query (d,)``). With ``n_keys > d_model`` the
    keys cannot be orthogonal, so a linear memory (a ``d_state x d_v`` state) is tight while softmax attention can
    still pick the one matching key. One attention layer solves it (no induction head is needed, which keeps the
    teacher's training short). Chapter: ``chapters/learned-algorithms/attention-to-ssm.md`` (the task; the
    key-value retrieval of Schlag et al. 2021 and the recall tasks of Arora et al. 2024)."""

    pairs: int
    n_keys: int
    n_values: int
    codes: tuple

    @property
    def length(self) -> int:
        """Sequence length ``pairs + 1``."""
        return self.pairs + 1

    @property
    def d_model(self) -> int:
        """Width of the codes."""
        return self.codes[0].shape[1]


def make_recall_task(pairs: int, n_keys: int, n_values: int, d_model: int, generator: torch.Generator,
                     dtype: torch.dtype = torch.float32) -> RecallTask:
    """An associative-recall task with codes drawn from ``generator`` (see :class:`RecallTask`). Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md`` (the task)."""
    pairs, d = check_int("pairs", pairs), check_int("d_model", d_model)
    n_keys, n_values = check_int("n_keys", n_keys, minimum=2), check_int("n_values", n_values, minimum=2)
    if pairs > n_keys:
        raise ValueError(f"pairs ({pairs}) must be at most n_keys ({n_keys}): the keys of a sequence are distinct; "
                         "lower pairs or raise n_keys")
    codes = tuple(torch.randn(shape, generator=generator, dtype=torch.float64).div(math.sqrt(d)).to(dtype)
                  for shape in ((n_keys, d), (n_values, d), (d,)))
    return RecallTask(pairs, n_keys, n_values, codes)


def recall_batch(task: RecallTask, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` associative-recall sequences as input embeddings ``(n, P+1, d)`` (the codes' dtype) and their answers
    ``(n,)`` in ``[0, n_values)``. Chapter: ``chapters/learned-algorithms/attention-to-ssm.md`` (the task)."""
    if not isinstance(task, RecallTask):
        raise ValueError(f"task must be a RecallTask (make_recall_task), got {type(task).__name__}")
    n = check_int("n", n)
    P = task.pairs
    E_k, E_v, e_q = task.codes
    keys = torch.rand((n, task.n_keys), generator=generator).argsort(-1)[:, :P]
    vals = torch.randint(task.n_values, (n, P), generator=generator)
    pick = torch.randint(P, (n,), generator=generator)
    x = torch.cat([E_k[keys] + E_v[vals], (E_k[keys.gather(1, pick[:, None])[:, 0]] + e_q)[:, None]], 1)
    return x, vals.gather(1, pick[:, None])[:, 0]


def teacher_config(task: RecallTask, n_heads: int, n_layers: int = 1, replicas: int = 1) -> TransformerConfig:
    """The teacher: the book's causal transformer on the task's input embeddings (width ``d_model`` of the codes;
    its token table, of 2 unused rows, is never read) with ``n_values`` outputs.
    Chapter: ``chapters/learned-algorithms/attention-to-ssm.md`` (the teacher)."""
    return TransformerConfig(vocab_size=2, d_model=task.d_model, n_heads=n_heads, n_layers=n_layers,
                             max_len=task.length, n_out=task.n_values, replicas=replicas)


def train_teacher(model: Transformer, task: RecallTask, steps: int, batch: int, lr: float,
                  generator: torch.Generator) -> list[float]:
    """Train the ``R`` teacher replicas side by side with Adam on the cross-entropy of the answer (one fresh batch
    per step, shared by the replicas). Returns the mean loss per step. Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md`` (the teacher)."""
    steps, batch, lr = check_int("steps", steps), check_int("batch", batch), check_positive("lr", lr)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    dtype = next(model.parameters()).dtype
    losses = []
    for _ in range(steps):
        x, y = recall_batch(task, batch, generator)
        x, y = x.to(device=model.head.weight.device, dtype=dtype), y.to(model.head.weight.device)
        logits = model(x)[:, :, -1, :]
        loss = F.cross_entropy(logits.reshape(-1, task.n_values), y.repeat(model.replicas), reduction="sum") / batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()) / model.replicas)
    return losses


# ---------------------------------------------------------------------------------------------------------------
# Sequence mixers (pure functions; leading axes are broadcast)
# ---------------------------------------------------------------------------------------------------------------


def hedgehog_features(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """The Hedgehog feature map ``phi(x) = [softmax(x W), softmax(-x W)]`` over the feature axis, so
    ``phi(q) . phi(k) > 0``. ``x (R, B, H, T, d_head)``, ``W (R, H, d_head, f)`` -> ``(R, B, H, T, 2 f)``.
    LoLCATs ``src/model/feature_map.py`` (``SoftmaxDim`` after ``FeatureMapMLP``), Zhang et al. 2024 (Hedgehog,
    Sec. 4.1). Chapter: ``chapters/learned-algorithms/attention-to-ssm.md`` (stage 1)."""
    z = torch.einsum("rbhtd,rhdf->rbhtf", x, W)
    return torch.cat([torch.softmax(z, -1), torch.softmax(-z, -1)], -1)


def linear_attention_weights(phi_q: torch.Tensor, phi_k: torch.Tensor) -> torch.Tensor:
    """Causal linear-attention weights ``a_ij = phi(q_i).phi(k_j) / sum_{j'<=i} phi(q_i).phi(k_j')`` for ``j <= i``
    (0 above the diagonal): ``(..., T, N)`` twice -> ``(..., T, T)``. Katharopoulos et al. 2020, Eq. 4-6; LoLCATs
    ``quadratic_attention`` (``src/model/linear_attention/linear_attention.py``). Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md`` (stage 1)."""
    return linear_attention_scores(phi_q, phi_k, causal_mask(phi_q.shape[-2], phi_q.device), normalize=True)


def segsum(log_a: torch.Tensor) -> torch.Tensor:
    """``S_ij = sum_{j<l<=i} log a_l`` for ``j <= i`` and ``-inf`` above the diagonal: ``(..., T)`` -> ``(..., T, T)``,
    so ``exp(S)`` is the SSD mask ``L``. The stable ``segsum`` of ``mamba_ssm/modules/ssd_minimal.py`` (Dao & Gu
    2024, Sec. 6). Chapter: ``chapters/learned-algorithms/attention-to-ssm.md`` (derivation)."""
    T = log_a.shape[-1]
    x = log_a[..., None].expand(*log_a.shape, T)                       # x[..., i, j] = log a_i
    strict = torch.ones(T, T, dtype=torch.bool, device=log_a.device).tril(-1)
    s = x.masked_fill(~strict, 0.0).cumsum(-2)
    return s.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=log_a.device).tril(), -math.inf)


def ssd_masked(C: torch.Tensor, B: torch.Tensor, X: torch.Tensor, log_a: torch.Tensor | None = None
               ) -> torch.Tensor:
    """The SSM in its masked ("quadratic", attention-like) form ``Y = (L o C B^T) X`` with ``L = exp(segsum(log a))``
    (the causal mask of ones when ``log_a`` is None, i.e. ``A = I``): ``C, B (..., T, N)``, ``X (..., T, P)``,
    ``log_a (..., T)`` -> ``Y (..., T, P)``. Dao & Gu 2024, Eq. (16) / Listing 1 (``ssd_minimal_discrete``, one
    chunk). Chapter: ``chapters/learned-algorithms/attention-to-ssm.md`` (derivation, stage 2)."""
    G = C @ B.transpose(-1, -2)
    if log_a is None:
        T = C.shape[-2]
        G = G.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=C.device).tril(), 0.0)
    else:
        G = G * torch.exp(segsum(log_a))
    return G @ X


def ssd_recurrent(C: torch.Tensor, B: torch.Tensor, X: torch.Tensor, log_a: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """The same SSM as a recurrence over time: ``h_t = a_t h_{t-1} + B_t x_t^T`` (state ``(N, P)``, ``h_0 = 0``),
    ``y_t = h_t^T C_t`` (``a_t = 1`` when ``log_a`` is None: causal linear attention ``S_t = S_{t-1} + v_t k_t^T``,
    ``y_t = S_t q_t``). Shapes as :func:`ssd_masked`. Gu & Dao 2023, Eq. (2a)-(2b); Dao & Gu 2024, Sec. 3.
    Chapter: ``chapters/learned-algorithms/attention-to-ssm.md`` (derivation)."""
    h = torch.zeros(*C.shape[:-2], C.shape[-1], X.shape[-1], dtype=C.dtype, device=C.device)
    ys = []
    for t in range(C.shape[-2]):
        if log_a is not None:
            h = h * torch.exp(log_a[..., t])[..., None, None]
        h = h + B[..., t, :, None] * X[..., t, None, :]
        ys.append((h * C[..., t, :, None]).sum(-2))
    return torch.stack(ys, -2)


def with_ones_channel(X: torch.Tensor) -> torch.Tensor:
    """``[X, 1]``: the constant channel whose SSM output is the linear-attention normalizer. Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md`` (derivation)."""
    return torch.cat([X, torch.ones_like(X[..., :1])], -1)


def normalize_by_ones_channel(Y: torch.Tensor) -> torch.Tensor:
    """``Y[..., :-1] / Y[..., -1:]``: divide the SSM output by its ones channel. Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md`` (derivation)."""
    return Y[..., :-1] / Y[..., -1:]


# ---------------------------------------------------------------------------------------------------------------
# Students: the teacher's backbone around a new mixer
# ---------------------------------------------------------------------------------------------------------------


def _lin(x: torch.Tensor, params: dict, name: str) -> torch.Tensor:
    """``x W^T + b`` per replica: ``x (R, B, T, d_in)``."""
    y = torch.einsum("rbti,roi->rbto", x, params[f"{name}.weight"])
    b = params.get(f"{name}.bias")
    return y if b is None else y + b[:, None, None, :]


def _ln(x: torch.Tensor, params: dict, name: str, eps: float) -> torch.Tensor:
    if f"{name}.weight" not in params:
        return x
    y = F.layer_norm(x, (x.shape[-1],), eps=eps)
    return y * params[f"{name}.weight"][:, None, None, :] + params[f"{name}.bias"][:, None, None, :]


def _heads(x: torch.Tensor, H: int) -> torch.Tensor:
    R, B, T, d = x.shape
    return x.view(R, B, T, H, d // H).transpose(2, 3)                 # (R, B, H, T, d_head)


def _merge(y: torch.Tensor) -> torch.Tensor:
    R, B, H, T, dh = y.shape
    return y.transpose(2, 3).reshape(R, B, T, H * dh)


def mixer_output(params: dict, kind: str, layer: int, x: torch.Tensor, cfg: TransformerConfig,
                 return_weights: bool = False):
    """The output ``(R, B, T, d)`` of layer ``layer``'s sequence mixer on its (LayerNorm-ed) input ``x``, and with
    ``return_weights`` its attention weights ``(R, B, H, T, T)`` (the masked-form matrix of the SSM, normalized by
    the ones channel). ``kind``: ``"softmax"`` (the teacher's attention, for checks), ``"linattn"`` (Hedgehog linear
    attention) or ``"ssm"`` (the scalar-decay SSM with a ones channel). Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md``; the papers and files named in the module docstring."""
    H = cfg.n_heads
    if kind in ("softmax", "linattn"):
        p = f"blocks.{layer}.attn"
        q, k, v = (_heads(_lin(x, params, f"{p}.{n}"), H) for n in ("q", "k", "v"))
        if kind == "softmax":
            T = x.shape[2]
            s = (q @ k.transpose(-1, -2)) / math.sqrt(cfg.d_head)
            a = torch.softmax(s.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(),
                                            -math.inf), -1)
        else:
            a = linear_attention_weights(hedgehog_features(q, params[f"{p}.fmap_q"]),
                                         hedgehog_features(k, params[f"{p}.fmap_k"]))
        out = _lin(_merge(a @ v), params, f"{p}.o")
        return (out, a) if return_weights else out
    if kind != "ssm":
        raise ValueError(f"unknown mixer kind {kind!r}; allowed: {', '.join(KINDS)}")
    p = f"blocks.{layer}.ssm"
    C = hedgehog_features(_heads(_lin(x, params, f"{p}.C_proj"), H), params[f"{p}.fmap_C"])
    B = hedgehog_features(_heads(_lin(x, params, f"{p}.B_proj"), H), params[f"{p}.fmap_B"])
    X = _heads(_lin(x, params, f"{p}.x_proj"), H)
    dt = F.softplus(torch.einsum("rbti,rhi->rbht", x, params[f"{p}.dt_proj.weight"])
                    + params[f"{p}.dt_proj.bias"][:, None, :, None])
    log_a = -dt * params[f"{p}.A"].clamp(min=0.0)[:, None, :, None]     # (R, B, H, T), a_t = exp(-dt A) <= 1
    Y = normalize_by_ones_channel(ssd_masked(C, B, with_ones_channel(X), log_a))
    out = _lin(_merge(Y), params, f"{p}.out_proj")
    if not return_weights:
        return out
    G = (C @ B.transpose(-1, -2)) * torch.exp(segsum(log_a))
    return out, G / G.sum(-1, keepdim=True)


def student_forward(params: dict, x: torch.Tensor, kind: str, cfg: TransformerConfig,
                    return_weights: bool = False):
    """Logits ``(R, B, T, n_out)`` of the students ``params`` on input embeddings ``x (B, T, d)``: the teacher's
    pre-LN block structure (``h + mixer(ln1(h))``, ``h + mlp(ln2(h))``, ``head(ln_f(h))``, as in
    :mod:`dltheory.numerics.transformer`) with the mixer ``kind``; with ``return_weights`` also each layer's mixing
    weights. With ``kind="softmax"`` and the teacher's weights this *is* the teacher (a test checks it). Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md``."""
    if kind not in KINDS:
        raise ValueError(f"unknown mixer kind {kind!r}; allowed: {', '.join(KINDS)}")
    T = x.shape[-2]
    ref = params["head.weight"]
    h = x.to(ref.dtype).expand(ref.shape[0], *x.shape)                  # (R, B, T, d)
    if "pos_emb.weight" in params:
        h = h + params["pos_emb.weight"][:, None, :T]
    weights = []
    for layer in range(cfg.n_layers):
        res = mixer_output(params, kind, layer, _ln(h, params, f"blocks.{layer}.ln1", cfg.ln_eps), cfg,
                           return_weights)
        if return_weights:
            res, a = res
            weights.append(a)
        h = h + res
        if cfg.mlp:
            z = _lin(_ln(h, params, f"blocks.{layer}.ln2", cfg.ln_eps), params, f"blocks.{layer}.mlp.fc_in")
            z = torch.relu(z) if cfg.activation == "relu" else F.gelu(
                z, approximate="tanh" if cfg.activation == "gelu_tanh" else "none")
            h = h + _lin(z, params, f"blocks.{layer}.mlp.fc_out")
    out = _lin(_ln(h, params, "ln_f", cfg.ln_eps), params, "head")
    return (out, tuple(weights)) if return_weights else out


def _identity_fmaps(R: int, cfg: TransformerConfig, dtype, device) -> torch.Tensor:
    eye = torch.eye(cfg.d_head, dtype=dtype, device=device)
    return eye.expand(R, cfg.n_heads, cfg.d_head, cfg.d_head).clone()


def linattn_from_teacher(teacher: Transformer, dtype=torch.float64) -> dict:
    """Stage-1 student at initialization: every teacher weight copied by name (``get_weight``; the unused token
    table left out), softmax attention
    replaced by Hedgehog linear attention with identity feature maps (LoLCATs ``zero_init``). Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md`` (stage 1)."""
    params = {n: teacher.get_weight(n).to(dtype) for n in teacher.weight_names() if n != "tok_emb.weight"}
    dev = params["head.weight"].device
    for layer in range(teacher.config.n_layers):
        for side in ("q", "k"):
            params[f"blocks.{layer}.attn.fmap_{side}"] = _identity_fmaps(teacher.replicas, teacher.config, dtype, dev)
    return params


def mamba2_decay_init(R: int, H: int, generator: torch.Generator, dtype=torch.float64,
                      dt_min: float = 1e-3, dt_max: float = 0.1, a_min: float = 1.0, a_max: float = 16.0):
    """Mamba-2's default decay initialization: ``A ~ U[a_min, a_max]`` and ``dt = exp(U[log dt_min, log dt_max])``
    stored as ``dt_bias = softplus^{-1}(dt)`` (``mamba_ssm/modules/mamba2_simple.py``, ``A_init_range=(1, 16)``,
    ``dt_min=0.001``, ``dt_max=0.1``). Returns ``(A, dt_bias)``, each ``(R, H)``. Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md`` (a decay below 1 at initialization)."""
    A = a_min + (a_max - a_min) * torch.rand((R, H), generator=generator, dtype=dtype)
    dt = torch.exp(math.log(dt_min) + (math.log(dt_max) - math.log(dt_min))
                   * torch.rand((R, H), generator=generator, dtype=dtype))
    return A, dt + torch.log(-torch.expm1(-dt))


def ssm_from_linattn(la: dict, cfg: TransformerConfig, A: torch.Tensor | None = None,
                     dt_bias: torch.Tensor | None = None) -> dict:
    """Stage-2 initialization: the SSM that computes exactly the linear-attention student ``la``:
    ``C <- (W_q, phi_q)``, ``B <- (W_k, phi_k)``, ``x <- W_v``, ``out <- W_o``, ``A = 0`` (so ``a_t = 1``, the SSM's
    ``A = I``) unless ``A`` is given, ``dt_proj.weight = 0`` and ``dt_proj.bias = dt_bias`` (default
    ``softplus^{-1}(0.01)``); the backbone is copied unchanged. The paper's principled initialization of Mamba from
    the linearized attention (Moudgil et al. 2026, Sec. 3, stage 2). Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md`` (stage 2)."""
    out = {}
    R = la["head.weight"].shape[0]
    ref = la["head.weight"]
    for name, value in la.items():
        if ".attn." not in name:
            out[name] = value.detach().clone()
    for layer in range(cfg.n_layers):
        a, s = f"blocks.{layer}.attn", f"blocks.{layer}.ssm"
        for src, dst in zip(_MIXER_LA, _MIXER_SSM):
            for kind in ("weight", "bias"):
                if f"{a}.{src}.{kind}" in la:
                    out[f"{s}.{dst}.{kind}"] = la[f"{a}.{src}.{kind}"].detach().clone()
        out[f"{s}.fmap_C"] = la[f"{a}.fmap_q"].detach().clone()
        out[f"{s}.fmap_B"] = la[f"{a}.fmap_k"].detach().clone()
        out[f"{s}.A"] = (torch.zeros(R, cfg.n_heads, dtype=ref.dtype, device=ref.device) if A is None
                         else A.to(ref).clone())
        out[f"{s}.dt_proj.weight"] = torch.zeros(R, cfg.n_heads, cfg.d_model, dtype=ref.dtype, device=ref.device)
        b = torch.full((R, cfg.n_heads), math.log(math.expm1(0.01)), dtype=ref.dtype, device=ref.device)
        out[f"{s}.dt_proj.bias"] = b if dt_bias is None else dt_bias.to(ref).clone()
    return out


def randomize_mixer(params: dict, cfg: TransformerConfig, generator: torch.Generator) -> dict:
    """The same student with its mixer projections re-drawn as a fresh transformer's attention (the book's GPT-2
    initialization, :class:`dltheory.numerics.transformer.Transformer`) and identity feature maps; the backbone
    (the teacher's copied embeddings, MLPs and head) and the decay are kept. Direct distillation "from random
    initialization". Chapter: ``chapters/learned-algorithms/attention-to-ssm.md`` (the arms)."""
    ref = params["head.weight"]
    R = ref.shape[0]
    fresh = Transformer(replace(cfg, replicas=R), generator, dtype=ref.dtype, device=ref.device)
    out = {n: v.detach().clone() for n, v in params.items()}
    for layer in range(cfg.n_layers):
        for src, dst in zip(_MIXER_LA, _MIXER_SSM):
            for kind in ("weight", "bias"):
                name = f"blocks.{layer}.ssm.{dst}.{kind}"
                if name in out:
                    out[name] = fresh.get_weight(f"blocks.{layer}.attn.{src}.{kind}")
        for side in ("C", "B"):
            out[f"blocks.{layer}.ssm.fmap_{side}"] = _identity_fmaps(R, cfg, ref.dtype, ref.device)
    return out


def stack_params(dicts: Sequence[dict]) -> dict:
    """Concatenate students along the replica axis (same names in every dict). Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md`` (arms side by side)."""
    names = list(dicts[0])
    if any(set(d) != set(names) for d in dicts):
        raise ValueError("stack_params needs students with the same parameter names (same mixer kind and sizes)")
    return {n: torch.cat([d[n].detach() for d in dicts]).clone() for n in names}


# ---------------------------------------------------------------------------------------------------------------
# Losses and training
# ---------------------------------------------------------------------------------------------------------------


def attention_transfer_loss(params: dict, teacher: Transformer, x: torch.Tensor) -> torch.Tensor:
    """Stage 1 (attention transfer): per replica, the cross-entropy ``-sum_j a^T_ij log a^S_ij`` between the
    teacher's softmax attention ``a^T`` and the student's linear attention ``a^S``, both computed on the teacher's
    own hidden states (LoLCATs passes the softmax output forward while it trains the feature maps), averaged over
    layers, heads, queries and the batch. Returns ``(R,)``. LoLCATs ``distill_attention_xent_mse.py``
    (``xent_factor``); Zhang et al. 2024 (Hedgehog, Eq. 5). Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md`` (stage 1)."""
    cfg = teacher.config
    with torch.no_grad():
        _, hidden, attn = teacher(x.to(teacher.head.weight.dtype), return_hidden=True, return_attn=True)
    total = 0.0
    for layer in range(cfg.n_layers):
        x = _ln(hidden[layer].to(params["head.weight"].dtype), params, f"blocks.{layer}.ln1", cfg.ln_eps)
        p = f"blocks.{layer}.attn"
        q, k = (_heads(_lin(x, params, f"{p}.{n}"), cfg.n_heads) for n in ("q", "k"))
        a = linear_attention_weights(hedgehog_features(q, params[f"{p}.fmap_q"]),
                                     hedgehog_features(k, params[f"{p}.fmap_k"]))
        t = attn[layer].to(a.dtype)
        logs = torch.log(a.clamp_min(torch.finfo(a.dtype).tiny))
        total = total - torch.where(t > 0, t * logs, 0.0).sum(-1).mean((1, 2, 3))
    return total / cfg.n_layers


def answer_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities ``(R, B, C)`` of the answer (the last position) from logits ``(R, B, T, C)``. Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md``."""
    return torch.log_softmax(logits[:, :, -1, :], -1)


def kl_to_teacher(teacher_logp: torch.Tensor, student_logp: torch.Tensor) -> torch.Tensor:
    """``KL(teacher || student)`` of the answer distribution, mean over the batch: ``(R, B, C)`` twice -> ``(R,)``.
    The distillation loss of stage 2 and of the direct arms (the paper's KL objective, Moudgil et al. 2026, Sec. 3).
    Chapter: ``chapters/learned-algorithms/attention-to-ssm.md``."""
    return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1).mean(-1)


@dataclass
class Curves:
    """Evaluation curves of ``R`` students: ``steps (n_eval,)`` and ``acc``, ``kl`` of shape ``(n_eval, R)``
    (returned by :func:`distill`). Chapter: ``chapters/learned-algorithms/attention-to-ssm.md`` (the figure)."""

    steps: list
    acc: torch.Tensor
    kl: torch.Tensor


def evaluate(params: dict, kind: str, cfg: TransformerConfig, x: torch.Tensor, answers: torch.Tensor,
             teacher_logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy of the answer and KL to the teacher, per replica, on a fixed evaluation set (``teacher_logp``
    ``(R, B, C)`` aligned with the replicas). Chapter: ``chapters/learned-algorithms/attention-to-ssm.md``."""
    with torch.no_grad():
        lp = answer_log_probs(student_forward(params, x, kind, cfg))
        acc = (lp.argmax(-1) == answers).to(lp.dtype).mean(-1)
        return acc, kl_to_teacher(teacher_logp.to(lp.dtype), lp)


def train_stage1(params: dict, teacher: Transformer, task: RecallTask, steps: int, batch: int, lr: float,
                 generator: torch.Generator) -> tuple[dict, list[float]]:
    """Stage 1: train only the feature maps of the linear-attention students (one per teacher replica) by attention
    transfer (:func:`attention_transfer_loss`) with Adam; every other weight stays the teacher's (LoLCATs freezes all
    but the feature maps in this stage). Returns the trained students and the mean loss per step. Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md`` (stage 1)."""
    steps, batch, lr = check_int("steps", steps, minimum=0), check_int("batch", batch), check_positive("lr", lr)
    params = {n: v.detach().clone() for n, v in params.items()}
    train = [v.requires_grad_() for n, v in params.items() if ".fmap_" in n]
    opt = torch.optim.Adam(train, lr=lr)
    losses = []
    for _ in range(steps):
        x, _ = recall_batch(task, batch, generator)
        loss = attention_transfer_loss(params, teacher, x.to(teacher.head.weight.device))
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        losses.append(float(loss.detach().mean()))
    return {n: v.detach() for n, v in params.items()}, losses


def distill(params: dict, kind: str, teacher: Transformer, task: RecallTask, steps: int, batch: int, lr: float,
            generator: torch.Generator, eval_set: tuple[torch.Tensor, torch.Tensor], eval_every: int,
            ) -> tuple[dict, Curves]:
    """Stage 2 / direct distillation: train every parameter of the ``R`` students with Adam on the KL from the
    teacher's answer distribution. Student replica ``r`` learns from teacher replica ``r mod S`` (``S`` teacher
    replicas; arms are stacked arm-major, :func:`stack_params`). One fresh batch per step, shared by all replicas;
    evaluation on ``eval_set`` at step 0 and every ``eval_every`` steps. Chapter:
    ``chapters/learned-algorithms/attention-to-ssm.md`` (stage 2 and the direct arms)."""
    steps, batch = check_int("steps", steps, minimum=0), check_int("batch", batch)
    lr, eval_every = check_positive("lr", lr), check_int("eval_every", eval_every)
    cfg = teacher.config
    params = {n: v.detach().clone().requires_grad_() for n, v in params.items()}
    R, S = params["head.weight"].shape[0], teacher.replicas
    if R % S:
        raise ValueError(f"the number of students ({R}) must be a multiple of the teacher replicas ({S})")
    opt = torch.optim.Adam(list(params.values()), lr=lr)

    def teacher_lp(x):
        with torch.no_grad():
            return answer_log_probs(teacher(x.to(teacher.head.weight.dtype))).repeat(R // S, 1, 1)

    ex, ey = eval_set
    eval_lp = teacher_lp(ex)
    steps_at, accs, kls = [], [], []
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            a, k = evaluate(params, kind, cfg, ex, ey, eval_lp)
            steps_at.append(step)
            accs.append(a)
            kls.append(k)
        if step == steps:
            break
        x, _ = recall_batch(task, batch, generator)
        x = x.to(teacher.head.weight.device)
        lp = answer_log_probs(student_forward(params, x, kind, cfg))
        loss = kl_to_teacher(teacher_lp(x).to(lp.dtype), lp).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {n: v.detach() for n, v in params.items()}, Curves(steps_at, torch.stack(accs), torch.stack(kls))


__all__ = ["KINDS", "RecallTask", "recall_batch", "teacher_config", "train_teacher", "hedgehog_features",
           "linear_attention_weights", "segsum", "ssd_masked", "ssd_recurrent", "with_ones_channel",
           "normalize_by_ones_channel", "mixer_output", "student_forward", "linattn_from_teacher",
           "mamba2_decay_init", "ssm_from_linattn", "randomize_mixer", "stack_params", "attention_transfer_loss",
           "answer_log_probs", "kl_to_teacher", "Curves", "evaluate", "train_stage1", "distill"]
