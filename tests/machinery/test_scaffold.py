"""``python -m dltheory new PART/slug "Title"`` (``dltheory.machinery.scaffold``): the skeleton satisfies the chapter
contract, is listed in ``_toc.yml`` under its part, executes and renders."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from dltheory.machinery import scaffold
from dltheory.machinery.cli import main
from dltheory.machinery.paths import repo_root
from dltheory.machinery.runner import chapters, toc_files

ROOT = repo_root()


@pytest.fixture
def repo_copy(tmp_path, monkeypatch):
    """The book's sources (not its build or venv) in a temporary folder, used as the book root."""
    root = tmp_path / "repo"
    for name in ("book", "chapters", "lib"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, root / name)
    monkeypatch.setenv("DLTHEORY_ROOT", str(root))
    return root


@pytest.mark.parametrize("target,msg", [
    ("optimization", "expected PART/slug"),
    ("nowhere/x", "unknown part 'nowhere'; parts: optimization"),
    ("optimization/Bad_Slug", "lower-case letters, digits and single dashes"),
    ("optimization/a/b", "expected PART/slug"),
])
def test_bad_targets_name_the_fix(target, msg):
    with pytest.raises(ValueError, match=msg):
        scaffold.parse_target(target)


def test_add_to_toc_appends_to_the_part_and_creates_sections():
    toc = (ROOT / "_toc.yml").read_text()
    out = yaml.safe_load(scaffold.add_to_toc(toc, "distillation", "x-new"))
    files = [f for f in _walk(out)]
    part = [f for f in files if f.startswith("chapters/distillation/") and f != "chapters/distillation/index"]
    assert part[-1] == "chapters/distillation/x-new", "the new chapter is appended to its part's sections"
    assert files.index("chapters/distillation/x-new") < files.index("chapters/transfer/index")
    out = yaml.safe_load(scaffold.add_to_toc(toc, "transfer", "first"))
    assert "chapters/transfer/first" in list(_walk(out))
    assert scaffold.add_to_toc(toc, "transfer", "first").startswith(toc.splitlines()[0])  # comments are kept


def _walk(node):
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        for k in ("parts", "chapters", "sections"):
            yield from _walk(node.get(k, []))
    elif isinstance(node, list):
        for x in node:
            yield from _walk(x)


def test_new_refuses_taken_slugs_and_writes_nothing(repo_copy, capsys):
    before = (repo_copy / "_toc.yml").read_text()
    assert main(["new", "transfer/edge-of-stability", "Again"]) == 2
    assert "taken by chapters/optimization/edge-of-stability.md" in capsys.readouterr().err
    assert main(["new", "transfer/x", "T", "--cite", "no_such_key"]) == 2
    assert "not a key of book/references.bib" in capsys.readouterr().err
    assert (repo_copy / "_toc.yml").read_text() == before
    assert not (repo_copy / "chapters" / "transfer" / "x.md").exists()


def test_skeleton_follows_the_contract(repo_copy, capsys):
    assert main(["new", "transfer/skill-graft", "Where a skill lives"]) == 0
    printed = capsys.readouterr().out
    assert "wrote chapters/transfer/skill-graft.md" in printed and "fill in" in printed
    src = repo_copy / "chapters" / "transfer" / "skill-graft.md"
    assert chapters(repo_copy)["skill-graft"] == src
    assert "chapters/transfer/skill-graft" in toc_files(repo_copy)
    assert "skill_graft_todo" in (repo_copy / "book" / "references.bib").read_text()
    from tests.test_chapters import contract_problems

    assert contract_problems(src.read_text()) == []


@pytest.mark.book
def test_new_chapter_executes_and_renders(repo_copy, executed_chapters, tmp_path):
    """The skeleton runs through the real pipeline: the other chapters come from the cache, the new one executes,
    its claim holds, and the book renders with -W (the page is there)."""
    from dltheory.machinery.build import build_html
    from dltheory.machinery.runner import run_chapters

    assert main(["new", "transfer/skill-graft", "Where a skill lives"]) == 0
    out = tmp_path / "_build"
    for sub in ("executed", "results"):
        shutil.copytree(ROOT / "_build" / sub, out / sub)
    res = {r.slug: r for r in run_chapters(None, out=out, device="cpu", echo=lambda *_: None)}
    assert res["skill-graft"].status == "ran", res["skill-graft"].error
    assert all(r.status == "cached" for s, r in res.items() if s != "skill-graft"), "the others come from the cache"
    data = json.loads((out / "results" / "skill-graft.json").read_text())
    assert data["claims"] and all(c["holds"] for c in data["claims"])
    assert sum(c["headline"] for c in data["claims"]) == 1
    assert build_html(out) == 0
    assert (out / "html" / "chapters" / "transfer" / "skill-graft.html").is_file()
