"""Cache keys (``dltheory.machinery.cache``): a chapter is keyed on its source, the library modules it imports
(transitively), its parameters with the resolved device and the python/torch versions; an edit re-runs only the
chapters that depend on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dltheory.machinery import cache, runner
from dltheory.machinery.paths import repo_root

from .books import chapter_text

ROOT = repo_root()
def _chapter(path: Path, code: str) -> Path:
    path.write_text(chapter_text(path.stem, code))
    return path


def _mini_lib(root: Path) -> Path:
    lib = root / "lib" / "dltheory"
    for rel, text in {
        "__init__.py": "",
        "machinery/__init__.py": "from dltheory.machinery.claims import start_chapter\n",
        "machinery/claims.py": "def start_chapter(): pass\n",
        "machinery/runner.py": "import os\n",
        "numerics/__init__.py": "",
        "numerics/a.py": "def f(): pass\n",
        "numerics/b.py": "from .a import f\n",
        "numerics/unused.py": "x = 1\n",
        "part/__init__.py": "",
        "part/m.py": "def g():\n    from dltheory.numerics import b\n    return b\n",
    }.items():
        (lib / rel).parent.mkdir(parents=True, exist_ok=True)
        (lib / rel).write_text(text)
    return lib


def test_imported_modules_reads_from_relative_and_function_level_imports():
    code = "import os\nimport dltheory.x.y\nfrom dltheory.p import q, r as s\ndef f():\n    from dltheory import z\n"
    assert cache.imported_modules(code) == {"dltheory.x.y", "dltheory.p", "dltheory.p.q", "dltheory.p.r",
                                            "dltheory", "dltheory.z"}
    assert cache.imported_modules("from .a import f\nfrom .. import c", "dltheory.n.b") == {
        "dltheory.n.a", "dltheory.n.a.f", "dltheory", "dltheory.c"}
    assert cache.imported_modules("from . import m", "dltheory.part", is_package=True) == {"dltheory.part",
                                                                                          "dltheory.part.m"}


def test_import_closure_is_transitive_with_package_inits(tmp_path):
    lib = _mini_lib(tmp_path)
    src = _chapter(tmp_path / "c.md", "%matplotlib inline\nfrom dltheory.part import m\nfrom dltheory.machinery import "
                                      "start_chapter")
    got = {p.relative_to(lib).as_posix() for p in cache.import_closure(src, tmp_path)}
    assert got == {"__init__.py", "machinery/__init__.py", "machinery/claims.py", "numerics/__init__.py",
                   "numerics/a.py", "numerics/b.py", "part/__init__.py", "part/m.py"}


def test_key_follows_exactly_the_imported_modules(tmp_path):
    lib = _mini_lib(tmp_path)
    src = _chapter(tmp_path / "c.md", "from dltheory.part import m")
    params = {"size": "smoke", "seed": 0, "device": "cpu"}
    k = cache.cache_key(src, params, tmp_path)
    assert k == cache.cache_key(src, {"device": "cpu", "seed": 0, "size": "smoke"}, tmp_path)
    assert k != cache.cache_key(src, {**params, "size": "full"}, tmp_path)
    (lib / "numerics" / "unused.py").write_text("x = 2\n")
    (lib / "machinery" / "runner.py").write_text("import sys\n")
    assert cache.cache_key(src, params, tmp_path) == k, "modules the chapter does not import must not re-run it"
    (lib / "numerics" / "a.py").write_text("def f(): return 1\n")
    assert cache.cache_key(src, params, tmp_path) != k, "a module imported two hops away must re-run it"


def test_docstrings_and_comments_do_not_rerun_code_does(tmp_path):
    lib = _mini_lib(tmp_path)
    src = _chapter(tmp_path / "c.md", "from dltheory.numerics import a")
    params = {"size": "smoke", "seed": 0, "device": "cpu"}
    k = cache.cache_key(src, params, tmp_path)
    (lib / "numerics" / "a.py").write_text('"""A module."""\n\n# a comment\ndef f():\n    """Doc."""\n    pass\n')
    assert cache.cache_key(src, params, tmp_path) == k
    (lib / "numerics" / "a.py").write_text("def f():\n    return 2\n")
    assert cache.cache_key(src, params, tmp_path) != k
    src.write_text(src.read_text().replace("# T", "# T, retitled"))
    assert cache.cache_key(src, params, tmp_path) != k, "the chapter's own text is rendered: any edit re-runs"


def test_unparsable_chapter_depends_on_the_whole_library(tmp_path):
    lib = _mini_lib(tmp_path)
    src = _chapter(tmp_path / "c.md", "def broken(:\n    pass")
    assert set(cache.import_closure(src, tmp_path)) == set(lib.rglob("*.py"))


@pytest.fixture
def repo_copy(tmp_path, monkeypatch):
    """The chapters, library and table of contents of this repository in a temporary folder."""
    for name in ("chapters", "lib"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "_toc.yml", tmp_path / "_toc.yml")
    monkeypatch.setenv("DLTHEORY_ROOT", str(tmp_path))
    return tmp_path


def _keys(root: Path) -> dict[str, str]:
    params = {"size": "smoke", "seed": 0, "device": "cpu"}
    return {slug: cache.cache_key(src, params, root) for slug, src in runner.chapters(root).items()}


@pytest.mark.parametrize("module,expected", [
    ("distillation/parity.py", {"progressive-distillation", "teacher-selection", "skill-targeted-training"}),
    ("overparametrization/languages.py", {"rnn-learning"}),
    ("numerics/curvature.py", {"edge-of-stability"}),
    ("learned_algorithms/es.py", {"learned-optimizers"}),
    ("transfer/__init__.py", {"skill-localization", "simple-to-hard", "parsing-pcfg", "transformers-as-programs",
                              "progressive-subnetworks"}),
    ("transfer/raptr.py", {"progressive-subnetworks"}),
    ("machinery/runner.py", set()),
    ("machinery/build.py", set()),
])
def test_editing_a_module_reruns_only_its_chapters(repo_copy, module, expected):
    before = _keys(repo_copy)
    path = repo_copy / "lib" / "dltheory" / module
    path.write_text(path.read_text() + "\n_EDITED = 1\n")
    after = _keys(repo_copy)
    assert {s for s in before if before[s] != after[s]} == expected


def test_editing_the_claims_machinery_reruns_every_chapter(repo_copy):
    before = _keys(repo_copy)
    path = repo_copy / "lib" / "dltheory" / "machinery" / "claims.py"
    path.write_text(path.read_text() + "\n_EDITED = 1\n")
    after = _keys(repo_copy)
    assert all(before[s] != after[s] for s in before)


def test_plan_uses_the_resolved_device(tmp_path, monkeypatch):
    """`make book` (device auto) and `make test` (device cpu) share one cache on a machine without a GPU."""
    monkeypatch.setenv("DLTHEORY_DEVICE", "cpu")
    assert runner.resolve_device("auto") == runner.resolve_device("cpu") == "cpu"
    assert runner.plan(None, device="auto", out=tmp_path) == runner.plan(None, device="cpu", out=tmp_path)
