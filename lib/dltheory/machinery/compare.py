"""Compare two sets of results JSON: did a change move any recorded number?

``python -m dltheory compare A B`` reads ``<slug>.json`` in two results folders (e.g. ``_build/results`` of the
commit before a refactoring and after it) and prints every difference in ``values`` and in the claims' ``value``,
``expected``, ``tolerance``, ``comparison`` and ``holds``. Wall times, versions and other provenance are ignored.
Exit status 0 when nothing differs. Used to check that moving code changes no number.
"""

from __future__ import annotations

import json
from pathlib import Path

CLAIM_FIELDS = ("value", "expected", "tolerance", "comparison", "holds")


def _load(folder: Path) -> dict[str, dict]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of results JSON (e.g. _build/results)")
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if "." not in p.stem}


def compare_results(a: Path, b: Path, ignore: tuple[str, ...] = ()) -> list[str]:
    """Every difference between the results in folders ``a`` and ``b``, one line each (empty: identical). Values
    named in ``ignore`` (measured times such as ``meta_train_s``) are skipped."""
    ra, rb = _load(a), _load(b)
    diffs = [f"{slug}: only in {a}" for slug in sorted(set(ra) - set(rb))]
    diffs += [f"{slug}: only in {b}" for slug in sorted(set(rb) - set(ra))]
    for slug in sorted(set(ra) & set(rb)):
        va, vb = ra[slug]["values"], rb[slug]["values"]
        for name in sorted((set(va) | set(vb)) - set(ignore)):
            if va.get(name, "<absent>") != vb.get(name, "<absent>"):
                diffs.append(f"{slug}: value {name}: {va.get(name, '<absent>')!r} != {vb.get(name, '<absent>')!r}")
        ca = {c["id"]: c for c in ra[slug]["claims"]}
        cb = {c["id"]: c for c in rb[slug]["claims"]}
        for cid in sorted(set(ca) | set(cb)):
            if cid not in ca or cid not in cb:
                diffs.append(f"{slug}: claim {cid} only in {a if cid in ca else b}")
                continue
            for f in CLAIM_FIELDS:
                if ca[cid].get(f) != cb[cid].get(f):
                    diffs.append(f"{slug}: claim {cid} {f}: {ca[cid].get(f)!r} != {cb[cid].get(f)!r}")
    return diffs
