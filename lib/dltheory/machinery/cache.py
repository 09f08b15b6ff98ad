"""Cache keys of chapter runs: a chapter is re-run only when something it depends on changed.

The key of a run (:func:`cache_key`) hashes

* the chapter's source (``chapters/PART/slug.md``),
* every library module the chapter imports, *transitively* (:func:`import_closure`): the imports are read from the
  chapter's code cells and from each module's source with :mod:`ast`, never by importing anything, and every
  package ``__init__.py`` on the way is included (importing ``dltheory.optimization.eos`` runs
  ``dltheory/__init__.py`` and ``dltheory/optimization/__init__.py`` too),
  — each module by its code only (the :mod:`ast` without docstrings and comments, :func:`code_fingerprint`), so
  rewording a docstring or listing a new chapter in a part's ``__init__`` docstring re-runs nothing,
* the parameters with the *resolved* device (``auto`` is resolved before hashing, so ``make book`` with
  ``--device auto`` and ``make test`` with ``--device cpu`` share their runs on a machine without a GPU),
* the versions of python and torch.

So editing a module of the transfer part re-runs the chapters that import it, and nothing else; editing the runner or
the build (which no chapter imports) re-runs nothing. ``python -m dltheory run --dry-run`` prints what would run.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "dltheory"


def chapter_code(src: Path) -> str:
    """The code of a chapter's code cells (a MyST notebook read by jupytext), IPython magics and shell lines
    commented out, as one python source."""
    import jupytext

    nb = jupytext.read(src)
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = ["# " + ln if ln.lstrip().startswith(("%", "!")) else ln for ln in cell.source.splitlines()]
        cells.append("\n".join(lines))
    return "\n\n".join(cells)


def imported_modules(code: str, module: str | None = None, is_package: bool = False) -> set[str]:
    """Every ``dltheory`` module name that ``code`` may import (function-level imports included): for
    ``from a.b import c`` both ``a.b`` and ``a.b.c`` (the latter counts only if it is a module). ``module`` is the
    dotted name of the code's own module, for relative imports."""
    tree = ast.parse(code)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if module is None:
                    continue
                parts = module.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != PACKAGE:
                continue
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
    return out


def module_file(lib: Path, name: str) -> Path | None:
    """The file of module ``name`` under ``lib`` (``lib/dltheory/a/b.py`` or ``lib/dltheory/a/b/__init__.py``), or
    ``None`` when ``name`` is not a module (e.g. a function imported with ``from``)."""
    rel = Path(*name.split("."))
    for cand in (lib / rel.with_suffix(".py"), lib / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@lru_cache(maxsize=512)
def _module_imports(path: Path, mtime_ns: int, name: str) -> frozenset[str]:
    return frozenset(imported_modules(path.read_text(), name, path.name == "__init__.py"))


def import_closure(src: Path, root: Path) -> list[Path]:
    """The library files a chapter depends on: the transitive closure of its ``dltheory`` imports, with every
    package ``__init__.py`` on the way, sorted. A chapter whose code cannot be parsed depends on the whole
    library (the safe answer)."""
    lib = root / "lib"
    try:
        todo = list(imported_modules(chapter_code(src)))
    except SyntaxError:
        return sorted((lib / PACKAGE).rglob("*.py"))
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        for mod in _with_parents(name):
            if mod in seen:
                continue
            path = module_file(lib, mod)
            if path is None:
                continue
            seen[mod] = path
            todo.extend(_module_imports(path, path.stat().st_mtime_ns, mod))
    return sorted(set(seen.values()))


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def code_fingerprint(path: Path) -> bytes:
    """What of a library module can change a chapter's output: its syntax tree without docstrings (comments and
    layout are not in the tree). A file that does not parse is taken byte for byte."""
    text = path.read_bytes()
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    return ast.dump(_strip_docstrings(tree), include_attributes=False).encode()


def cache_key(src: Path, params: dict, root: Path) -> str:
    """sha256 over the chapter source, the code of the library files it imports (:func:`import_closure`,
    :func:`code_fingerprint`), the parameters (with the device already resolved) and the python/torch versions."""
    from importlib import metadata

    h = hashlib.sha256()
    h.update(src.read_bytes())
    for path in import_closure(src, root):
        h.update(str(path.relative_to(root)).encode())
        h.update(code_fingerprint(path))
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(sys.version.encode())
    try:
        h.update(metadata.version("torch").encode())
    except metadata.PackageNotFoundError:  # pragma: no cover
        pass
    return h.hexdigest()
