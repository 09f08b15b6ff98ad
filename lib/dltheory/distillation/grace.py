"""GRACE: scoring teachers for distillation from the student's own gradients, and a teacher-pool toy.

Defined for the chapter *In good GRACEs: which teacher?* (``chapters/distillation/teacher-selection.md``), after
Panigrahi, Liu, Malladi, Kakade & Goel 2025, "In Good GRACEs: Principled Teacher Selection for Knowledge
Distillation" (arXiv 2511.02833) and their reference code ``abhishekpanigrahi1996/GRACE``:

* :func:`project_gradients`: per-example gradients times a Rademacher matrix, divided by ``sqrt(grad_dim)``
  (``GRACE/gradient_computation.py``, ``build_model`` and ``main``: TRAK's ``CudaProjector`` with
  ``ProjectionType.rademacher`` and ``normalize_factor = sqrt(grad_dim)``);
* :func:`grace_score`: over ``n_splits`` random splits *by prompt* (``np.random.default_rng(split)``), normalize the
  held-in gradients, form their second moments ``K = G^T G / n``, smooth the held-in spectrum
  ``w -> (1 - nu) w + nu * mean(w)`` and average ``tr(K_in^-1 K_out)`` (``GRACE/GRACE_computation.py``, ``grace``,
  ``_normalize_rows``, ``_compute_ntk``, ``_smooth_eigenvalues``, ``_compute_pinv_from_eigh``). Lower is better;
* a toy of teachers (:func:`make_task`, :func:`teacher_logits`, :func:`sample_labels`): inputs of +-1 bits,
  ``C`` classes, a truth with a learnable linear part and a sparse-parity part, teachers that know a fraction of
  the parity part, carry a smooth systematic error and sample at a temperature;
* a pretrained student (the one-hidden-layer ReLU MLP of :mod:`dltheory.distillation.distill`), its
  per-example gradients for every class (:func:`class_gradients`, through :mod:`dltheory.numerics.pergrad`) and
  its distillation from every teacher side by side (:func:`distill_from_teachers`: a leading teacher x replica
  axis, one batched program);
* the measurements: :func:`spearman`, :func:`regret`, and the Gaussian noisy-step KL of the chapter's reading of
  the paper's information-theoretic connection (:func:`gaussian_shift_kl`, :func:`gaussian_shift_kl_mc`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dltheory.distillation.distill import MLP, accuracy, init_mlp, loss_and_grads, mlp_logits
from dltheory.numerics.pergrad import mlp_per_example_grads
from dltheory.numerics.validate import check_int, check_nonnegative, check_positive, check_seeds

F64 = torch.float64


# ---------------------------------------------------------------------------------------------------------------
# The score
# ---------------------------------------------------------------------------------------------------------------


def smooth_eigenvalues(w: torch.Tensor, nu: float = 1e-3, eps: float = 1e-12) -> torch.Tensor:
    """Clip the eigenvalues ``w (..., D)`` at ``eps``, mix them with their mean, ``(1 - nu) w + nu * mean(w)``,
    and clip again: the reference ``_smooth_eigenvalues`` (``GRACE/GRACE_computation.py``; its default
    ``smooth_coeff = 1e-3``). Chapter ``teacher-selection.md``; Panigrahi et al. 2025, the smoothed GRACE kernel."""
    nu = check_nonnegative("nu", nu)
    if nu > 1:
        raise ValueError(f"nu must lie in [0, 1] (the weight of the mean eigenvalue), got {nu}")
    w = w.clamp_min(eps)
    return ((1.0 - nu) * w + nu * w.mean(-1, keepdim=True)).clamp_min(eps)


def smoothed_inverse(K: torch.Tensor, nu: float = 1e-3, eps: float = 1e-12) -> torch.Tensor:
    """``V diag(1 / smooth(w)) V^T`` for ``K = V diag(w) V^T`` (``(..., D, D)``, symmetric): the reference
    ``_compute_pinv_from_eigh`` (``GRACE/GRACE_computation.py``). For a PSD ``K`` it is the inverse of
    ``(1 - nu) K + nu tr(K) / D I`` (chapter ``teacher-selection.md``, derivation (2))."""
    w, V = torch.linalg.eigh(K)
    return (V * (1.0 / smooth_eigenvalues(w, nu, eps)).unsqueeze(-2)) @ V.transpose(-1, -2)


def second_moment(G: torch.Tensor) -> torch.Tensor:
    """``G^T G / n`` for gradients ``G (..., n, D)``: the reference ``_compute_ntk`` (uncentred; chapter
    ``teacher-selection.md``)."""
    return G.transpose(-1, -2) @ G / G.shape[-2]


def normalize_rows(G: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows of ``G`` divided by their norms (clipped at ``eps``): the reference ``_normalize_rows``
    (``GRACE/GRACE_computation.py``). Chapter ``teacher-selection.md``."""
    return G / G.norm(dim=-1, keepdim=True).clamp_min(eps)


def prompt_splits(n_prompts: int, n_splits: int = 10, test_fraction: float = 0.1) -> list[np.ndarray]:
    """The reference's random permutations of the prompts, one per split: ``np.random.default_rng(split)
    .permutation(n_prompts)`` for ``split = 0 .. n_splits - 1``; the last ``max(1, int(n_prompts *
    test_fraction))`` prompts of each are held out (``GRACE/GRACE_computation.py``, ``grace``). Splits are by
    *prompt*: all responses to a prompt fall on the same side."""
    n_prompts, n_splits = check_int("n_prompts", n_prompts, 2), check_int("n_splits", n_splits)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    return [np.random.default_rng(s).permutation(n_prompts) for s in range(n_splits)]


def grace_score(grads: torch.Tensor, n_splits: int = 10, test_fraction: float = 0.1, nu: float = 1e-3,
                normalize_train: bool = True, normalize_test: bool = False, eps: float = 1e-12,
                by_prompt: bool = True) -> torch.Tensor:
    """GRACE of projected per-example gradients ``grads (..., P, G, D)``: ``P`` prompts with ``G`` responses each,
    one score per leading index (a teacher). Lower is better.

    For each split (:func:`prompt_splits`) the held-in gradients are normalized (``normalize_train``), their
    second moment ``K_in`` is smoothed (:func:`smoothed_inverse`, ``nu``) and the score is
    ``tr(K_in~^-1 K_out)`` with the held-out gradients *not* normalized (the reference's defaults,
    ``normalize_train=True, normalize_test=False``); the splits are averaged. This is ``grace`` of
    ``GRACE/GRACE_computation.py`` in float64, batched over teachers. ``by_prompt=False`` splits rows instead of
    prompts (the mistake the chapter warns about; for comparison only). Chapter ``teacher-selection.md``;
    Panigrahi et al. 2025, the GRACE score."""
    if grads.dim() < 3:
        raise ValueError(f"grads must have shape (..., prompts, responses, dim), got {tuple(grads.shape)}")
    n_splits = check_int("n_splits", n_splits)
    P, G, D = grads.shape[-3:]
    g = grads.to(F64)
    if not by_prompt:                       # every row is its own "prompt"
        g = g.reshape(*g.shape[:-3], P * G, 1, D)
        P, G = P * G, 1
    n_test = max(1, int(P * test_fraction))
    if P - n_test <= 0:
        raise ValueError(f"not enough prompts ({P}) for test_fraction={test_fraction}; use more prompts")
    scores = []
    for perm in prompt_splits(P, n_splits, test_fraction):
        sh = g[..., torch.as_tensor(perm, device=g.device), :, :]
        tr = sh[..., :P - n_test, :, :].reshape(*g.shape[:-3], -1, D)
        te = sh[..., P - n_test:, :, :].reshape(*g.shape[:-3], -1, D)
        if normalize_train:
            tr = normalize_rows(tr, eps)
        if normalize_test:
            te = normalize_rows(te, eps)
        Kinv = smoothed_inverse(second_moment(tr), nu, eps)
        scores.append((Kinv * second_moment(te)).sum((-1, -2)))     # tr(A B) for symmetric A, B
    return torch.stack(scores).mean(0)


def mahalanobis_mean(Kinv: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """``mean_j g_j^T Kinv g_j`` over the rows ``g_j`` of ``G (..., m, D)``: equal to ``tr(Kinv G^T G / m)``
    (chapter ``teacher-selection.md``, derivation (3): GRACE is a mean Mahalanobis norm of held-out gradients)."""
    return torch.einsum("...jd,...de,...je->...", G, Kinv, G) / G.shape[-2]


def rademacher_projection(grad_dim: int, dim: int, generator: torch.Generator, dtype=F64) -> torch.Tensor:
    """A ``(grad_dim, dim)`` matrix of independent +-1 entries (TRAK's ``ProjectionType.rademacher``, as in
    ``GRACE/gradient_computation.py``). Chapter ``teacher-selection.md``."""
    grad_dim, dim = check_int("grad_dim", grad_dim), check_int("dim", dim)
    return torch.randint(0, 2, (grad_dim, dim), generator=generator).to(dtype) * 2 - 1


def project_gradients(grads: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``grads @ R / sqrt(grad_dim)``: the reference's ``gradientproj.project(grads) / normalize_factor`` with
    ``normalize_factor = sqrt(grad_dim)`` (``GRACE/gradient_computation.py``, ``main``). Chapter
    ``teacher-selection.md``."""
    if grads.shape[-1] != R.shape[0]:
        raise ValueError(f"grads have {grads.shape[-1]} coordinates but the projection expects {R.shape[0]}")
    return grads.to(R.dtype) @ R / math.sqrt(R.shape[0])


# ---------------------------------------------------------------------------------------------------------------
# Gaussian noisy-step KL (the chapter's reading of the information-theoretic connection)
# ---------------------------------------------------------------------------------------------------------------


def gaussian_shift_kl(delta: torch.Tensor, Sigma: torch.Tensor) -> torch.Tensor:
    """``KL(N(m + delta, Sigma) || N(m, Sigma)) = delta^T Sigma^-1 delta / 2`` for shifts ``delta (..., D)``.
    With a noisy step ``theta - (eta / n) sum_i g_i + N(0, sigma^2 K)``, adding one held-out example ``g`` shifts
    the mean by ``-(eta / n) g``; the expected KL is ``eta^2 / (2 sigma^2 n^2) tr(K^-1 E[g g^T])``, GRACE up to a
    constant (chapter ``teacher-selection.md``, derivation (1); Panigrahi et al. 2025, the leave-one-out
    stability connection)."""
    return 0.5 * (delta * torch.linalg.solve(Sigma, delta.unsqueeze(-1)).squeeze(-1)).sum(-1)


def gaussian_shift_kl_mc(delta: torch.Tensor, Sigma: torch.Tensor, samples: int,
                         generator: torch.Generator) -> torch.Tensor:
    """Monte-Carlo estimate of :func:`gaussian_shift_kl`: the mean of ``log p(z) - log q(z)`` over ``samples``
    draws ``z ~ p = N(delta, Sigma)``, with ``q = N(0, Sigma)`` (chapter ``teacher-selection.md``, derivation (1))."""
    samples = check_int("samples", samples)
    L = torch.linalg.cholesky(Sigma)
    z = torch.randn(samples, *delta.shape, generator=generator, dtype=delta.dtype) @ L.transpose(-1, -2) + delta
    Sinv = torch.linalg.inv(Sigma)

    def quad(v):
        return (v @ Sinv * v).sum(-1)

    return (0.5 * (quad(z) - quad(z - delta))).mean(0)


# ---------------------------------------------------------------------------------------------------------------
# Ranks
# ---------------------------------------------------------------------------------------------------------------


def ranks(x) -> np.ndarray:
    """Ranks 1..n of the entries of ``x`` with ties given their average rank (as ``scipy.stats.rankdata``), for
    :func:`spearman` (chapter ``teacher-selection.md``)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    _, inv = np.unique(x, return_inverse=True)
    sums = np.bincount(inv, weights=r)
    counts = np.bincount(inv)
    return sums[inv] / counts[inv]


def spearman(x, y) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (Pearson correlation of their average ranks); ``0`` if
    either is constant. Chapter ``teacher-selection.md``; the correlation Panigrahi et al. 2025 report."""
    rx, ry = ranks(x), ranks(y)
    if len(rx) != len(ry) or len(rx) < 2:
        raise ValueError(f"x and y need the same length >= 2, got {len(rx)} and {len(ry)}")
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return 0.0 if den == 0 else float((rx * ry).sum() / den)


def regret(goodness, student_acc) -> float:
    """Best student accuracy minus the accuracy of the student of the teacher with the highest ``goodness``
    (the score's pick; ties broken by the first such teacher). Chapter ``teacher-selection.md``; Panigrahi et al.
    2025, regret of the selected teacher."""
    goodness, student_acc = np.asarray(goodness, dtype=float), np.asarray(student_acc, dtype=float)
    return float(student_acc.max() - student_acc[int(np.argmax(goodness))])


# ---------------------------------------------------------------------------------------------------------------
# The toy: truth, teachers, sampled labels
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Task:
    """Truth logits ``scale * A x / sqrt(n) + beta * chi_S(x) * b`` on ``x in {-1, +1}^n``: a learnable linear part
    and a ``k``-sparse parity ``chi_S`` (``S`` the first ``k`` bits) that moves the logits along a fixed class
    vector ``b``. ``E`` is the direction of the teachers' smooth systematic error."""

    A: torch.Tensor
    b: torch.Tensor
    E: torch.Tensor
    k: int
    beta: float
    scale: float

    @property
    def n(self) -> int:
        return self.A.shape[1]

    @property
    def classes(self) -> int:
        return self.A.shape[0]


def make_task(n: int, classes: int, k: int, beta: float, scale: float, generator: torch.Generator) -> Task:
    """Draw ``A``, ``E`` (standard Gaussian ``(C, n)``) and a unit class vector ``b`` orthogonal to ``1`` (chapter
    ``teacher-selection.md``: the truth and the teachers' systematic error)."""
    n, classes, k = check_int("n", n), check_int("classes", classes, 2), check_int("k", k)
    beta, scale = check_nonnegative("beta", beta), check_positive("scale", scale)
    if k > n:
        raise ValueError(f"k must be at most n = {n}, got {k}")
    A = torch.randn(classes, n, generator=generator, dtype=F64)
    E = torch.randn(classes, n, generator=generator, dtype=F64)
    b = torch.randn(classes, generator=generator, dtype=F64)
    b = b - b.mean()
    return Task(A, b / b.norm(), E, k, beta, scale)


def sample_bits(num: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``num`` uniform points of ``{-1, +1}^n`` (float64): the toy's prompts (chapter ``teacher-selection.md``)."""
    return torch.randint(0, 2, (check_int("num", num), check_int("n", n)), generator=generator).to(F64) * 2 - 1


def teacher_logits(task: Task, x: torch.Tensor, know, err) -> torch.Tensor:
    """Logits ``(T, N, C)`` of ``T`` teachers on ``x (N, n)``: ``scale * (A + err_t E) x / sqrt(n) + know_t * beta
    * chi_S(x) b``. ``know_t`` in [0, 1] is how much of the parity part teacher ``t`` knows, ``err_t >= 0`` the size
    of its smooth systematic error; ``know = 1, err = 0`` is the truth. Chapter ``teacher-selection.md``."""
    know = torch.as_tensor(know, dtype=F64).reshape(-1, 1, 1)
    err = torch.as_tensor(err, dtype=F64).reshape(-1, 1, 1)
    if know.shape != err.shape:
        raise ValueError(f"know and err need one entry per teacher, got {know.numel()} and {err.numel()}")
    if (know < 0).any() or (know > 1).any() or (err < 0).any():
        raise ValueError("know must lie in [0, 1] and err must be >= 0")
    lin = task.scale * (x @ task.A.T) / math.sqrt(task.n)
    sys = task.scale * (x @ task.E.T) / math.sqrt(task.n)
    chi = x[:, :task.k].prod(-1, keepdim=True)
    return lin + err * sys + know * task.beta * chi * task.b


def true_labels(task: Task, x: torch.Tensor) -> torch.Tensor:
    """The true class ``argmax`` of the truth logits (a teacher with ``know = 1, err = 0``; chapter
    ``teacher-selection.md``)."""
    return teacher_logits(task, x, [1.0], [0.0])[0].argmax(-1)


def sample_labels(logits: torch.Tensor, temperature, responses: int, generator: torch.Generator) -> torch.Tensor:
    """``responses`` labels per prompt, ``(T, N, G)``, drawn from ``softmax(logits_t / tau_t)`` by the Gumbel-max
    trick; ``tau_t = 0`` is greedy decoding (the argmax, every response the same). Chapter
    ``teacher-selection.md`` (the teachers' sampling temperature)."""
    responses = check_int("responses", responses)
    tau = torch.as_tensor(temperature, dtype=F64).reshape(-1, 1, 1, 1)
    if tau.shape[0] != logits.shape[0] or (tau < 0).any():
        raise ValueError("temperature needs one entry >= 0 per teacher (0 = greedy)")
    u = torch.rand(*logits.shape[:2], responses, logits.shape[-1], generator=generator, dtype=F64)
    gumbel = -torch.log(-torch.log(u.clamp(1e-300, 1 - 1e-16)))
    z = logits.unsqueeze(2)
    scaled = torch.where(tau > 0, z / tau.clamp_min(1e-300) + gumbel, z + 0 * gumbel)
    return scaled.argmax(-1)


# ---------------------------------------------------------------------------------------------------------------
# The student: pretraining, per-example gradients, distillation side by side
# ---------------------------------------------------------------------------------------------------------------


def pretrain_student(task: Task, width: int, steps: int, batch: int, lr: float, seed: int) -> MLP:
    """A student (one ReLU MLP, ``distill.init_mlp`` at ``seed``) trained by SGD with cross-entropy for ``steps``
    steps on fresh batches labelled by the truth: it learns part of the linear part and (at this budget) none of
    the parity. Chapter ``teacher-selection.md``."""
    width, steps, batch = check_int("width", width), check_int("steps", steps, 0), check_int("batch", batch)
    lr = check_positive("lr", lr)
    seed = check_seeds([seed])[0]
    p = init_mlp([seed], task.n, width, task.classes, dtype=F64)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _ in range(steps):
            x = sample_bits(batch, task.n, g)
            _, grads = loss_and_grads(p, x.unsqueeze(0), true_labels(task, x).unsqueeze(0))
            for t, d in zip(p.tensors(), grads):
                t.sub_(d, alpha=lr)
    return p


def flat_params(p: MLP, i: int = 0) -> torch.Tensor:
    """Replica ``i`` of a ``distill.MLP`` as the flat vector of :mod:`dltheory.numerics.mlp` (``W1, b1, W2, b2``,
    row-major), so that :mod:`dltheory.numerics.pergrad` can differentiate it (chapter ``teacher-selection.md``)."""
    return torch.cat([t[i].reshape(-1) for t in p.tensors()])


def to_device(p: MLP, device) -> MLP:
    """A copy of the students ``p`` on ``device`` (chapter ``teacher-selection.md``: the `full` size on a GPU)."""
    return MLP(*(t.to(device) for t in p.tensors()))


def class_gradients(p: MLP, x: torch.Tensor, chunk_size: int | None = 4096) -> torch.Tensor:
    """Per-example cross-entropy gradients ``(N, C, P)`` of the student (replica 0 of ``p``) at every prompt of
    ``x (N, n)`` and every label ``c``: a response's gradient depends only on its prompt and its label, so each
    teacher's gradients are a gather of these (``torch.func`` per-example gradients,
    :func:`dltheory.numerics.pergrad.mlp_per_example_grads`). Chapter ``teacher-selection.md``."""
    n, m, c = p.W1.shape[2], p.W1.shape[1], p.W2.shape[1]
    N = x.shape[0]
    X = x.to(F64).repeat_interleave(c, 0)
    Y = torch.arange(c, device=x.device).repeat(N)
    G = mlp_per_example_grads(flat_params(p).to(F64), X, Y, [n, m, c], loss="xent", activation="relu",
                              chunk_size=chunk_size)
    return G.reshape(N, c, -1)


def gather_responses(per_class: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each teacher's per-response quantities ``(T, N, G, ...)`` from per-class ones ``(N, C, ...)`` and labels
    ``(T, N, G)`` (chapter ``teacher-selection.md``: a response's gradient depends only on its prompt and label)."""
    T, N, G = labels.shape
    idx = torch.arange(N, device=labels.device).view(1, N, 1).expand(T, N, G)
    return per_class[idx, labels]


@torch.no_grad()
def student_ce(p: MLP, x: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student (replica 0) at every prompt and label, ``(N, C)`` (the "student loss on
    teacher data" baseline of chapter ``teacher-selection.md`` and Panigrahi et al. 2025 is its mean over a
    teacher's responses)."""
    q = MLP(*(t[:1] for t in p.tensors()))
    return -torch.log_softmax(mlp_logits(q, x.to(device=p.W1.device, dtype=p.W1.dtype))[0], -1)


def distill_from_teachers(p0: MLP, x: torch.Tensor, labels: torch.Tensor, replicas: int, epochs: int, batch: int,
                          lr: float, seed: int) -> MLP:
    """Distill the pretrained student ``p0`` (replica 0) from every teacher side by side: ``T x replicas``
    copies, one batched program, each trained by SGD with cross-entropy on its teacher's responses ``labels (T,
    N, G)`` to prompts ``x (N, n)`` for ``epochs`` passes of minibatches of ``batch`` rows (``distill
    .loss_and_grads``). Replica ``r`` visits the rows in its own random order (``seed + r``), the same for every
    teacher, so teachers differ only in their labels. Returns the students, replica-major within teacher
    (index ``t * replicas + r``). Chapter ``teacher-selection.md``; the paper's SFT of the student on teacher
    responses (reference ``sft/sft_distil.py``)."""
    replicas, epochs, batch = check_int("replicas", replicas), check_int("epochs", epochs), check_int("batch", batch)
    lr = check_positive("lr", lr)
    seed = check_seeds([seed])[0]
    T, N, G = labels.shape
    S = T * replicas
    p = MLP(*(t[:1].expand(S, *t.shape[1:]).clone() for t in p0.tensors()))
    rows_x = x.to(device=p.W1.device, dtype=p.W1.dtype).repeat_interleave(G, 0)     # (N G, n)
    rows_y = labels.to(p.W1.device).reshape(T, N * G).repeat_interleave(replicas, 0)  # (S, N G)
    gens = [torch.Generator().manual_seed(seed + r) for r in range(replicas)]
    nb = (N * G) // batch
    if nb < 1:
        raise ValueError(f"batch = {batch} exceeds the {N * G} responses; use a smaller batch")
    with torch.no_grad():
        for _ in range(epochs):
            perms = torch.stack([torch.randperm(N * G, generator=g) for g in gens])   # (R, N G)
            perms = perms.repeat(T, 1).to(p.W1.device)                                  # (S, N G)
            for i in range(nb):
                idx = perms[:, i * batch:(i + 1) * batch]
                xb = rows_x[idx]
                yb = rows_y.gather(1, idx)
                _, grads = loss_and_grads(p, xb, yb)
                for t, d in zip(p.tensors(), grads):
                    t.sub_(d, alpha=lr)
    return p


def student_accuracy(p: MLP, x: torch.Tensor, y: torch.Tensor, replicas: int, per_replica: bool = False
                     ) -> torch.Tensor:
    """Test accuracy against the truth per teacher, averaged over its ``replicas`` students, ``(T,)``; with
    ``per_replica`` every student's, ``(T, replicas)`` (students from :func:`distill_from_teachers`). Chapter
    ``teacher-selection.md``."""
    acc = accuracy(p, x.to(device=p.W1.device, dtype=p.W1.dtype), y.to(p.W1.device))
    acc = acc.reshape(-1, check_int("replicas", replicas))
    return acc if per_replica else acc.mean(-1)
