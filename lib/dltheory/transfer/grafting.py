"""Skill localization by grafting: a few fine-tuned parameters pasted onto the pretrained model.

Defined for the chapter *Skill localization by grafting* (``chapters/transfer/skill-localization.md``), after
Panigrahi, Saunshi, Zhao & Arora 2023, "Task-Specific Skill Localization in Fine-tuned Language Models" (ICML 2023;
reference code ``abhishekpanigrahi1996/Skill-Localization-by-grafting``, files ``Grafting.py`` and
``src/graft_trainer.py``).

**The graft** (the paper's definition of grafting): for a binary mask ``gamma`` over the graftable parameters,
``theta(gamma) = theta_pre + gamma * (theta_ft - theta_pre)``; ``graft_Trainer.interpolate_model`` in the reference.
The *base patch* is the top fraction of parameters by movement ``|theta_ft - theta_pre|``
(``graft_Trainer.create_basepatch``, ``mask_path == "highest_movement"``). The *optimized mask* relaxes
``gamma = base + (1 - 2 base) * sigmoid(S - 10)`` (``sigmoid_bias = 10`` in ``Grafting.py``) with ``S`` drawn
uniform in ``[0, 1)`` (``create_binary_masks``), and takes plain gradient steps on ``S`` computed by hand, with no
optimizer (``train_graft``): ``S <- S - lr (1 - 2 base) (dL/dtheta * delta) sigmoid'(S - 10)``; after each epoch the
rounded mask is scored on train + validation accuracy and the best one is kept.

**The toy.** A ReLU MLP pretrained on 10-class scikit-learn digits, with an L1 penalty on its hidden activations
(sparse) or without (dense). A binary downstream task reads its two classes out of two frozen logits of the
pretrained 10-class head (the "label words"; the analog of the paper's prompt-based fine-tuning with a frozen LM
head, ``fix_head=True`` in ``run_graft_task.sh``). Only the body is fine-tuned and grafted. Every function takes a
leading replica axis ``R``: tasks, optimizers, pretrained models and few-shot draws are trained and grafted side by
side in one tensor program.

Shapes: body parameters ``(R, P)`` (the flat layout of :mod:`dltheory.numerics.mlp`: per layer the weight
``(out, in)`` row-major, then the bias); the head is ``(Wh (R, C, h), bh (R, C))``; inputs ``(N, d)`` shared or
``(R, N, d)``; label words ``(R, 2)`` or per example ``(R, N, 2)`` (index of the "no" logit, index of the "yes"
logit); binary labels ``(R, N)`` in ``{0, 1}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dltheory.numerics.mlp import check_widths, mlp_init, mlp_num_params
from dltheory.numerics.optimizers import adam_init, adam_update, sgd_init, sgd_update
from dltheory.numerics.validate import check_int, check_nonnegative, check_positive, check_seeds

CHAPTER = "chapters/transfer/skill-localization.md"

#: The downstream tasks: name -> (rule on the digit, label words (no, yes) read from the frozen 10-class head).
#: Each pair of label words is one digit of each class, like the paper's "terrible" / "great".
TASKS = {
    "ge5": (lambda d: d >= 5, (1, 8)),
    "odd": (lambda d: d % 2 == 1, (0, 7)),
    "ge4": (lambda d: d >= 4, (3, 6)),
}


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    return task


def _check_fraction(name: str, value) -> float:
    value = check_positive(name, value)
    if value > 1:
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------------------
# Data: a pretraining split, a few-shot pool and a test split of scikit-learn digits
# ---------------------------------------------------------------------------------------------------------------


def task_labels(task: str, digits: torch.Tensor) -> torch.Tensor:
    """Binary labels ``1[rule(digit)]`` of ``task`` (``"ge5"``: digit >= 5, ``"odd"``, ``"ge4"``).
    Chapter: chapters/transfer/skill-localization.md (the downstream tasks; the paper's few-shot GLUE-style
    tasks)."""
    rule, _ = TASKS[_check_task(task)]
    return rule(digits).long()


def label_words(task: str) -> tuple[int, int]:
    """The two frozen head logits (no, yes) that read out ``task``: the analog of the paper's label words
    (``MAPPING`` in the reference's ``run_graft_experiment.sh``, e.g. ``{'0':'terrible','1':'great'}`` for SST-2).
    Chapter: chapters/transfer/skill-localization.md."""
    return TASKS[_check_task(task)][1]


def split_indices(n_total: int, n_pretrain: int, n_test: int, generator: torch.Generator):
    """A random partition of ``range(n_total)`` into pretraining, few-shot pool and test indices (the pool is the
    rest). Chapter: chapters/transfer/skill-localization.md (pretraining data never overlaps the downstream
    data, as the paper's pretraining corpus is not its few-shot task data)."""
    n_total, n_pretrain, n_test = check_int("n_total", n_total), check_int("n_pretrain", n_pretrain), \
        check_int("n_test", n_test)
    if n_pretrain + n_test >= n_total:
        raise ValueError(f"n_pretrain + n_test ({n_pretrain + n_test}) must leave a few-shot pool out of "
                         f"{n_total} examples; lower n_pretrain or n_test")
    perm = torch.randperm(n_total, generator=generator)
    return perm[:n_pretrain], perm[n_pretrain + n_test:], perm[n_pretrain:n_pretrain + n_test]


def few_shot_indices(labels: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` examples of each binary class drawn without replacement from a pool with ``labels (n,)``, class 0
    first: the paper's ``K = 16`` examples per class (``num_k`` in ``Grafting.py``). Chapter:
    chapters/transfer/skill-localization.md."""
    k = check_int("k", k)
    out = []
    for c in (0, 1):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < k:
            raise ValueError(f"the pool has only {len(idx)} examples of class {c}; lower k (got {k})")
        out.append(idx[torch.randperm(len(idx), generator=generator)[:k]])
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------------------
# The model: a batched ReLU MLP body and a frozen linear head
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Head:
    """The frozen 10-class head ``logits = h Wh^T + bh`` of every replica: ``w (R, C, h)``, ``b (R, C)``."""

    w: torch.Tensor
    b: torch.Tensor

    def take(self, index) -> Head:
        """The heads of the replicas ``index`` (a tensor or list of replica indices)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.w.device)
        return Head(self.w[index], self.b[index])


def body_layers(widths) -> list[tuple[int, int]]:
    """The ``(in, out)`` sizes of the body's layers for ``widths = [d_in, h_1, ..., h_L]`` (every layer is
    followed by a ReLU). Chapter: chapters/transfer/skill-localization.md."""
    widths = check_widths(widths)
    return list(zip(widths[:-1], widths[1:]))


def body_num_params(widths) -> int:
    """Number of graftable parameters (the body's weights and biases). Chapter:
    chapters/transfer/skill-localization.md (``n_graftable``; the paper grafts every parameter but the frozen LM
    head and embeddings, ``fix_head``, ``fix_embeddings`` in ``run_graft_task.sh``)."""
    return mlp_num_params(widths)


def body_forward(theta: torch.Tensor, x: torch.Tensor, widths, return_acts: bool = False):
    """The body ``h = relu(W_L ... relu(W_1 x + b_1) ... + b_L)`` of ``R`` replicas at once: ``theta (R, P)``,
    ``x (N, d)`` shared or ``(R, N, d)``. Returns ``h (R, N, h_L)`` and, with ``return_acts``, the list of every
    hidden layer's activations (for the L1 penalty and the active fraction). Chapter:
    chapters/transfer/skill-localization.md. (:func:`dltheory.numerics.mlp.mlp_apply` takes one flat vector; this
    is its batched, ReLU-after-every-layer version.)"""
    layers = body_layers(widths)
    if theta.shape[-1] != mlp_num_params(widths):
        raise ValueError(f"theta has {theta.shape[-1]} parameters but widths {list(widths)} need "
                         f"{mlp_num_params(widths)}")
    R = theta.shape[0]
    h = x if x.dim() == 3 else x.unsqueeze(0).expand(R, *x.shape)
    i, acts = 0, []
    for a, b in layers:
        W = theta[:, i:i + a * b].reshape(R, b, a)
        i += a * b
        bias = theta[:, i:i + b]
        i += b
        h = torch.relu(torch.baddbmm(bias.unsqueeze(1), h, W.transpose(1, 2)))
        acts.append(h)
    return (h, acts) if return_acts else h


def binary_logits(theta: torch.Tensor, head: Head, x: torch.Tensor, words: torch.Tensor, widths) -> torch.Tensor:
    """The two label-word logits ``(R, N, 2)`` (no, yes) of the frozen head on top of the body ``theta``;
    ``words (R, 2)`` or ``(R, N, 2)``. The paper's prompt-based classifier: the masked-LM logits of the label
    words (``RobertaForPromptFinetuning`` in the reference's ``src/models.py``). Chapter:
    chapters/transfer/skill-localization.md."""
    h = body_forward(theta, x, widths)
    logits = torch.baddbmm(head.b.unsqueeze(1), h, head.w.transpose(1, 2))        # (R, N, C)
    w = words if words.dim() == 3 else words.unsqueeze(1).expand(-1, logits.shape[1], -1)
    return logits.gather(-1, w)


def binary_loss(theta, head, x, y, words, widths) -> torch.Tensor:
    """Per-replica mean cross-entropy ``(R,)`` of the label-word classifier on labels ``y (R, N)``. Chapter:
    chapters/transfer/skill-localization.md (the loss of fine-tuning and of the mask optimization,
    ``CrossEntropyLoss`` in ``graft_trainer.py``)."""
    z = binary_logits(theta, head, x, words, widths)
    return torch.nn.functional.cross_entropy(z.transpose(1, 2), y, reduction="none").mean(-1)


def p_yes(theta, head, x, words, widths) -> torch.Tensor:
    """Probability of the "yes" label word, ``(R, N)``. Chapter: chapters/transfer/skill-localization.md."""
    return torch.softmax(binary_logits(theta, head, x, words, widths), -1)[..., 1]


def accuracy(prob_yes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Accuracy ``(...)`` of the predictions ``prob_yes > 1/2`` on labels ``y``, averaged over the last axis.
    Chapter: chapters/transfer/skill-localization.md."""
    return ((prob_yes > 0.5).long() == y).to(prob_yes.dtype).mean(-1)


def expected_calibration_error(prob_yes: torch.Tensor, y: torch.Tensor, bins: int = 10) -> torch.Tensor:
    """Expected calibration error ``sum_b (n_b / n) |acc_b - conf_b|`` over ``bins`` equal-width bins of the
    confidence ``max(p, 1 - p)`` (Guo et al. 2017; the paper compares grafted and fine-tuned models by
    it), batched over the leading axes. Chapter: chapters/transfer/skill-localization.md."""
    bins = check_int("bins", bins)
    conf = torch.maximum(prob_yes, 1 - prob_yes)
    correct = ((prob_yes > 0.5).long() == y).to(prob_yes.dtype)
    # confidence lies in [1/2, 1]; bin over [0, 1] as usual (the lower half of the bins stays empty)
    b = (conf * bins).long().clamp(0, bins - 1)
    onehot = torch.nn.functional.one_hot(b, bins).to(prob_yes.dtype)            # (..., N, B)
    gap = ((correct - conf).unsqueeze(-1) * onehot).sum(-2)
    return gap.abs().sum(-1) / prob_yes.shape[-1]


# ---------------------------------------------------------------------------------------------------------------
# Pretraining and fine-tuning, all replicas side by side
# ---------------------------------------------------------------------------------------------------------------


def init_models(widths, n_classes: int, seeds: Sequence[int], dtype=torch.float32, device=None):
    """Body ``(R, P)`` and head of ``R`` freshly initialized models, replica ``r`` from
    ``torch.Generator().manual_seed(seeds[r])`` with PyTorch's default ``nn.Linear`` initialization
    (:func:`dltheory.numerics.mlp.mlp_init`), drawn on the CPU and moved to ``device`` (so the numbers do not depend
    on the device). Chapter: chapters/transfer/skill-localization.md."""
    seeds = check_seeds(seeds)
    n_classes = check_int("n_classes", n_classes, minimum=2)
    widths = check_widths(widths)
    full = widths + [n_classes]
    P = mlp_num_params(widths)
    thetas = torch.stack([mlp_init(full, torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds])
    thetas = thetas.to(dtype=dtype, device=device)
    body, rest = thetas[:, :P], thetas[:, P:]
    h = widths[-1]
    return body.contiguous(), Head(rest[:, :n_classes * h].reshape(-1, n_classes, h).contiguous(),
                                   rest[:, n_classes * h:].contiguous())


def pretrain(x: torch.Tensor, digits: torch.Tensor, widths, l1: Sequence[float], seeds: Sequence[int],
             steps: int, lr: float, batch: int, dtype=torch.float32):
    """Pretrain ``R = len(l1)`` models on 10-class digits, side by side: cross-entropy plus
    ``l1[r] * mean_n sum_units |a|`` over every hidden layer (the sparse-activation pretraining of the chapter;
    ``l1 = 0`` is the dense control). Adam (lr ``lr``, betas 0.9 / 0.999; :func:`dltheory.numerics.optimizers.
    adam_update`) on minibatches of ``batch`` drawn with replica ``r``'s generator ``manual_seed(seeds[r] + 1)``.
    Returns ``(body, head)``. Chapter: chapters/transfer/skill-localization.md (the analog of the paper's
    pretrained RoBERTa; the sparse activations are this toy's mechanism for localization)."""
    seeds = check_seeds(seeds)
    l1 = [check_nonnegative("l1", v) for v in l1]
    if len(l1) != len(seeds):
        raise ValueError(f"l1 ({len(l1)}) and seeds ({len(seeds)}) must have one entry per replica")
    steps, batch, lr = check_int("steps", steps), check_int("batch", batch), check_positive("lr", lr)
    n_classes = int(digits.max()) + 1
    body, head = init_models(widths, n_classes, seeds, dtype, device=x.device)
    P = body.shape[1]
    params = torch.cat([body, head.w.flatten(1), head.b], 1)
    state = adam_init(params)
    lam = torch.tensor(l1, dtype=dtype, device=x.device)
    gens = [torch.Generator().manual_seed(s + 1) for s in seeds]
    x, digits = x.to(dtype), digits.long()
    h = widths[-1]
    for _ in range(steps):
        idx = torch.stack([torch.randint(len(digits), (batch,), generator=g) for g in gens]).to(x.device)
        xb, yb = x[idx], digits[idx]
        p = params.detach().requires_grad_()
        hid, acts = body_forward(p[:, :P], xb, widths, return_acts=True)
        w, b = p[:, P:P + n_classes * h].reshape(-1, n_classes, h), p[:, P + n_classes * h:]
        logits = torch.baddbmm(b.unsqueeze(1), hid, w.transpose(1, 2))
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), yb, reduction="none").mean(-1)
        pen = sum(a.sum(-1).mean(-1) for a in acts)
        g, = torch.autograd.grad((ce + lam * pen).sum(), p)
        params, state = adam_update(params, g, state, lr, 0.9, 0.999, 1e-8)
    return params[:, :P].contiguous(), Head(params[:, P:P + n_classes * h].reshape(-1, n_classes, h).contiguous(),
                                            params[:, P + n_classes * h:].contiguous())


def active_fraction(theta: torch.Tensor, x: torch.Tensor, widths) -> torch.Tensor:
    """Fraction ``(R,)`` of hidden activations that are non-zero, over all hidden layers and inputs ``x``.
    Chapter: chapters/transfer/skill-localization.md (``active_frac``)."""
    _, acts = body_forward(theta, x, widths, return_acts=True)
    nz = sum((a > 0).to(theta.dtype).sum((-1, -2)) for a in acts)
    tot = sum(a.shape[-1] * a.shape[-2] for a in acts)
    return nz / tot


def finetune(body0: torch.Tensor, head: Head, x: torch.Tensor, y: torch.Tensor, words: torch.Tensor, widths,
             optimizer: Sequence[str], lr: Sequence[float], steps: int):
    """Fine-tune the bodies of ``R`` replicas side by side on their few-shot sets (``x (R, N, d)``, ``y (R, N)``,
    ``words (R, 2)`` or ``(R, N, 2)``), the head frozen: full-batch steps on the label-word cross-entropy, replica
    ``r`` with ``optimizer[r]`` in ``{"sgd", "adam"}`` (plain SGD, or Adam with betas 0.9 / 0.999, eps 1e-8;
    :mod:`dltheory.numerics.optimizers`) at learning rate ``lr[r]``. Returns the fine-tuned bodies ``(R, P)``.
    Chapter: chapters/transfer/skill-localization.md (the reference fine-tunes with SGD, ``run_task.sh``; Adam is
    the chapter's control)."""
    optimizer = list(optimizer)
    bad = [o for o in optimizer if o not in ("sgd", "adam")]
    if bad:
        raise ValueError(f"optimizer entries must be 'sgd' or 'adam', got {bad[0]!r}")
    R = body0.shape[0]
    if len(optimizer) != R or len(lr) != R:
        raise ValueError(f"optimizer ({len(optimizer)}) and lr ({len(lr)}) need one entry per replica ({R})")
    dev = body0.device
    lrs = torch.tensor([check_positive("lr", v) for v in lr], dtype=body0.dtype, device=dev).unsqueeze(1)
    steps = check_int("steps", steps)
    si = torch.tensor([i for i, o in enumerate(optimizer) if o == "sgd"], dtype=torch.long, device=dev)
    ai = torch.tensor([i for i, o in enumerate(optimizer) if o == "adam"], dtype=torch.long, device=dev)
    theta = body0.clone()
    s_state, a_state = sgd_init(theta[si]), adam_init(theta[ai])
    for _ in range(steps):
        p = theta.detach().requires_grad_()
        g, = torch.autograd.grad(binary_loss(p, head, x, y, words, widths).sum(), p)
        new = theta.clone()
        if len(si):
            new[si], s_state = sgd_update(theta[si], lrs[si] * g[si], s_state, 1.0)
        if len(ai):
            step, a_state = adam_update(theta[ai], g[ai], a_state, 1.0, 0.9, 0.999, 1e-8)
            new[ai] = theta[ai] + lrs[ai] * (step - theta[ai])
        theta = new
    return theta


# ---------------------------------------------------------------------------------------------------------------
# Grafts: scores, masks, evaluation
# ---------------------------------------------------------------------------------------------------------------


def graft(pre: torch.Tensor, delta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``theta(gamma) = theta_pre + gamma * delta`` with ``delta = theta_ft - theta_pre`` (the paper's graft;
    ``interpolate_model`` in the reference's ``src/graft_trainer.py``); ``gamma`` binary or relaxed, broadcast
    against ``pre``. Chapter: chapters/transfer/skill-localization.md."""
    return pre + gamma.to(pre.dtype) * delta


def top_fraction_mask(scores: torch.Tensor, frac: float) -> torch.Tensor:
    """Boolean mask ``(..., P)`` of the ``k = max(1, round(frac P))`` largest ``scores`` in each row: with
    ``scores = |delta|`` it is the reference's base patch (``create_basepatch``, ``"highest_movement"``; there
    the threshold is the k-th largest magnitude over all tensors together, as here over the flat vector). Chapter:
    chapters/transfer/skill-localization.md."""
    frac = _check_fraction("frac", frac)
    P = scores.shape[-1]
    k = max(1, round(frac * P))
    idx = scores.topk(k, dim=-1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, idx, True)


def integrated_scores(pre, delta, head, x, y, words, widths, points: int = 8) -> torch.Tensor:
    """The path-integrated first-order score ``-delta_i * (1/m) sum_j dL/dtheta_i(theta_pre + a_j delta)``
    at the midpoints ``a_j = (j - 1/2) / m`` of the straight path from pretrained to fine-tuned (``m = points``):
    each parameter's share of the loss change ``L(theta_ft) - L(theta_pre)`` (up to the quadrature error), so a
    large score is a parameter whose movement lowers the loss. Chapter: chapters/transfer/skill-localization.md
    (the derivation's first-order graft, integrated along the path; not in the reference)."""
    points = check_int("points", points)
    acc = torch.zeros_like(pre)
    for j in range(points):
        a = (j + 0.5) / points
        p = (pre + a * delta).detach().requires_grad_()
        g, = torch.autograd.grad(binary_loss(p, head, x, y, words, widths).sum(), p)
        acc = acc + g
    return -delta * acc / points


def evaluate_grafts(pre, delta, masks, head, x, words, widths, chunk: int = 64) -> torch.Tensor:
    """``p_yes`` of every graft ``(R, M, N)`` for masks ``(R, M, P)`` (``M`` grafts per replica: sparsities x
    methods), evaluated as ``R * M`` replicas of one batched forward pass (in chunks of ``chunk`` replicas).
    ``x (N, d)`` shared or ``(R, N, d)``; ``words (R, 2)``. Chapter: chapters/transfer/skill-localization.md."""
    R, M, P = masks.shape
    chunk = check_int("chunk", chunk)
    thetas = graft(pre.unsqueeze(1), delta.unsqueeze(1), masks).reshape(R * M, P)
    rep = torch.arange(R, device=pre.device).repeat_interleave(M)
    xs = x if x.dim() == 2 else x[rep]
    ws = words[rep]
    hd = head.take(rep)
    out = []
    for s in range(0, R * M, chunk):
        sl = slice(s, s + chunk)
        xx = xs if xs.dim() == 2 else xs[sl]
        out.append(p_yes(thetas[sl], Head(hd.w[sl], hd.b[sl]), xx, ws[sl], widths))
    return torch.cat(out).reshape(R, M, -1)


def recovered_gain(acc_graft, acc_pre, acc_ft):
    """``(acc_graft - acc_pre) / (acc_ft - acc_pre)``: the share of fine-tuning's gain that a graft recovers
    (1: all of it; 0: none). Never ``acc_graft / acc_ft``, which is near 1 whenever the pretrained model is
    already decent. Chapter: chapters/transfer/skill-localization.md (the paper reports accuracies; this normalizes
    them)."""
    gain = acc_ft - acc_pre
    if torch.is_tensor(gain):
        if (gain.abs() < 1e-12).any():
            raise ValueError("fine-tuning did not change the accuracy, so no gain can be recovered")
    elif abs(gain) < 1e-12:
        raise ValueError("fine-tuning did not change the accuracy, so no gain can be recovered")
    return (acc_graft - acc_pre) / gain


def overlap(mask_a: torch.Tensor, mask_b: torch.Tensor) -> torch.Tensor:
    """``|A & B| / |A|`` of two boolean masks ``(..., P)`` of equal size (chance level: ``|A| / P``).
    Chapter: chapters/transfer/skill-localization.md (the paper's overlap of task-specific grafts in a
    multi-task model)."""
    inter = (mask_a & mask_b).sum(-1).to(torch.float64)
    return inter / mask_a.sum(-1).clamp_min(1).to(torch.float64)


# ---------------------------------------------------------------------------------------------------------------
# The paper's optimized mask (src/graft_trainer.py, train_graft)
# ---------------------------------------------------------------------------------------------------------------


def relaxed_mask(S: torch.Tensor, base: torch.Tensor, bias: float = 10.0) -> torch.Tensor:
    """``gamma(S) = base + (1 - 2 base) * sigmoid(S - bias)``: a relaxed mask that is the base patch when
    ``S << bias`` and flips a parameter when ``S > bias`` (``interpolate_model``; ``sigmoid_bias = 10.0`` in
    ``Grafting.py``). Chapter: chapters/transfer/skill-localization.md."""
    b = base.to(S.dtype)
    return b + (1 - 2 * b) * torch.sigmoid(S - bias)


def mask_logit_grad(grad_theta: torch.Tensor, delta: torch.Tensor, S: torch.Tensor, base: torch.Tensor,
                    bias: float = 10.0) -> torch.Tensor:
    """The chain rule the reference computes by hand: ``dL/dS = (1 - 2 base) * sigmoid'(S - bias) * delta *
    dL/dtheta`` at ``theta = theta_pre + gamma(S) * delta`` (``train_graft``: ``grad * grad_directions``, then
    ``(1 - 2 s) g sigmoid (1 - sigmoid)``). Chapter: chapters/transfer/skill-localization.md (checked against
    autograd there)."""
    sig = torch.sigmoid(S - bias)
    return (1 - 2 * base.to(S.dtype)) * sig * (1 - sig) * delta * grad_theta


def optimize_mask(pre, delta, base, head, x_train, y_train, x_val, y_val, words, widths, lr: float, epochs: int,
                  generator: torch.Generator, bias: float = 10.0):
    """The paper's mask optimization (``src/graft_trainer.py``, ``train_graft``), for ``R`` replicas at once.

    ``S`` starts uniform in ``[0, 1)`` (``create_binary_masks``: ``torch.rand_like``). Each epoch: the gradient of
    the training loss at the relaxed graft ``theta_pre + gamma(S) * delta`` (full batch here), the plain step
    ``S <- S - lr * mask_logit_grad`` (no optimizer), then the *rounded* mask ``round(gamma(S))`` is scored by
    train + validation accuracy and kept if it beats the best so far (``bs_compare = val + tr``). Returns
    ``(best_mask (R, P) bool, history)`` with the per-epoch mask sizes and scores. Chapter:
    chapters/transfer/skill-localization.md."""
    lr, epochs = check_positive("lr", lr), check_int("epochs", epochs)
    check_nonnegative("bias", bias)
    S = torch.rand(pre.shape, generator=generator, dtype=torch.float64).to(dtype=pre.dtype, device=pre.device)
    basef = base.to(pre.dtype)
    best = base.clone().bool()
    best_score = torch.full((pre.shape[0],), -math.inf, dtype=pre.dtype, device=pre.device)
    sizes, scores = [], []
    for _ in range(epochs):
        p = graft(pre, delta, relaxed_mask(S, basef, bias)).detach().requires_grad_()
        g, = torch.autograd.grad(binary_loss(p, head, x_train, y_train, words, widths).sum(), p)
        S = S - lr * mask_logit_grad(g, delta, S, basef, bias)
        hard = relaxed_mask(S, basef, bias).round().bool()
        th = graft(pre, delta, hard)
        score = accuracy(p_yes(th, head, x_train, words, widths), y_train) + \
            accuracy(p_yes(th, head, x_val, words, widths), y_val)
        better = score > best_score
        best = torch.where(better.unsqueeze(1), hard, best)
        best_score = torch.where(better, score, best_score)
        sizes.append(hard.to(pre.dtype).mean(-1))
        scores.append(score)
    return best, {"size": torch.stack(sizes, -1), "score": torch.stack(scores, -1)}
