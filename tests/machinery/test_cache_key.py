"""``python -m dltheory cache-key``: one digest of every chapter's cache key, the name of CI's saved cache."""

from __future__ import annotations

import pytest

from dltheory.machinery.cli import main
from dltheory.machinery.runner import combined_cache_key

from .books import TINY, make_book


def test_combined_key_changes_exactly_when_a_chapter_would_rerun(tmp_path, monkeypatch, capsys):
    root = make_book(tmp_path, "tiny", TINY)
    monkeypatch.setenv("DLTHEORY_ROOT", str(root))
    k = combined_cache_key("smoke", 0, "cpu", root)
    assert k == combined_cache_key("smoke", 0, "cpu", root) and len(k) == 20
    assert k != combined_cache_key("full", 0, "cpu", root)
    assert k != combined_cache_key("smoke", 1, "cpu", root)
    src = root / "chapters" / "p" / "tiny.md"
    src.write_text(src.read_text() + "\nMore prose.\n")
    k2 = combined_cache_key("smoke", 0, "cpu", root)
    assert k2 != k
    assert main(["cache-key", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == k2


def test_bad_size_names_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match="allowed sizes: smoke, full"):
        combined_cache_key("huge", 0, "cpu", make_book(tmp_path, "tiny", TINY))
