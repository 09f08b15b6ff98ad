"""Render the book and write the student edition.

``python -m dltheory build`` (called by ``make book``) stages a Jupyter Book source tree under
``_build/src``: the configuration, the front matter, each part's ``index.md`` and, in place of every chapter's
``.md``, its *executed* notebook from ``_build/executed`` (so nothing is executed twice). It adds to each chapter
a box with downloads (source ``.md``, executed ``.ipynb``, student ``.ipynb``) and the command that reruns it, and
fills the landing page's chapter table from the results JSON. Then it runs
``jupyter-book build -W -n --keep-going`` and moves the HTML to ``_build/html`` (the previous HTML is replaced
only when the build succeeds).
The student edition is :mod:`dltheory.machinery.student`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from dltheory.machinery.claims import headline_claim
from dltheory.machinery.ledger import MARKER as LEDGER_MARKER
from dltheory.machinery.ledger import ledger_markdown, provenance_note
from dltheory.machinery.paths import build_dir, repo_root
from dltheory.machinery.pdf import placeholder as pdf_placeholder
from dltheory.machinery.runner import chapters, output_paths, toc_files
from dltheory.machinery.student import build_student
from dltheory.machinery.tools import tool

TABLE_MARKER = "<!-- chapter-table -->"


def chapter_table(root: Path, out: Path) -> str:
    """The landing page's table: one line per chapter with the claim it reproduces (its headline claim), the
    source of that claim, and the smoke / full run times read from the results JSON."""
    full_times = {}
    ft = root / "book" / "full_run_times.json"
    if ft.is_file():
        full_times = json.loads(ft.read_text())
    rows = ["| Chapter | What it reproduces | Source | Smoke run | Full run (GPU) |", "|---|---|---|---|---|"]
    for slug, src in chapters(root).items():
        res = output_paths(slug, out)["json"]
        data = json.loads(res.read_text()) if res.is_file() else None
        doc = src.relative_to(root).with_suffix("").as_posix()
        if data and data["claims"]:
            first = headline_claim(data)
            held = sum(c["holds"] for c in data["claims"])
            claim = f"{first['statement']} ({held}/{len(data['claims'])} claims hold)"
            source, smoke = first["source"], f"{data['wall_s']:.0f} s"
        else:
            claim, source, smoke = "not executed yet", "", "—"
        full = full_times.get(slug, {}).get("wall_s")
        full_txt = f"{full:.0f} s" if isinstance(full, int | float) else "not yet measured"
        claim = claim.replace("|", "\\|")
        rows.append(f"| {{doc}}`/{doc}` | {claim} | {source} | {smoke} | {full_txt} |")
    return "\n".join(rows) + "\n"


def _downloads_cell(slug: str, has_student: bool) -> dict:
    import nbformat

    lines = [
        ":::{admonition} Run this chapter yourself",
        ":class: tip dltheory-downloads",
        f"Downloads: {{download}}`source (.md) <_sources/{slug}.md>` · "
        f"{{download}}`executed notebook (.ipynb) <_sources/{slug}.ipynb>`"
        + (f" · {{download}}`student notebook (.ipynb) <_sources/{slug}.student.ipynb>`" if has_student else "")
        + pdf_placeholder(slug) + ".",
        "",
        f"Rerun it at paper scale on a GPU: `python -m dltheory run {slug} --size full --device cuda`"
        " (see {doc}`/book/running`).",
        ":::",
    ]
    return nbformat.v4.new_markdown_cell("\n".join(lines))


def stage_config(path: Path) -> dict:
    """Turn the theme's repository and issues buttons on exactly when ``repository.url`` is set in ``_config.yml``
    (the one place that names the repository); rewrites the staged copy at ``path``.

    The edit and launch (Binder, Colab) buttons stay off: the rendered pages are the *executed* notebooks staged
    under ``_build/src``, so those buttons would point at ``chapters/PART/slug.ipynb``, which the repository does
    not have (its chapters are ``.md``); each chapter's downloads box links its source and notebooks instead."""
    import yaml

    cfg = yaml.safe_load(path.read_text()) or {}
    url = str((cfg.get("repository") or {}).get("url") or "").strip()
    if url and not url.startswith(("https://", "http://")):
        raise ValueError(f"_config.yml: repository.url must be a web address such as "
                         f"https://github.com/OWNER/REPO, got {url!r}")
    html = cfg.setdefault("html", {})
    for button in ("use_repository_button", "use_issues_button"):
        html[button] = bool(url)
    html["use_edit_page_button"] = False
    if url:
        cfg["repository"]["url"] = url
    else:
        cfg.pop("repository", None)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return cfg


def stage(root: Path | None = None, out: Path | None = None) -> Path:
    """Assemble ``<out>/src``, the source tree that jupyter-book renders. Raises ``FileNotFoundError`` naming
    the command to run if a chapter has not been executed."""
    import nbformat

    root = root or repo_root()
    out = Path(out) if out else build_dir()
    src = out / "src"
    missing = [s for s in chapters(root) if not output_paths(s, out)["ipynb"].is_file()]
    if missing:
        raise FileNotFoundError(
            f"chapter(s) not executed yet: {', '.join(missing)}; run `python -m dltheory run` (or `make book`) first")
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, src / name)
    stage_config(src / "_config.yml")
    shutil.copytree(root / "book", src / "book")
    chs = chapters(root)
    for f in toc_files(root):
        p = Path(f)
        if p.parts[0] == "chapters" and p.name == "index":
            (src / p.parent).mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / p.with_suffix(".md"), src / p.with_suffix(".md"))
    student_dir = out / "student"
    ledger_body, ledger_summary = ledger_markdown(root, out)
    for slug, md in chs.items():
        rel = md.relative_to(root)
        dest = src / rel.with_suffix(".ipynb")
        dest.parent.mkdir(parents=True, exist_ok=True)
        sources = dest.parent / "_sources"
        sources.mkdir(exist_ok=True)
        shutil.copy2(md, sources / f"{slug}.md")
        executed = output_paths(slug, out)["ipynb"]
        shutil.copy2(executed, sources / f"{slug}.ipynb")
        has_student = (student_dir / f"{slug}.ipynb").is_file()
        if has_student:
            shutil.copy2(student_dir / f"{slug}.ipynb", sources / f"{slug}.student.ipynb")
        nb = nbformat.read(executed, as_version=4)
        nb.cells.insert(1, _downloads_cell(slug, has_student))
        _add_to_provenance(nb, provenance_note(slug, ledger_summary[slug], rel.with_suffix("").as_posix()))
        nbformat.write(nb, dest)
    intro = src / "book" / "intro.md"
    if intro.is_file() and TABLE_MARKER in intro.read_text():
        intro.write_text(intro.read_text().replace(TABLE_MARKER, chapter_table(root, out) + "\n"
                                                   + pdf_placeholder("book") + "\n"))
    ledger = src / "book" / "ledger.md"
    if ledger.is_file() and LEDGER_MARKER in ledger.read_text():
        ledger.write_text(ledger.read_text().replace(LEDGER_MARKER, ledger_body))
    return src


def _add_to_provenance(nb, note_html: str) -> None:
    """Put ``note_html`` at the end of the chapter's provenance box (an HTML output of its last cell)."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            text = data.get("text/html")
            if text is None:
                continue
            text = "".join(text) if isinstance(text, list) else text
            if "dltheory-provenance" in text and text.rstrip().endswith("</div>"):
                data["text/html"] = text.rstrip()[:-len("</div>")] + note_html + "</div>"
                return


def _notebook_without_cell_ids(path: Path) -> bytes:
    """A notebook's JSON without its cells' ``id`` fields: nbformat gives every new cell a random id, so a notebook
    written twice from the same source differs only there."""
    data = json.loads(path.read_text())
    for cell in data.get("cells", []):
        cell.pop("id", None)
    return json.dumps(data, sort_keys=True).encode()


def source_digest(src: Path) -> str:
    """sha256 of a staged source tree (every file's path and bytes, its own ``_build`` left out): what the HTML is
    rendered from, so an unchanged digest means an unchanged book. Cell ids of notebooks are left out (random)."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(p for p in src.rglob("*") if p.is_file() and p.relative_to(src).parts[0] != "_build"):
        h.update(path.relative_to(src).as_posix().encode() + b"\0")
        h.update(_notebook_without_cell_ids(path) if path.suffix == ".ipynb" else path.read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()


def build_html(out: Path | None = None, force: bool = False) -> int:
    """Stage, run ``jupyter-book build -W -n --keep-going``, and move the HTML to ``<out>/html``. When the staged
    sources are exactly those of the last successful build (:func:`source_digest`, kept in
    ``<out>/html/.source-digest``), the HTML is up to date and nothing is rendered (``force`` renders anyway)."""
    out = Path(out) if out else build_dir()
    try:
        build_student(out, quiet=True)
    except Exception as exc:  # the book still renders without the student downloads
        print(f"warning: student edition not written: {exc}", file=sys.stderr)
    src = stage(out=out)
    digest = source_digest(src)
    stamp = out / "html" / ".source-digest"
    up_to_date = stamp.is_file() and stamp.read_text().strip() == digest and (out / "html" / "index.html").is_file()
    if up_to_date and not force:
        print(f"HTML book is up to date (sources unchanged): {out / 'html' / 'index.html'}")
        return 0
    cmd = [tool("jupyter-book"), "build", str(src), "--path-output", str(src),
           "--builder", "html", "-W", "-n", "--keep-going"]
    print("$", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        print(f"jupyter-book build failed (exit {rc}); the previous {out / 'html'} is left as it was",
              file=sys.stderr)
        return rc
    built = src / "_build" / "html"
    final = out / "html"
    old = out / ".html.old"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    (built / ".source-digest").write_text(digest + "\n")
    os.replace(built, final)
    shutil.rmtree(old, ignore_errors=True)
    print(f"HTML book: {final / 'index.html'}")
    return 0
