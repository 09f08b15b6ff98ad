"""Command line of the book: ``python -m dltheory {run,sweep,list,build,pdf,student,grade,new,compare,cache-key} ...``.

See the "Running the book" page of the book and ``python -m dltheory run --help``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RUN_EPILOG = """\
sizes:
  smoke   the CI size: 2 CPU cores, at most ~90 s per chapter; what the online book shows
  full    the paper-scale picture: one GPU, minutes per chapter

devices:
  auto    cuda if available, else mps, else cpu (or $DLTHEORY_DEVICE if set)
  cpu | cuda | mps   force one; asking for an absent accelerator is an error

outputs (under --build-dir, default <repo>/_build):
  executed/<slug>.ipynb         the executed notebook (rendered by `make book`)
  results/<slug>.json           values, claims and provenance of the run
  executed/<slug>.key           cache key: a chapter is re-run only when its source, the library
                                modules it imports (transitively), its parameters (with the resolved
                                device) or the python/torch versions change; --dry-run shows what would run
  executed/<slug>.failed.ipynb  a failed run's notebook, for inspection (and results/<slug>.failed.json)

examples:
  python -m dltheory run                                  # every chapter at smoke size
  python -m dltheory run edge-of-stability --size full --device cuda
  python -m dltheory list
"""


def _int_arg(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, else an error saying ``expected <what>``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v
    return parse


_positive_int = _int_arg(1, "a positive integer")
_seed = _int_arg(0, "a non-negative integer seed")


CLUSTER_HELP = ("where runs execute: local (default: this machine's process pool), tcp://HOST:PORT (a running Dask "
                "scheduler) or slurm (a Dask cluster started with dask-jobqueue; see the --partition options). "
                "Needs pip install -e '.[cluster]'")


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", default="local", help=CLUSTER_HELP)
    g = p.add_argument_group("--cluster slurm")
    g.add_argument("--partition", default=None, help="Slurm partition (queue) of the jobs")
    g.add_argument("--gpus-per-job", type=_int_arg(0, "a non-negative integer"), default=0,
                   help="GPUs per Slurm job (one Dask worker per job; tasks with --device cuda ask for one GPU)")
    g.add_argument("--walltime", default="01:00:00", help="walltime of each job, HH:MM:SS (default 01:00:00)")
    g.add_argument("--slurm-jobs", type=_int_arg(1, "a positive integer"), default=1,
                   help="number of Slurm jobs (workers) to start (default 1)")
    g.add_argument("--slurm-cores", type=_int_arg(1, "a positive integer"), default=4, help="cores per job")
    g.add_argument("--slurm-memory", default="16GB", help="memory per job (default 16GB)")


def _slurm(args):
    from dltheory.machinery.executors import SlurmOptions, parse_cluster

    parse_cluster(args.cluster)  # a bad --cluster fails before anything runs
    if args.cluster != "slurm":
        return None

    return SlurmOptions(partition=args.partition, gpus_per_job=args.gpus_per_job, walltime=args.walltime,
                        jobs=args.slurm_jobs, cores=args.slurm_cores, memory=args.slurm_memory)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dltheory", description="Run and build Executable Training Theory.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute chapters with papermill", epilog=RUN_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Execute chapters (default: all in _toc.yml) and write their notebooks and "
                                   "results JSON atomically, in parallel processes, with a cache.")
    r.add_argument("chapters", nargs="*", metavar="CHAPTER", help="chapter slugs (see `list`); default all")
    r.add_argument("--size", default="smoke", choices=["smoke", "full"], help="problem size (default smoke)")
    r.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="default auto")
    r.add_argument("--jobs", type=_positive_int, default=None,
                   help="chapters run at once (default: number of cores); threads per chapter = cores // jobs")
    r.add_argument("--threads", type=_positive_int, default=None,
                   help="threads per chapter (default: cores // jobs); the time budget is measured with --threads 1")
    r.add_argument("--force", action="store_true", help="ignore the cache and re-run")
    r.add_argument("--build-dir", type=Path, default=None, help="output root (default <repo>/_build)")
    r.add_argument("--dry-run", action="store_true", help="print which chapters would run and which are cached")
    _add_cluster_options(r)
    w = sub.add_parser("sweep", help="run chapters at several seeds and aggregate every claim across them",
                       description="Run each chapter at each seed (cached per seed), keep every seed's results "
                                   "(_build/results/<slug>/seed-<k>.json) and write the aggregate "
                                   "_build/results/<slug>.sweep.json: per claim, at how many seeds it holds and the "
                                   "value's min / median / max.")
    w.add_argument("chapters", nargs="*", metavar="CHAPTER", help="chapter slugs (see `list`); default all")
    w.add_argument("--seeds", default="0-4", help="a range 0-4, a list 0,2,5 or one seed (default 0-4)")
    w.add_argument("--size", default="smoke", choices=["smoke", "full"], help="problem size (default smoke)")
    w.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="default auto")
    w.add_argument("--jobs", type=_positive_int, default=None, help="runs at once (default: number of cores)")
    w.add_argument("--threads", type=_positive_int, default=None, help="threads per run (default: cores // jobs)")
    w.add_argument("--force", action="store_true", help="ignore the cache and re-run every seed")
    w.add_argument("--build-dir", type=Path, default=None, help="output root (default <repo>/_build)")
    w.add_argument("--save", type=Path, default=None, metavar="DIR",
                   help="also write each aggregate, with the commit it was measured at, to DIR/<slug>.json "
                        "(book/sweeps holds the committed evidence)")
    _add_cluster_options(w)
    sub.add_parser("list", help="list the chapters in book order")
    b = sub.add_parser("build", help="render the executed chapters to HTML with jupyter-book (-W -n)")
    b.add_argument("--build-dir", type=Path, default=None)
    b.add_argument("--force", action="store_true", help="render even when the sources are those of the last build")
    pd = sub.add_parser("pdf", help="print the rendered book to PDF with headless chromium (the whole book and one "
                                    "PDF per chapter, in <build>/pdf) and link the PDFs from the HTML")
    pd.add_argument("--build-dir", type=Path, default=None)
    s = sub.add_parser("student", help="write student notebooks (solutions and claim checks removed; auto-checked "
                                       "exercises as otter-grader questions) and their autograders")
    s.add_argument("--build-dir", type=Path, default=None)
    g = sub.add_parser("grade", help="grade a folder of submitted student notebooks with otter-grader (locally) and "
                                     "write grades.csv there")
    g.add_argument("submissions", type=Path, help="folder of submitted .ipynb files")
    g.add_argument("--build-dir", type=Path, default=None, help="where `student` wrote the autograders")
    n = sub.add_parser("new", help="write a chapter skeleton that satisfies the chapter contract, listed in _toc.yml",
                       description="Write chapters/PART/slug.md from the chapter template (parameters, presets, "
                                   "theorem, sympy, experiment, figure, headline claim, Try it, exercises, "
                                   "provenance) and list it in _toc.yml under its part.")
    n.add_argument("target", metavar="PART/slug", help="e.g. optimization/gradient-noise")
    n.add_argument("title", help="the chapter's title")
    n.add_argument("--cite", default=None, help="bibliography key of the paper (default: a placeholder entry)")
    k = sub.add_parser("cache-key", help="print one digest of every chapter's cache key (changes exactly when some "
                                         "chapter would re-run; CI names its cache of _build/executed with it)")
    k.add_argument("--size", choices=["smoke", "full"], default="smoke")
    k.add_argument("--seed", type=_seed, default=0)
    k.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    c = sub.add_parser("compare", help="print every difference of recorded values and claims between two results "
                                       "folders (exit 1 if any)")
    c.add_argument("a", type=Path, help="a results folder, e.g. a copy of _build/results before a change")
    c.add_argument("b", type=Path, help="the results folder to compare with")
    c.add_argument("--ignore", nargs="*", default=[], metavar="NAME",
                   help="recorded values to skip (measured times, e.g. meta_train_s)")
    return p


def main(argv: list[str] | None = None) -> int:
    from dltheory.machinery.processes import Cancelled

    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "list":
            from dltheory.machinery.runner import chapters

            for slug, src in chapters().items():
                print(f"{slug:<28} {src}")
            return 0
        if args.cmd == "run":
            from dltheory.machinery.runner import plan, run_chapters

            if args.device != "auto":
                from dltheory.machinery.device import pick_device

                pick_device(args.device)  # fail early, naming the devices this machine has
            if args.dry_run:
                for slug, stale in plan(args.chapters, size=args.size, seed=args.seed, device=args.device,
                                        out=args.build_dir, force=args.force).items():
                    print(f"{slug:<28} {'would run' if stale else 'cached'}")
                return 0
            res = run_chapters(args.chapters, size=args.size, seed=args.seed, device=args.device,
                               jobs=args.jobs, force=args.force, out=args.build_dir, cluster=args.cluster,
                               slurm=_slurm(args), threads=args.threads)
            failed = [r for r in res if r.status == "failed"]
            if failed:
                print(f"{len(failed)} chapter(s) failed: {', '.join(r.slug for r in failed)}", file=sys.stderr)
                return 1
            return 0
        if args.cmd == "sweep":
            from dltheory.machinery.sweep import parse_seeds, sweep

            seeds = parse_seeds(args.seeds)
            aggs = sweep(args.chapters, seeds, size=args.size, device=args.device, jobs=args.jobs, force=args.force,
                         out=args.build_dir, cluster=args.cluster, slurm=_slurm(args), threads=args.threads)
            if args.save is not None:
                from dltheory.machinery.sweep import save

                for path in save(aggs, args.save):
                    print(f"saved {path}")
            return 1 if any(a["failed"] for a in aggs.values()) else 0
        if args.cmd == "build":
            from dltheory.machinery.build import build_html

            return build_html(args.build_dir, force=args.force)
        if args.cmd == "pdf":
            from dltheory.machinery.pdf import build_pdf

            build_pdf(args.build_dir)
            return 0
        if args.cmd == "student":
            from dltheory.machinery.student import build_student

            build_student(args.build_dir)
            return 0
        if args.cmd == "grade":
            from dltheory.machinery.student import grade

            grade(args.submissions, args.build_dir)
            return 0
        if args.cmd == "new":
            from dltheory.machinery.paths import repo_root
            from dltheory.machinery.scaffold import new_chapter, next_steps

            root = repo_root()
            print(next_steps(new_chapter(args.target, args.title, root, cite=args.cite), root, bool(args.cite)))
            return 0
        if args.cmd == "cache-key":
            from dltheory.machinery.runner import combined_cache_key

            print(combined_cache_key(args.size, args.seed, args.device))
            return 0
        if args.cmd == "compare":
            from dltheory.machinery.compare import compare_results

            diffs = compare_results(args.a, args.b, tuple(args.ignore))
            print("\n".join(diffs) if diffs else f"no difference in recorded values or claims ({args.a} vs {args.b})")
            return 1 if diffs else 0
    except Cancelled as exc:
        print(f"error: {exc}; every worker and kernel of the run was stopped", file=sys.stderr)
        return 128 + exc.signum
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover
