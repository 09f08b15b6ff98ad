"""From simple to hard, across two modalities that share one core network: a toy of the Mix+ training family.

Defined for the chapter *From simple to hard, across modalities* (``chapters/transfer/simple-to-hard.md``), after
Park, Panigrahi, Cheng, Yu, Goyal & Arora 2025, "Generalizing from SIMPLE to HARD Visual Reasoning: Can We Mitigate
Modality Imbalance in VLMs?" (ICML 2025; reference code ``princeton-pli/VLM_S2H``, the data strategies of
``scripts/combine_data.py``).

**The task.** The sum mod ``p`` of ``L`` tokens in ``Z_p`` (the last entry of their running sum); SIMPLE has
``L = 2``, HARD ``L = 4``. A SIMPLE input is padded to the HARD length with a learned pad vector, so that one core
network reads both.

**The two modalities.** Modality A ("text") looks each token up in an embedding table ``E`` (``p + 1`` rows, the
last one the pad). Modality B ("image") renders token ``v`` as a fixed random prototype ``P_v`` in ``R^d_img``
plus fresh Gaussian noise, and a small ReLU encoder maps it to the embedding width. The shared **core** is a
one-hidden-layer ReLU MLP over the *concatenated* token representations; its first layer has separate weights per
position, so an image representation at position 3 or 4 is read by weights that only ever saw text there unless
something aligns the two modalities.

**The training mix** (:func:`train_loss`) is always the paper's "+" family (``combine_data.py`` option 7, Mix+:
SIMPLE text, SIMPLE image and SIMPLE image-via-text, plus HARD text) and the *bridge* varies:

* ``none``: SIMPLE-A + SIMPLE-B + HARD-A (Mix+ without its image-via-text part);
* ``ce``: + image-via-text, i.e. transcription of each SIMPLE-B image into A's vocabulary by the logits
  ``enc(image) E_{0:p}^T`` (cross-entropy) -- the toy's version of converting the image to text first. At test
  time the conversion can be used explicitly (:func:`accuracies`, ``hard_b_via_conversion``) or not;
* ``mse_<lam>``: + a paired alignment loss ``lam * mean ||enc(image_v) - E_v||^2`` on SIMPLE-B images.

Every configuration (bridge x seed) is one *replica* of the same model, stored side by side with a leading replica
axis ``R``; one training step trains all of them (their losses are summed, and the elementwise Adam of
:mod:`dltheory.numerics.optimizers` keeps them independent).

**Gradient alignment** (:func:`core_grad_alignment`): the cosine between the gradient of the held-out HARD-B loss
and the gradient of the training mix's loss, both with respect to the shared core's parameters -- the quantity the
paper's Sec. 5 (loss dynamics and gradient alignment) tracks between the HARD-image loss and the training loss. Its
first-order meaning, ``L_B(theta - eta g) - L_B(theta) = -eta <grad L_B, g> + O(eta^2)``, is checked by
:func:`one_step_change`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dltheory.numerics.optimizers import adam_init, adam_update
from dltheory.numerics.validate import check_int, check_nonnegative, check_positive, check_seeds

CORE = ("core.w1", "core.b1", "core.w2", "core.b2")
_CHAPTER = "chapters/transfer/simple-to-hard.md"


# ---------------------------------------------------------------------------------------------------------------
# Bridges and configuration
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bridge:
    """One bridge between the modalities: ``kind`` is ``"none"``, ``"ce"`` (image-via-text transcription) or
    ``"mse"`` (paired alignment loss of weight ``weight``). ``name`` is the stable name used in value names
    (``none``, ``ce``, ``mse_0p1``)."""

    kind: str
    weight: float = 0.0

    @property
    def name(self) -> str:
        if self.kind != "mse":
            return self.kind
        return "mse_" + f"{self.weight:g}".replace(".", "p").replace("-", "m")


def parse_bridge(name: str) -> Bridge:
    """The :class:`Bridge` named ``name``: ``"none"``, ``"ce"`` or ``"mse_<lam>"`` with ``p`` for the decimal point
    (``"mse_0p03"`` is weight 0.03). Chapter: ``chapters/transfer/simple-to-hard.md`` (the bridges); paper Sec. 4
    (image-via-text supervision), ``scripts/combine_data.py`` of the reference code."""
    if not isinstance(name, str):
        raise ValueError(f"a bridge name must be a string like 'none', 'ce' or 'mse_0p1', got {name!r}")
    if name in ("none", "ce"):
        return Bridge(name)
    if name.startswith("mse_"):
        try:
            lam = float(name[4:].replace("p", "."))
        except ValueError:
            lam = -1.0
        if lam > 0 and math.isfinite(lam):
            return Bridge("mse", lam)
    raise ValueError(f"unknown bridge {name!r}; use 'none', 'ce' or 'mse_<weight>' with p for the decimal point, "
                     "e.g. 'mse_0p1'")


@dataclass(frozen=True)
class ToyConfig:
    """Sizes of the toy: modulus ``p``, SIMPLE and HARD lengths, embedding width ``d``, image width ``d_img`` and
    pixel noise ``noise``, encoder width ``enc_width`` and core width ``core_width``. Validated on construction."""

    p: int = 5
    simple_len: int = 2
    hard_len: int = 4
    d: int = 16
    d_img: int = 16
    noise: float = 0.5
    enc_width: int = 64
    core_width: int = 256

    def __post_init__(self):
        check_int("p", self.p, minimum=2)
        check_int("simple_len", self.simple_len)
        check_int("hard_len", self.hard_len)
        if self.hard_len <= self.simple_len:
            raise ValueError(f"hard_len ({self.hard_len}) must exceed simple_len ({self.simple_len})")
        for name in ("d", "d_img", "enc_width", "core_width"):
            check_int(name, getattr(self, name))
        check_nonnegative("noise", self.noise)


def make_prototypes(cfg: ToyConfig, seed: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The fixed "rendering" of each token in modality B: prototypes ``P (p, d_img)`` with i.i.d. ``N(0, 1)``
    entries, drawn from ``torch.Generator().manual_seed(seed)``. Chapter: ``chapters/transfer/simple-to-hard.md``
    (the toy); the analog of the paper's rendered images (Sec. 2)."""
    seed = check_seeds([seed])[0]
    g = torch.Generator().manual_seed(seed)
    return torch.randn((cfg.p, cfg.d_img), generator=g).to(device=device, dtype=dtype)


def sample_batch(cfg: ToyConfig, prototypes: torch.Tensor, n: int, length: int, generator: torch.Generator):
    """``n`` examples of length ``length``: uniform tokens ``(n, length)``, their images
    ``P[tokens] + noise * N(0, 1)`` of shape ``(n, length, d_img)`` and the labels ``sum(tokens) mod p``.
    Chapter: ``chapters/transfer/simple-to-hard.md``; the running sum is the toy's multi-step algorithm (the
    paper's Table Readout / Grid Navigation are longer versions of one repeated step, Sec. 2)."""
    n = check_int("n", n)
    length = check_int("length", length)
    if length > cfg.hard_len:
        raise ValueError(f"length ({length}) must be at most hard_len ({cfg.hard_len})")
    tokens = torch.randint(cfg.p, (n, length), generator=generator).to(prototypes.device)
    noise = torch.randn((n, length, cfg.d_img), generator=generator).to(prototypes.device, prototypes.dtype)
    images = prototypes[tokens] + cfg.noise * noise
    return tokens, images, tokens.sum(-1) % cfg.p


# ---------------------------------------------------------------------------------------------------------------
# The model: R replicas side by side
# ---------------------------------------------------------------------------------------------------------------


def param_shapes(cfg: ToyConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape for one replica, by name: the text embedding ``emb`` (``p + 1`` rows, the last is the
    pad), the image encoder ``enc.*`` and the shared core ``core.*`` (its first layer reads the ``hard_len``
    concatenated token representations)."""
    return {
        "emb": (cfg.p + 1, cfg.d),
        "enc.w1": (cfg.d_img, cfg.enc_width), "enc.b1": (cfg.enc_width,),
        "enc.w2": (cfg.enc_width, cfg.d), "enc.b2": (cfg.d,),
        "core.w1": (cfg.hard_len * cfg.d, cfg.core_width), "core.b1": (cfg.core_width,),
        "core.w2": (cfg.core_width, cfg.p), "core.b2": (cfg.p,),
    }


def init_params(cfg: ToyConfig, seeds: Sequence[int], dtype=torch.float32, device=None) -> dict[str, torch.Tensor]:
    """Parameters of ``R = len(seeds)`` replicas: replica ``r`` is drawn from ``torch.Generator().manual_seed(
    seeds[r])`` alone (so it does not depend on its neighbours). Embeddings ``N(0, 1)``, weights ``N(0, 1/fan_in)``
    (He-like for the ReLU layers), biases 0; drawn on the CPU, then moved to ``device``. Chapter:
    ``chapters/transfer/simple-to-hard.md``."""
    seeds = check_seeds(seeds)
    shapes = param_shapes(cfg)
    out = {k: [] for k in shapes}
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        for name, shape in shapes.items():
            if name.endswith(("b1", "b2")):
                t = torch.zeros(shape)
            elif name == "emb":
                t = torch.randn(shape, generator=g)
            else:
                gain = 2.0 if name.endswith("w1") else 1.0
                t = torch.randn(shape, generator=g) * math.sqrt(gain / shape[0])
            out[name].append(t)
    return {k: torch.stack(v).to(device=device, dtype=dtype) for k, v in out.items()}


def embed_text(params, tokens: torch.Tensor) -> torch.Tensor:
    """Modality A: ``emb[tokens]`` for every replica, ``(R, n, L, d)``."""
    return params["emb"][:, tokens]


def encode_images(params, images: torch.Tensor) -> torch.Tensor:
    """Modality B: the encoder ``relu(x W1 + b1) W2 + b2`` applied to every image, ``(R, n, L, d)``. ``images`` is
    ``(n, L, d_img)`` (shared by the replicas)."""
    n, L, di = images.shape
    x = images.reshape(1, n * L, di).expand(params["enc.w1"].shape[0], -1, -1)
    h = torch.relu(torch.baddbmm(params["enc.b1"].unsqueeze(1), x, params["enc.w1"]))
    z = torch.baddbmm(params["enc.b2"].unsqueeze(1), h, params["enc.w2"])
    return z.view(-1, n, L, z.shape[-1])


def core_logits(params, reps: torch.Tensor, hard_len: int) -> torch.Tensor:
    """The shared core on token representations ``reps (R, n, L, d)`` with ``L <= hard_len`` (padded with the pad
    embedding ``emb[p]``): ``relu([r_1, ..., r_H] W1 + b1) W2 + b2``, logits ``(R, n, p)``."""
    R, n, L, d = reps.shape
    if L < hard_len:
        pad = params["emb"][:, -1].view(R, 1, 1, d).expand(R, n, hard_len - L, d)
        reps = torch.cat([reps, pad], dim=2)
    x = reps.reshape(R, n, hard_len * d)
    h = torch.relu(torch.baddbmm(params["core.b1"].unsqueeze(1), x, params["core.w1"]))
    return torch.baddbmm(params["core.b2"].unsqueeze(1), h, params["core.w2"])


def transcribe_logits(params, images: torch.Tensor) -> torch.Tensor:
    """Image-via-text: the logits ``enc(image) E_{0:p}^T`` of transcribing each image into A's vocabulary
    (``(R, n, L, p)``); the toy's "convert the image to text" step (paper Sec. 2, image-via-text supervision)."""
    z = encode_images(params, images)
    return torch.einsum("rnld,rvd->rnlv", z, params["emb"][:, :-1])


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per replica: logits ``(R, ..., C)``, labels broadcast to ``(R, ...)``; returns ``(R,)``."""
    R, C = logits.shape[0], logits.shape[-1]
    lab = labels.expand(logits.shape[:-1]).reshape(-1)
    return F.cross_entropy(logits.reshape(-1, C), lab, reduction="none").view(R, -1).mean(1)


# ---------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class MixBatch:
    """One training batch of the Mix+ family: HARD-A tokens, SIMPLE-A tokens, SIMPLE-B tokens and images, with
    labels. The same SIMPLE-B images serve the image supervision and the bridges."""

    hard_tokens: torch.Tensor
    hard_labels: torch.Tensor
    simple_tokens: torch.Tensor
    simple_labels: torch.Tensor
    simple_b_tokens: torch.Tensor
    simple_b_images: torch.Tensor
    simple_b_labels: torch.Tensor


def sample_mix(cfg: ToyConfig, prototypes: torch.Tensor, n: int, generator: torch.Generator) -> MixBatch:
    """A :class:`MixBatch` with ``n`` examples of each component. The reference's Mix+ gives half of the data to
    HARD text and splits the SIMPLE half equally among text, image and image-via-text (``combine_data.py``,
    option 7); here every component has ``n`` examples and the bridge terms are added with their weights."""
    ht, _, hl = sample_batch(cfg, prototypes, n, cfg.hard_len, generator)
    st, _, sl = sample_batch(cfg, prototypes, n, cfg.simple_len, generator)
    bt, bi, bl = sample_batch(cfg, prototypes, n, cfg.simple_len, generator)
    return MixBatch(ht, hl, st, sl, bt, bi, bl)


def bridge_terms(params, batch: MixBatch, bridges: Sequence[Bridge]) -> torch.Tensor:
    """The bridge loss of each replica ``(R,)``: 0 for ``none``; the transcription cross-entropy for ``ce``;
    ``weight * mean ||enc(image) - emb[token]||^2`` for ``mse``. ``bridges[r]`` is replica ``r``'s bridge.
    Chapter: ``chapters/transfer/simple-to-hard.md``; paper Sec. 4 (image-via-text) and the reference's
    ``combine_data.py`` (``image2answer+text`` = convert, then answer)."""
    R = params["emb"].shape[0]
    if len(bridges) != R:
        raise ValueError(f"need one bridge per replica: {len(bridges)} bridges for R = {R} replicas")
    kinds = [b.kind for b in bridges]
    dt, dev = params["emb"].dtype, params["emb"].device
    out = torch.zeros(R, dtype=dt, device=dev)
    z = encode_images(params, batch.simple_b_images)
    if "ce" in kinds:
        logits = torch.einsum("rnld,rvd->rnlv", z, params["emb"][:, :-1])
        ce = _ce(logits, batch.simple_b_tokens)
        mask = torch.tensor([k == "ce" for k in kinds], dtype=dt, device=dev)
        out = out + mask * ce
    if "mse" in kinds:
        target = embed_text(params, batch.simple_b_tokens)
        mse = (z - target).pow(2).sum(-1).mean((1, 2))
        lam = torch.tensor([b.weight if b.kind == "mse" else 0.0 for b in bridges], dtype=dt, device=dev)
        out = out + lam * mse
    return out


def task_loss(params, batch: MixBatch, cfg: ToyConfig) -> torch.Tensor:
    """The task part of the Mix+ loss per replica ``(R,)``: cross-entropy of the core on HARD-A, SIMPLE-A and
    SIMPLE-B (images through the encoder), summed."""
    la = _ce(core_logits(params, embed_text(params, batch.hard_tokens), cfg.hard_len), batch.hard_labels)
    ls = _ce(core_logits(params, embed_text(params, batch.simple_tokens), cfg.hard_len), batch.simple_labels)
    lb = _ce(core_logits(params, encode_images(params, batch.simple_b_images), cfg.hard_len), batch.simple_b_labels)
    return la + ls + lb


def train_loss(params, batch: MixBatch, cfg: ToyConfig, bridges: Sequence[Bridge]) -> torch.Tensor:
    """The full training loss of each replica ``(R,)``: :func:`task_loss` + :func:`bridge_terms`. Chapter:
    ``chapters/transfer/simple-to-hard.md``; the Mix+ family of the paper (Sec. 4) and ``combine_data.py``."""
    return task_loss(params, batch, cfg) + bridge_terms(params, batch, bridges)


def core_loss(params, reps: torch.Tensor, labels: torch.Tensor, hard_len: int) -> torch.Tensor:
    """The core's mean cross-entropy per replica ``(R,)`` on token representations ``reps (R, n, L, d)`` (text
    embeddings, encoded images or any mixture of the two) with labels ``(n,)``. Chapter:
    ``chapters/transfer/simple-to-hard.md`` (exercises)."""
    return _ce(core_logits(params, reps, hard_len), labels)


def hard_b_loss(params, tokens: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, cfg: ToyConfig):
    """The held-out HARD-B loss per replica ``(R,)``: the core on the encoded HARD images."""
    return _ce(core_logits(params, encode_images(params, images), cfg.hard_len), labels)


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    num = (a * b).sum(1)
    return num / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)


def core_grad_alignment(params, batch: MixBatch, hard_b, cfg: ToyConfig, bridges: Sequence[Bridge]):
    """Gradient alignment on the shared core, per replica ``(R,)``: ``cos(grad_core L_HARD-B, grad_core L_train)``,
    with ``hard_b = (tokens, images, labels)`` a held-out HARD-B batch. Chapter:
    ``chapters/transfer/simple-to-hard.md``; paper Sec. 5 (gradient alignment between the HARD-image loss and the
    training loss). Also returns ``(<g_B, g_train>, |g_B|, |g_train|)`` as a dict."""
    p = {k: v.detach().requires_grad_(k in CORE) for k, v in params.items()}
    core = [p[k] for k in CORE]
    g_tr = torch.autograd.grad(train_loss(p, batch, cfg, bridges).sum(), core)
    g_b = torch.autograd.grad(hard_b_loss(p, *hard_b, cfg).sum(), core)
    R = params["emb"].shape[0]
    a = torch.cat([g.reshape(R, -1) for g in g_b], 1)
    b = torch.cat([g.reshape(R, -1) for g in g_tr], 1)
    return _cos(a, b), {"dot": (a * b).sum(1), "norm_b": a.norm(dim=1), "norm_train": b.norm(dim=1)}


@torch.no_grad()
def accuracies(params, cfg: ToyConfig, prototypes: torch.Tensor, n: int, generator: torch.Generator) -> dict:
    """Accuracies per replica on ``n`` fresh examples each: ``hard_a``, ``simple_a``, ``hard_b``, ``simple_b`` and
    ``hard_b_via_conversion`` (each HARD image first transcribed into A's vocabulary by the argmax of
    :func:`transcribe_logits`, then read as text -- the explicit image-to-text conversion of the paper's
    image-via-text supervision), plus ``transcription`` (the per-token accuracy of that conversion). Returns
    tensors of shape ``(R,)``."""
    out = {}
    for name, L in (("hard", cfg.hard_len), ("simple", cfg.simple_len)):
        tok, img, lab = sample_batch(cfg, prototypes, n, L, generator)
        out[f"{name}_a"] = (core_logits(params, embed_text(params, tok), cfg.hard_len).argmax(-1)
                            == lab).float().mean(1)
        out[f"{name}_b"] = (core_logits(params, encode_images(params, img), cfg.hard_len).argmax(-1)
                            == lab).float().mean(1)
        if name == "hard":
            conv = transcribe_logits(params, img).argmax(-1)                       # (R, n, L)
            out["transcription"] = (conv == tok).float().mean((1, 2))
            reps = torch.gather(params["emb"].unsqueeze(1).expand(-1, n, -1, -1), 2,
                                conv.unsqueeze(-1).expand(-1, -1, -1, cfg.d))
            out["hard_b_via_conversion"] = (core_logits(params, reps, cfg.hard_len).argmax(-1) == lab).float().mean(1)
    return out


@torch.no_grad()
def embedding_cosine(params, cfg: ToyConfig, prototypes: torch.Tensor, n: int, generator: torch.Generator):
    """Embedding alignment per replica ``(R,)``: the mean over ``n`` fresh images of ``cos(enc(image_v), emb[v])``,
    how closely modality B's representation of a token points along A's. Chapter:
    ``chapters/transfer/simple-to-hard.md``."""
    tok, img, _ = sample_batch(cfg, prototypes, n, 1, generator)
    z = encode_images(params, img)[:, :, 0]
    e = embed_text(params, tok)[:, :, 0]
    return F.cosine_similarity(z, e, dim=-1).mean(1)


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class History:
    """What :func:`train` records: ``align_steps`` (list) and ``align`` (``(len(align_steps), R)``), the
    gradient-alignment cosines on the core; ``loss_steps`` and ``hard_b_loss`` (``(len, R)``), the held-out HARD-B
    loss; ``params`` at the end and ``early_params`` (after ``early_step`` steps)."""

    align_steps: list
    align: torch.Tensor
    loss_steps: list
    hard_b_loss: torch.Tensor
    params: dict
    early_params: dict


def train(cfg: ToyConfig, prototypes: torch.Tensor, bridges: Sequence[Bridge], seeds: Sequence[int], steps: int,
          batch: int, lr: float, early_step: int, align_every: int, eval_n: int, data_seed: int) -> History:
    """Train ``R = len(bridges)`` replicas (replica ``r`` with bridge ``bridges[r]``, initialized from
    ``seeds[r]``) side by side for ``steps`` Adam steps (``lr``, betas 0.9 / 0.999, eps 1e-8; the pure update of
    :mod:`dltheory.numerics.optimizers`) on fresh Mix+ batches of ``batch`` examples per component (drawn from
    ``data_seed``; every replica sees the same data). Every ``align_every`` steps up to ``early_step`` the gradient
    alignment on the core is measured on a fixed held-out HARD-B batch of ``eval_n`` examples; the HARD-B loss is
    logged along the way. Chapter: ``chapters/transfer/simple-to-hard.md``."""
    steps, batch, eval_n = check_int("steps", steps), check_int("batch", batch), check_int("eval_n", eval_n)
    early_step = check_int("early_step", early_step, minimum=0)
    align_every = check_int("align_every", align_every)
    lr = check_positive("lr", lr)
    seeds = check_seeds(seeds)
    bridges = list(bridges)
    if len(bridges) != len(seeds):
        raise ValueError(f"need one seed per bridge: {len(seeds)} seeds for {len(bridges)} bridges")
    if early_step > steps:
        raise ValueError(f"early_step ({early_step}) must be at most steps ({steps})")
    g = torch.Generator().manual_seed(check_seeds([data_seed])[0])
    hard_b = sample_batch(cfg, prototypes, eval_n, cfg.hard_len, g)
    params = init_params(cfg, seeds, prototypes.dtype, prototypes.device)
    state = {k: adam_init(v) for k, v in params.items()}
    align_steps, align, loss_steps, losses = [], [], [], []
    early = None
    log_every = max(1, steps // 50)
    for t in range(steps + 1):
        mb = sample_mix(cfg, prototypes, batch, g)
        if t <= early_step and t % align_every == 0:
            c, _ = core_grad_alignment(params, mb, hard_b, cfg, bridges)
            align_steps.append(t)
            align.append(c)
        if t == early_step:
            early = {k: v.clone() for k, v in params.items()}
        if t % log_every == 0 or t == steps:
            with torch.no_grad():
                loss_steps.append(t)
                losses.append(hard_b_loss(params, *hard_b, cfg))
        if t == steps:
            break
        p = {k: v.requires_grad_(True) for k, v in params.items()}
        grads = torch.autograd.grad(train_loss(p, mb, cfg, bridges).sum(), list(p.values()))
        new = {}
        for (k, v), gk in zip(p.items(), grads):
            new[k], state[k] = adam_update(v.detach(), gk, state[k], lr, 0.9, 0.999, 1e-8)
        params = new
    return History(align_steps, torch.stack(align), loss_steps, torch.stack(losses),
                   {k: v.detach() for k, v in params.items()}, early)


def one_step_change(params, batch: MixBatch, hard_b, cfg: ToyConfig, bridges: Sequence[Bridge], eta: float):
    """The first-order check of the chapter's derivation, per replica: take one plain gradient step
    ``theta' = theta - eta grad L_train`` on all parameters and return ``(actual, first, second)`` with
    ``actual = L_B(theta') - L_B(theta)``, ``first = -eta <grad L_B, grad L_train>`` and
    ``second = first + eta^2/2 grad L_train^T H_B grad L_train`` (a Hessian-vector product by double backward).
    For a quadratic ``L_B`` the second-order prediction is exact. Chapter: ``chapters/transfer/simple-to-hard.md``
    (derivation); paper Sec. 5 (alignment is first-order transfer)."""
    eta = check_positive("eta", eta)
    p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    names = list(p)
    g_tr = torch.autograd.grad(train_loss(p, batch, cfg, bridges).sum(), [p[k] for k in names])
    g_tr = [x.detach() for x in g_tr]
    lb = hard_b_loss(p, *hard_b, cfg)
    g_b = torch.autograd.grad(lb.sum(), [p[k] for k in names], create_graph=True, allow_unused=True,
                              materialize_grads=True)
    R = params["emb"].shape[0]
    dot = sum((a * b).reshape(R, -1).sum(1) for a, b in zip(g_b, g_tr))
    hv = torch.autograd.grad(dot.sum(), [p[k] for k in names], allow_unused=True, materialize_grads=True)
    quad = sum((h * b).reshape(R, -1).sum(1) for h, b in zip(hv, g_tr))
    with torch.no_grad():
        moved = {k: p[k] - eta * gk for k, gk in zip(names, g_tr)}
        actual = hard_b_loss(moved, *hard_b, cfg) - lb.detach()
    first = -eta * dot.detach()
    return actual, first, first + 0.5 * eta**2 * quad.detach()


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long sequences (``scipy.stats.spearmanr``; ties get average
    ranks; 0 when either is constant). Chapter: ``chapters/transfer/simple-to-hard.md`` (does early alignment rank
    the mixes like their HARD-B accuracy? paper Sec. 5)."""
    from scipy.stats import spearmanr

    x, y = list(map(float, x)), list(map(float, y))
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"spearman needs two sequences of equal length >= 3, got lengths {len(x)} and {len(y)}")
    if len(set(x)) == 1 or len(set(y)) == 1:
        return 0.0
    r = spearmanr(x, y).statistic
    return float(r) if math.isfinite(r) else 0.0
