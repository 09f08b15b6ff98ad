"""A minimal Elman ReLU RNN, its infinite-width kernel, readouts, gradient-descent training and the best
additive model.

Defined for the chapter *What over-parametrized RNNs provably learn*
(``chapters/overparametrization/rnn-learning.md``), after Panigrahi & Goyal, "Learning and Generalization
in RNNs" (NeurIPS 2021, arXiv 2106.00047) and Allen-Zhu & Li, "Can SGD Learn Recurrent Neural Networks
with Provable Generalization?" (NeurIPS 2019).

Model (tokens ``x_t`` of unit norm, ``h_0 = 0``, only the final output is used)::

    h_t = relu(W h_{t-1} + A x_t),    f(s) = B h_L,
    W_ij ~ N(0, sigma_w^2 / m),  A_ij ~ N(0, sigma_a^2),  B_cj ~ N(0, sigma_b^2 / m).

With ``sigma_w^2 = 2`` (He scale) the recurrence is critical: at infinite width ``<h_t, h_t>/m`` grows
linearly in ``t`` instead of exponentially. As ``m -> infinity`` (the same ``W`` at every step)
``<h_t(s), h_t(s')>/m`` converges to the kernel ``K_t(s, s')`` of :func:`kernel_recursion`::

    Sigma_t(s, s') = sigma_w^2 K_{t-1}(s, s') + sigma_a^2 <x_t, x'_t>,
    K_t(s, s')     = sqrt(Sigma_t(s, s) Sigma_t(s', s')) * relu_kernel(rho_t),   rho_t = normalized Sigma_t,

with ``relu_kernel = kappa_1 / 2`` the order-1 arc-cosine kernel of Cho & Saul (2009), imported from
:mod:`dltheory.numerics.kernels` (one implementation for the whole book).

Reusable pieces: :func:`init_elman`, :func:`hidden_states`, :func:`kernel_recursion`,
:func:`empirical_kernel`, :func:`ridge_fit` / :func:`decode_errors` (the readout of earlier tokens from
``h_L``), :func:`ntk_lambda_max` and :func:`train_gd` (gradient descent on ``W`` only, output centred at
initialization), and :func:`fit_additive` (the best sum of per-token functions, by exact least squares).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dltheory.numerics.kernels import relu_kernel
from dltheory.numerics.validate import check_int, check_positive
from dltheory.overparametrization.languages import all_strings, get_task


def _check_sequences(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim < 3 or not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a float tensor of token vectors (..., n, L, d), got "
                         f"{x.dtype} {tuple(x.shape)}; embed integer strings with "
                         "dltheory.overparametrization.languages.embed")
    return x


# ------------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ElmanRNN:
    """Parameters of an Elman ReLU RNN with the initialization scales that produced them.

    ``W``: ``(m, m)`` or ``(R, m, m)`` for ``R`` independent replicas; ``A``: ``(m, d)`` or ``(R, m, d)``;
    ``B``: ``(c, m)`` or ``(R, c, m)``."""

    W: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    sigma_w: float
    sigma_a: float
    sigma_b: float

    @property
    def width(self) -> int:
        return self.W.shape[-1]


def init_elman(d: int, width: int, n_out: int, generator: torch.Generator, sigma_w: float = math.sqrt(2.0),
               sigma_a: float = math.sqrt(2.0), sigma_b: float = 1.0, replicas: int | None = None,
               dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> ElmanRNN:
    """Draw ``W_ij ~ N(0, sigma_w^2/m)``, ``A_ij ~ N(0, sigma_a^2)``, ``B_cj ~ N(0, sigma_b^2/m)``.

    ``sigma_w = sqrt(2)`` is the He (critical) scale used throughout the chapter; ``A`` has no ``1/d``
    because tokens have unit norm, so each pre-activation coordinate gets input variance ``sigma_a^2``.
    ``replicas`` stacks independent networks along a leading axis. Samples on the CPU from ``generator``
    and then moves to ``device``, so a seed gives the same network on every device."""
    check_int("d", d)
    check_int("width", width)
    check_int("n_out", n_out)
    for name, v in (("sigma_w", sigma_w), ("sigma_a", sigma_a), ("sigma_b", sigma_b)):
        check_positive(name, v)
    lead = () if replicas is None else (check_int("replicas", replicas),)
    f64 = torch.float64
    W = torch.randn(*lead, width, width, generator=generator, dtype=f64) * (sigma_w / math.sqrt(width))
    A = torch.randn(*lead, width, d, generator=generator, dtype=f64) * sigma_a
    B = torch.randn(*lead, n_out, width, generator=generator, dtype=f64) * (sigma_b / math.sqrt(width))
    cast = lambda t: t.to(device=device, dtype=dtype)
    return ElmanRNN(cast(W), cast(A), cast(B), float(sigma_w), float(sigma_a), float(sigma_b))


def hidden_states(W: torch.Tensor, A: torch.Tensor, x: torch.Tensor, all_steps: bool = False) -> torch.Tensor:
    """Run ``h_t = relu(W h_{t-1} + A x_t)`` from ``h_0 = 0`` over ``x`` of shape ``(..., n, L, d)``.

    Returns ``h_L`` of shape ``(..., n, m)``, or every ``h_t`` stacked as ``(L, ..., n, m)`` with
    ``all_steps=True``. Leading batch axes of ``W`` (``(R, m, m)``) broadcast against those of ``x``."""
    x = _check_sequences(x)
    if W.shape[-1] != W.shape[-2] or A.shape[-2] != W.shape[-1] or A.shape[-1] != x.shape[-1]:
        raise ValueError(f"shapes do not fit: W {tuple(W.shape)}, A {tuple(A.shape)}, x {tuple(x.shape)}; "
                         "need W (..., m, m), A (..., m, d), x (..., n, L, d)")
    Wt, At = W.transpose(-1, -2), A.transpose(-1, -2)
    h = torch.relu(x[..., 0, :] @ At)
    hs = [h]
    for t in range(1, x.shape[-2]):
        h = torch.relu(h @ Wt + x[..., t, :] @ At)
        if all_steps:
            hs.append(h)
    return torch.stack(hs) if all_steps else h


def outputs(net: ElmanRNN, x: torch.Tensor, W: torch.Tensor | None = None) -> torch.Tensor:
    """``f(s) = B h_L(s)`` of shape ``(..., n, c)``; ``W`` replaces ``net.W`` (e.g. trained weights)."""
    h = hidden_states(net.W if W is None else W, net.A, x)
    return h @ net.B.transpose(-1, -2)


# ------------------------------------------------------------------------------------------------ kernel


def kernel_recursion(x1: torch.Tensor, x2: torch.Tensor | None = None, sigma_w: float = math.sqrt(2.0),
                     sigma_a: float = math.sqrt(2.0), all_steps: bool = False) -> torch.Tensor:
    """Infinite-width kernel ``K_t(s, s') = lim <h_t(s), h_t(s')>/m`` of the RNN of :func:`init_elman`.

    ``Sigma_t = sigma_w^2 K_{t-1} + sigma_a^2 <x_t, x'_t>`` is the covariance of a pre-activation
    coordinate and ``K_t = sqrt(Sigma_t(s,s) Sigma_t(s',s')) relu_kernel(rho_t)`` (Cho & Saul 2009, order 1;
    derived with sympy in the chapter). ``x1``: ``(n1, L, d)``, ``x2``: ``(n2, L, d)`` (default ``x1``).
    Returns ``K_L`` as ``(n1, n2)`` float64, or ``(L, n1, n2)`` with ``all_steps=True``."""
    x1 = _check_sequences(x1, "x1").double()
    x2 = x1 if x2 is None else _check_sequences(x2, "x2").double()
    if x1.ndim != 3 or x2.ndim != 3 or x1.shape[1:] != x2.shape[1:]:
        raise ValueError(f"x1 and x2 must be (n, L, d) with the same L and d, got {tuple(x1.shape)}, "
                         f"{tuple(x2.shape)}")
    sw2, sa2 = check_positive("sigma_w", sigma_w) ** 2, check_positive("sigma_a", sigma_a) ** 2
    n1, n2 = x1.shape[0], x2.shape[0]
    K = torch.zeros(n1, n2, dtype=torch.float64)
    q1 = torch.zeros(n1, dtype=torch.float64)
    q2 = torch.zeros(n2, dtype=torch.float64)
    out = []
    for t in range(x1.shape[1]):
        cross = sw2 * K + sa2 * (x1[:, t] @ x2[:, t].T)
        s1 = sw2 * q1 + sa2 * x1[:, t].pow(2).sum(1)
        s2 = sw2 * q2 + sa2 * x2[:, t].pow(2).sum(1)
        scale = torch.sqrt(s1[:, None] * s2[None, :])
        K = scale * relu_kernel(cross / scale)
        q1, q2 = s1 / 2, s2 / 2  # relu_kernel(1) = 1/2
        if all_steps:
            out.append(K)
    return torch.stack(out) if all_steps else K


def empirical_kernel(h1: torch.Tensor, h2: torch.Tensor | None = None) -> torch.Tensor:
    """``<h(s), h(s')>/m`` for hidden states ``(..., n, m)`` (the finite-width version of ``K_t``)."""
    h2 = h1 if h2 is None else h2
    return h1 @ h2.transpose(-1, -2) / h1.shape[-1]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a - b||_F / ||b||_F`` over the last two axes (batched)."""
    return (a - b).flatten(-2).norm(dim=-1) / b.flatten(-2).norm(dim=-1)


def correlation(K: torch.Tensor) -> torch.Tensor:
    """``K(s, s') / sqrt(K(s, s) K(s', s'))`` for a square kernel matrix (batched)."""
    d = torch.diagonal(K, dim1=-2, dim2=-1).sqrt()
    return K / d[..., :, None] / d[..., None, :]


# ------------------------------------------------------------------------------------------------ ridge


def ridge_fit(features: torch.Tensor, targets: torch.Tensor, lam: float = 1e-6,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Ridge regression with an intercept, in float64: minimizes
    ``sum_i w_i ||[phi_i, 1] beta - y_i||^2 + lam * tr(Phi^T W Phi)/p * ||beta||^2``
    (``lam`` is relative to the mean feature energy, so it does not depend on the scale of ``h``).
    ``features`` ``(n, p)``, ``targets`` ``(n, q)``; returns ``beta`` ``(p + 1, q)``."""
    if features.ndim != 2 or targets.ndim != 2 or features.shape[0] != targets.shape[0]:
        raise ValueError(f"features (n, p) and targets (n, q) needed, got {tuple(features.shape)}, "
                         f"{tuple(targets.shape)}")
    if not (lam >= 0 and math.isfinite(lam)):
        raise ValueError(f"lam must be a finite number >= 0, got {lam}")
    phi = torch.cat([features.double(), torch.ones(features.shape[0], 1, dtype=torch.float64,
                                                   device=features.device)], 1)
    if weights is None:
        w = torch.ones(phi.shape[0], dtype=torch.float64, device=phi.device)
    else:
        w = weights.to(device=phi.device, dtype=torch.float64)
    gram = phi.T @ (w[:, None] * phi)
    reg = lam * torch.diagonal(gram)[:-1].mean()
    gram = gram + reg * torch.eye(gram.shape[0], dtype=torch.float64, device=phi.device)
    return torch.linalg.solve(gram, phi.T @ (w[:, None] * targets.double()))


def ridge_predict(features: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``[phi, 1] beta`` in float64."""
    return features.double() @ beta[:-1] + beta[-1]


def decode_errors(h_train: torch.Tensor, x_train: torch.Tensor, h_test: torch.Tensor, x_test: torch.Tensor,
                  lam: float = 1e-6) -> torch.Tensor:
    """Read every token ``x_t`` back from the final hidden state ``h_L`` with one ridge readout.

    Fits ``x_t ~ beta_t^T [h_L, 1]`` for all ``t`` on ``(h_train, x_train)`` and returns, per position
    ``t = 1..L``, the relative test error ``E||x_hat_t - x_t||^2 / E||x_t - mean x_t||^2`` (0: perfect
    recovery; 1: no better than the mean). ``x`` has shape ``(n, L, d)``. This is the chapter's
    numerical version of the readout step (information about the whole sequence survives in ``h_L``)."""
    n, L, d = x_train.shape
    beta = ridge_fit(h_train, x_train.reshape(n, L * d), lam)
    pred = ridge_predict(h_test, beta).reshape(-1, L, d)
    xt = x_test.double()
    err = (pred - xt).pow(2).sum(-1).mean(0)
    var = (xt - xt.mean(0)).pow(2).sum(-1).mean(0)
    if bool((var <= 0).any()):
        raise ValueError("a token position is constant on the test set, so its relative error is undefined; "
                         "split the strings at random (e.g. with torch.randperm)")
    return err / var


# ---------------------------------------------------------------------------------------------- training


def _weighted_sq_loss(f: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-replica ``1/2 sum_i w_i ||f_i - y_i||^2``; shapes ``(..., n, c)``, weights ``(..., n)``."""
    return 0.5 * (w * (f - y).pow(2).sum(-1)).sum(-1)


def ntk_lambda_max(net: ElmanRNN, x: torch.Tensor, weights: torch.Tensor, iters: int = 30,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Largest eigenvalue of ``D^{1/2} J J^T D^{1/2}`` (``J = df/dW`` at initialization, ``D = diag(w)``):
    the curvature that sets the stable step size ``eta < 2 / lambda_max`` of gradient descent on the
    weighted square loss. Power iteration with Jacobian-vector products (no Jacobian is formed); one value
    per replica."""
    check_int("iters", iters)
    A, B = net.A, net.B

    def f(W):
        return hidden_states(W, A, x) @ B.transpose(-1, -2)

    f0, vjp = torch.func.vjp(f, net.W)
    sw = weights.to(f0.dtype).sqrt()[..., None]
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    v = torch.randn(f0.shape, generator=g, dtype=torch.float64).to(f0)
    lam = torch.zeros(f0.shape[:-2], dtype=torch.float64)
    for _ in range(iters):
        v = v / v.flatten(-2).norm(dim=-1)[..., None, None]
        (jt,) = vjp(sw * v)
        _, jv = torch.func.jvp(f, (net.W,), (jt,))
        u = sw * jv
        lam = (u * v).flatten(-2).sum(-1).double().cpu()
        v = u
    return lam


def train_gd(net: ElmanRNN, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, steps: int,
             lr_scale: float = 1.0, power_iters: int = 30, record_every: int = 1) -> dict:
    """Full-batch gradient descent on the recurrent matrix ``W`` only (``A``, ``B`` stay at initialization).

    The output is centred at initialization, ``f(s; W) = B (h_L(s; W) - h_L(s; W_0))``, so training starts from the zero
    function; the loss is ``1/2 sum_i w_i ||f(s_i) - y_i||^2`` (``weights`` sum to 1 per replica: counts of a sample
    with repetitions, see :func:`dltheory.overparametrization.languages.unique_with_counts`).
    The step is ``eta = lr_scale / lambda_max`` from :func:`ntk_lambda_max` (``lr_scale < 2`` is stable in
    the kernel regime). ``x``: ``(R, n, L, d)`` with ``net`` holding ``R`` replicas, or unbatched.

    Returns a dict with the trained ``W``, the recorded ``losses`` (``(steps // record_every + 1, R)``),
    ``lr`` and ``lambda_max`` per replica, and ``move``: ``||W - W_0||_F / ||W_0||_F`` per replica."""
    check_int("steps", steps, 0)
    check_positive("lr_scale", lr_scale)
    check_int("record_every", record_every)
    x = _check_sequences(x)
    w = weights.to(device=x.device, dtype=x.dtype)
    if not torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-5):
        raise ValueError("weights must sum to 1 over the samples of each replica")
    lam = ntk_lambda_max(net, x, w, power_iters)
    eta = (lr_scale / lam).to(device=x.device, dtype=x.dtype)
    eta_b = eta.reshape(eta.shape + (1, 1))
    A, Bt = net.A, net.B.transpose(-1, -2)
    with torch.no_grad():
        f0 = hidden_states(net.W, A, x) @ Bt
    W = net.W.clone().requires_grad_(True)
    losses = []
    for step in range(steps + 1):
        f = hidden_states(W, A, x) @ Bt - f0
        loss = _weighted_sq_loss(f, y, w)
        if step % record_every == 0:
            losses.append(loss.detach().double().cpu())
        if step == steps:
            break
        (grad,) = torch.autograd.grad(loss.sum(), W)  # replicas are independent: one backward for all
        with torch.no_grad():
            W -= eta_b * grad
    W = W.detach()
    move = (W - net.W).flatten(-2).norm(dim=-1) / net.W.flatten(-2).norm(dim=-1)
    return {"W": W, "losses": torch.stack(losses), "lr": eta.double().cpu(), "lambda_max": lam,
            "move": move.double().cpu()}


def centred_scores(net: ElmanRNN, W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``B (h_L(s; W) - h_L(s; W_0))``: the trained, centred network of :func:`train_gd` on inputs ``x``."""
    with torch.no_grad():
        Bt = net.B.transpose(-1, -2)
        return hidden_states(W, net.A, x) @ Bt - hidden_states(net.W, net.A, x) @ Bt


# ------------------------------------------------------------------------------------- additive models


def additive_features(s: torch.Tensor, k: int) -> torch.Tensor:
    """Indicator features ``1{s_t = a}`` for every position ``t`` and symbol ``a`` (``(n, L k)``, float64):
    any sum of per-token functions ``sum_t g_t(s_t)`` is linear in them (plus an intercept)."""
    s = torch.as_tensor(s)
    if s.ndim != 2:
        raise ValueError(f"strings must have shape (n, L), got {tuple(s.shape)}")
    return torch.nn.functional.one_hot(s, k).reshape(s.shape[0], -1).double()


def fit_additive(s: torch.Tensor, labels: torch.Tensor, k: int, n_classes: int,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """The best additive model ``F_c(s) = b_c + sum_t g_{t,c}(s_t)`` in weighted least squares against the
    one-hot labels, solved exactly (minimum-norm solution of the normal equations, float64). This is the
    class of targets of Allen-Zhu & Li (2019): sums of functions of single tokens. Returns coefficients
    ``(L k + 1, n_classes)`` for :func:`additive_scores`."""
    check_int("n_classes", n_classes, 2)
    phi = additive_features(s, k)
    phi = torch.cat([phi, torch.ones(phi.shape[0], 1, dtype=torch.float64)], 1)
    y = torch.nn.functional.one_hot(torch.as_tensor(labels), n_classes).double()
    w = torch.ones(phi.shape[0], dtype=torch.float64) if weights is None else weights.double()
    sw = w.sqrt()[:, None]
    return torch.linalg.pinv(sw * phi, rtol=1e-10) @ (sw * y)


def additive_scores(s: torch.Tensor, coef: torch.Tensor, k: int) -> torch.Tensor:
    """Scores ``(n, n_classes)`` of the additive model from :func:`fit_additive`."""
    phi = additive_features(s, k)
    return phi @ coef[:-1] + coef[-1]


def expected_accuracy(scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None,
                      tie_tol: float = 1e-9) -> float:
    """Accuracy of ``argmax`` predictions with ties broken uniformly at random, in expectation: a row whose
    top scores agree within ``tie_tol`` earns ``1/#tied`` if the label is among them. Exact for models that
    are constant on the data (e.g. the best additive model of parity), where plain argmax would return an
    arbitrary class."""
    scores = scores.double()
    top = scores.max(-1, keepdim=True).values
    tied = scores >= top - tie_tol
    credit = tied.gather(-1, labels.long()[..., None]).squeeze(-1).double() / tied.sum(-1).double()
    if weights is None:
        return float(credit.mean())
    return float((credit * weights.double()).sum() / weights.double().sum())


def best_additive_accuracy(task: str, length: int) -> float:
    """Accuracy of the best additive model of ``task`` at the population level: fit on *all* strings of
    ``length`` (uniform weights) and evaluate on all of them (:func:`expected_accuracy`)."""
    t = get_task(task)
    s = all_strings(length, t.k)
    y = t.labels(s)
    coef = fit_additive(s, y, t.k, t.n_classes)
    return expected_accuracy(additive_scores(s, coef, t.k), y)


# ------------------------------------------------------------------------------------------ experiments


def kernel_error_curve(x: torch.Tensor, widths, replicas: int, generator: torch.Generator,
                       sigma_w: float = math.sqrt(2.0), sigma_a: float = math.sqrt(2.0),
                       device: str | torch.device = "cpu") -> dict:
    """Relative Frobenius error ``||K_hat - K_L||_F / ||K_L||_F`` of the finite-width kernel
    ``<h_L, h'_L>/m`` of ``replicas`` independent networks per width, against :func:`kernel_recursion`.
    ``x``: token vectors ``(n, L, d)``. Returns ``{"widths", "errors" (len(widths), replicas), "median"}``."""
    K = kernel_recursion(x, sigma_w=sigma_w, sigma_a=sigma_a)
    errs = []
    for m in widths:
        net = init_elman(x.shape[-1], int(m), 1, generator, sigma_w, sigma_a, replicas=replicas,
                         device=device)
        h = hidden_states(net.W, net.A, x.to(device=device, dtype=net.W.dtype))
        kh = empirical_kernel(h).double().cpu()
        errs.append(relative_error(kh, K))
    errs = torch.stack(errs)
    return {"widths": list(widths), "errors": errs, "median": errs.median(dim=1).values}


def decoding_curve(x: torch.Tensor, train_idx: torch.Tensor, test_idx: torch.Tensor, widths, replicas: int,
                   generator: torch.Generator, lam: float = 1e-6, sigma_w: float = math.sqrt(2.0),
                   sigma_a: float = math.sqrt(2.0), device: str | torch.device = "cpu") -> dict:
    """:func:`decode_errors` of random RNNs (He scale by default) for every width, ``replicas`` networks each.

    Returns ``{"widths", "per_position" (len(widths), replicas, L), "mean" (len(widths),)}`` where
    ``mean`` averages the relative error over positions and replicas."""
    out = []
    xd = x.to(device)
    for m in widths:
        per = []
        for _ in range(replicas):
            net = init_elman(x.shape[-1], int(m), 1, generator, sigma_w, sigma_a, device=device,
                             dtype=x.dtype)
            h = hidden_states(net.W, net.A, xd)
            per.append(decode_errors(h[train_idx], xd[train_idx], h[test_idx], xd[test_idx], lam).cpu())
        out.append(torch.stack(per))
    per_position = torch.stack(out)
    return {"widths": list(widths), "per_position": per_position, "mean": per_position.mean(dim=(1, 2))}


def learning_curve(task: str, length: int, samples, width: int, steps: int, generator: torch.Generator,
                   lr_scale: float = 1.0, n_test: int = 2000, device: str | torch.device = "cpu") -> dict:
    """Train one RNN per training-set size on ``task`` and compare it with additive models.

    For each ``n`` in ``samples``: draw ``n`` strings i.i.d. uniform (with repetitions), train a fresh
    He-initialized RNN of ``width`` by :func:`train_gd` (all sizes at once, as replicas), and evaluate on
    ``n_test`` fresh uniform strings. Also fits the best additive model *on the same samples*
    (:func:`fit_additive`). Returns per size: test accuracy of the RNN (``rnn``), its accuracy on test
    strings absent from the training set (``rnn_unseen``, NaN if none) and on the training strings
    (``rnn_train``), the additive model's test accuracy (``additive``), the fraction of test mass seen in
    training (``seen``), the final training loss and ``move`` (relative change of ``W``)."""
    from dltheory.overparametrization.languages import embed, sample_strings, string_ids, unique_with_counts

    t = get_task(task)
    k, c = t.k, t.n_classes
    draws = [unique_with_counts(sample_strings(int(n), length, k, generator)) for n in samples]
    n_max = max(len(u) for u, _ in draws)
    R = len(draws)
    x = torch.zeros(R, n_max, length, k - 1)
    y = torch.zeros(R, n_max, c)
    w = torch.zeros(R, n_max)
    for r, (u, cnt) in enumerate(draws):
        x[r, : len(u)] = embed(u, k)
        x[r, len(u):] = embed(u[:1], k)  # padding rows carry zero weight
        y[r, : len(u)] = torch.nn.functional.one_hot(t.labels(u), c).float() - 1.0 / c
        w[r, : len(u)] = cnt.float() / cnt.sum()
    net = init_elman(k - 1, width, c, generator, replicas=R, device=device)
    res = train_gd(net, x.to(device), y.to(device), w.to(device), steps, lr_scale,
                   record_every=max(1, steps // 50))
    test_u, test_cnt = unique_with_counts(sample_strings(n_test, length, k, generator))
    test_y = t.labels(test_u)
    scores = centred_scores(net, res["W"], embed(test_u, k).to(device)).cpu()
    train_scores = centred_scores(net, res["W"], x.to(device)).cpu()
    out = {key: [] for key in ("rnn", "rnn_unseen", "rnn_train", "additive", "seen", "unique")}
    for r, (u, cnt) in enumerate(draws):
        seen = torch.isin(string_ids(test_u, k), string_ids(u, k))
        out["rnn"].append(expected_accuracy(scores[r], test_y, test_cnt))
        out["rnn_unseen"].append(expected_accuracy(scores[r][~seen], test_y[~seen], test_cnt[~seen])
                                 if bool((~seen).any()) else float("nan"))
        out["rnn_train"].append(expected_accuracy(train_scores[r, : len(u)], t.labels(u), cnt))
        coef = fit_additive(u, t.labels(u), k, c, cnt.double())
        out["additive"].append(expected_accuracy(additive_scores(test_u, coef, k), test_y, test_cnt))
        out["seen"].append(float(test_cnt[seen].sum() / test_cnt.sum()))
        out["unique"].append(len(u))
    out.update(samples=list(samples), losses=res["losses"], final_loss=res["losses"][-1], move=res["move"],
               lr=res["lr"], lambda_max=res["lambda_max"])
    return out
