"""ELIZA as a transformer program: template matching and the cyclic response counter written into the shared
transformer by hand, and a small trained transformer on ELIZA-style conversations probed with counterfactuals.

Defined for the chapter *Transformers as programs: simulating training and ELIZA*
(``chapters/transfer/transformers-as-programs.md``), after Friedman, Panigrahi & Chen 2024, "Representing
Rule-based Chatbots with Transformers" (arXiv 2407.10949; reference code ``princeton-nlp/ELIZA-Transformer``).

**Templates** are ELIZA decomposition rules: literal tokens and wildcards ``*`` (the reference's ``0``), matched
against a whole sentence. The program follows the reference's matcher (``src/generate_data.py``,
``match_template``): a boolean state ``m_l(i)`` per template element ``l`` and position ``i`` ("the first ``l``
elements match the sentence up to ``i``"), ``m_0`` = the start token, a literal ``c`` after element ``l - 1``:
``m_l(i) = m_{l-1}(i - 1) and tok_i = c`` ("just matched"), a wildcard: ``m_l(i) = OR_{j <= i} m_{l-1}(j)`` ("ever
matched"). One block of the shared transformer per element: a previous-token head (needs sharp attention) or a
uniform causal head (exact at any sharpness), then a two-unit ReLU MLP that makes the state exactly 0 or 1
(:func:`template_matcher`).

**The cycle counter.** ELIZA answers the ``c``-th use of a template with its ``(c mod n)``-th reassembly rule
(``generate_data.py``: ``transformation_id = count % len(transform_lst)``). A head that attends equally to the start
token and to the earlier turns with the same template puts weight ``1 / (c + 1)`` on the start token in the
saturated limit; a ReLU MLP maps that to ``c mod n`` exactly (:func:`counter_program`).

**Counterfactuals** follow ``src/counterfactuals.py`` (``do_cycling_edit``): change the most recent earlier
response to the same template to another reassembly rule; a model that *counts* keeps its answer, a model that
*reads its earlier output and increments* moves to ``(edited + 1) mod n``.
"""

from __future__ import annotations

import itertools
import math
import re

import torch

from dltheory.numerics.transformer import Transformer, TransformerConfig, replica_cross_entropy
from dltheory.numerics.validate import check_int, check_positive, check_seeds

CHAPTER = "chapters/transfer/transformers-as-programs.md"


# ---------------------------------------------------------------------------------------------------------------
# template matching
# ---------------------------------------------------------------------------------------------------------------


def _check_templates(templates, alphabet: str) -> list[str]:
    templates = list(templates)
    if not templates:
        raise ValueError("templates must be a non-empty list of strings over the alphabet and '*'")
    for t in templates:
        if not isinstance(t, str) or not t or any(ch not in alphabet + "*" for ch in t):
            raise ValueError(f"template {t!r} must be a non-empty string of letters of {alphabet!r} and '*'")
    return templates


def template_regex(template: str) -> str:
    """The Python ``re`` pattern of a template: letters literal, ``*`` any run (``.*``); matched with
    ``re.fullmatch``. Chapter: chapters/transfer/transformers-as-programs.md (experiment 3); Friedman et al. 2024,
    Sec. 3 (ELIZA's decomposition templates; the reference's ``0`` wildcard)."""
    return "".join(".*" if ch == "*" else re.escape(ch) for ch in template)


def all_strings(alphabet: str, max_len: int) -> list[str]:
    """Every string over ``alphabet`` of length 1 to ``max_len`` (the exhaustive test set of the template program).
    Chapter: chapters/transfer/transformers-as-programs.md (experiment 3); Friedman et al. 2024, Sec. 4.1."""
    max_len = check_int("max_len", max_len)
    return ["".join(p) for n in range(1, max_len + 1) for p in itertools.product(alphabet, repeat=n)]


def beta_sufficient(max_len: int) -> float:
    """A sufficient attention sharpness for the template program to be exact on sentences of up to ``max_len``
    letters: ``ln(3 max_len)``. The previous-token head at position ``i`` leaks ``delta = i / (e^beta + i)`` of
    its weight to other tokens; the MLP's thresholds at 1/4 and 3/4 are exact when ``delta <= 1/4``.
    Chapter: chapters/transfer/transformers-as-programs.md (derivation)."""
    return math.log(3 * check_int("max_len", max_len))


def template_matcher(templates, alphabet: str, max_len: int, betas, dtype=torch.float64) -> Transformer:
    """The shared transformer, weights set by name, that matches every template at every sharpness:
    ``R = len(templates) * len(betas)`` replicas (replica ``t * len(betas) + b`` runs template ``t`` at
    ``betas[b]``), one block per template element (shorter templates padded with blocks that do nothing), no layer
    norm, ReLU MLPs of width 2. Input: token ids from :func:`encode_strings`; output ``(R, B, T, 1)``: at position
    ``i``, 1 if the template matches the first ``i`` letters, else 0 (exactly, when the sharpness suffices).
    Chapter: chapters/transfer/transformers-as-programs.md (experiment 3); Friedman et al. 2024, Sec. 4.1
    (template matching), reference ``src/generate_data.py`` (``match_template``)."""
    templates = _check_templates(templates, alphabet)
    max_len = check_int("max_len", max_len)
    betas = [check_positive("beta", b) for b in betas]
    if not betas:
        raise ValueError("betas must be a non-empty list of positive numbers")
    V, T, L = 1 + len(alphabet), max_len + 1, max(len(t) for t in templates)
    # residual stream: token one-hot | position one-hot | states m_0..m_L | scratch s_1..s_L
    tok, pos = 0, V
    state = lambda l: V + T + l                                 # noqa: E731  (m_0 is its own slot)
    scratch = lambda l: V + T + L + l                           # noqa: E731  (l = 1..L)
    d = V + T + 2 * L + 1
    cfg = TransformerConfig(vocab_size=V, d_model=d, n_heads=1, n_layers=L, max_len=T, d_mlp=2, causal=True,
                            n_out=1, replicas=len(templates) * len(betas), activation="relu", layer_norm=False)
    model = Transformer(cfg, torch.Generator().manual_seed(0), dtype=dtype)
    R = cfg.replicas
    w = {n: torch.zeros((R, *s), dtype=dtype) for n, s in model.weight_shapes().items()}
    w["tok_emb.weight"][:, :, tok:tok + V] = torch.eye(V, dtype=dtype)
    w["tok_emb.weight"][:, 0, state(0)] = 1.0                   # m_0: the start token
    w["pos_emb.weight"][:, :, pos:pos + T] = torch.eye(T, dtype=dtype)
    rd = math.sqrt(d)                                           # the shared transformer divides scores by sqrt(d)
    for ti, t in enumerate(templates):
        for bi, beta in enumerate(betas):
            r = ti * len(betas) + bi
            for l, ch in enumerate(t, start=1):
                p = f"blocks.{l - 1}."
                if ch != "*":                                   # previous-token head: score beta at j = i - 1
                    for i in range(1, T):
                        w[p + "attn.q.weight"][r, pos + i - 1, pos + i] = beta * rd
                    w[p + "attn.k.weight"][r, pos:pos + T, pos:pos + T] = torch.eye(T, dtype=dtype)
                w[p + "attn.v.weight"][r, scratch(l), state(l - 1)] = 1.0
                w[p + "attn.o.weight"][r, scratch(l), scratch(l)] = 1.0
                fi, fb = w[p + "mlp.fc_in.weight"][r], w[p + "mlp.fc_in.bias"][r]
                if ch != "*":                                   # z = 2 f + 2 [tok = ch] - 2.5
                    c = 1 + alphabet.index(ch)
                    fi[:, scratch(l)], fi[:, tok + c] = 2.0, 2.0
                    fb[0], fb[1] = -2.5, -3.5
                else:                                           # z = T f  (f >= 1 / T if any m_{l-1}(j) = 1)
                    fi[:, scratch(l)] = float(T)
                    fb[0], fb[1] = 0.0, -1.0
                w[p + "mlp.fc_out.weight"][r, state(l), 0] = 1.0  # m_l = relu(z) - relu(z - 1)
                w[p + "mlp.fc_out.weight"][r, state(l), 1] = -1.0
            w["head.weight"][r, 0, state(len(t))] = 1.0
    model.set_weights(w)
    return model


def encode_strings(strings, alphabet: str, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(B, max_len + 1)``: the start token 0, then the letters (``1 + alphabet.index``), padded with 0;
    and each string's length (the position where its match is read); the start token plays the reference's ``U``.
    Chapter: chapters/transfer/transformers-as-programs.md (experiment 3); Friedman et al. 2024, Sec. 4.1."""
    max_len = check_int("max_len", max_len)
    ids = torch.zeros(len(strings), max_len + 1, dtype=torch.long)
    for b, s in enumerate(strings):
        if len(s) > max_len:
            raise ValueError(f"string {s!r} is longer than max_len = {max_len}")
        ids[b, 1:len(s) + 1] = torch.tensor([1 + alphabet.index(ch) for ch in s], dtype=torch.long)
    return ids, torch.tensor([len(s) for s in strings], dtype=torch.long)


def match_outputs(model: Transformer, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The program's match value ``(R, B)`` for each replica and string, read at the string's last letter.
    Chapter: chapters/transfer/transformers-as-programs.md (experiment 3); Friedman et al. 2024, Sec. 4.1."""
    with torch.no_grad():
        out = model(ids)[..., 0]                                # (R, B, T)
    return out.gather(2, lengths.view(1, -1, 1).expand(out.shape[0], -1, 1)).squeeze(2)


def regex_matches(templates, strings) -> torch.Tensor:
    """``re.fullmatch`` of every template on every string, ``(n_templates, B)`` booleans: the reference answer,
    equivalent to the reference's ``match_template`` (``src/generate_data.py``). Chapter:
    chapters/transfer/transformers-as-programs.md (experiment 3)."""
    pats = [re.compile(template_regex(t)) for t in templates]
    return torch.tensor([[p.fullmatch(s) is not None for s in strings] for p in pats])


def template_mismatches(templates, alphabet: str, max_len: int, betas) -> dict:
    """For each sharpness in ``betas``: the number of (template, string) pairs over every string of up to
    ``max_len`` letters where the program's decision (output > 1/2) differs from ``re.fullmatch``, and the largest
    distance of an output from 0 or 1. Chapter: chapters/transfer/transformers-as-programs.md (experiment 3);
    Friedman et al. 2024, Sec. 4.1."""
    templates = _check_templates(templates, alphabet)
    strings = all_strings(alphabet, max_len)
    ids, lengths = encode_strings(strings, alphabet, max_len)
    model = template_matcher(templates, alphabet, max_len, betas)
    out = match_outputs(model, ids, lengths).view(len(templates), len(betas), -1)
    truth = regex_matches(templates, strings).unsqueeze(1)
    mism = ((out > 0.5) != truth).sum((0, 2))
    off = torch.minimum(out.abs(), (out - 1).abs()).amax((0, 2))
    return {"mismatches": mism, "max_off": off, "n_strings": len(strings), "n_matches": int(truth.sum())}


def min_exact_beta(templates, alphabet: str, max_len: int, lo: float = 0.01, hi: float = 20.0,
                   iters: int = 30) -> float:
    """The smallest sharpness at which the program has no mismatch with ``re`` on every string of up to
    ``max_len`` letters, by bisection on ``[lo, hi]`` (assumes monotonicity; ``hi`` must be exact). Chapter:
    chapters/transfer/transformers-as-programs.md (experiment 3, "the attention sharpness it needs")."""
    lo, hi = check_positive("lo", lo), check_positive("hi", hi)
    iters = check_int("iters", iters)
    if int(template_mismatches(templates, alphabet, max_len, [hi])["mismatches"][0]):
        raise ValueError(f"the program is not exact at hi = {hi}; raise hi")
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        if int(template_mismatches(templates, alphabet, max_len, [mid])["mismatches"][0]):
            lo = mid
        else:
            hi = mid
    return hi


# ---------------------------------------------------------------------------------------------------------------
# the cyclic response counter
# ---------------------------------------------------------------------------------------------------------------


def counter_relu_net(n: int, c_max: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """A one-hidden-layer ReLU net ``g(a) = b0 + sum_k s_k relu(a - a_k)`` with ``g(1 / (c + 1)) = c mod n`` for
    ``c = 0 .. c_max`` (piecewise-linear interpolation; breakpoints ``a_k = 1 / (c_max + 1 - k)``). Returns
    ``(in_bias (c_max,), slopes (c_max,), ..., b0)`` as ``(-a_k, s_k, a_k, b0)``. Chapter:
    chapters/transfer/transformers-as-programs.md (derivation); Friedman et al. 2024, Sec. 4.3 (cycling through
    reassembly rules)."""
    n, c_max = check_int("n", n), check_int("c_max", c_max)
    xs = torch.tensor([1.0 / (c + 1) for c in range(c_max, -1, -1)], dtype=torch.float64)   # increasing
    ys = torch.tensor([float(c % n) for c in range(c_max, -1, -1)], dtype=torch.float64)
    slopes = (ys[1:] - ys[:-1]) / (xs[1:] - xs[:-1])
    s = torch.cat([slopes[:1], slopes[1:] - slopes[:-1]])
    return -xs[:-1], s, xs[:-1], float(ys[0])


def counter_program(n_templates: int, n: int, max_len: int, beta: float, dtype=torch.float64) -> Transformer:
    """The shared transformer, weights set by name, that outputs at every template-marker token ``c mod n``, ``c``
    the number of *earlier* markers of the same template. Tokens: 0 the start token, ``1 .. n_templates`` the
    markers, ``n_templates + 1`` a filler word. One block: the head scores ``beta ([same template] + [start token]
    - [itself])``, its value is the start-token indicator, so it reads ``a -> 1 / (c + 1)`` as ``beta -> inf``;
    the ReLU MLP of :func:`counter_relu_net` maps ``a`` to ``c mod n``. Chapter:
    chapters/transfer/transformers-as-programs.md (experiment 3); Friedman et al. 2024, Sec. 4.3."""
    K, n, T = check_int("n_templates", n_templates), check_int("n", n), check_int("max_len", max_len)
    beta = check_positive("beta", beta)
    V = K + 2
    tok, pos, a_slot, out_slot = 0, V, V + T, V + T + 1
    d = V + T + 2
    c_max = T - 1
    cfg = TransformerConfig(vocab_size=V, d_model=d, n_heads=1, n_layers=1, max_len=T, d_mlp=c_max, causal=True,
                            n_out=1, activation="relu", layer_norm=False)
    model = Transformer(cfg, torch.Generator().manual_seed(0), dtype=dtype)
    w = {n_: torch.zeros(s, dtype=dtype) for n_, s in model.weight_shapes().items()}
    w["tok_emb.weight"][:, tok:tok + V] = torch.eye(V, dtype=dtype)
    w["pos_emb.weight"][:, pos:pos + T] = torch.eye(T, dtype=dtype)
    rd = math.sqrt(d)
    q, k = w["blocks.0.attn.q.weight"], w["blocks.0.attn.k.weight"]
    for m in range(1, K + 1):
        q[tok + m, tok + m] = beta * rd                          # same template
        q[tok + 0, tok + m] = beta * rd                          # the start token
    q[pos:pos + T, pos:pos + T] = -beta * rd * torch.eye(T, dtype=dtype)   # not itself
    k[tok:tok + K + 1, tok:tok + K + 1] = torch.eye(K + 1, dtype=dtype)
    k[pos:pos + T, pos:pos + T] = torch.eye(T, dtype=dtype)
    w["blocks.0.attn.v.weight"][a_slot, tok + 0] = 1.0
    w["blocks.0.attn.o.weight"][a_slot, a_slot] = 1.0
    in_bias, slopes, _, b0 = counter_relu_net(n, c_max)
    w["blocks.0.mlp.fc_in.weight"][:, a_slot] = 1.0
    w["blocks.0.mlp.fc_in.bias"][:] = in_bias
    w["blocks.0.mlp.fc_out.weight"][out_slot, :] = slopes
    w["blocks.0.mlp.fc_out.bias"][out_slot] = b0
    w["head.weight"][0, out_slot] = 1.0
    model.set_weights(w)
    return model


def counter_conversations(n_conv: int, n_turns: int, n_templates: int, generator: torch.Generator) -> dict:
    """Random conversations for the counter program: start token, then per turn a template marker (drawn from a
    Dirichlet(1) mixture per conversation, as in the reference's ``generate_data.py``) and a filler word. Returns
    ``ids (n_conv, 1 + 2 n_turns)``, the marker positions ``(n_turns,)`` and the true counts of earlier same-template
    turns ``(n_conv, n_turns)``. Chapter: chapters/transfer/transformers-as-programs.md (experiment 3)."""
    n_conv, n_turns, K = check_int("n_conv", n_conv), check_int("n_turns", n_turns), check_int("n_templates",
                                                                                                n_templates)
    g = torch.empty(n_conv, K, dtype=torch.float64).exponential_(generator=generator)
    p = g / g.sum(1, keepdim=True)                                                      # Dirichlet(1, ..., 1)
    tmpl = torch.multinomial(p, n_turns, replacement=True, generator=generator)         # (n_conv, n_turns)
    ids = torch.full((n_conv, 1 + 2 * n_turns), K + 1, dtype=torch.long)
    ids[:, 0] = 0
    ids[:, 1::2] = tmpl + 1
    same = tmpl.unsqueeze(2) == tmpl.unsqueeze(1)                                       # (n, t, t')
    counts = (same & torch.ones(n_turns, n_turns, dtype=torch.bool).tril(-1)).sum(2)
    return {"ids": ids, "marker_pos": torch.arange(1, 1 + 2 * n_turns, 2), "counts": counts, "templates": tmpl}


# ---------------------------------------------------------------------------------------------------------------
# a trained transformer on ELIZA-style conversations, and the counterfactual edit
# ---------------------------------------------------------------------------------------------------------------


def eliza_vocab(n_templates: int, n_rules: int) -> dict:
    """Token ids of the toy conversations: 0 the start token, ``1 .. K`` the template markers (the template the
    user's sentence matched), then ``K n`` response tokens, one per (template, reassembly rule): the reference gives
    every reassembly rule its own prefix (``template_prefix_len``). Chapter:
    chapters/transfer/transformers-as-programs.md (experiment 4)."""
    K, n = check_int("n_templates", n_templates), check_int("n_rules", n_rules, minimum=2)
    return {"K": K, "n": n, "size": 1 + K + K * n}


def response_token(voc: dict, template: torch.Tensor, rule: torch.Tensor) -> torch.Tensor:
    """The response token of reassembly rule ``rule`` of ``template`` (0-based). Chapter:
    chapters/transfer/transformers-as-programs.md (experiment 4); Friedman et al. 2024, Sec. 5 (data)."""
    return 1 + voc["K"] + template * voc["n"] + rule


def eliza_conversations(voc: dict, n_conv: int, n_turns: int, generator: torch.Generator) -> dict:
    """Multi-turn ELIZA-style conversations: start token, then per turn the template marker and ELIZA's response,
    reassembly rule ``c mod n`` at the ``c``-th earlier use of the template (``generate_data.py``). Templates are
    drawn from a Dirichlet(1) mixture per conversation. Returns ``ids (n, 1 + 2 T)``, ``templates``, ``rules``
    ``(n, T)`` and the loss mask ``(n, 1 + 2 T)`` (True on response tokens, the reference's ``mask``).
    Chapter: chapters/transfer/transformers-as-programs.md (experiment 4)."""
    c = counter_conversations(n_conv, n_turns, voc["K"], generator)
    rules = c["counts"] % voc["n"]
    ids = c["ids"].clone()
    ids[:, 2::2] = response_token(voc, c["templates"], rules)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 2::2] = True
    return {"ids": ids, "templates": c["templates"], "rules": rules, "mask": mask}


def train_eliza_model(voc: dict, n_turns: int, d_model: int, n_layers: int, n_heads: int, steps: int, batch: int,
                      lr: float, seed: int, device: torch.device | str = "cpu") -> tuple[Transformer, list[float]]:
    """Train the shared transformer (causal, pre-LayerNorm, GELU) on fresh ELIZA-style conversations with the
    next-token loss on response tokens only, AdamW with linear decay (data drawn on the CPU, so the numbers do not
    depend on ``device`` beyond floating-point order). Chapter:
    chapters/transfer/transformers-as-programs.md (experiment 4); Friedman et al. 2024, Sec. 5 (their models are
    GPT-2-style and far larger: ``scripts/train_multi_turn.sh``)."""
    n_turns, steps, batch = check_int("n_turns", n_turns), check_int("steps", steps), check_int("batch", batch)
    lr = check_positive("lr", lr)
    seed = check_seeds([seed])[0]
    cfg = TransformerConfig(vocab_size=voc["size"], d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                            max_len=1 + 2 * n_turns, causal=True)
    model = Transformer(cfg, torch.Generator().manual_seed(seed), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / 50) * (1.0 - k / steps))
    g = torch.Generator().manual_seed(seed + 7919)
    losses = []
    for _ in range(steps):
        conv = eliza_conversations(voc, batch, n_turns, g)
        x, y = conv["ids"][:, :-1], conv["ids"][:, 1:].clone()
        y[~conv["mask"][:, 1:]] = -100
        x, y = x.to(device), y.to(device)
        loss = replica_cross_entropy(model(x), y).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return model, losses


def response_accuracy(model: Transformer, conv: dict) -> float:
    """Share of response tokens the model predicts (argmax) correctly, teacher-forced. Chapter:
    chapters/transfer/transformers-as-programs.md (experiment 4); Friedman et al. 2024, Sec. 5 (accuracy)."""
    dev = next(model.parameters()).device
    with torch.no_grad():
        pred = model(conv["ids"][:, :-1].to(dev))[0].argmax(-1).cpu()
    m = conv["mask"][:, 1:]
    return float((pred == conv["ids"][:, 1:])[m].float().mean())


def cycling_counterfactuals(voc: dict, conv: dict, generator: torch.Generator) -> dict:
    """The reference's cycling edit (``src/counterfactuals.py``, ``do_cycling_edit``) on conversations whose last
    template was used before: change the most recent earlier response to that template to another reassembly
    rule (shift ``1 .. n - 1``). Returns the unedited and edited ids, the position of the last response, and the
    three predictions: ``truth`` (unedited), ``count`` (counting: unchanged) and ``increment`` (edited rule + 1).
    Chapter: chapters/transfer/transformers-as-programs.md (experiment 4)."""
    tm, rules, ids = conv["templates"], conv["rules"], conv["ids"]
    T = tm.shape[1]
    last = tm[:, -1]
    earlier = tm[:, :-1] == last.unsqueeze(1)
    keep = earlier.any(1)
    idx = torch.where(keep)[0]
    prev = (earlier[idx].long() * torch.arange(1, T)).argmax(1)          # the most recent earlier use
    shift = torch.randint(1, voc["n"], (len(idx),), generator=generator)
    new_rule = (rules[idx, prev] + shift) % voc["n"]
    edited = ids[idx].clone()
    edited[torch.arange(len(idx)), 2 + 2 * prev] = response_token(voc, last[idx], new_rule)
    return {"unedited": ids[idx], "edited": edited, "pos": 2 * T - 1,
            "truth": ids[idx, -1], "count": ids[idx, -1],
            "increment": response_token(voc, last[idx], (new_rule + 1) % voc["n"])}


def counterfactual_follow(model: Transformer, cf: dict) -> dict:
    """Shares of edited conversations whose predicted last response follows counting or incrementing, and the
    share of unedited ones predicted correctly. Chapter: chapters/transfer/transformers-as-programs.md
    (experiment 4); Friedman et al. 2024, Sec. 6 (counterfactual evaluation of the cycling mechanism)."""
    dev = next(model.parameters()).device
    with torch.no_grad():
        pe = model(cf["edited"][:, :-1].to(dev))[0, :, cf["pos"]].argmax(-1).cpu()
        pu = model(cf["unedited"][:, :-1].to(dev))[0, :, cf["pos"]].argmax(-1).cpu()
    return {"count": float((pe == cf["count"]).float().mean()),
            "increment": float((pe == cf["increment"]).float().mean()),
            "unedited": float((pu == cf["truth"]).float().mean()), "n": len(pe)}

