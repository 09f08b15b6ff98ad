"""The book as PDF: ``python -m dltheory pdf`` (``make pdf``), printed from the rendered HTML, offline.

Why print the HTML? The pages already hold everything a reader needs -- the executed outputs, the figures, the
provenance box -- and the vendored MathJax typesets the math in the browser. Debian ``chromium`` (which the browser
tests need anyway) prints a page headlessly once MathJax has finished, so the PDF needs no LaTeX installation and
nothing from the network; Jupyter Book's own ``pdfhtml`` builder would download a browser (pyppeteer) and its
``pdflatex`` builder needs a TeX distribution. The theme's print style sheet drops the sidebars and buttons.

Outputs (under ``<build>/pdf``, each written to a temporary name and renamed, so no half-written PDF is left):

- ``executable-training-theory.pdf``: every page of ``_toc.yml`` in book order, with an outline entry per page;
- ``chapters/<slug>.pdf``: one PDF per chapter.

The PDFs are also copied into the HTML (``<build>/html/pdf/``), and the landing page and every chapter's downloads
box get their links: the build leaves an empty placeholder (:data:`PLACEHOLDER`) that is filled in here, so the HTML
of a book whose PDF was not built has no broken link.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from dltheory.machinery.paths import build_dir, repo_root
from dltheory.machinery.runner import chapter_title, chapters, toc_files

BOOK_PDF = "executable-training-theory.pdf"
PLACEHOLDER_RE = re.compile(r'<(span|div) class="dltheory-pdf" data-pdf="([^"]*)"></(?:span|div)>')
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def placeholder(target: str) -> str:
    """The empty HTML element that :func:`link_pdfs` replaces by a link to ``target``: ``"book"`` (a block, on the
    landing page) or a chapter's slug (inline, in its downloads box)."""
    tag = "div" if target == "book" else "span"
    return f'<{tag} class="dltheory-pdf" data-pdf="{target}"></{tag}>'


def chromium_path() -> str:
    """Debian chromium's executable (``$DLTHEORY_CHROMIUM`` overrides); the error names the install command."""
    path = os.environ.get("DLTHEORY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise FileNotFoundError("Debian chromium is needed to print the PDF: run `make browser` "
                                "(apt-get install -y chromium)")
    return path


def pages(root: Path, html: Path) -> list[tuple[str, str, Path]]:
    """``(docname, title, html file)`` of every page in ``_toc.yml``, in book order."""
    chs = {src.relative_to(root).with_suffix("").as_posix(): src for src in chapters(root).values()}
    out = []
    for doc in toc_files(root):
        f = html / f"{doc}.html"
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: render the book first (`make book`)")
        src = chs.get(doc) or (root / f"{doc}.md")
        title = chapter_title(src) if src.is_file() else Path(doc).name
        out.append((doc, title, f))
    return out


def open_offline(browser, html_file: Path, width: int | None = None):
    """Open ``html_file`` in a new context of ``browser`` with every request off the machine refused, and wait
    until the vendored MathJax has typeset the page. Returns ``(context, page, refused_urls)``; close the context.
    Used to print the PDF and by the browser tests."""
    ctx = browser.new_context(**({"viewport": {"width": width, "height": 900}} if width else {}))
    page = ctx.new_page()
    refused: list[str] = []

    def route(r):  # nothing leaves the machine
        if r.request.url.startswith(("file://", "data:", "blob:")):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(html_file.as_uri())
    page.wait_for_load_state("load")
    page.wait_for_function("() => !window.MathJax || !MathJax.startup || MathJax.startup.promise !== undefined")
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    return ctx, page, refused


def _print(browser, html_file: Path, pdf_file: Path) -> None:
    ctx, page, _ = open_offline(browser, html_file)
    try:
        # code cells hidden behind a toggle are printed open: a PDF has no buttons
        page.evaluate("() => document.querySelectorAll('details').forEach(d => { if (!d.closest('.solution'))"
                      " d.open = true; })")
        page.emulate_media(media="print")
        tmp = pdf_file.with_name(pdf_file.name + ".part")
        page.pdf(path=str(tmp), format="A4", print_background=True,
                 margin={"top": "16mm", "bottom": "16mm", "left": "14mm", "right": "14mm"})
        os.replace(tmp, pdf_file)
    finally:
        ctx.close()


def build_pdf(out: Path | None = None, root: Path | None = None, echo=print, browser=None) -> Path:
    """Print every page of the rendered book (``<out>/html``) to PDF, merge them into the book's PDF, copy the PDFs
    into the HTML and link them. Returns the book PDF's path. ``browser``: an already launched playwright
    chromium to print with (the browser tests pass theirs; one playwright per thread); by default one is started."""
    from pypdf import PdfReader, PdfWriter

    root = root or repo_root()
    out = Path(out) if out else build_dir()
    html = out / "html"
    if not (html / "index.html").is_file():
        raise FileNotFoundError(f"{html / 'index.html'} is missing: render the book first (`make book`)")
    todo = pages(root, html)
    slugs = {src.relative_to(root).with_suffix("").as_posix(): slug for slug, src in chapters(root).items()}
    pdf_dir = out / "pdf"
    work = out / "pdf.part"
    shutil.rmtree(work, ignore_errors=True)
    (work / "pages").mkdir(parents=True)
    (work / "chapters").mkdir()
    def print_all(b) -> None:
        for i, (doc, _title, f) in enumerate(todo):
            _print(b, f, work / "pages" / f"{i:03d}.pdf")
            echo(f"[{i + 1}/{len(todo)}] printed {doc}")

    if browser is not None:
        print_all(browser)
    else:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True)
            try:
                print_all(b)
            finally:
                b.close()
    writer = PdfWriter()
    for i, (doc, title, _f) in enumerate(todo):
        part = work / "pages" / f"{i:03d}.pdf"
        start = len(writer.pages)
        writer.append(str(part))
        writer.add_outline_item(title=title, page_number=start)
        if doc in slugs:
            shutil.copy2(part, work / "chapters" / f"{slugs[doc]}.pdf")
    writer.add_metadata({"/Title": "Executable Training Theory"})
    with open(work / BOOK_PDF, "wb") as fh:
        writer.write(fh)
    shutil.rmtree(work / "pages")
    n_pages = len(PdfReader(str(work / BOOK_PDF)).pages)
    old = out / "pdf.old"
    shutil.rmtree(old, ignore_errors=True)
    if pdf_dir.exists():
        os.replace(pdf_dir, old)
    os.replace(work, pdf_dir)
    shutil.rmtree(old, ignore_errors=True)
    link_pdfs(html, pdf_dir)
    book = pdf_dir / BOOK_PDF
    echo(f"PDF book: {book} ({n_pages} pages); one PDF per chapter in {pdf_dir / 'chapters'}")
    return book


def link_pdfs(html: Path, pdf_dir: Path) -> int:
    """Copy the PDFs into ``<html>/pdf`` and fill the placeholders of the HTML pages with links to them (a
    relative URL, so the links work from a file system and from any web server). Returns the number of links."""
    dest = html / "pdf"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(pdf_dir, dest)
    n = 0
    for f in html.rglob("*.html"):
        text = f.read_text()
        if "dltheory-pdf" not in text:
            continue
        up = "../" * (len(f.relative_to(html).parts) - 1)

        def link(m: re.Match, up: str = up) -> str:
            nonlocal n
            target = m.group(2)
            rel = BOOK_PDF if target == "book" else f"chapters/{target}.pdf"
            if not (dest / rel).is_file():
                return m.group(0)
            n += 1
            if target == "book":
                return (f'<div class="dltheory-pdf"><p>Read it offline or print it: <a class="reference external" '
                        f'href="{up}pdf/{rel}">the whole book as PDF</a> (each chapter\'s PDF is in its downloads '
                        f'box).</p></div>')
            return f' · <a class="dltheory-pdf reference external" href="{up}pdf/{rel}">this chapter (.pdf)</a>'

        new = PLACEHOLDER_RE.sub(link, text)
        if new != text:
            f.write_text(new)
    return n
