"""The student edition: ``python -m dltheory student`` (``make student``) writes ``_build/student/<slug>.ipynb``
and, for grading, ``_build/student/autograder/<slug>.zip``.

Each notebook is its chapter with the solutions (everything from a ``{solution-start}`` to its ``{solution-end}``)
and the claim-checking cells (tag ``check``) removed, glued numbers replaced by a hint, outputs cleared, and the
parameters cell kept as the first code cell.

Auto-checked exercises (:mod:`dltheory.machinery.exercises`) go through **otter-grader** (``otter assign``): the
answer cell (tag ``answer``) keeps its code with the lines marked ``# SOLUTION`` (or the block between
``# BEGIN SOLUTION`` and ``# END SOLUTION``) replaced by ``...``, and the check cell (tag ``autocheck``) becomes a
"check my answer" cell, ``grader.check("<question>")``, that runs the checks and says which failed and why,
without showing the solution. ``otter assign`` also writes the autograder that
``python -m dltheory grade DIR`` (``make grade SUBMISSIONS=DIR``) runs on a folder of submitted notebooks, with
``otter run``: no Docker, nothing from the network.

Why otter-grader rather than nbgrader: otter keeps the questions, solutions and tests in the notebook itself
(nbgrader needs a course directory and a database), its student notebook checks itself without a server, and it
grades locally with ``otter run``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from dltheory.machinery.paths import build_dir
from dltheory.machinery.runner import chapters
from dltheory.machinery.tools import tool

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


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def student_notebook(md: Path, keep_exercises: bool = False):
    """The student edition of one chapter (a ``NotebookNode``): cells tagged ``check`` and everything from a
    ``{solution-start}`` to its ``{solution-end}`` removed, glue roles replaced by a hint, outputs cleared.
    Auto-checked exercises' answer and check cells are removed too, unless ``keep_exercises`` (for
    :func:`otter_master`, which turns them into otter questions)."""
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
        tags = _tags(cell)
        if "check" in tags:
            continue
        if ("answer" in tags or "autocheck" in tags) and not keep_exercises:
            continue
        if cell.cell_type == "markdown":
            cell.source = _GLUE_RE.sub(lambda m: f"*(computed when you run the notebook: `{m.group(1)}`)*", cell.source)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata["tags"] = [t for t in tags if t in ("parameters", "answer", "autocheck")]
            cell.metadata.pop("mystnb", None)
        cells.append(cell)
    header = nbformat.v4.new_markdown_cell(
        f"*Student edition of `{md.stem}` from Executable Training Theory.* Solutions and claim checks are removed; "
        "run the cells top to bottom (needs the `dltheory` package: `pip install -e .` in the book's repository).")
    # keep the parameters cell the first code cell; the header is markdown so it can go first
    nb.cells = [header, *cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)
    return nb


ANSWER_RE = re.compile(r"^# answer: ([a-z0-9][a-z0-9-]*)\s*$", re.M)
CHECKS_RE = re.compile(r"^# checks: ([a-z0-9][a-z0-9-]*)\s*$", re.M)
_SOLUTION_MARK_RE = re.compile(r"#\s*(SOLUTION|BEGIN SOLUTION)\b")


def questions(md: Path) -> dict[str, dict]:
    """The auto-checked exercises of a chapter: ``{question: {"answer": code, "checks": [case, ...]}}`` in chapter
    order. Raises ``ValueError`` naming the fix when an answer has no checks, checks have no answer, or an answer
    marks no line as the solution."""
    import jupytext

    nb = jupytext.read(md)
    out: dict[str, dict] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = _tags(cell)
        if "answer" in tags:
            m = ANSWER_RE.search(cell.source)
            if not m:
                raise ValueError(f"{md.name}: an answer cell must start with '# answer: <question-id>'")
            if not _SOLUTION_MARK_RE.search(cell.source):
                raise ValueError(f"{md.name}: answer {m.group(1)!r} marks no solution: end the lines a student "
                                 "writes with '# SOLUTION' (or wrap them in '# BEGIN SOLUTION' / '# END SOLUTION')")
            out[m.group(1)] = {"answer": cell.source, "checks": []}
        elif "autocheck" in tags:
            m = CHECKS_RE.search(cell.source)
            if not m or m.group(1) not in out:
                raise ValueError(f"{md.name}: a check cell must start with '# checks: <question-id>' and follow the "
                                 "answer cell of that question")
            body = CHECKS_RE.sub("", cell.source, count=1)
            cases = [c.strip("\n") for c in re.split(r"^# case\b.*$", body, flags=re.M) if c.strip()]
            out[m.group(1)]["checks"].extend(cases)
    for q, d in out.items():
        if not d["checks"]:
            raise ValueError(f"{md.name}: answer {q!r} has no check cell ('# checks: {q}', tags [autocheck])")
    return out


def blank_solution(code: str) -> str:
    """``code`` as the student receives it: each line marked ``# SOLUTION`` becomes ``...`` (``name = ...`` for an
    assignment; indentation kept) and each ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block one ``...`` -- what
    ``otter assign`` does."""
    out, skipping = [], False
    for line in code.splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        if re.match(r"\s*#\s*BEGIN SOLUTION\b", line):
            out.append(indent + "...")
            skipping = True
        elif re.match(r"\s*#\s*END SOLUTION\b", line):
            skipping = False
        elif not skipping:
            if not re.search(r"#\s*SOLUTION\s*$", line):
                out.append(line)
                continue
            assign = re.match(r"\s*([A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*)\s*=(?!=)", line)
            out.append(indent + (f"{assign.group(1)} = ..." if assign else "..."))
    return "\n".join(out) + "\n"


def otter_master(md: Path):
    """The otter-grader master notebook of a chapter: its student edition with every auto-checked exercise turned
    into an otter question (solution, tests). ``None`` when the chapter has no auto-checked exercise."""
    import nbformat

    qs = questions(md)
    if not qs:
        return None
    student = student_notebook(md, keep_exercises=True)
    cfg = ("# ASSIGNMENT CONFIG\n"
           f"name: {md.stem}\ninit_cell: true\ncheck_all_cell: false\nexport_cell: false\n"
           "run_tests: false\nsolutions_pdf: false\ngenerate: true\n")
    cells = [nbformat.v4.new_raw_cell(cfg)]
    raw = nbformat.v4.new_raw_cell
    for cell in student.cells:
        tags = _tags(cell)
        if cell.cell_type == "code" and "autocheck" in tags:
            continue
        if cell.cell_type == "code" and "answer" in tags:
            q = ANSWER_RE.search(cell.source).group(1)
            cells.append(raw(f"# BEGIN QUESTION\nname: {q}\npoints: 1\nall_or_nothing: true"))
            cells.append(nbformat.v4.new_markdown_cell(
                f"**Your answer** (exercise `{q}`): replace the `...` in the cell below, run it, then run the check "
                "under it."))
            cells.append(raw("# BEGIN SOLUTION"))
            cells.append(nbformat.v4.new_code_cell(cell.source))
            cells.append(raw("# END SOLUTION"))
            cells.append(raw("# BEGIN TESTS"))
            cells.extend(nbformat.v4.new_code_cell(case) for case in qs[q]["checks"])
            cells.append(raw("# END TESTS"))
            cells.append(raw("# END QUESTION"))
            continue
        cells.append(cell)
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _otter_assign(master, slug: str, dest: Path) -> tuple[object, Path]:
    """Run ``otter assign`` on ``master``; returns the student notebook (parameters cell moved back to the first
    code cell, otter's init cell right after it) and the path of the autograder zip it wrote under ``dest``."""
    import nbformat

    with tempfile.TemporaryDirectory(prefix=f"otter-{slug}-") as tmp:
        tmp = Path(tmp)
        nbformat.write(master, tmp / f"{slug}.ipynb")
        cmd = [tool("otter"), "assign", str(tmp / f"{slug}.ipynb"), str(tmp / "dist")]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        if res.returncode != 0:
            raise RuntimeError(f"otter assign failed for {slug}:\n{res.stdout}\n{res.stderr}")
        nb = nbformat.read(tmp / "dist" / "student" / f"{slug}.ipynb", as_version=4)
        zips = sorted((tmp / "dist" / "autograder").glob(f"{slug}-autograder_*.zip"))
        if not zips:
            raise RuntimeError(f"otter assign wrote no autograder for {slug}")
        dest.mkdir(parents=True, exist_ok=True)
        part = dest / f".{slug}.zip.tmp"
        shutil.copy2(zips[-1], part)
        os.replace(part, dest / f"{slug}.zip")
    code = [c for c in nb.cells if c.cell_type == "code"]
    init = next(c for c in code if "otter.Notebook(" in c.source)
    params = next(c for c in code if "parameters" in _tags(c))
    nb.cells.remove(init)
    nb.cells.insert(nb.cells.index(params) + 1, init)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    return nb, dest / f"{slug}.zip"


def _digest(md: Path) -> str:
    import otter

    h = hashlib.sha256(md.read_bytes())
    h.update(Path(__file__).read_bytes())
    h.update(otter.__version__.encode())
    return h.hexdigest()


def build_student(out: Path | None = None, quiet: bool = False) -> list[Path]:
    """Write ``<out>/student/<slug>.ipynb`` for every chapter (atomically, one file at a time) and, for chapters
    with auto-checked exercises, the autograder ``<out>/student/autograder/<slug>.zip``. A chapter whose source is
    unchanged since the last run is not assigned again."""
    import nbformat

    out = Path(out) if out else build_dir()
    dest = out / "student"
    dest.mkdir(parents=True, exist_ok=True)
    stamps_file = dest / ".digests.json"
    stamps = json.loads(stamps_file.read_text()) if stamps_file.is_file() else {}
    written = []
    for slug, md in chapters().items():
        target = dest / f"{slug}.ipynb"
        digest = _digest(md)
        if stamps.get(slug) == digest and target.is_file():
            written.append(target)
            continue
        master = otter_master(md)
        if master is None:
            nb = student_notebook(md)
        else:
            nb, _zip = _otter_assign(master, slug, dest / "autograder")
            nb.metadata.setdefault("dltheory", {})["chapter"] = slug
        tmp = dest / f".{slug}.ipynb.tmp"
        nbformat.write(nb, tmp)
        os.replace(tmp, target)
        stamps[slug] = digest
        written.append(target)
    part = dest / ".digests.json.tmp"
    part.write_text(json.dumps(stamps, indent=1, sort_keys=True))
    os.replace(part, stamps_file)
    if not quiet:
        for p in written:
            print(p)
    return written


def _score(results: dict) -> dict[str, tuple[float, float, str]]:
    """``{question: (score, possible, feedback)}`` from otter's ``results.json``; the feedback is the message of
    each failed check (what the student's check cell also shows)."""
    out = {}
    for t in results.get("tests", []):
        if "max_score" in t and t.get("name") != "Public Tests":
            msgs = re.findall(r"(?:AssertionError|NameError): (.+)", t.get("output", ""))
            out[t["name"]] = (float(t.get("score") or 0.0), float(t["max_score"]), " | ".join(dict.fromkeys(msgs)))
    return out


def grade(submissions: Path, out: Path | None = None, echo=print) -> Path:
    """Grade every notebook in the folder ``submissions`` with its chapter's autograder (``otter run``, locally,
    no Docker) and write ``<submissions>/grades.csv`` (file, chapter, question, score, possible, feedback).
    A notebook is
    matched to its chapter by the ``otter.assignment_name`` that the student edition carries. Run
    ``python -m dltheory student`` first (it writes the autograders)."""
    import csv

    import nbformat

    out = Path(out) if out else build_dir()
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise FileNotFoundError(f"{submissions} is not a folder of submitted notebooks (.ipynb)")
    notebooks = sorted(p for p in submissions.glob("*.ipynb") if not p.name.startswith("."))
    if not notebooks:
        raise FileNotFoundError(f"no .ipynb in {submissions}: put the students' notebooks there")
    rows = []
    for nb_path in notebooks:
        meta = nbformat.read(nb_path, as_version=4).metadata
        slug = (meta.get("otter") or {}).get("assignment_name")
        zip_path = out / "student" / "autograder" / f"{slug}.zip"
        if not slug or not zip_path.is_file():
            raise FileNotFoundError(f"{nb_path.name}: no autograder for chapter {slug!r} ({zip_path}); run "
                                    "`python -m dltheory student` (make student) first")
        with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
            cmd = [tool("otter"), "run", "--no-logo", "-a", str(zip_path), "-o", tmp,
                   str(nb_path)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            result_file = Path(tmp) / "results.json"
            if not result_file.is_file():
                raise RuntimeError(f"otter run failed on {nb_path.name}:\n{res.stdout}\n{res.stderr}")
            scores = _score(json.loads(result_file.read_text()))
        for q, (got, possible, feedback) in scores.items():
            rows.append({"file": nb_path.name, "chapter": slug, "question": q, "score": got, "possible": possible,
                         "feedback": feedback})
        total = sum(v[0] for v in scores.values())
        echo(f"{nb_path.name:<40} {slug:<28} {total:g} / {sum(v[1] for v in scores.values()):g}")
    csv_path = submissions / "grades.csv"
    part = submissions / ".grades.csv.tmp"
    with open(part, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "chapter", "question", "score", "possible", "feedback"])
        w.writeheader()
        w.writerows(rows)
    os.replace(part, csv_path)
    echo(f"grades: {csv_path}")
    return csv_path
