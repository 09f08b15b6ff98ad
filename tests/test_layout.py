"""The library has the book's shape (shared/DESIGN.md §9), read from the code's own imports:

* the machinery imports no science; the shared numerics import no part; a part imports the shared numerics, the
  machinery and itself, never another part;
* one subpackage per part, named like the folders under chapters/; no flat module beside the subpackages;
* a chapter imports the machinery, the shared numerics and its own part only;
* tests/ mirrors lib/dltheory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dltheory.machinery.cache import chapter_code, imported_modules, module_file
from dltheory.machinery.runner import chapters

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib"
PKG = LIB / "dltheory"
MACHINERY, NUMERICS = "machinery", "numerics"
PARTS = {p.name.replace("-", "_") for p in (ROOT / "chapters").iterdir() if p.is_dir()}
LAYERS = {MACHINERY, NUMERICS, *PARTS}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(LIB).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        yield name, path


def _imports(name: str, path: Path) -> set[str]:
    """The dltheory modules (real modules only, not names inside them) that ``path`` imports."""
    found = imported_modules(path.read_text(), name, path.name == "__init__.py")
    return {m for m in found if module_file(LIB, m) is not None}


ALLOWED = {MACHINERY: {MACHINERY}, NUMERICS: {NUMERICS}}
ALLOWED.update({p: {MACHINERY, NUMERICS, p} for p in PARTS})


def test_layers_exist_and_name_the_parts():
    assert PARTS == {"optimization", "overparametrization", "distillation", "transfer", "learned_algorithms"}
    for layer in LAYERS:
        assert (PKG / layer / "__init__.py").is_file(), f"lib/dltheory/{layer}/ must be a package"
    flat = sorted(p.name for p in PKG.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert not flat, f"modules beside the subpackages: {flat}; move them into machinery, numerics or a part"


@pytest.mark.parametrize("name,path", list(_modules()), ids=lambda x: x if isinstance(x, str) else "")
def test_imports_only_go_downward(name, path):
    layer = _layer(name)
    if layer is None:  # dltheory/__init__.py and __main__.py: the package's front door
        assert _imports(name, path) <= {"dltheory", "dltheory.machinery", "dltheory.machinery.cli"}
        return
    bad = {m for m in _imports(name, path) if _layer(m) is not None and _layer(m) not in ALLOWED[layer]}
    assert not bad, f"{name} ({layer}) imports {sorted(bad)}; allowed layers: {sorted(ALLOWED[layer])}. " \
                    "Code a second part needs moves down into dltheory.numerics."


@pytest.mark.parametrize("slug", list(chapters(ROOT)))
def test_chapters_import_their_part_the_numerics_and_the_machinery(slug):
    src = chapters(ROOT)[slug]
    part = src.parent.name.replace("-", "_")
    used = {m for m in imported_modules(chapter_code(src)) if module_file(LIB, m) is not None}
    layers = {_layer(m) for m in used} - {None}
    assert MACHINERY in layers, f"{slug} must open its record with dltheory.machinery.start_chapter"
    assert layers <= {MACHINERY, NUMERICS, part}, f"{slug} (part {part}) imports {sorted(layers)}"


def test_tests_mirror_the_library():
    for layer in LAYERS:
        has_modules = any(p.name != "__init__.py" for p in (PKG / layer).glob("*.py"))
        if has_modules:
            assert (ROOT / "tests" / layer).is_dir(), f"tests/{layer}/ is missing (tests mirror lib/dltheory)"
    for folder in (ROOT / "tests").iterdir():
        if folder.is_dir() and not folder.name.startswith((".", "_")):
            assert folder.name in LAYERS, f"tests/{folder.name}/ mirrors no package of lib/dltheory"


def test_machinery_imports_no_science_at_all():
    """Not even third-party science: the machinery may import torch only lazily, to pick the device."""
    import ast

    for path in sorted((PKG / MACHINERY).glob("*.py")):
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
        assert not names & {"torch", "numpy", "scipy", "sympy", "sklearn"}, f"{path.name} imports {names}"


def test_part_packages_hold_only_their_catalogue():
    """A part's ``__init__.py`` is a docstring listing its modules and chapters, nothing else: chapters import the
    modules, so adding a chapter to the catalogue re-runs no chapter (the cache keys hash code, not docstrings)."""
    import ast

    for part in sorted(PARTS):
        tree = ast.parse((PKG / part / "__init__.py").read_text())
        assert ast.get_docstring(tree), f"dltheory/{part}/__init__.py needs a docstring listing its modules"
        assert len(tree.body) == 1, f"dltheory/{part}/__init__.py must hold only its docstring"
