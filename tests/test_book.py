"""The rendered book, checked in a real headless browser (Debian chromium driven by playwright).

Every page: math typeset by the vendored MathJax (no raw TeX delimiters left), images loaded, internal links
resolve, no request leaves the machine. Chapter pages: exercise toggles open, the provenance box and the
downloads are there, the page is usable at phone width. Screenshots at 390 px and 1280 px land in
``_build/test-artifacts/``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from dltheory.machinery.pdf import CHROMIUM_FLAGS, chromium_path, open_offline
from dltheory.machinery.runner import chapters, toc_files

from .conftest import ARTIFACTS, ROOT

PAGES = [f for f in toc_files(ROOT)]
CHAPTER_PAGES = [src.relative_to(ROOT).with_suffix("").as_posix() for src in chapters(ROOT).values()]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def _open(browser, html: Path, page_name: str, width: int = 1280):
    return open_offline(browser, html / f"{page_name}.html", width=width)


@pytest.mark.book
@pytest.mark.parametrize("page_name", PAGES)
def test_page_in_browser(page_name, rendered_book, browser):
    ctx, page, external = _open(browser, rendered_book, page_name)
    try:
        article = page.locator("article.bd-article")
        text = article.inner_text()
        assert "\\(" not in text and "\\[" not in text and "$$" not in text, "untypeset math on the page"
        if page_name in CHAPTER_PAGES or page_name == "book/notation":
            assert page.locator("mjx-container").count() > 0, "no typeset math found"
        imgs = page.evaluate("() => Array.from(document.querySelectorAll('article img'))"
                             ".map(i => [i.src, i.complete && i.naturalWidth > 0])")
        assert all(ok for _, ok in imgs), f"images not loaded: {[s for s, ok in imgs if not ok]}"
        links = page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
        here = (rendered_book / f"{page_name}.html")
        for href in links:
            u = urlparse(href)
            if u.scheme != "file":
                continue
            target = Path(unquote(u.path))
            assert target.exists(), f"broken internal link on {page_name}: {href}"
            if u.fragment and target.resolve() == here.resolve():
                assert page.locator(f"[id='{u.fragment}']").count() > 0, f"missing anchor #{u.fragment}"
        assert not external, f"the page tried to reach the network: {external[:5]}"
    finally:
        ctx.close()


@pytest.mark.book
@pytest.mark.parametrize("page_name", CHAPTER_PAGES)
def test_chapter_page_features(page_name, rendered_book, browser):
    ctx, page, _ = _open(browser, rendered_book, page_name)
    try:
        assert page.locator("article img").count() >= 1, "a chapter shows at least one figure"
        # every figure says what it shows (accessibility): an alt text that is a sentence, not the file name
        imgs = page.eval_on_selector_all("article img", "els => els.map(e => [e.getAttribute('src'),"
                                                        " e.getAttribute('alt') || ''])")
        for src, alt in imgs:
            name = src.rsplit("/", 1)[-1]
            assert len(alt.split()) >= 4 and name not in alt and not alt.endswith((".png", ".svg")), (
                f"{page_name}: figure {name} has no alt text (give its cell `mystnb: image: alt: ...`); alt={alt!r}")
        prov = page.locator(".dltheory-provenance")
        assert prov.count() == 1 and "claims held" in prov.inner_text()
        downloads = page.locator(".dltheory-downloads a")
        hrefs = [downloads.nth(i).get_attribute("href") for i in range(downloads.count())]
        assert any(h.endswith(".md") for h in hrefs) and any(h.endswith(".ipynb") for h in hrefs)
        # exercise solutions are hidden and open on click
        sols = page.locator("div.solution")
        assert sols.count() >= 2
        first = sols.first
        body = first.locator("section, p").last
        assert not body.is_visible(), "solutions must be hidden until the reader opens them"
        first.locator(".admonition-title, button").first.click()
        page.wait_for_timeout(300)
        assert body.is_visible(), "clicking the toggle must show the solution"
    finally:
        ctx.close()


@pytest.mark.book
@pytest.mark.parametrize("width", [390, 1280])
def test_screenshots_and_phone_width(width, rendered_book, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for page_name in ["book/intro", CHAPTER_PAGES[0]]:
        ctx, page, _ = _open(browser, rendered_book, page_name, width=width)
        try:
            name = page_name.replace("/", "_")
            page.screenshot(path=str(ARTIFACTS / f"{name}-{width}px.png"), full_page=False)
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{page_name} scrolls sideways by {overflow}px at {width}px"
        finally:
            ctx.close()


@pytest.mark.book
def test_landing_page_lists_every_chapter(rendered_book):
    html = (rendered_book / "book" / "intro.html").read_text()
    for slug in chapters(ROOT):
        assert slug in html
    assert "chapter-table" not in html and "not executed yet" not in html


@pytest.mark.book
def test_an_unchanged_book_is_not_rendered_again(rendered_book, capsys):
    """A no-change `make book` costs seconds: the staged sources equal the last build's, so nothing is rendered."""
    from dltheory.machinery.build import build_html

    stamp = (rendered_book / ".source-digest").read_text()
    assert build_html() == 0
    assert "up to date" in capsys.readouterr().out
    assert (rendered_book / ".source-digest").read_text() == stamp


@pytest.fixture(scope="module")
def book_pdf(rendered_book, browser):
    """``make pdf`` on the rendered book: the whole book and one PDF per chapter (printed by headless chromium; the
    browser tests' own instance, since one thread runs one playwright)."""
    from dltheory.machinery.pdf import build_pdf

    return build_pdf(browser=browser)


@pytest.mark.book
def test_pdf_of_the_book(book_pdf, rendered_book):
    """The book's PDF: a sane number of pages, every chapter's title in its text, no raw TeX left (MathJax typeset
    before printing), and every figure of each chapter's HTML page present as an image in the chapter's PDF."""
    import re

    from pypdf import PdfReader

    reader = PdfReader(str(book_pdf))
    n_pages = len(reader.pages)
    assert 2 * len(PAGES) <= n_pages <= 40 * len(PAGES), f"{n_pages} pages for {len(PAGES)} HTML pages"
    quotes = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})  # Sphinx's smart quotes
    text = re.sub(r"\s+", " ", "\n".join(p.extract_text() for p in reader.pages)).translate(quotes)
    for delim in ("\\(", "\\[", "$$"):
        assert delim not in text, f"raw TeX delimiter {delim!r} in the PDF: MathJax did not typeset before printing"
    from dltheory.machinery.runner import chapter_title

    for slug, src in chapters(ROOT).items():
        title = re.sub(r"\s+", " ", chapter_title(src))
        assert title in text, f"chapter title {title!r} not found in the PDF"
        html = (rendered_book / src.relative_to(ROOT).with_suffix(".html")).read_text()
        article = html.split('<article class="bd-article"', 1)[1].split("</article>", 1)[0]
        n_fig = len(re.findall(r"<img [^>]*src=\"[^\"]*_images/", article))
        chapter_pdf = PdfReader(str(book_pdf.parent / "chapters" / f"{slug}.pdf"))
        n_img = sum(len(p.images) for p in chapter_pdf.pages)
        assert n_img >= n_fig, f"{slug}: {n_fig} figures in the HTML but {n_img} images in its PDF"
        assert f'href="../../pdf/chapters/{slug}.pdf"' in (
            rendered_book / src.relative_to(ROOT).with_suffix(".html")).read_text(), "the downloads box links it"
    assert "pdf/executable-training-theory.pdf" in (rendered_book / "book" / "intro.html").read_text()
