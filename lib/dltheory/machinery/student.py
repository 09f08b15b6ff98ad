"""The student edition: ``python -m dltheory student`` (``make student``) writes ``_build/student/<slug>.ipynb``.

Each notebook is its chapter with the solutions (everything from a ``{solution-start}`` to its ``{solution-end}``)
and the claim-checking cells (tag ``check``) removed, glued numbers replaced by a hint, outputs cleared, and the
parameters cell kept as the first code cell.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dltheory.machinery.paths import build_dir
from dltheory.machinery.runner import chapters

_GLUE_RE = re.compile(r"\{glue:(?:text|md)?\}`([A-Za-z_][A-Za-z0-9_]*)(?::[^`]*)?`")

_SOLUTION_START = "```{solution-start}"
_SOLUTION_END = "```{solution-end}"


def _strip_solutions(text: str, in_solution: bool) -> tuple[str, bool]:
    """Remove every ``{solution-start}`` … ``{solution-end}`` block of a markdown cell's text, however many
    there are; a block may open in one cell and close in a later one (``in_solution`` carries the state)."""
    out = []
    while text:
        if in_solution:
            end = text.find(_SOLUTION_END)
            if end < 0:
                return "".join(out).rstrip(), True
            close = text.find("```", end + len(_SOLUTION_END))
            text = text[close + 3:] if close >= 0 else ""
            in_solution = False
        else:
            start = text.find(_SOLUTION_START)
            if start < 0:
                out.append(text)
                break
            out.append(text[:start])
            text, in_solution = text[start:], True
    return re.sub(r"\n{3,}", "\n\n", "".join(out)).strip("\n"), in_solution


def student_notebook(md: Path):
    """The student edition of one chapter (a ``NotebookNode``): cells tagged ``check`` and everything from a
    ``{solution-start}`` to its ``{solution-end}`` removed, glue roles replaced by a hint, outputs cleared."""
    import jupytext
    import nbformat

    nb = jupytext.read(md)
    cells, in_solution = [], False
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            kept, in_solution = _strip_solutions(cell.source, in_solution)
            if not kept.strip():
                continue
            cell.source = kept
        elif in_solution:
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        if "check" in tags:
            continue
        if cell.cell_type == "markdown":
            cell.source = _GLUE_RE.sub(lambda m: f"*(computed when you run the notebook: `{m.group(1)}`)*", cell.source)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata["tags"] = [t for t in tags if t in ("parameters",)]
        cells.append(cell)
    header = nbformat.v4.new_markdown_cell(
        f"*Student edition of `{md.stem}` from Executable Training Theory.* Solutions and claim checks are removed; "
        "run the cells top to bottom (needs the `dltheory` package: `pip install -e .` in the book's repository).")
    # keep the parameters cell the first code cell; the header is markdown so it can go first
    nb.cells = [header, *cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)
    return nb


def build_student(out: Path | None = None, quiet: bool = False) -> list[Path]:
    """Write ``<out>/student/<slug>.ipynb`` for every chapter (atomically, one file at a time)."""
    import nbformat

    out = Path(out) if out else build_dir()
    dest = out / "student"
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for slug, md in chapters().items():
        nb = student_notebook(md)
        tmp = dest / f".{slug}.ipynb.tmp"
        nbformat.write(nb, tmp)
        os.replace(tmp, dest / f"{slug}.ipynb")
        written.append(dest / f"{slug}.ipynb")
    if not quiet:
        for p in written:
            print(p)
    return written
