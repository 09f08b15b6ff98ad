"""Seed sweeps: every chapter at several seeds, and how robust each claim is across them.

``python -m dltheory sweep [CHAPTER ...] --seeds 0-4 [--size smoke|full] [--device ...]`` runs each chapter at each
seed in one pool of processes, cached per seed like ``run``:

* seed 0 is the book's own run (``_build/executed``, ``_build/results/<slug>.json``, shared with ``make book``);
  seed ``k > 0`` runs under ``_build/sweeps/seed-<k>/`` with the same layout;
* every seed's results JSON is kept as ``_build/results/<slug>/seed-<k>.json`` (same schema);
* the aggregate ``_build/results/<slug>.sweep.json``: per claim, at how many seeds it holds, at which it fails, and
  the value's min / median / max and per-seed values; per recorded number, the same three; the seeds that failed to
  execute (an exception, not a failed claim), with their errors. A failed seed never stops the others.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from dltheory.machinery.cache import cache_key
from dltheory.machinery.claims import write_json_atomic
from dltheory.machinery.paths import build_dir, repo_root
from dltheory.machinery.runner import SIZES, Task, output_paths, resolve, resolve_device, run_tasks


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` → ``[0, 1, 2, 3, 4]``; ``"0,2,5"`` and ``"3"`` work too. Empty, reversed or negative ranges raise
    ``ValueError`` naming the form to use."""
    form = "use a range like 0-4, a list like 0,2,5 or one seed like 3"
    text = (text or "").strip()
    if not text:
        raise ValueError(f"--seeds is empty; {form}")
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if part.startswith("-") or "--" in part:
            raise ValueError(f"--seeds {text!r}: seeds must be non-negative integers; {form}")
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(f"--seeds {text!r}: {part!r} is not a seed or a range; {form}") from None
        if b < a:
            raise ValueError(f"--seeds {text!r}: the range {part} is reversed; write {b}-{a}")
        seeds.extend(range(a, b + 1))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r} lists a seed twice; {form}")
    return seeds


def seed_build_dir(out: Path, seed: int) -> Path:
    """Where the run at ``seed`` writes its executed notebook, key and results: the book's build for seed 0."""
    return out if seed == 0 else out / "sweeps" / f"seed-{seed}"


def _spread(xs: list[float]) -> dict:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def aggregate(slug: str, per_seed: dict[int, dict | None], errors: dict[int, str] | None = None,
              keys: dict[int, str] | None = None) -> dict:
    """The sweep aggregate of one chapter from its per-seed results dicts (``None`` for a seed that failed to
    execute; its error in ``errors``)."""
    errors = errors or {}
    ok = {s: d for s, d in sorted(per_seed.items()) if d is not None}
    first = next(iter(ok.values()), {})
    claims = []
    for c0 in first.get("claims", []):
        vals = {s: next((c for c in d["claims"] if c["id"] == c0["id"]), None) for s, d in ok.items()}
        present = {s: c for s, c in vals.items() if c is not None}
        nums = [c["value"] for c in present.values()]
        claims.append({
            "id": c0["id"], "statement": c0["statement"], "source": c0["source"],
            "headline": bool(c0.get("headline")), "expected": c0["expected"], "tolerance": c0["tolerance"],
            "comparison": c0.get("comparison", "within"),
            "holds": sum(bool(c["holds"]) for c in present.values()), "n": len(present),
            "fails_at": [s for s, c in present.items() if not c["holds"]],
            **(_spread(nums) if nums else {}),
            "per_seed": {str(s): c["value"] for s, c in present.items()},
        })
    values = {}
    names = sorted({n for d in ok.values() for n in d["values"]})
    for name in names:
        per = {str(s): d["values"][name] for s, d in ok.items() if name in d["values"]}
        nums = [v for v in per.values() if _number(v)]
        values[name] = {**(_spread(nums) if nums and len(nums) == len(per) else {}), "n": len(per), "per_seed": per}
    return {
        "chapter": slug, "size": first.get("size"), "device": first.get("device"),
        "seeds": sorted(per_seed), "seeds_ok": sorted(ok),
        "failed": [{"seed": s, "error": errors.get(s, "")} for s in sorted(per_seed) if per_seed[s] is None],
        "cache_keys": {str(s): k for s, k in sorted((keys or {}).items())},
        "claims": claims, "values": values,
    }


def sweep(names: list[str] | None, seeds: list[int], size: str = "smoke", device: str = "auto",
          jobs: int | None = None, force: bool = False, out: Path | None = None, echo=print,
          cluster: str | None = None, slurm=None, threads: int | None = None) -> dict[str, dict]:
    """Run the chapters at every seed (one pool, cached per seed), keep each seed's results JSON and write each
    chapter's aggregate; returns the aggregates by slug."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; allowed sizes: {', '.join(SIZES)}")
    if not seeds:
        raise ValueError("give at least one seed (--seeds 0-4)")
    root = repo_root()
    out = Path(out) if out is not None else build_dir()
    dev = resolve_device(device)
    sel = resolve(names, root)
    tasks = [Task(slug, src, {"size": size, "seed": s, "device": dev}, seed_build_dir(out, s))
             for s in seeds for slug, src in sel.items()]
    results = run_tasks(tasks, jobs=jobs, force=force, echo=echo, cluster=cluster, slurm=slurm, threads=threads)
    aggregates = {}
    for slug, src in sel.items():
        per_seed, errors, keys = {}, {}, {}
        for t, r in zip(tasks, results):
            if t.slug != slug:
                continue
            s = t.params["seed"]
            res = output_paths(slug, t.out)["json"]
            keep = out / "results" / slug / f"seed-{s}.json"
            if r.status == "failed" and not output_paths(slug, t.out)["failed_json"].is_file():
                per_seed[s], errors[s] = None, r.error  # an exception: no results at all
                keep.unlink(missing_ok=True)
                continue
            data_path = res if r.status != "failed" else output_paths(slug, t.out)["failed_json"]
            data = json.loads(data_path.read_text())
            per_seed[s] = data
            key_file = output_paths(slug, t.out)["key"]  # the key the run was made under (absent if it failed)
            keys[s] = key_file.read_text().strip() if key_file.is_file() else cache_key(src, t.params, root)
            keep.parent.mkdir(parents=True, exist_ok=True)
            tmp = keep.with_suffix(".json.tmp")
            shutil.copyfile(data_path, tmp)
            tmp.replace(keep)
        agg = aggregate(slug, per_seed, errors, keys)
        write_json_atomic(out / "results" / f"{slug}.sweep.json", agg)
        aggregates[slug] = agg
        echo(summary_line(agg))
    return aggregates


def summary_line(agg: dict) -> str:
    """One line per chapter: claims that hold at every seed, the fragile ones with their values, failed seeds."""
    n = len(agg["seeds"])
    robust = sum(c["holds"] == n for c in agg["claims"])
    line = f"{agg['chapter']:<28} {robust}/{len(agg['claims'])} claims hold at all {n} seeds"
    fragile = [f"{c['id']} ({c['holds']}/{c['n']}; fails at seed {','.join(map(str, c['fails_at']))})"
               for c in agg["claims"] if c["holds"] < n]
    if fragile:
        line += "; fragile: " + ", ".join(fragile)
    if agg["failed"]:
        line += "; failed seeds: " + ", ".join(f"{f['seed']} ({f['error']})" for f in agg["failed"])
    return line


def save(aggregates: dict[str, dict], dest: Path, commit: str | None = None) -> list[Path]:
    """Write each aggregate to ``dest/<slug>.json`` (e.g. ``book/sweeps``, to commit the evidence), with the commit
    it was measured at (``git rev-parse HEAD`` when not given)."""
    import subprocess

    if commit is None:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True,
                                    check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
    written = []
    for slug, agg in aggregates.items():
        written.append(write_json_atomic(Path(dest) / f"{slug}.json", {"commit": commit, **agg}))
    return written
