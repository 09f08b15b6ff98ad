"""Progressive subnetworks (RaPTr): random-path training of a residual network, against full training, gradual
stacking and fixed-rate layer dropping.

Defined for the chapter *Progressive subnetworks (RaPTr)* (``chapters/transfer/progressive-subnetworks.md``), after
Panigrahi, Saunshi, Lyu, Miryoosefi, Reddi, Kale & Kumar 2024, "Efficient Stagewise Pretraining via Progressive
Subnetworks" (arXiv 2402.05913). No official code of the paper is in the stored index (searched by name and by
content), so this module follows the paper's description: in stage ``s`` every step trains a uniformly random path
of ``p_s`` of the ``L`` residual blocks, a fixed set of blocks (here the first and the last) always on, the selected
blocks' outputs rescaled; ``p`` grows stage by stage (e.g. 6-8-10-12 for 12 blocks). Fixed-rate layer dropping is
stochastic depth with one constant rate (the block-wise stochastic depth of ``mosaicml/composer``,
``docs/source/method_cards/stochastic_depth.md``); gradual stacking grows a prefix of blocks and initializes the new
blocks as copies of the top ones (gradual stacking of Reddi et al. 2023, the baseline of Panigrahi et al.; the
copy-the-top-blocks rule and the fresh optimizer state are this module's reading of it).

**Two halves.**

* *The derivation* (float64, small matrices): the expected product over random paths
  ``E_J prod_{l in J} (I + c W_l)`` by enumeration (:func:`expected_path_product`) against the paper-style formula
  ``sum_k c^k (p)_k / (L)_k e_k(W)`` (:func:`elementary_path_sum`, ordered products for non-commuting matrices);
  the gap to the full network (:func:`expected_output_gap`); the leading-order drop of the expected square loss at a
  transition ``p -> p'`` in the near-identity regime (:func:`predicted_transition_drop`).
* *The experiment*: a pre-LN residual MLP with a final layer norm whose every arm is a replica of one batched model
  (leading replica axis ``R``), trained in one tensor program (:func:`train_arms`). A per-replica, per-block mask
  ``(R, L)`` selects the path and a per-replica scale multiplies the selected blocks' outputs
  (:func:`residual_mlp_forward`). The optimizer (:func:`masked_adam_update`) is Adam written here with the formulas of
  :func:`dltheory.numerics.optimizers.adam_update`, but with a per-(replica, block) step counter and a mask: a skipped
  block's parameters *and* its moments are left exactly as they were (the shared ``adam_update`` keeps one step count
  per batch and would decay the moments of a block whose gradient is zero). FLOPs are counted in a ledger from the
  block-forwards each replica actually ran (:class:`FlopLedger`); the dense tensor program also computes the masked
  blocks, which a real implementation would skip, and the ledger counts what that implementation would compute.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from dltheory.numerics.validate import check_int, check_nonnegative, check_positive, check_seeds

SCALINGS = ("one", "sqrt", "linear")
KINDS = ("full", "raptr", "stack", "layerdrop")
CHAPTER = "chapters/transfer/progressive-subnetworks.md"


# ---------------------------------------------------------------------------------------------------------------
# Schedules and scalings
# ---------------------------------------------------------------------------------------------------------------


def check_schedule(path_lengths: Sequence[int], depth: int, fixed: Sequence[int] = ()) -> list[int]:
    """``path_lengths`` as a list of ints if it is strictly increasing, ends at ``depth`` and every length is at
    least the number of always-on blocks ``fixed``; otherwise a ``ValueError`` that names the fix.
    Chapter: chapters/transfer/progressive-subnetworks.md (the 6-8-10-12 schedule of Panigrahi et al. 2024)."""
    depth = check_int("depth", depth)
    ps = [check_int("path length", p) for p in path_lengths]
    if not ps or any(b <= a for a, b in zip(ps, ps[1:])):
        raise ValueError(f"path_lengths must be a non-empty strictly increasing list, got {list(path_lengths)}")
    if ps[-1] != depth:
        raise ValueError(f"the last path length must equal the depth {depth} (the last stage trains the full "
                         f"network), got {ps}")
    fixed = sorted(set(int(f) for f in fixed))
    if any(f < 0 or f >= depth for f in fixed):
        raise ValueError(f"fixed blocks must be indices in [0, {depth}), got {fixed}")
    if ps[0] < len(fixed):
        raise ValueError(f"the first path length {ps[0]} must be at least the number of fixed blocks {len(fixed)}")
    return ps


def stage_boundaries(path_lengths: Sequence[int], steps: int) -> list[int]:
    """The steps at which stages end for an equal split of ``steps`` over the stages: ``[t_1, ..., t_K = steps]``
    (stage ``s`` runs steps ``t_{s-1} <= t < t_s``). Chapter: chapters/transfer/progressive-subnetworks.md
    (Panigrahi et al. 2024, Algorithm 1: stage lengths ``T_1..T_K``; the equal split is this chapter's choice)."""
    K = len(list(path_lengths))
    steps = check_int("steps", steps, minimum=K)
    return [round(steps * (s + 1) / K) for s in range(K)]


def path_length_at(step: int, path_lengths: Sequence[int], boundaries: Sequence[int]) -> int:
    """The path length of the stage that contains ``step`` (0-based). Chapter: chapters/transfer/
    progressive-subnetworks.md."""
    for p, t in zip(path_lengths, boundaries):
        if step < t:
            return int(p)
    return int(path_lengths[-1])


def path_scale(kind: str, depth: int, p: int) -> float:
    """The factor multiplying a selected block's output on a path of ``p`` of ``depth`` blocks: ``"one"``: 1,
    ``"sqrt"``: ``sqrt(L/p)``, ``"linear"``: ``L/p`` (the three scalings the chapter compares; ``L/p`` is the one
    that makes the expected output match the full network to first order, derivation (1)).
    Chapter: chapters/transfer/progressive-subnetworks.md (Panigrahi et al. 2024, the scaled random path)."""
    if kind not in SCALINGS:
        raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}, got {kind!r}")
    depth, p = check_int("depth", depth), check_int("p", p)
    if p > depth:
        raise ValueError(f"p must be <= depth ({depth}), got {p}")
    return {"one": 1.0, "sqrt": math.sqrt(depth / p), "linear": depth / p}[kind]


def flops_ratio_from_schedule(path_lengths: Sequence[int], boundaries: Sequence[int], depth: int) -> float:
    """Block-forwards of a progressive schedule over those of full training at the same steps,
    ``sum_s p_s T_s / (L sum_s T_s)`` (0.75 for 6-8-10-12 of 12 with equal stages).
    Chapter: chapters/transfer/progressive-subnetworks.md (the paper's FLOP accounting, counted per layer)."""
    depth = check_int("depth", depth)
    lengths = np.diff([0, *boundaries])
    return float(np.dot(lengths, list(path_lengths)) / (depth * boundaries[-1]))


def sample_path_masks(n: int, depth: int, p: int, fixed: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """``n`` independent uniform random paths, as a ``(n, depth)`` 0/1 float64 mask: the ``fixed`` blocks always,
    plus ``p - |fixed|`` of the others drawn without replacement. Chapter: chapters/transfer/
    progressive-subnetworks.md (Panigrahi et al. 2024, Algorithm 1, the random subset with fixed layers ``I``)."""
    n, depth, p = check_int("n", n), check_int("depth", depth), check_int("p", p)
    fixed = sorted(set(int(f) for f in fixed))
    if p > depth or p < len(fixed):
        raise ValueError(f"p must lie in [{len(fixed)}, {depth}], got {p}")
    free = torch.tensor([i for i in range(depth) if i not in fixed], dtype=torch.long)
    mask = torch.zeros((n, depth), dtype=torch.float64)
    if fixed:
        mask[:, fixed] = 1.0
    k = p - len(fixed)
    if k:
        keys = torch.rand((n, len(free)), generator=generator, dtype=torch.float64)
        pick = free[keys.argsort(dim=1)[:, :k]]
        mask.scatter_(1, pick, 1.0)
    return mask


# ---------------------------------------------------------------------------------------------------------------
# Derivation (1): the expected product over random paths
# ---------------------------------------------------------------------------------------------------------------


def _check_mats(W: np.ndarray) -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 3 or W.shape[1] != W.shape[2]:
        raise ValueError(f"W must be an array of L square matrices, shape (L, d, d), got shape {W.shape}")
    return W


def path_product(W: np.ndarray, path: Sequence[int], c: float) -> np.ndarray:
    """The linear residual network restricted to ``path``: ``(I + c W_{j_p}) ... (I + c W_{j_1})`` with
    ``j_1 < ... < j_p`` (block ``j_1`` acts first). Chapter: chapters/transfer/progressive-subnetworks.md,
    derivation (1)."""
    W = _check_mats(W)
    out = np.eye(W.shape[1])
    for j in sorted(path):
        out = (np.eye(W.shape[1]) + c * W[j]) @ out
    return out


def expected_path_product(W: np.ndarray, p: int, c: float) -> np.ndarray:
    """``E_J prod_{l in J}(I + c W_l)`` over all ``C(L, p)`` paths of ``p`` blocks, uniformly (exact, by
    enumeration). Chapter: chapters/transfer/progressive-subnetworks.md, derivation (1)."""
    W = _check_mats(W)
    L = W.shape[0]
    p = check_int("p", p)
    if p > L:
        raise ValueError(f"p must be <= L = {L}, got {p}")
    acc = np.zeros(W.shape[1:])
    paths = list(itertools.combinations(range(L), p))
    for J in paths:
        acc += path_product(W, J, c)
    return acc / len(paths)


def falling(n, k: int):
    """The falling factorial ``(n)_k = n (n-1) ... (n-k+1)`` (works for sympy symbols too).
    Chapter: chapters/transfer/progressive-subnetworks.md, derivation (1)."""
    out = 1
    for i in range(k):
        out = out * (n - i)
    return out


def ordered_elementary(W: np.ndarray, k: int) -> np.ndarray:
    """The ordered elementary symmetric sum ``e_k(W) = sum_{i_1 < ... < i_k} W_{i_k} ... W_{i_1}`` (the product in
    network order; for commuting matrices it is the usual ``e_k``). Chapter: chapters/transfer/
    progressive-subnetworks.md, derivation (1)."""
    W = _check_mats(W)
    L, d = W.shape[0], W.shape[1]
    # dynamic programming over blocks: E[j] = sum over increasing chains of length j ending at or before l
    E = [np.eye(d)] + [np.zeros((d, d)) for _ in range(k)]
    for l in range(L):
        for j in range(min(k, l + 1), 0, -1):
            E[j] = E[j] + W[l] @ E[j - 1]
    return E[k]


def elementary_path_sum(W: np.ndarray, p: int, c: float) -> np.ndarray:
    """``sum_{k=0}^{p} c^k (p)_k / (L)_k e_k(W)``: the closed form of :func:`expected_path_product` (each ordered
    chain of ``k`` blocks lies on a uniform random ``p``-path with probability ``(p)_k / (L)_k``).
    Chapter: chapters/transfer/progressive-subnetworks.md, derivation (1)."""
    W = _check_mats(W)
    L = W.shape[0]
    p = check_int("p", p)
    return sum(c**k * falling(p, k) / falling(L, k) * ordered_elementary(W, k) for k in range(p + 1))


def expected_output_gap(W: np.ndarray, p: int, c: float) -> float:
    """Frobenius norm of ``E_J prod_{l in J}(I + c W_l) - prod_l (I + W_l)``: how far the expected path network is
    from the full one. ``O(eps^2)`` for ``W = eps W0`` at ``c = L/p``, ``O(eps)`` otherwise.
    Chapter: chapters/transfer/progressive-subnetworks.md, derivation (1) (the gap's order in ``eps``)."""
    W = _check_mats(W)
    full = path_product(W, range(W.shape[0]), 1.0)
    return float(np.linalg.norm(elementary_path_sum(W, p, c) - full))


def predicted_transition_drop(W: np.ndarray, p: int, p_next: int) -> float:
    """Leading-order drop of the expected square loss ``(1/2) E_x E_J ||f_J(x) - y(x)||^2`` (``x ~ N(0, I)``) when
    the path length grows from ``p`` to ``p_next`` with the scale ``c = L/p``, in the near-identity regime where the
    full network fits the target to ``O(eps^2)``:
    ``L^2 / (2 (L - 1)) (1/p - 1/p_next) sum_l ||W_l - Wbar||_F^2``.
    It comes from the variance of the first-order term ``c sum_{l in J} W_l x`` under sampling without replacement;
    the mean term cancels at ``c = L/p``. Chapter: chapters/transfer/progressive-subnetworks.md, derivation (2)."""
    W = _check_mats(W)
    L = W.shape[0]
    p, p_next = check_int("p", p), check_int("p_next", p_next)
    if not p < p_next <= L:
        raise ValueError(f"need p < p_next <= L = {L}, got p={p}, p_next={p_next}")
    spread = float(((W - W.mean(0)) ** 2).sum())
    return L**2 / (2 * (L - 1)) * (1 / p - 1 / p_next) * spread


def expected_path_loss(W: np.ndarray, target: np.ndarray, p: int, c: float) -> float:
    """Exact ``(1/2) E_x E_J ||f_J(x) - T x||^2`` for ``x ~ N(0, I)``: ``(1/2) mean_J ||P_J - T||_F^2`` over all
    paths (``P_J`` from :func:`path_product`). Chapter: chapters/transfer/progressive-subnetworks.md,
    derivation (2)."""
    W = _check_mats(W)
    L = W.shape[0]
    paths = list(itertools.combinations(range(L), check_int("p", p)))
    return float(np.mean([0.5 * np.sum((path_product(W, J, c) - target) ** 2) for J in paths]))


# ---------------------------------------------------------------------------------------------------------------
# The batched pre-LN residual MLP
# ---------------------------------------------------------------------------------------------------------------


def layer_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Layer norm over the last axis without a learned gain or bias (the chapter's model has none).
    Chapter: chapters/transfer/progressive-subnetworks.md, derivation (3) and the experiment's model."""
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps)


def init_residual_mlp(seeds: Sequence[int], depth: int, d_in: int, width: int, hidden: int, d_out: int,
                      dtype: torch.dtype = torch.float32) -> dict:
    """Parameters of ``len(seeds)`` replicas of the pre-LN residual MLP, each drawn from
    ``torch.Generator().manual_seed(seed)`` (a replica's numbers do not depend on the others): ``emb (R, d_in, d)``,
    ``W1 (R, L, d, h)``, ``W2 (R, L, h, d)`` (scaled by ``1/sqrt(L)``, so the residual stream stays O(1)),
    ``head (R, d, d_out)``; Gaussian with variance ``1/fan_in``. Chapter: chapters/transfer/
    progressive-subnetworks.md (the experiment's model)."""
    seeds = check_seeds(seeds)
    L, di, d = check_int("depth", depth), check_int("d_in", d_in), check_int("width", width)
    h, do = check_int("hidden", hidden), check_int("d_out", d_out)
    parts = {k: [] for k in ("emb", "W1", "W2", "head")}
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        parts["emb"].append(torch.randn((di, d), generator=g) / math.sqrt(di))
        parts["W1"].append(torch.randn((L, d, h), generator=g) / math.sqrt(d))
        parts["W2"].append(torch.randn((L, h, d), generator=g) / math.sqrt(h * L))
        parts["head"].append(torch.randn((d, do), generator=g) / math.sqrt(d))
    return {k: torch.stack(v).to(dtype) for k, v in parts.items()}


def residual_mlp_forward(params: dict, x: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor,
                         final_ln: bool = True) -> torch.Tensor:
    """Forward pass of every replica: ``y_0 = x emb``, ``y_l = y_{l-1} + m_{r,l} a_{r,l} W2_l relu(W1_l LN(y_{l-1}))``,
    output ``LN(y_L) head`` (or ``y_L head`` without the final layer norm). ``x`` is ``(B, d_in)`` (shared by the
    replicas) or ``(R, B, d_in)``; ``mask`` and ``scale`` are ``(R, L)`` (a block with ``m = 0`` is skipped: the
    residual stream passes it unchanged). Returns ``(R, B, d_out)``. Chapter: chapters/transfer/
    progressive-subnetworks.md (Panigrahi et al. 2024: the random path of a residual network with layer norm)."""
    emb, W1, W2, head = params["emb"], params["W1"], params["W2"], params["head"]
    R, L = W1.shape[0], W1.shape[1]
    if mask.shape != (R, L) or scale.shape != (R, L):
        raise ValueError(f"mask and scale must have shape (replicas, blocks) = {(R, L)}, got {tuple(mask.shape)} "
                         f"and {tuple(scale.shape)}")
    y = torch.matmul(x, emb) if x.dim() == 3 else torch.einsum("bi,rid->rbd", x, emb)
    gate = (mask * scale).to(y.dtype)
    for l in range(L):
        z = torch.relu(torch.bmm(layer_norm(y), W1[:, l]))
        y = y + gate[:, l, None, None] * torch.bmm(z, W2[:, l])
    return torch.bmm(layer_norm(y) if final_ln else y, head)


def mse_per_replica(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each replica, ``mean_{b, o} (pred - target)^2``: ``(R, B, d_out)`` against
    ``(B, d_out)`` gives ``(R,)``. Chapter: chapters/transfer/progressive-subnetworks.md."""
    return ((pred - target) ** 2).mean((-1, -2))


# ---------------------------------------------------------------------------------------------------------------
# The masked Adam
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class MaskedAdamState:
    """First and second moments of every parameter tensor and the number of updates each entry has received,
    per replica (``emb``, ``head``: ``(R,)``) and per replica and block (``W1``, ``W2``: ``(R, L)``)."""

    m: dict
    v: dict
    steps: dict


BLOCK_KEYS = ("W1", "W2")


def masked_adam_init(params: dict) -> MaskedAdamState:
    """Zero moments and zero step counts. Chapter: chapters/transfer/progressive-subnetworks.md."""
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v = {k: torch.zeros_like(t) for k, t in params.items()}
    steps = {k: torch.zeros(t.shape[:2] if k in BLOCK_KEYS else t.shape[:1], dtype=torch.float64, device=t.device)
             for k, t in params.items()}
    return MaskedAdamState(m, v, steps)


def masked_adam_update(params: dict, grads: dict, state: MaskedAdamState, block_mask: torch.Tensor,
                       replica_active: torch.Tensor, lr: float, beta1: float = 0.9, beta2: float = 0.999,
                       eps: float = 1e-8):
    """One Adam step (the formulas of :func:`dltheory.numerics.optimizers.adam_update`, Kingma & Ba 2015, Alg. 1)
    applied only where a block was on the path (``block_mask (R, L)`` for ``W1``/``W2``) and a replica is still
    training (``replica_active (R,)`` for every tensor). Elsewhere the parameters, both moments and the step count
    are returned unchanged, so a skipped block resumes exactly where it left off; each entry's bias correction uses
    its own step count. Returns ``(params_new, state_new)``; nothing is modified in place.
    Chapter: chapters/transfer/progressive-subnetworks.md (the optimizer that leaves skipped blocks untouched)."""
    check_positive("lr", lr)
    for name, b in (("beta1", beta1), ("beta2", beta2)):
        if not (isinstance(b, int | float) and 0 <= b < 1):
            raise ValueError(f"{name} must lie in [0, 1), got {b!r}")
    check_nonnegative("eps", eps)
    active = replica_active.to(torch.float64)
    block_mask = block_mask.to(active.device)
    new_p, new_m, new_v, new_s = {}, {}, {}, {}
    for k, x in params.items():
        on = block_mask.to(torch.float64) * active[:, None] if k in BLOCK_KEYS else active
        steps = state.steps[k] + on
        on_b = on.reshape(*on.shape, *([1] * (x.dim() - on.dim()))).to(x.dtype) > 0
        g = grads[k]
        m = torch.where(on_b, beta1 * state.m[k] + (1 - beta1) * g, state.m[k])
        v = torch.where(on_b, beta2 * state.v[k] + (1 - beta2) * g * g, state.v[k])
        kk = steps.clamp_min(1).reshape(on_b.shape[:on.dim()] + (1,) * (x.dim() - on.dim()))
        bc1 = (1 - beta1 ** kk).to(x.dtype)
        bc2 = (1 - beta2 ** kk).to(x.dtype)
        upd = (lr / bc1) * m / (v.sqrt() / bc2.sqrt() + eps)
        new_p[k] = torch.where(on_b, x - upd, x)
        new_m[k], new_v[k], new_s[k] = m, v, steps
    return new_p, MaskedAdamState(new_m, new_v, new_s)


# ---------------------------------------------------------------------------------------------------------------
# FLOP ledger
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FlopLedger:
    """Block-forwards each replica ran (one per block on its path per training step), and their FLOPs:
    a block's forward costs ``2 B (d h + h d)`` multiply-adds counted as FLOPs and the backward twice that, so one
    training block-forward is ``12 B d h`` FLOPs. Embedding and head are not counted (they are the same for every
    arm). Chapter: chapters/transfer/progressive-subnetworks.md (FLOPs counted from block-forwards)."""

    replicas: int
    batch: int
    width: int
    hidden: int
    block_forwards: np.ndarray = field(init=False)

    def __post_init__(self):
        self.block_forwards = np.zeros(self.replicas, dtype=np.int64)

    def add(self, mask: torch.Tensor, active: torch.Tensor) -> None:
        """Record one training step: ``mask (R, L)`` the blocks on each path, ``active (R,)`` who trained."""
        self.block_forwards += (mask.sum(1) * active).round().to(torch.int64).cpu().numpy()

    def flops(self) -> np.ndarray:
        return self.block_forwards * 12.0 * self.batch * self.width * self.hidden


# ---------------------------------------------------------------------------------------------------------------
# The task and the batched training of every arm
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One arm of the comparison: ``kind`` in ``full``, ``raptr``, ``stack``, ``layerdrop``; ``scaling`` (RaPTr
    only) in ``one``, ``sqrt``, ``linear``; ``budget`` the fraction of the steps it trains (``full`` at equal FLOPs:
    the schedule's FLOPs ratio); ``keep`` the keep probability of fixed-rate layer dropping."""

    name: str
    kind: str
    scaling: str = "one"
    budget: float = 1.0
    keep: float = 1.0


def make_teacher(seed: int, d_in: int, d_out: int, hidden: int) -> dict:
    """A random two-hidden-layer tanh teacher ``y = A3 tanh(A2 tanh(A1 x))`` (Gaussian weights, variance
    ``1/fan_in``, output scaled to unit variance per coordinate), drawn from ``manual_seed(seed)``.
    Chapter: chapters/transfer/progressive-subnetworks.md (the online regression task)."""
    g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    di, do, h = check_int("d_in", d_in), check_int("d_out", d_out), check_int("hidden", hidden)
    A1 = torch.randn((di, h), generator=g) * (2.0 / math.sqrt(di))
    A2 = torch.randn((h, h), generator=g) * (2.0 / math.sqrt(h))
    A3 = torch.randn((h, do), generator=g) / math.sqrt(h)
    x = torch.randn((4096, di), generator=g)
    std = teacher_apply({"A1": A1, "A2": A2, "A3": A3, "scale": torch.ones(do)}, x).std(0)
    return {"A1": A1, "A2": A2, "A3": A3, "scale": 1 / std}


def teacher_apply(teacher: dict, x: torch.Tensor) -> torch.Tensor:
    """The teacher's targets for inputs ``x (B, d_in)``. Chapter: chapters/transfer/progressive-subnetworks.md."""
    return (torch.tanh(torch.tanh(x @ teacher["A1"]) @ teacher["A2"]) @ teacher["A3"]) * teacher["scale"]


@dataclass
class History:
    """What :func:`train_arms` returns. ``names`` of the replicas (arm name + ``/s<seed index>``);
    ``eval_steps``; ``full_loss (R, n_eval)``: the full network's loss (every block, scale 1); ``own_loss (R,
    n_eval)``: the loss of the configuration the replica trains (stacking: its prefix; RaPTr and layer dropping: one
    fixed random path per evaluation; full: the full network); ``jumps``: per transition, per replica, the relative
    jump (``nan`` for arms without transitions); ``pre``/``post`` the losses either side; ``ledger``;
    ``final_full (R,)`` the full network's final loss (stacking: its full prefix = the full network)."""

    names: list
    arms: list
    eval_steps: np.ndarray
    full_loss: np.ndarray
    own_loss: np.ndarray
    jumps: np.ndarray
    pre: np.ndarray
    post: np.ndarray
    boundary_full_loss: np.ndarray
    ledger: FlopLedger
    final_full: np.ndarray
    params: dict


def _arm_config(arm: Arm, step: int, depth: int, ps, bounds, fixed, gen, steps) -> tuple:
    """(mask (L,), scale, active) of one replica at ``step``."""
    active = step < round(arm.budget * steps)
    if arm.kind == "full":
        return torch.ones(depth, dtype=torch.float64), 1.0, active
    if arm.kind == "layerdrop":
        keep = (torch.rand(depth, generator=gen, dtype=torch.float64) < arm.keep).to(torch.float64)
        return keep, 1.0 / arm.keep, active
    p = path_length_at(step, ps, bounds)
    if arm.kind == "stack":
        m = torch.zeros(depth, dtype=torch.float64)
        m[:p] = 1.0
        return m, 1.0, active
    return sample_path_masks(1, depth, p, fixed, gen)[0], path_scale(arm.scaling, depth, p), active


def _eval_paths(params, x, y, ridx, depth, p, fixed, scale, n_paths, gen, final_ln=True):
    """Mean and per-path losses of replicas ``ridx`` over ``n_paths`` random paths of length ``p`` (one batched
    forward: the selected replicas are repeated ``n_paths`` times along the replica axis)."""
    k = len(ridx)
    sub = {key: val[ridx].repeat_interleave(n_paths, 0) for key, val in params.items()}
    if p == depth:
        mask = torch.ones((k * n_paths, depth), dtype=torch.float64)
    else:
        mask = sample_path_masks(k * n_paths, depth, p, fixed, gen)
    sc = torch.as_tensor(scale, dtype=torch.float64).repeat_interleave(n_paths)[:, None].expand(k * n_paths, depth)
    mask, sc = mask.to(x.device), sc.contiguous().to(x.device)
    loss = mse_per_replica(residual_mlp_forward(sub, x, mask, sc, final_ln), y).view(k, n_paths)
    return loss.mean(1)


def train_arms(arms: Sequence[Arm], seeds: Sequence[int], teacher: dict, depth: int, width: int, hidden: int,
               path_lengths: Sequence[int], steps: int, batch: int, lr: float, fixed: Sequence[int] = (0, -1),
               eval_batch: int = 256, eval_every: int = 25, jump_paths: int = 32, data_seed: int = 0,
               stack_copy: bool = True, final_ln: bool = True, boundaries: Sequence[int] | None = None,
               device: torch.device | str | None = None) -> History:
    """Train every arm, for every seed, as replicas of one batched pre-LN residual MLP (one tensor program,
    :func:`residual_mlp_forward`) with :func:`masked_adam_update`, on an online regression task: each step draws a
    fresh batch from the teacher (the same batch for every replica: common random numbers).

    * ``full``: every block, every step, for ``budget * steps`` steps (then frozen);
    * ``raptr``: stage ``s`` trains one uniform random path of ``p_s`` blocks per step (the ``fixed`` blocks always
      on; ``-1`` is the last block), selected blocks scaled by :func:`path_scale`;
    * ``stack``: stage ``s`` trains the prefix of ``p_s`` blocks; at a transition the new blocks are copies of the
      top ones (``stack_copy``; fresh optimizer state) -- gradual stacking;
    * ``layerdrop``: every block kept independently with probability ``keep`` at every step, scale ``1/keep``.

    At every stage boundary, before the transition, it records the full network's loss, and the mean loss over
    ``jump_paths`` random paths of the old and of the new length (at the new scale) on a fixed evaluation batch:
    the relative jump ``(post - pre) / pre``. For stacking, ``pre``/``post`` are the prefix before and after the
    growth. ``final_ln=False`` drops the final layer norm; ``boundaries`` (default: :func:`stage_boundaries`, equal
    stages) are the steps at which the stages end. Everything random is drawn on the CPU and moved to ``device``
    (default CPU), so the numbers do not depend on the device. Chapter: chapters/transfer/progressive-subnetworks.md
    (Panigrahi et al. 2024, Algorithm 1, and the
    stage-transition measurements of its stability section)."""
    seeds = check_seeds(seeds)
    L, d, h = check_int("depth", depth), check_int("width", width), check_int("hidden", hidden)
    ps = check_schedule(path_lengths, L, [f % L for f in fixed])
    fixed = sorted(set(f % L for f in fixed))
    steps, batch = check_int("steps", steps), check_int("batch", batch)
    lr = check_positive("lr", lr)
    eval_every, jump_paths = check_int("eval_every", eval_every), check_int("jump_paths", jump_paths)
    for a in arms:
        if a.kind not in KINDS:
            raise ValueError(f"arm {a.name!r}: kind must be one of {', '.join(KINDS)}, got {a.kind!r}")
        if not 0 < a.budget <= 1 or not 0 < a.keep <= 1:
            raise ValueError(f"arm {a.name!r}: budget and keep must lie in (0, 1]")
    bounds = stage_boundaries(ps, steps) if boundaries is None else [check_int("boundary", b) for b in boundaries]
    if len(bounds) != len(ps) or any(b <= a for a, b in zip(bounds, bounds[1:])) or bounds[-1] != steps:
        raise ValueError(f"boundaries must be {len(ps)} increasing steps ending at steps = {steps}, got {bounds}")
    d_in, d_out = teacher["A1"].shape[0], teacher["A3"].shape[1]
    reps = [(a, i) for a in arms for i in range(len(seeds))]
    R = len(reps)
    names = [f"{a.name}/s{i}" for a, i in reps]
    dev = torch.device(device) if device is not None else torch.device("cpu")
    params = {k: v.to(dev) for k, v in init_residual_mlp([seeds[i] for _, i in reps], L, d_in, d, h, d_out).items()}
    teacher = {k: v.to(dev) for k, v in teacher.items()}
    state = masked_adam_init(params)
    g_data = torch.Generator().manual_seed(10_000 + data_seed)
    g_eval = torch.Generator().manual_seed(20_000 + data_seed)
    g_path = torch.Generator().manual_seed(30_000 + data_seed)
    g_jump = torch.Generator().manual_seed(40_000 + data_seed)
    x_eval = torch.randn((eval_batch, d_in), generator=g_eval).to(dev)
    y_eval = teacher_apply(teacher, x_eval)
    ledger = FlopLedger(R, batch, d, h)
    ones = torch.ones((R, L), dtype=torch.float64, device=dev)
    eval_steps, full_l, own_l = [], [], []
    nb = len(ps) - 1
    jumps = np.full((nb, R), np.nan)
    pre = np.full((nb, R), np.nan)
    post = np.full((nb, R), np.nan)
    bfull = np.full((nb, R), np.nan)
    raptr_idx = [r for r, (a, _) in enumerate(reps) if a.kind == "raptr"]
    stack_idx = [r for r, (a, _) in enumerate(reps) if a.kind == "stack"]
    g_own = torch.Generator().manual_seed(50_000 + data_seed)

    def evaluate(step):
        with torch.no_grad():
            full = mse_per_replica(residual_mlp_forward(params, x_eval, ones, ones, final_ln), y_eval)
            cfg = [_arm_config(a, min(step, steps - 1), L, ps, bounds, fixed, g_own, steps) for a, _ in reps]
            m = torch.stack([c[0] for c in cfg]).to(dev)
            s = torch.tensor([c[1] for c in cfg], dtype=torch.float64)[:, None].expand(R, L).contiguous().to(dev)
            own = mse_per_replica(residual_mlp_forward(params, x_eval, m, s, final_ln), y_eval)
        eval_steps.append(step)
        full_l.append(full.cpu().numpy().astype(np.float64))
        own_l.append(own.cpu().numpy().astype(np.float64))

    evaluate(0)
    for step in range(steps):
        if step in bounds[:-1]:
            b = bounds.index(step)
            p_old, p_new = ps[b], ps[b + 1]
            with torch.no_grad():
                full = mse_per_replica(residual_mlp_forward(params, x_eval, ones, ones, final_ln), y_eval).cpu().numpy()
                bfull[b] = full
                if raptr_idx:
                    sc_old = [path_scale(reps[r][0].scaling, L, p_old) for r in raptr_idx]
                    sc_new = [path_scale(reps[r][0].scaling, L, p_new) for r in raptr_idx]
                    lo = _eval_paths(params, x_eval, y_eval, raptr_idx, L, p_old, fixed, sc_old, jump_paths, g_jump,
                                     final_ln)
                    hi = _eval_paths(params, x_eval, y_eval, raptr_idx, L, p_new, fixed, sc_new, jump_paths, g_jump,
                                     final_ln)
                    pre[b, raptr_idx], post[b, raptr_idx] = lo.cpu().numpy(), hi.cpu().numpy()
                if stack_idx:
                    m_old = torch.zeros((R, L), dtype=torch.float64, device=dev)
                    m_old[:, :p_old] = 1
                    lo = mse_per_replica(residual_mlp_forward(params, x_eval, m_old, ones, final_ln), y_eval)
                    lo = lo.cpu().numpy()
                    if stack_copy:
                        k = p_new - p_old
                        src = list(range(p_old - k, p_old))
                        for key in BLOCK_KEYS:
                            new = params[key].clone()
                            new[stack_idx, p_old:p_new] = params[key][stack_idx][:, src]
                            params[key] = new
                            for buf in (state.m, state.v):
                                z = buf[key].clone()
                                z[stack_idx, p_old:p_new] = 0
                                buf[key] = z
                            st = state.steps[key].clone()
                            st[stack_idx, p_old:p_new] = 0
                            state.steps[key] = st
                    m_new = torch.zeros((R, L), dtype=torch.float64, device=dev)
                    m_new[:, :p_new] = 1
                    hi = mse_per_replica(residual_mlp_forward(params, x_eval, m_new, ones, final_ln), y_eval)
                    hi = hi.cpu().numpy()
                    pre[b, stack_idx], post[b, stack_idx] = lo[stack_idx], hi[stack_idx]
        cfg = [_arm_config(a, step, L, ps, bounds, fixed, g_path, steps) for a, _ in reps]
        mask = torch.stack([c[0] for c in cfg])
        scale = torch.tensor([c[1] for c in cfg], dtype=torch.float64)[:, None].expand(R, L).contiguous()
        active = torch.tensor([float(c[2]) for c in cfg], dtype=torch.float64)
        x = torch.randn((batch, d_in), generator=g_data).to(dev)
        y = teacher_apply(teacher, x)
        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        loss = mse_per_replica(residual_mlp_forward(leaves, x, mask.to(dev), scale.to(dev), final_ln), y).sum()
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
        ledger.add(mask, active)
        params, state = masked_adam_update(leaves, grads, state, mask.to(dev), active.to(dev), lr)
        params = {k: v.detach() for k, v in params.items()}
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            evaluate(step + 1)
    jumps = (post - pre) / pre
    with torch.no_grad():
        final = mse_per_replica(residual_mlp_forward(params, x_eval, ones, ones, final_ln), y_eval)
        final = final.cpu().numpy().astype(np.float64)
    return History(names, [a for a, _ in reps], np.asarray(eval_steps), np.stack(full_l, 1), np.stack(own_l, 1),
                   jumps, pre, post, bfull, ledger, final, params)


def arm_mean(history: History, name: str, values: np.ndarray) -> np.ndarray:
    """Mean over the seeds of arm ``name`` of ``values``, an array whose first axis is the replica axis of
    ``history`` (e.g. ``history.final_full``, ``history.full_loss``, ``history.jumps.T``).
    Chapter: chapters/transfer/progressive-subnetworks.md."""
    idx = [r for r, a in enumerate(history.arms) if a.name == name]
    if not idx:
        raise ValueError(f"no arm named {name!r}; arms are {sorted({a.name for a in history.arms})}")
    return np.asarray(values)[idx].mean(0)
