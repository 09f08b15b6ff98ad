"""The claims ledger (``dltheory.machinery.ledger``): committed sweeps are fresh while the chapter's cache key is
unchanged and stale after an edit; claims that fail at some seed are shown failing; the rendered page covers every
chapter, each either with a fresh sweep or marked; each provenance box links to its rows."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from dltheory.machinery import ledger
from dltheory.machinery.paths import repo_root
from dltheory.machinery.runner import chapters, output_paths

ROOT = repo_root()


@pytest.fixture
def repo_copy(tmp_path, monkeypatch):
    for name in ("book", "chapters", "lib"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "_toc.yml", tmp_path / "_toc.yml")
    monkeypatch.setenv("DLTHEORY_ROOT", str(tmp_path))
    return tmp_path


def _fake_sweep(root, slug, fails_at=()):
    from dltheory.machinery.cache import cache_key

    src = chapters(root)[slug]
    agg = {"commit": "abc", "chapter": slug, "size": "smoke", "device": "cpu", "seeds": [0, 1, 2],
           "seeds_ok": [0, 1, 2], "failed": [],
           "cache_keys": {"0": cache_key(src, {"size": "smoke", "seed": 0, "device": "cpu"}, root)},
           "claims": [{"id": "c1", "statement": "s", "holds": 3 - len(fails_at), "n": 3, "fails_at": list(fails_at),
                       "min": 1.0, "median": 2.0, "max": 3.0}], "values": {}}
    (root / "book" / "sweeps").mkdir(parents=True, exist_ok=True)
    (root / "book" / "sweeps" / f"{slug}.json").write_text(json.dumps(agg))


def test_fresh_until_the_chapter_or_its_library_changes(repo_copy):
    slug = "progressive-distillation"
    _fake_sweep(repo_copy, slug)
    assert ledger.sweep_status(repo_copy, slug)[0] == "fresh"
    mod = repo_copy / "lib" / "dltheory" / "distillation" / "parity.py"
    mod.write_text(mod.read_text() + "\n_EDITED = 1\n")
    assert ledger.sweep_status(repo_copy, slug)[0] == "stale"
    (repo_copy / "book" / "sweeps" / f"{slug}.json").unlink()
    assert ledger.sweep_status(repo_copy, slug)[0] == "missing"


def test_rows_show_claims_failing_at_some_seed(repo_copy, tmp_path):
    slug = "edge-of-stability"
    _fake_sweep(repo_copy, slug, fails_at=(1,))
    out = tmp_path / "out"
    res = output_paths(slug, out)["json"]
    res.parent.mkdir(parents=True)
    res.write_text(json.dumps({"claims": [{"id": "c1", "statement": "s", "value": 2.5, "expected": 2.0,
                                           "tolerance": 0.1, "holds": False, "source": "src",
                                           "comparison": "within", "headline": True}]}))
    rows, info = ledger.chapter_rows(repo_copy, out, slug)
    text = "\n".join(rows)
    assert "**fails at seed 1**" in text and "2/3 seeds" in text and "2.5, **fails**" in text
    assert f"({ledger.anchor(slug)})=" in text and "(headline)" in text
    assert info == {"status": "fresh", "seeds": 3, "robust": 0, "claims": 1}
    note = ledger.provenance_note(slug, info, "chapters/optimization/edge-of-stability")
    assert 'href="../../book/ledger.html#ledger-edge-of-stability"' in note and "0 of 1 claims" in note


@pytest.mark.book
def test_ledger_page_covers_every_chapter(rendered_book):
    page = (rendered_book / "book" / "ledger.html").read_text()
    sections = re.split(r'<span id="ledger-', page)[1:]
    found = {s.split('"', 1)[0]: s for s in sections}
    assert set(found) == set(chapters(ROOT)), "every chapter has its section in the ledger"
    for slug, section in found.items():
        status, _ = ledger.sweep_status(ROOT, slug)
        if status == "stale":
            assert "stale" in section, f"{slug}: a stale sweep must be marked on the page"
        elif status == "missing":
            assert "No seed sweep is committed" in section
        data = json.loads(output_paths(slug, ROOT / "_build")["json"].read_text())
        for c in data["claims"]:
            assert c["id"] in section, f"{slug}: claim {c['id']} missing from the ledger"
        chapter_page = (rendered_book / chapters(ROOT)[slug].relative_to(ROOT).with_suffix(".html")).read_text()
        assert f'book/ledger.html#ledger-{slug}"' in chapter_page, "the provenance box links to the ledger rows"
