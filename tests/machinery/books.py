"""Tiny books for the machinery tests: one chapter under a temporary book root (no real chapter, so fast)."""

from __future__ import annotations

from pathlib import Path

HEADER = ("---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\nkernelspec:\n"
          "  name: python3\n  display_name: Python 3\n  language: python\n---\n# {slug}\n\n"
          "```{{code-cell}} ipython3\n:tags: [parameters]\nsize = 'smoke'\nseed = 0\ndevice = 'auto'\n```\n\n")


def chapter_text(slug: str, code: str) -> str:
    """A MyST chapter: the parameters cell, then one code cell holding ``code``."""
    return HEADER.format(slug=slug) + "```{code-cell} ipython3\n" + code.rstrip("\n") + "\n```\n"


def make_book(tmp_path: Path, slug: str, code: str) -> Path:
    """``tmp_path/book`` with ``_toc.yml`` listing ``chapters/p/<slug>.md``; returns the book root (set
    ``DLTHEORY_ROOT`` to it)."""
    root = tmp_path / "book"
    (root / "lib" / "dltheory").mkdir(parents=True)
    (root / "chapters" / "p").mkdir(parents=True)
    (root / "_toc.yml").write_text(f"format: jb-book\nroot: intro\nchapters:\n  - file: chapters/p/{slug}\n")
    (root / "chapters" / "p" / f"{slug}.md").write_text(chapter_text(slug, code))
    return root


TINY = ("from dltheory.machinery.claims import start_chapter\n"
        "run = start_chapter('tiny', size=size, seed=seed, device='cpu')\n"
        "run.value('twice', 2 * seed)\n"
        "run.claim('small', 'seed is at most 0', seed, 0.0, 0.0, source='test', comparison='at_most', headline=True)\n"
        "run.finish()\n")
