"""The Dask path's overhead per task: ``--cluster local`` (the runner's process pool) vs a ``distributed.LocalCluster``
with the same two workers, on a trivial notebook, measured side by side in one run (ratios only).

Each round runs the same four tasks (one tiny chapter at seeds 0-3, cache ignored) both ways, alternating; a task is
dominated by starting a Jupyter kernel, so the ratio says what Dask adds on top of that: submission, the chapter's
source sent to the worker, the executed notebook and results sent back, and the install on this machine. The
LocalCluster is started once, before the rounds (its start-up time is printed separately).

Run: ``.venv/bin/python benchmarks/bench_cluster.py`` (about two minutes on two cores; needs the cluster extras).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dltheory.machinery.runner import Task, resolve, run_tasks  # noqa: E402
from tests.machinery.books import TINY, make_book  # noqa: E402

ROUNDS, SEEDS = 3, 4


def tasks(out: Path) -> list[Task]:
    (slug, src), = resolve(None).items()
    return [Task(slug, src, {"size": "smoke", "seed": s, "device": "cpu"}, out / f"seed-{s}") for s in range(SEEDS)]


def main() -> None:
    import distributed

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["DLTHEORY_ROOT"] = str(make_book(tmp, "tiny", TINY))
        t0 = time.perf_counter()
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      silence_logs=50) as cluster:
            start = time.perf_counter() - t0
            local, dask = [], []
            for r in range(ROUNDS):
                t = time.perf_counter()
                run_tasks(tasks(tmp / f"local-{r}"), jobs=2, force=True, echo=lambda *_: None)
                local.append((time.perf_counter() - t) / SEEDS)
                t = time.perf_counter()
                run_tasks(tasks(tmp / f"dask-{r}"), force=True, echo=lambda *_: None,
                          cluster=cluster.scheduler_address)
                dask.append((time.perf_counter() - t) / SEEDS)
    ratios = [d / l for d, l in zip(dask, local)]
    print(f"LocalCluster start-up (once): {start:.1f} s")
    for name, xs in (("local pool:  ", local), ("LocalCluster:", dask)):
        print(f"per task, {name} median {statistics.median(xs):.2f} s  (min {min(xs):.2f}, max {max(xs):.2f})")
    print(f"RATIO LocalCluster / local pool, per task: median {statistics.median(ratios):.2f}x "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}; {ROUNDS} rounds of {SEEDS} tasks, 2 workers each)")


if __name__ == "__main__":
    main()
