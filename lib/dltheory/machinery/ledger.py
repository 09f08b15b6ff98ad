"""The claims ledger: every claim of every chapter in one table, with its robustness across seeds.

Generated at build time into the back-matter page ``book/ledger.md`` (the marker ``<!-- claims-ledger -->`` is
replaced when the book is staged). For each chapter: every claim of the book's own run (statement, value, expected,
tolerance, source, holds) and, when a seed sweep is committed under ``book/sweeps/<slug>.json``
(``python -m dltheory sweep --save book/sweeps``), at how many seeds it holds, where it fails and the value's
min / median / max. A committed sweep is *fresh* when the chapter's cache key today equals the one it was measured
at, *stale* otherwise (the chapter or a module it imports changed since); a chapter without one says so. Claims
that fail at some seed are shown as failing, never hidden.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from dltheory.machinery.cache import cache_key
from dltheory.machinery.runner import chapter_title, chapters, output_paths

MARKER = "<!-- claims-ledger -->"
SWEEPS = Path("book") / "sweeps"


def anchor(slug: str) -> str:
    """The ledger's label (and HTML id) of a chapter's rows."""
    return f"ledger-{slug}"


def sweep_status(root: Path, slug: str) -> tuple[str, dict | None]:
    """``("fresh" | "stale" | "missing", aggregate)`` of the committed sweep of ``slug``."""
    path = root / SWEEPS / f"{slug}.json"
    if not path.is_file():
        return "missing", None
    agg = json.loads(path.read_text())
    src = chapters(root)[slug]
    params = {"size": agg.get("size"), "seed": 0, "device": agg.get("device")}
    fresh = agg.get("cache_keys", {}).get("0") == cache_key(src, params, root)
    return ("fresh" if fresh else "stale"), agg


def _fmt(x) -> str:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return html.escape(str(x))
    return f"{x:.4g}"


def _rule(c: dict) -> str:
    cmp = c.get("comparison", "within")
    if cmp == "within":
        return f"{_fmt(c['expected'])} ± {_fmt(c['tolerance'])}"
    sym = "≥" if cmp == "at_least" else "≤"
    return f"{sym} {_fmt(c['expected'])}" + (f" (slack {_fmt(c['tolerance'])})" if c["tolerance"] else "")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def chapter_rows(root: Path, out: Path, slug: str) -> tuple[list[str], dict]:
    """The markdown of one chapter's part of the ledger, and a summary (status, seeds, robust claims)."""
    res = output_paths(slug, out)["json"]
    data = json.loads(res.read_text()) if res.is_file() else {"claims": []}
    status, agg = sweep_status(root, slug)
    by_id = {c["id"]: c for c in (agg or {}).get("claims", [])}
    n_seeds = len((agg or {}).get("seeds", []))
    src = chapters(root)[slug]
    doc = src.relative_to(root).with_suffix("").as_posix()
    lines = [f"({anchor(slug)})=", f"## {chapter_title(src)}", "", f"Chapter: {{doc}}`/{doc}`. "]
    if status == "missing":
        lines[-1] += ("*No seed sweep is committed for this chapter yet* (`python -m dltheory sweep "
                      f"{slug} --seeds 0-4 --save book/sweeps`).")
    else:
        note = (f"Seed sweep: {n_seeds} seeds ({', '.join(map(str, agg['seeds']))}) at size {agg.get('size')}, "
                f"measured at commit `{str(agg.get('commit', 'unknown'))[:10]}`")
        if status == "stale":
            note += ("; **stale**: the chapter or a module it imports changed since, so the sweep is not evidence "
                     "for the chapter as it is now")
        if agg.get("failed"):
            note += "; **seeds that failed to run**: " + ", ".join(str(f["seed"]) for f in agg["failed"])
        lines[-1] += note + "."
    lines += ["", "| claim | this build | expected | across seeds: holds, min / median / max | source |",
              "|---|---|---|---|---|"]
    robust = 0
    for c in data["claims"]:
        s = by_id.get(c["id"])
        name = f"**{_cell(c['statement'])}** (headline)" if c.get("headline") else _cell(c["statement"])
        now = f"{_fmt(c['value'])}, " + ("holds" if c["holds"] else "**fails**")
        if s:
            seeds = f"{s['holds']}/{s['n']} seeds" + ("" if s["holds"] == s["n"] else
                                                      f", **fails at seed {', '.join(map(str, s['fails_at']))}**")
            robust += s["holds"] == s["n"] == n_seeds
            if "min" in s:
                seeds += f"; {_fmt(s['min'])} / {_fmt(s['median'])} / {_fmt(s['max'])}"
        else:
            seeds = "not swept"
        lines.append(f"| {name} <br>`{c['id']}` | {now} | {_rule(c)} | {seeds} | {_cell(c['source'])} |")
    lines.append("")
    return lines, {"status": status, "seeds": n_seeds, "robust": robust, "claims": len(data["claims"])}


def ledger_markdown(root: Path, out: Path) -> tuple[str, dict[str, dict]]:
    """The ledger's body (replaces :data:`MARKER`) and a summary per chapter."""
    lines, summary = [], {}
    for slug in chapters(root):
        rows, summary[slug] = chapter_rows(root, out, slug)
        lines += rows
    return "\n".join(lines) + "\n", summary


def provenance_note(slug: str, info: dict, page: str) -> str:
    """HTML added to a chapter's provenance box: the seed count and a link to its rows in the ledger. ``page`` is
    the chapter's document path (``chapters/part/slug``), for the relative link."""
    up = "../" * (len(Path(page).parts) - 1)
    href = f"{up}book/ledger.html#{anchor(slug)}"
    if info["status"] == "missing":
        text = "No seed sweep is committed for this chapter yet."
    else:
        text = (f"{info['robust']} of {info['claims']} claims hold at all {info['seeds']} seeds of the committed "
                "sweep" + (" (stale: the chapter changed since)" if info["status"] == "stale" else "") + ".")
    return f'<p class="dltheory-seeds">{html.escape(text)} <a href="{href}">Its rows in the claims ledger</a>.</p>'
