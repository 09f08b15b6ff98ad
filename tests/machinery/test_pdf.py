"""``python -m dltheory pdf`` (``dltheory.machinery.pdf``) on a tiny book: printed offline by headless chromium,
merged in book order with an outline, one PDF per chapter, atomic, and linked from the HTML. The real book's PDF
is checked in ``tests/test_book.py``."""

from __future__ import annotations

import shutil

import pytest

from dltheory.machinery import pdf

from .books import chapter_text

CODE = ("from dltheory.numerics.figures import figure\n"
        "from dltheory.machinery.claims import start_chapter\n"
        "run = start_chapter('tiny', size=size, seed=seed, device='cpu')\n"
        "fig, ax = figure()\n"
        "ax.plot([0, 1], [0, 1]); ax.set_xlabel('step'); ax.set_ylabel('loss (nats)')\n"
        "run.claim('small', 'seed is at most 0', seed, 0.0, 0.0, source='test', comparison='at_most', headline=True)\n"
        "run.finish()\n")


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory):
    from dltheory.machinery.paths import repo_root

    real = repo_root()
    root = tmp_path_factory.mktemp("pdfbook") / "book"
    shutil.copytree(real / "book", root / "book", ignore=shutil.ignore_patterns("sweeps"))
    shutil.copy2(real / "_config.yml", root / "_config.yml")
    (root / "lib" / "dltheory").mkdir(parents=True)
    (root / "chapters" / "p").mkdir(parents=True)
    (root / "chapters" / "p" / "index.md").write_text("# Part P\n\nWhat ties the part together.\n")
    text = chapter_text("tiny", CODE).replace("# tiny\n", "# A tiny chapter\n\nInline $\\alpha^2$ and\n\n"
                                               "$$\\int_0^1 x\\,dx = \\tfrac12$$\n\n")
    (root / "chapters" / "p" / "tiny.md").write_text(text)
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n  - caption: Front\n    chapters:\n"
        "      - file: book/running\n      - file: book/notation\n      - file: book/bibliography\n"
        "  - caption: P\n    chapters:\n      - file: chapters/p/index\n        sections:\n"
        "          - file: chapters/p/tiny\n")
    return root


@pytest.mark.book
def test_pdf_of_a_tiny_book(tiny_book, monkeypatch):
    from pypdf import PdfReader

    from dltheory.machinery.build import build_html
    from dltheory.machinery.runner import run_chapters

    monkeypatch.setenv("DLTHEORY_ROOT", str(tiny_book))
    out = tiny_book / "_build"
    with pytest.raises(FileNotFoundError, match="render the book first"):
        pdf.build_pdf(out, tiny_book)
    assert [r.status for r in run_chapters(None, out=out, device="cpu", echo=lambda *_: None)] == ["ran"]
    assert build_html(out) == 0
    html_before = (out / "html" / "chapters" / "p" / "tiny.html").read_text()
    assert "dltheory-pdf" in html_before and 'href="../../pdf/' not in html_before, "no link before the PDF exists"

    book = pdf.build_pdf(out, tiny_book, echo=lambda *_: None)
    assert book == out / "pdf" / pdf.BOOK_PDF and book.is_file()
    assert not list(out.glob("pdf.part*")) and not list((out / "pdf").rglob("*.part")), "nothing half-written"
    reader = PdfReader(str(book))
    titles = [o.title for o in reader.outline]
    assert titles == ["Executable Training Theory", "Running the book", "Notation", "Bibliography", "Part P",
                      "A tiny chapter"]
    text = "\n".join(p.extract_text() for p in reader.pages)
    assert "A tiny chapter" in text and "\\(" not in text and "$$" not in text and "\\[" not in text
    chapter = PdfReader(str(out / "pdf" / "chapters" / "tiny.pdf"))
    assert sum(len(p.images) for p in chapter.pages) == 1, "the chapter's one figure is in its PDF as an image"

    html = (out / "html" / "chapters" / "p" / "tiny.html").read_text()
    assert 'href="../../pdf/chapters/tiny.pdf"' in html
    assert (out / "html" / "pdf" / "chapters" / "tiny.pdf").is_file()
    intro = (out / "html" / "book" / "intro.html").read_text()
    assert 'href="../pdf/executable-training-theory.pdf"' in intro


def test_missing_chromium_names_the_fix(monkeypatch):
    monkeypatch.delenv("DLTHEORY_CHROMIUM", raising=False)
    monkeypatch.setattr(pdf.shutil, "which", lambda _name: None)
    with pytest.raises(FileNotFoundError, match="make browser"):
        pdf.chromium_path()


def test_placeholders_without_a_pdf_stay_empty(tmp_path):
    html = tmp_path / "html"
    (html / "chapters").mkdir(parents=True)
    page = html / "chapters" / "x.html"
    page.write_text(f"<p>Downloads{pdf.placeholder('x')}.</p>")
    (tmp_path / "pdf" / "chapters").mkdir(parents=True)
    assert pdf.link_pdfs(html, tmp_path / "pdf") == 0
    assert "<a" not in page.read_text()
    (tmp_path / "pdf" / "chapters" / "x.pdf").write_bytes(b"%PDF-1.4\n")
    assert pdf.link_pdfs(html, tmp_path / "pdf") == 1
    assert 'href="../pdf/chapters/x.pdf"' in page.read_text()
