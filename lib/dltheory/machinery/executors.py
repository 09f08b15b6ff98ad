"""Where chapter runs execute: this machine's process pool (the default) or a Dask cluster.

``--cluster local`` (default) is the runner's own process pool (:func:`dltheory.machinery.runner.run_tasks`); Dask
is not even imported. ``--cluster tcp://HOST:8786`` connects to a running Dask scheduler; ``--cluster slurm``
starts one through ``dask_jobqueue.SLURMCluster`` (:class:`SlurmOptions`: partition, GPUs per job, walltime, number
of jobs). Install the extras with ``pip install -e '.[cluster]'``.

Each (chapter, seed) is one Dask task (:func:`remote_run`): the worker receives the chapter's *source text* and its
parameters, executes it in a temporary folder and returns the executed notebook and results JSON as bytes. Results
travel back through Dask, never through a shared file system, and are installed on the machine that runs the command
with the same atomic moves as a local run (:func:`dltheory.machinery.runner.install`). The cache decides what runs
before anything is sent. With ``--device cuda`` every task asks for one ``GPU`` worker resource, so a sweep spreads over
the GPUs the cluster has (start workers with ``--resources GPU=1``; ``--cluster slurm`` does it for you). A worker
runs one chapter at a time (a chapter sets environment variables of its process).

A worker that dies in the middle of a task loses nothing here: the scheduler retries the task elsewhere, or reports it
failed, and no output is written until a result arrives whole.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_ONE_AT_A_TIME = threading.Lock()
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class SlurmOptions:
    """What ``--cluster slurm`` asks of Slurm: one Dask worker per job."""

    partition: str | None = None
    gpus_per_job: int = 0
    walltime: str = "01:00:00"
    jobs: int = 1
    cores: int = 4
    memory: str = "16GB"

    def __post_init__(self):
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise ValueError(f"--slurm-jobs must be a positive integer, got {self.jobs!r}")
        if isinstance(self.gpus_per_job, bool) or not isinstance(self.gpus_per_job, int) or self.gpus_per_job < 0:
            raise ValueError(f"--gpus-per-job must be a non-negative integer, got {self.gpus_per_job!r}")
        parts = self.walltime.split(":")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"--walltime must look like HH:MM:SS (e.g. 02:00:00), got {self.walltime!r}")


def parse_cluster(spec: str | None) -> tuple[str, str | None]:
    """``local`` / ``None`` → ``("local", None)``; ``tcp://host:port`` → ``("tcp", address)``; ``slurm`` →
    ``("slurm", None)``. Anything else raises naming the three forms."""
    if spec in (None, "", "local"):
        return "local", None
    if spec == "slurm":
        return "slurm", None
    if spec.startswith("tcp://") and ":" in spec[len("tcp://"):]:
        return "tcp", spec
    raise ValueError(f"unknown --cluster {spec!r}; use local, tcp://HOST:PORT (a running Dask scheduler) or slurm")


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise RuntimeError("--cluster needs Dask: pip install -e '.[cluster]' (dask, distributed, dask-jobqueue)") \
            from None
    return distributed


def slurm_cluster(opts: SlurmOptions):
    """A ``dask_jobqueue.SLURMCluster`` for ``opts`` (not yet scaled): one worker process per job, one thread, and
    the ``GPU`` resource when the jobs have GPUs."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise RuntimeError("--cluster slurm needs dask-jobqueue: pip install -e '.[cluster]'") from None
    extra = [f"--gres=gpu:{opts.gpus_per_job}"] if opts.gpus_per_job else []
    worker_args = ["--nthreads", "1"] + (["--resources", f"GPU={opts.gpus_per_job}"] if opts.gpus_per_job else [])
    return SLURMCluster(queue=opts.partition, cores=opts.cores, processes=1, memory=opts.memory,
                        walltime=opts.walltime, job_extra_directives=extra, worker_extra_args=worker_args)


@contextlib.contextmanager
def connect(spec: str, slurm: SlurmOptions | None = None):
    """A ``distributed.Client`` for ``tcp://...`` or ``slurm`` (closed, with its cluster, on exit). An unreachable
    scheduler fails within :data:`CONNECT_TIMEOUT_S` seconds with a message that names its address."""
    kind, address = parse_cluster(spec)
    distributed = _import_distributed()
    cluster = None
    if kind == "slurm":
        opts = slurm or SlurmOptions()
        cluster = slurm_cluster(opts)
        cluster.scale(jobs=opts.jobs)
        address = cluster
    try:
        try:
            client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise RuntimeError(f"cannot reach the Dask scheduler at {address} within {CONNECT_TIMEOUT_S} s ({exc}); "
                               "is it running (dask scheduler) and reachable from here?") from None
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def remote_run(slug: str, source: str, params: dict, threads: int) -> tuple[dict, dict[str, bytes]]:
    """Run on a Dask worker: execute the chapter ``source`` (its ``.md`` text) in a temporary folder and return
    ``(result fields, files)``, the files being the staged ``<slug>.ipynb`` / ``<slug>.json`` as bytes (those that
    exist). One chapter at a time per worker process."""
    import tempfile

    from dltheory.machinery.runner import execute

    with _ONE_AT_A_TIME, tempfile.TemporaryDirectory(prefix=f"dltheory-{slug}-") as tmp:
        root = Path(tmp)
        src = root / "chapters" / f"{slug}.md"
        src.parent.mkdir(parents=True)
        src.write_text(source)
        stage = root / "stage"
        stage.mkdir()
        ok, error, wall = execute(slug, src, params, root, stage, threads)
        files = {p.name: p.read_bytes() for p in (stage / f"{slug}.ipynb", stage / f"{slug}.json") if p.is_file()}
        return {"ok": ok, "error": error, "wall": wall}, files


def run_on_dask(client, tasks, stale: list[int], root: Path, device: str, echo) -> dict:
    """Submit the stale tasks to ``client`` and install each result as it arrives; returns ``{index: ChapterResult}``.
    On :class:`~dltheory.machinery.processes.Cancelled` the futures are cancelled before the error propagates."""
    distributed = _import_distributed()
    from dltheory.machinery.cache import cache_key
    from dltheory.machinery.runner import install, new_stage

    resources = {"GPU": 1} if device.startswith("cuda") else None
    futs = {}
    for i in stale:
        t = tasks[i]
        fut = client.submit(remote_run, t.slug, t.src.read_text(), t.params, 1, resources=resources, pure=False,
                            key=f"{t.slug}-seed{t.params['seed']}-{time.time_ns()}")
        futs[fut] = i
    results = {}
    t0 = time.perf_counter()
    try:
        for fut in distributed.as_completed(list(futs)):
            i = futs[fut]
            t = tasks[i]
            stage = new_stage(t.out, t.slug)
            try:
                try:
                    fields, files = fut.result()
                except Exception as exc:  # the task failed on the cluster (e.g. its worker died too often)
                    fields, files = {"ok": False, "error": f"{type(exc).__name__} on the cluster: {exc}",
                                     "wall": 0.0}, {}
                for name, data in files.items():
                    (stage / name).write_bytes(data)
                r = install(t.slug, stage, t.out, cache_key(t.src, t.params, root), fields["ok"], fields["error"],
                            fields["wall"])
            finally:
                import shutil

                shutil.rmtree(stage, ignore_errors=True)
            r.seed = t.params["seed"]
            results[i] = r
            echo(f"[{len(results)}/{len(stale)} run on {client.scheduler.address}] {t.slug:<28} seed {r.seed}  "
                 f"{r.status:<6} {r.wall_s:6.1f} s  claims {r.claims_held}/{r.claims_total}  "
                 f"(elapsed {time.perf_counter() - t0:.0f} s)" + (f"\n    {r.error}" if r.error else ""))
    except BaseException:
        client.cancel(list(futs), force=True)
        raise
    return results
