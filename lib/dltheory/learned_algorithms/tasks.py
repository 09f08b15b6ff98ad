"""A distribution of tiny training tasks for meta-training learned optimizers, and held-out tasks.

Used in ``chapters/learned-algorithms/learned-optimizers.md`` (*Learned optimizers meta-trained on a compute
diet*). A *task* is a small multilayer perceptron classifier together with its data set; the optimizer under
study (Adam or a learned rule) trains it by minibatch steps. Following the Celo recipe (Moudgil et al. 2025,
§4 and ``celo/tasks.py`` of ``amoudgl/celo``), the meta-training distribution mixes data sets (Gaussian
clusters and scikit-learn ``load_digits``), samples hidden widths at random, and applies *parameter-scale
augmentation* (``ReparamWeights`` in ``learned_optimization/tasks/task_augmentation.py``): the optimizer sees
internal parameters ``u = w / s`` while the network computes with ``w = s * u``, which changes the training
dynamics but not the function class.

Many copies of one architecture (a *population*: ES particles, seeds, learning rates) are trained at once:
parameters are stored as one flat row per copy, shape ``(P, n_params)``, and the forward and backward passes
use batched matrix products. Gradients are computed by hand (backpropagation for a plain MLP with softmax
cross-entropy), which is cheaper than autograd at these sizes; ``tests/test_lopt.py`` checks them against
``torch.autograd``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dltheory.numerics.data import digits_data

ACTIVATIONS = ("relu", "tanh")


@dataclass(frozen=True)
class TaskSpec:
    """Architecture and minibatch size of one tiny classification task.

    ``hidden`` lists the hidden-layer widths (``(32,)`` is a one-hidden-layer MLP).
    """

    name: str
    in_dim: int
    hidden: tuple[int, ...]
    n_classes: int
    activation: str = "relu"
    batch_size: int = 64

    def __post_init__(self):
        checks = (("in_dim", self.in_dim), ("n_classes", self.n_classes), ("batch_size", self.batch_size))
        for nm, v in checks:
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{nm} must be a positive integer, got {v!r}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {self.n_classes}")
        if not isinstance(self.hidden, tuple) or any(
            isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in self.hidden
        ):
            raise ValueError(f"hidden must be a tuple of positive integers, got {self.hidden!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.in_dim, *self.hidden, self.n_classes)


@dataclass
class Task:
    """A :class:`TaskSpec` with its training data ``X`` (n, in_dim) and integer labels ``y`` (n,)."""

    spec: TaskSpec
    X: torch.Tensor
    y: torch.Tensor

    def __post_init__(self):
        if self.X.ndim != 2 or self.X.shape[1] != self.spec.in_dim:
            raise ValueError(f"X must have shape (n, {self.spec.in_dim}), got {tuple(self.X.shape)}")
        if self.y.shape != (self.X.shape[0],):
            raise ValueError(f"y must have shape ({self.X.shape[0]},), got {tuple(self.y.shape)}")

    def to(self, device) -> Task:
        return Task(self.spec, self.X.to(device), self.y.to(device))


@dataclass(frozen=True)
class Layout:
    """Where each parameter tensor lives in the flat parameter row.

    ``shapes[i]`` is the shape of tensor ``i`` (weights ``(d_in, d_out)`` then bias ``(d_out,)`` per layer),
    ``offsets[i]`` its start; ``segment`` maps every flat entry to its tensor index (used by the per-tensor
    normalization of :mod:`dltheory.learned_algorithms.lopt`), ``counts`` holds each tensor's number of entries
    and ``is_bias`` marks the entries of 1-D tensors (Celo2 updates those with Adam).
    """

    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    n_params: int
    segment: torch.Tensor
    counts: torch.Tensor
    is_bias: torch.Tensor  # (n_params,) bool: the entry belongs to a 1-D (bias) tensor

    @property
    def n_tensors(self) -> int:
        return len(self.shapes)


def layout(spec: TaskSpec, device=None) -> Layout:
    """The flat layout of the MLP parameters of ``spec`` (``W_1, b_1, W_2, b_2, ...``)."""
    shapes, offsets, off = [], [], 0
    dims = spec.dims
    for a, b in zip(dims[:-1], dims[1:]):
        for shp in ((a, b), (b,)):
            shapes.append(shp)
            offsets.append(off)
            off += math.prod(shp)
    counts = torch.tensor([math.prod(s) for s in shapes], device=device)
    segment = torch.repeat_interleave(torch.arange(len(shapes), device=device), counts)
    is_bias = torch.tensor([len(s) == 1 for s in shapes], device=device)[segment]
    return Layout(tuple(shapes), tuple(offsets), off, segment, counts, is_bias)


def _views(flat: torch.Tensor, lay: Layout) -> list[torch.Tensor]:
    P = flat.shape[0]
    return [flat[:, o:o + math.prod(s)].reshape(P, *s) for s, o in zip(lay.shapes, lay.offsets)]


def init_params(spec: TaskSpec, n_copies: int, generator: torch.Generator, param_scale=None,
                dtype=torch.float32, device=None) -> torch.Tensor:
    """Initial *internal* parameters ``u = w / s`` of ``n_copies`` independent networks, shape ``(P, n)``.

    Weights ``w`` are Gaussian with variance ``gain / d_in`` (gain 2 for ReLU, 1 for tanh), biases zero.
    ``param_scale`` (scalar, shape ``(P,)`` or per entry ``(P, n)``, positive) is the augmentation scale ``s``;
    ``None`` means 1.
    """
    if isinstance(n_copies, bool) or not isinstance(n_copies, int) or n_copies <= 0:
        raise ValueError(f"n_copies must be a positive integer, got {n_copies!r}")
    lay = layout(spec)
    gain = 2.0 if spec.activation == "relu" else 1.0
    parts = []
    for shp in lay.shapes:
        if len(shp) == 2:
            w = torch.randn(n_copies, *shp, generator=generator, dtype=dtype) * math.sqrt(gain / shp[0])
        else:
            w = torch.zeros(n_copies, *shp, dtype=dtype)
        parts.append(w.reshape(n_copies, -1))
    flat = torch.cat(parts, dim=1).to(device)
    s = _scale(param_scale, n_copies, flat)
    return flat / s


def _scale(param_scale, P: int, like: torch.Tensor) -> torch.Tensor:
    if param_scale is None:
        return torch.ones(P, 1, dtype=like.dtype, device=like.device)
    s = torch.as_tensor(param_scale, dtype=like.dtype, device=like.device)
    if s.ndim == 0:
        s = s.expand(P)
    if s.shape != (P,) and s.shape != (P, like.shape[1]):
        raise ValueError(f"param_scale must be a scalar or have shape ({P},) (one scale per copy) or "
                         f"({P}, {like.shape[1]}) (one per entry), got {tuple(s.shape)}")
    if not bool((s > 0).all()):
        raise ValueError("param_scale must be positive")
    return s[:, None] if s.ndim == 1 else s


def _act(z: torch.Tensor, kind: str) -> torch.Tensor:
    return torch.relu(z) if kind == "relu" else torch.tanh(z)


def _act_grad(a: torch.Tensor, kind: str) -> torch.Tensor:
    """Derivative of the activation written in terms of its output ``a``."""
    return (a > 0).to(a.dtype) if kind == "relu" else 1.0 - a * a


def forward(spec: TaskSpec, flat: torch.Tensor, X: torch.Tensor, param_scale=None) -> torch.Tensor:
    """Logits of every copy, shape ``(P, n, n_classes)``. ``X`` is ``(n, d)`` (shared) or ``(P, n, d)``."""
    lay = layout(spec, device=flat.device)
    w = _views(flat * _scale(param_scale, flat.shape[0], flat), lay)
    h = X
    n_layers = len(spec.dims) - 1
    for i in range(n_layers):
        W, b = w[2 * i], w[2 * i + 1]
        z = torch.matmul(h, W) + b[:, None, :]
        h = _act(z, spec.activation) if i < n_layers - 1 else z
    return h


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy per copy: logits ``(P, n, C)``, labels ``(n,)`` or ``(P, n)`` → ``(P,)``."""
    logp = torch.log_softmax(logits, dim=-1)
    if y.ndim == 1:
        y = y.expand(logits.shape[0], -1)
    return -logp.gather(-1, y[..., None]).squeeze(-1).mean(-1)


def loss_and_grad(spec: TaskSpec, flat: torch.Tensor, X: torch.Tensor, y: torch.Tensor,
                  param_scale=None, lay: Layout | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minibatch loss ``(P,)`` and its gradient with respect to the internal parameters ``(P, n)``.

    ``X`` is ``(P, B, d)`` or ``(B, d)``, ``y`` is ``(P, B)`` or ``(B,)``. Hand-written backpropagation of
    softmax cross-entropy through the MLP; the chain rule through ``w = s u`` multiplies the gradient by
    ``s``.
    """
    P = flat.shape[0]
    lay = lay if lay is not None else layout(spec, device=flat.device)
    s = _scale(param_scale, P, flat)
    w = _views(flat * s, lay)
    n_layers = len(spec.dims) - 1
    acts = [X if X.ndim == 3 else X.expand(P, *X.shape)]
    h = acts[0]
    for i in range(n_layers):
        z = torch.baddbmm(w[2 * i + 1][:, None, :], h, w[2 * i])
        h = _act(z, spec.activation) if i < n_layers - 1 else z
        acts.append(h)
    logits = acts[-1]
    logp = torch.log_softmax(logits, dim=-1)
    yy = y if y.ndim == 2 else y.expand(P, -1)
    B = yy.shape[1]
    loss = -logp.gather(-1, yy[..., None]).squeeze(-1).mean(-1)
    delta = logp.exp()
    delta.scatter_add_(-1, yy[..., None], torch.full_like(yy[..., None], -1.0, dtype=delta.dtype))
    delta = delta / B
    grads: list[torch.Tensor] = [None] * (2 * n_layers)  # type: ignore[list-item]
    for i in reversed(range(n_layers)):
        grads[2 * i] = torch.bmm(acts[i].transpose(1, 2), delta)
        grads[2 * i + 1] = delta.sum(1)
        if i > 0:
            delta = torch.bmm(delta, w[2 * i].transpose(1, 2)) * _act_grad(acts[i], spec.activation)
    g = torch.cat([t.reshape(P, -1) for t in grads], dim=1) * s
    return loss, g


# ---------------------------------------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------------------------------------

def gaussian_clusters(n: int, dim: int, n_classes: int, generator: torch.Generator, sep: float = 2.5,
                      dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points from ``n_classes`` unit-variance Gaussian clusters in ``dim`` dimensions whose centers
    are Gaussian with norm about ``sep`` (overlapping for ``sep`` of a few units)."""
    for nm, v in (("n", n), ("dim", dim), ("n_classes", n_classes)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{nm} must be a positive integer, got {v!r}")
    centers = torch.randn(n_classes, dim, generator=generator, dtype=torch.float64) * (sep / math.sqrt(dim))
    y = torch.randint(n_classes, (n,), generator=generator)
    X = centers[y] + torch.randn(n, dim, generator=generator, dtype=torch.float64) / math.sqrt(dim) * 1.5
    X = (X - X.mean(0)) / X.std(0)
    return X.to(dtype), y


def teacher_labels(n: int, dim: int, n_classes: int, generator: torch.Generator, width: int = 32,
                   dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs labelled by the argmax of a random one-hidden-layer tanh *teacher* network: a data
    family never used in meta-training (the held-out data set of the chapter)."""
    X = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    W1 = torch.randn(dim, width, generator=generator, dtype=torch.float64) * (2.0 / math.sqrt(dim))
    W2 = torch.randn(width, n_classes, generator=generator, dtype=torch.float64) / math.sqrt(width)
    y = torch.argmax(torch.tanh(X @ W1) @ W2, dim=1)
    return X.to(dtype), y


# ---------------------------------------------------------------------------------------------------------
# The meta-training distribution and the held-out tasks
# ---------------------------------------------------------------------------------------------------------

DIGITS_META_TRAIN = 1200  # digits images 0..1199 are seen in meta-training, 1200..1796 are held out
TRAIN_WIDTHS = (16, 24, 32)
TRAIN_DATASETS = ("clusters", "digits")


def sample_train_task(generator: torch.Generator, digits: tuple[torch.Tensor, torch.Tensor] | None = None,
                      batch_size: int = 64) -> Task:
    """One task from the meta-training distribution: a one-hidden-layer ReLU MLP with a random width from
    :data:`TRAIN_WIDTHS`, on either Gaussian clusters (random dimension 16 or 32, 4 to 10 classes) or the
    first :data:`DIGITS_META_TRAIN` digits images. Parameter-scale augmentation is drawn separately, per
    ES particle pair, by :func:`sample_param_scale`."""
    kind = TRAIN_DATASETS[int(torch.randint(len(TRAIN_DATASETS), (1,), generator=generator))]
    width = TRAIN_WIDTHS[int(torch.randint(len(TRAIN_WIDTHS), (1,), generator=generator))]
    if kind == "digits":
        X, y = digits if digits is not None else digits_data()
        X, y = X[:DIGITS_META_TRAIN], y[:DIGITS_META_TRAIN]
        spec = TaskSpec(f"digits-mlp{width}", 64, (width,), 10, "relu", batch_size)
    else:
        dim = (16, 32)[int(torch.randint(2, (1,), generator=generator))]
        C = int(torch.randint(4, 11, (1,), generator=generator))
        X, y = gaussian_clusters(512, dim, C, generator)
        spec = TaskSpec(f"clusters{dim}d{C}c-mlp{width}", dim, (width,), C, "relu", batch_size)
    return Task(spec, X, y)


def sample_param_scale(n: int, generator: torch.Generator, low: float = 0.5, high: float = 2.0,
                       dtype=torch.float32) -> torch.Tensor:
    """``n`` parameter scales, log-uniform on ``[low, high]`` (the task augmentation of Celo / VeLO)."""
    if not (0 < low <= high):
        raise ValueError(f"need 0 < low <= high, got low={low}, high={high}")
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low))).to(dtype)


def flip_labels(y: torch.Tensor, frac: float, n_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Replace a fraction ``frac`` of the labels by uniformly random classes (label noise keeps the
    training loss of a small network away from zero over a short horizon)."""
    if not 0 <= frac <= 1:
        raise ValueError(f"frac must lie in [0, 1], got {frac}")
    flip = torch.rand(y.shape[0], generator=generator) < frac
    return torch.where(flip, torch.randint(n_classes, y.shape, generator=generator), y)


def heldout_tasks(digits: tuple[torch.Tensor, torch.Tensor] | None = None, seed: int = 1234,
                  batch_size: int = 64, label_noise: float = 0.2) -> list[Task]:
    """The held-out tasks, never seen in meta-training (labels of both carry ``label_noise`` random flips):

    * ``digits-tanh-32x32``: a *deeper* network with a *different activation* (two tanh hidden layers of
      width 32) on the digits images the meta-training never used (indices ``1200..1796``);
    * ``teacher-relu-96``: a *different data family* (labels from a random teacher network, 24 inputs,
      10 classes, 2048 points) with a *wider* ReLU network than any meta-training task (96 hidden units).
    """
    X, y = digits if digits is not None else digits_data()
    g = torch.Generator().manual_seed(seed)
    Xt, yt = teacher_labels(2048, 24, 10, g)
    yd = flip_labels(y[DIGITS_META_TRAIN:], label_noise, 10, g)
    yt = flip_labels(yt, label_noise, 10, g)
    return [
        Task(TaskSpec("digits-tanh-32x32", 64, (32, 32), 10, "tanh", batch_size), X[DIGITS_META_TRAIN:], yd),
        Task(TaskSpec("teacher-relu-96", 24, (96,), 10, "relu", batch_size), Xt, yt),
    ]


def sample_tensor_scale(n: int, lay: Layout, generator: torch.Generator, low: float = 0.5, high: float = 2.0,
                        dtype=torch.float32) -> torch.Tensor:
    """Per-*tensor* parameter scales for ``n`` copies, expanded to one entry per parameter: shape
    ``(n, lay.n_params)``, each tensor's scale log-uniform on ``[low, high]``.

    This is the ``"tensor"`` level of ``ReparamWeightsListFamily`` in ``celo/tasks.py`` (amoudgl/celo), which
    samples the augmentation level among global / tensor / parameter / none; Celo's ranges reach
    ``(0.001, 1000)``. For a rule whose update is normalized per tensor, a per-tensor scale ``s_k`` is a
    per-tensor step-size multiplier (chapter, Step 2).
    Chapter: ``chapters/learned-algorithms/learned-optimizers.md``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    per_tensor = sample_param_scale(n * lay.n_tensors, generator, low, high, dtype).reshape(n, lay.n_tensors)
    return per_tensor.index_select(1, lay.segment.cpu()).to(lay.segment.device)


SCALING_WIDTH = 1024  # 32x the widest meta-training network (32 hidden units)
SCALING_DEPTH = 8  # 8x the meta-training depth (one hidden layer)


def scaling_tasks(width: int = SCALING_WIDTH, depth: int = SCALING_DEPTH, seed: int = 4321, n: int = 1024,
                  batch_size: int = 64, label_noise: float = 0.2) -> list[Task]:
    """The two *scaled-up* tasks of the chapter's Celo2 scaling section: the meta-training architecture (ReLU
    MLP) made ``width / 32`` times wider (one hidden layer of ``width`` units) and ``depth`` times deeper
    (``depth`` hidden layers of 32 units), both on a fresh draw of the meta-training *clusters* family
    (16 inputs, 10 classes, ``n`` points) with ``label_noise`` flipped labels. Celo2 (Moudgil et al. 2026,
    §5) evaluates on tasks many orders larger than its meta-training MLPs; this is the same question at the
    scale of one CPU thread. Chapter: ``chapters/learned-algorithms/learned-optimizers.md``.
    """
    for nm, v in (("width", width), ("depth", depth), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{nm} must be a positive integer, got {v!r}")
    g = torch.Generator().manual_seed(seed)
    X, y = gaussian_clusters(n, 16, 10, g)
    y = flip_labels(y, label_noise, 10, g)
    return [
        Task(TaskSpec(f"clusters16d10c-relu-w{width}", 16, (width,), 10, "relu", batch_size), X, y),
        Task(TaskSpec(f"clusters16d10c-relu-32xd{depth}", 16, (32,) * depth, 10, "relu", batch_size), X, y),
    ]
