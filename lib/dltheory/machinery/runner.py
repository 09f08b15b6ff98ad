"""The chapter runner: jupytext → papermill, chapters in parallel processes, atomic outputs, a cache.

``python -m dltheory run [CHAPTER ...] --size {smoke,full} --device {auto,cpu,cuda,mps} --jobs N``
executes chapters (default: every chapter in ``_toc.yml``) and writes

* ``_build/executed/<slug>.ipynb``: the executed notebook (what the book renders),
* ``_build/results/<slug>.json``: values, claims and provenance (``shared/DESIGN.md`` §4),
* ``_build/executed/<slug>.key``: the cache key of that run.

Each chapter runs in a staging folder; its notebook and JSON are moved into place with ``os.replace`` only
when the run succeeded, and the cache key is written last. An interrupted run therefore never leaves outputs
that look complete. A failed run leaves ``<slug>.failed.ipynb`` / ``<slug>.failed.json`` for inspection and
removes the chapter's stale outputs. The cache key (:mod:`dltheory.machinery.cache`) hashes the chapter source, the
library modules the chapter imports (transitively), the parameters with the resolved device and the versions of
python and torch. Which chapters are stale is decided here, before any worker process starts: a run in which every
chapter is cached starts no process at all.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from dltheory.machinery.cache import cache_key
from dltheory.machinery.paths import build_dir, repo_root
from dltheory.machinery.processes import Cancelled, cancel_on_signals, kill_tree, remove_stale_staging, worker_init

SIZES = ("smoke", "full")


@dataclass
class ChapterResult:
    slug: str
    status: str  # "ran", "cached" or "failed"
    wall_s: float
    claims_held: int = 0
    claims_total: int = 0
    error: str = ""
    seed: int = 0


@dataclass
class Task:
    """One chapter run: a chapter at one seed, written under its own build folder ``out``."""

    slug: str
    src: Path
    params: dict
    out: Path


def toc_files(root: Path | None = None) -> list[str]:
    """Every ``file:`` entry of ``_toc.yml``, in book order (without extension)."""
    import yaml

    root = root or repo_root()
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                out.append(str(node["file"]))
            for key in ("root", "parts", "chapters", "sections"):
                if key in node:
                    walk(node[key] if key != "root" else {"file": node["root"]})
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return out


def chapters(root: Path | None = None) -> dict[str, Path]:
    """Map slug → chapter source for every executable chapter in ``_toc.yml`` (files under ``chapters/``
    other than the parts' ``index`` pages), in book order."""
    root = root or repo_root()
    out: dict[str, Path] = {}
    for f in toc_files(root):
        p = Path(f)
        if p.parts[:1] != ("chapters",) or p.name == "index":
            continue
        src = root / p.with_suffix(".md")
        if not src.is_file():
            raise FileNotFoundError(f"_toc.yml lists {f} but {src} does not exist; add the file or remove the entry")
        if p.name in out:
            raise ValueError(f"two chapters share the slug {p.name!r}; slugs must be unique")
        out[p.name] = src
    return out


def chapter_title(src: Path) -> str:
    """A chapter's title: its first ``# `` heading (the file name when it has none)."""
    for line in src.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return src.stem


def resolve(names: list[str] | None, root: Path | None = None) -> dict[str, Path]:
    """Select chapters by slug (or by path to their ``.md``); unknown names raise with the available slugs."""
    allc = chapters(root)
    if not names:
        return allc
    sel: dict[str, Path] = {}
    for n in names:
        slug = Path(n).stem if n.endswith(".md") else n
        if slug not in allc:
            raise KeyError(f"unknown chapter {n!r}; available chapters: {', '.join(allc)} "
                           "(chapters are listed in _toc.yml; add yours there)")
        sel[slug] = allc[slug]
    return sel


def output_paths(slug: str, out: Path) -> dict[str, Path]:
    return {
        "ipynb": out / "executed" / f"{slug}.ipynb",
        "json": out / "results" / f"{slug}.json",
        "key": out / "executed" / f"{slug}.key",
        "failed_ipynb": out / "executed" / f"{slug}.failed.ipynb",
        "failed_json": out / "results" / f"{slug}.failed.json",
    }


def is_cached(slug: str, src: Path, params: dict, root: Path, out: Path) -> bool:
    paths = output_paths(slug, out)
    if not (paths["ipynb"].is_file() and paths["json"].is_file() and paths["key"].is_file()):
        return False
    return paths["key"].read_text().strip() == cache_key(src, params, root)


def prepare_notebook(src: Path):
    """Read a MyST chapter with jupytext and tag it for the book: the parameters cell is hidden."""
    import jupytext

    nb = jupytext.read(src)
    found = False
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type == "code" and "parameters" in tags:
            found = True
            if "hide-cell" not in tags:
                tags.append("hide-cell")
            break
    if not found:
        raise ValueError(f"{src}: the first code cell must be tagged 'parameters' (see the chapter contract)")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _finalize_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(nb, path)


def _summarize(path: Path) -> tuple[int, int]:
    data = json.loads(path.read_text())
    return sum(bool(c["holds"]) for c in data["claims"]), len(data["claims"])


def execute(slug: str, src: Path, params: dict, root: Path, stage: Path, threads: int) -> tuple[bool, str, float]:
    """Execute one chapter with papermill into the folder ``stage`` (``<slug>.ipynb`` and, from ``run.finish()``,
    ``<slug>.json``). Returns ``(ok, error, wall_s)``; ``ok`` only when the notebook ran through and wrote its JSON."""
    import nbformat
    import papermill as pm

    t0 = time.perf_counter()
    os.environ.update({
        "DLTHEORY_RESULTS_DIR": str(stage), "DLTHEORY_ROOT": str(root),
        "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "TQDM_MININTERVAL": "5",
    })
    staged_in, staged_json = stage / f"{slug}.in.ipynb", stage / f"{slug}.json"
    error = ""
    try:
        nbformat.write(prepare_notebook(src), staged_in)
        pm.execute_notebook(str(staged_in), str(stage / f"{slug}.ipynb"), parameters=params, kernel_name="python3",
                            cwd=str(src.parent), progress_bar=False, log_output=False)
        ok = staged_json.is_file()
        if not ok:
            error = "the chapter finished without writing its results JSON (is run.finish() its last cell?)"
    except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
        ok = False
        if getattr(exc, "ename", None):  # the exception raised inside the notebook
            error = f"{exc.ename} in the notebook: {exc.evalue}"
        else:
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    return ok, error, time.perf_counter() - t0


def install(slug: str, stage: Path, out: Path, key: str, ok: bool, error: str, wall: float) -> ChapterResult:
    """Move a staged run's notebook and JSON into ``out`` (``os.replace``), the cache key last; a failed run's files
    go to ``<slug>.failed.*`` and the chapter's stale outputs are removed. Nothing that looks complete is ever left
    by a failure."""
    paths = output_paths(slug, out)
    staged_out, staged_json = stage / f"{slug}.ipynb", stage / f"{slug}.json"
    if ok:
        _finalize_notebook(staged_out)
        for p in (paths["ipynb"], paths["json"]):
            p.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged_json, paths["json"])
        os.replace(staged_out, paths["ipynb"])
        paths["failed_ipynb"].unlink(missing_ok=True)
        paths["failed_json"].unlink(missing_ok=True)
        tmp = paths["key"].with_suffix(".key.tmp")
        tmp.write_text(key + "\n")
        os.replace(tmp, paths["key"])
        held, total = _summarize(paths["json"])
        return ChapterResult(slug, "ran", wall, held, total)
    for stale in (paths["ipynb"], paths["json"], paths["key"]):
        stale.unlink(missing_ok=True)
    held = total = 0
    for staged, final in ((staged_out, paths["failed_ipynb"]), (staged_json, paths["failed_json"])):
        final.unlink(missing_ok=True)
        if staged.is_file():
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
    if paths["failed_json"].is_file():
        held, total = _summarize(paths["failed_json"])
    return ChapterResult(slug, "failed", wall, held, total, error)


def new_stage(out: Path, slug: str) -> Path:
    """A fresh staging folder ``<out>/.staging/<slug>.<pid>.<ns>`` (the pid lets a later run remove it once its
    process is gone)."""
    stage = out / ".staging" / f"{slug}.{os.getpid()}.{time.time_ns()}"
    stage.mkdir(parents=True)
    return stage


def run_one(slug: str, src: str, params: dict, root: str, out: str, threads: int, force: bool) -> ChapterResult:
    """Execute one chapter (in a worker process) and install its outputs. See the module docstring."""
    root_p, out_p, src_p = Path(root), Path(out), Path(src)
    paths = output_paths(slug, out_p)
    if not force and is_cached(slug, src_p, params, root_p, out_p):
        held, total = _summarize(paths["json"])
        return ChapterResult(slug, "cached", 0.0, held, total)
    key = cache_key(src_p, params, root_p)
    paths["key"].unlink(missing_ok=True)
    stage = new_stage(out_p, slug)
    try:
        ok, error, wall = execute(slug, src_p, params, root_p, stage, threads)
        return install(slug, stage, out_p, key, ok, error, wall)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def resolve_device(device: str) -> str:
    """The device a run will use, as a string (``auto`` resolved: ``$DLTHEORY_DEVICE``, then cuda, mps, cpu). It is
    what the chapter receives as its ``device`` parameter and what the cache key hashes."""
    from dltheory.machinery.device import pick_device

    return str(pick_device(device))


def plan(names: list[str] | None = None, size: str = "smoke", seed: int = 0, device: str = "auto",
         out: Path | None = None, force: bool = False) -> dict[str, bool]:
    """Which of the selected chapters would run (``True``) and which are cached (``False``), in book order."""
    root = repo_root()
    out = Path(out) if out is not None else build_dir()
    params = {"size": size, "seed": seed, "device": resolve_device(device)}
    return {slug: force or not is_cached(slug, src, params, root, out) for slug, src in resolve(names, root).items()}


def combined_cache_key(size: str = "smoke", seed: int = 0, device: str = "auto", root: Path | None = None) -> str:
    """One digest of every chapter's cache key at ``size``/``seed``/``device``: it changes exactly when some
    chapter would re-run. CI uses it to name the saved ``_build/executed`` + ``_build/results`` (the workflow's
    cache step; an older cache is restored by prefix, and the per-chapter keys decide what re-runs)."""
    import hashlib

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; allowed sizes: {', '.join(SIZES)}")
    root = root or repo_root()
    params = {"size": size, "seed": check_seed(seed), "device": resolve_device(device)}
    h = hashlib.sha256()
    for slug, src in chapters(root).items():
        h.update(f"{slug}:{cache_key(src, params, root)}\n".encode())
    return h.hexdigest()[:20]


def check_seed(seed) -> int:
    """A seed is a non-negative integer (the error names the fix)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def run_chapters(names: list[str] | None = None, size: str = "smoke", seed: int = 0, device: str = "auto",
                 jobs: int | None = None, force: bool = False, out: Path | None = None,
                 echo=print, cluster: str | None = None, slurm=None, threads: int | None = None) -> list[ChapterResult]:
    """Run chapters in parallel processes; returns one :class:`ChapterResult` per chapter, in book order. Cached
    chapters are answered from their results JSON without starting a process."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; allowed sizes: {', '.join(SIZES)}")
    check_seed(seed)
    out = Path(out) if out is not None else build_dir()
    params = {"size": size, "seed": seed, "device": resolve_device(device)}
    tasks = [Task(slug, src, params, out) for slug, src in resolve(names).items()]
    return run_tasks(tasks, jobs=jobs, force=force, echo=echo, cluster=cluster, slurm=slurm, threads=threads)


def run_tasks(tasks: list[Task], jobs: int | None = None, force: bool = False, echo=print,
              cluster: str | None = None, slurm=None, threads: int | None = None) -> list[ChapterResult]:
    """Run chapter tasks (chapters at seeds), the stale ones only, in this machine's process pool or, with
    ``cluster`` (``tcp://HOST:PORT`` or ``slurm``), on Dask (:mod:`dltheory.machinery.executors`); results in task
    order. The cache is consulted here, before any process starts or anything is sent. Each run gets ``threads``
    threads (default: cores // jobs; ``threads=1`` is how the book's time budget is measured)."""
    root = repo_root()
    results: dict[int, ChapterResult] = {}
    stale: list[int] = []
    for i, t in enumerate(tasks):
        if not force and is_cached(t.slug, t.src, t.params, root, t.out):
            held, total = _summarize(output_paths(t.slug, t.out)["json"])
            results[i] = ChapterResult(t.slug, "cached", 0.0, held, total, seed=t.params["seed"])
        else:
            stale.append(i)
    cores = os.cpu_count() or 1
    jobs = max(1, min(jobs or cores, len(stale) or 1))
    threads = threads or max(1, cores // jobs)
    p0 = tasks[0].params if tasks else {}
    seeds = sorted({t.params["seed"] for t in tasks})
    echo(f"{len(tasks)} run(s) at size={p0.get('size')} seed(s)={','.join(map(str, seeds))} "
         f"device={p0.get('device')}: {len(results)} cached, {len(stale)} to run"
         + (f" with {jobs} job(s) x {threads} thread(s)" if stale else "")
         + (f"; outputs in {tasks[0].out}" if len({t.out for t in tasks}) == 1 and tasks else ""))
    t0 = time.perf_counter()
    for i, r in sorted(results.items()):
        echo(f"[{i + 1}/{len(tasks)}] {r.slug:<28} seed {r.seed}  cached           claims {r.claims_held}/"
             f"{r.claims_total}")
    if not stale:
        return [results[i] for i in range(len(tasks))]
    for t_out in {tasks[i].out for i in stale}:
        remove_stale_staging(t_out)
    if cluster not in (None, "local"):
        from dltheory.machinery.executors import connect, run_on_dask

        try:
            with cancel_on_signals(), connect(cluster, slurm) as client:
                results.update(run_on_dask(client, tasks, stale, root, p0["device"], echo))
        except (Cancelled, KeyboardInterrupt) as exc:
            pending = [f"{tasks[i].slug} (seed {tasks[i].params['seed']})" for i in stale if i not in results]
            echo(f"cancelled ({exc}): {', '.join(pending) or 'nothing was running'}; the cluster's tasks were "
                 "cancelled and no output of these was written")
            raise Cancelled(getattr(exc, "signum", 2)) from None
        return [results[i] for i in range(len(tasks))]
    ctx = mp.get_context("spawn")
    done = 0
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=worker_init)
    futs: dict = {}
    try:
        with cancel_on_signals():
            futs = {pool.submit(run_one, tasks[i].slug, str(tasks[i].src), tasks[i].params, str(root),
                                str(tasks[i].out), threads, True): i for i in stale}
            for fut in cf.as_completed(futs):
                i = futs[fut]
                t = tasks[i]
                try:
                    r = fut.result()
                except Exception as exc:  # a crash of the worker itself
                    r = ChapterResult(t.slug, "failed", 0.0, error=f"{type(exc).__name__}: {exc}")
                r.seed = t.params["seed"]
                results[i] = r
                done += 1
                line = (f"[{done}/{len(stale)} run] {t.slug:<28} seed {r.seed}  {r.status:<6} {r.wall_s:6.1f} s  "
                        f"claims {r.claims_held}/{r.claims_total}  (elapsed {time.perf_counter() - t0:.0f} s)")
                if r.error:
                    line += f"\n    {r.error}\n    see {output_paths(t.slug, t.out)['failed_ipynb']}"
                echo(line)
    except (Cancelled, KeyboardInterrupt) as exc:
        pending = [f"{tasks[i].slug} (seed {tasks[i].params['seed']})" for f, i in futs.items() if i not in results]
        workers = list(getattr(pool, "_processes", {}) or {})
        pool.shutdown(wait=False, cancel_futures=True)
        kill_tree(workers)
        for t_out in {tasks[i].out for i in stale}:
            remove_stale_staging(t_out)
        echo(f"cancelled ({exc}): {', '.join(pending) or 'nothing was running'}; no output of these was written")
        raise Cancelled(getattr(exc, "signum", 2)) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [results[i] for i in range(len(tasks))]
