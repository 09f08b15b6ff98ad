"""Distillation on sparse parity: the choices that make the chapter fit its smoke budget, measured side by side
in one run (ratios only).

The chapter *Progressive distillation and its implicit curriculum* trains ten student schedules over eight seeds
(``dltheory.distillation.distill.train_students``) and probes a width-256 teacher at sixty checkpoints on 8192 points.
This script times, on the same inputs:

1. students: all schedules side by side in one run, against one run per schedule (the final students must agree);
2. the probe's forward pass: in chunks of 1024 rows against one pass over all rows, and float32 against
   float64;
3. the softmax over two labels: ``torch.softmax`` against the sigmoid of the logit difference.

Run: ``.venv/bin/python benchmarks/bench_distill.py`` (about a minute on one core).
"""

from __future__ import annotations

import statistics
import time

import torch

from dltheory.distillation import distill as D
from dltheory.distillation.parity import sample_parity

N_BITS, SUPPORT, SEEDS = 32, [0, 1, 2, 3], list(range(8))


def median_time(fn, repeats=3):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def chapter_like_plans(ck: D.Checkpoints) -> list[D.Plan]:
    """The chapter's mix of schedules: labels, one-shot, progressive at tau 0 and 1, all checkpoints but a
    window, and a single intermediate checkpoint at five positions (here at fixed steps)."""
    dense, final, S = ck.steps, ck.steps[-1], len(SEEDS)
    plans = [D.Plan.ce(), D.Plan.from_teacher("oneshot", [final], S),
             D.Plan.from_teacher("progressive", dense, S), D.Plan.from_teacher("progressive_tau1", dense, S, 1.0),
             D.Plan.from_teacher("skip", [t for t in dense if not 1400 <= t < 2100] or [final], S)]
    plans += [D.Plan.from_teacher(f"two_shot_{c}", [c, final], S) for c in (900, 1300, 1700, 2100, 2500)]
    return plans


def main():
    torch.set_num_threads(1)
    teachers = [D.init_mlp([1000 * i + s for s in SEEDS], N_BITS, 256) for i in range(120)]
    ck = D.Checkpoints([25 * (i + 1) for i in range(120)], teachers)
    x_test, y_test = sample_parity((2048,), N_BITS, SUPPORT, torch.Generator().manual_seed(1))
    student = D.init_mlp([500 + s for s in SEEDS], N_BITS, 8)
    plans, steps = chapter_like_plans(ck), 600

    def run(ps):
        return D.train_students(student, ps, ck, D.ParityStream([400 + s for s in SEEDS], N_BITS, SUPPORT, 128),
                                0.1, steps, x_test, y_test, eval_every=50)

    t_side, side = median_time(lambda: run(plans), repeats=1)
    t_each, each = median_time(lambda: {pl.name: run([pl])[pl.name] for pl in plans}, repeats=1)
    for pl in plans:  # equal up to float32 rounding: the wide matrix products sum in a different order
        for u, v in zip(side[pl.name].params.tensors(), each[pl.name].params.tensors()):
            torch.testing.assert_close(u, v, rtol=1e-3, atol=1e-4)
    print(f"students: {len(plans)} schedules x {len(SEEDS)} seeds, width 8, teacher width 256, {steps} steps, "
          f"1 thread")
    print(f"  side by side {t_side:.2f} s, one run per schedule {t_each:.2f} s")
    print(f"RATIO one run per schedule / side by side: {t_each / t_side:.1f}x")

    x_half, _ = sample_parity((4096,), N_BITS, SUPPORT, torch.Generator().manual_seed(2))
    x_probe = torch.cat([x_half, -x_half])
    probe = D.Checkpoints(ck.steps[:10], ck.params[:10])
    t_chunk, p32 = median_time(lambda: D.checkpoint_probs(probe, x_probe))
    t_whole, _ = median_time(lambda: torch.stack([torch.softmax(D.mlp_logits(p, x_probe, chunk=len(x_probe)), -1)
                                                   [..., 1] for p in probe.params]))
    t_64, p64 = median_time(lambda: D.checkpoint_probs(probe, x_probe, dtype=torch.float64))
    print(f"probe: {len(probe.steps)} checkpoints x {len(SEEDS)} seeds on {len(x_probe)} points")
    print(f"  chunked float32 {t_chunk:.2f} s, one pass float32 {t_whole:.2f} s, chunked float64 {t_64:.2f} s; "
          f"largest float32 - float64 difference {float((p32.double() - p64).abs().max()):.1e}")
    print(f"RATIO one pass / chunked: {t_whole / t_chunk:.1f}x")
    print(f"RATIO float64 / float32:  {t_64 / t_chunk:.1f}x")

    z = torch.randn(80, 128, 2, generator=torch.Generator().manual_seed(3))
    t_soft, ref = median_time(lambda: [torch.softmax(z, -1) for _ in range(200)][-1])
    t_sig, out = median_time(lambda: [D._softmax(z) for _ in range(200)][-1])
    torch.testing.assert_close(out, ref)
    print(f"softmax over 2 labels, shape {tuple(z.shape)}: torch.softmax {1e6 * t_soft / 200:.0f} us, "
          f"sigmoid of the difference {1e6 * t_sig / 200:.0f} us")
    print(f"RATIO torch.softmax / sigmoid: {t_soft / t_sig:.1f}x")


if __name__ == "__main__":
    main()
