"""Auto-checked exercises (``dltheory.machinery.exercises``) and their otter-grader student edition and autograder
(``dltheory.machinery.student``): on a tiny chapter, a solved submission passes every check, the student notebook
as handed out fails them, a wrong answer fails with its message; no solution text is in the student notebook."""

from __future__ import annotations

import math

import nbformat
import pytest
import sympy as sp

from dltheory.machinery import exercises as ex
from dltheory.machinery.student import build_student, grade, questions

from .books import chapter_text, make_book

EXERCISE = '''
```{exercise-start}
:label: tiny-ex
```
Write `threshold(eta)`, the largest stable curvature of GD with step size `eta`.
```{exercise-end}
```

```{code-cell} ipython3
:tags: [answer, hide-input]
# answer: tiny-threshold
def threshold(eta):
    return 2 / eta  # SOLUTION
```

```{code-cell} ipython3
:tags: [autocheck, remove-cell]
# checks: tiny-threshold
from dltheory.machinery.exercises import kind_ok
assert kind_ok(threshold, callable), "define a function threshold(eta)"
# case
from dltheory.machinery.exercises import matches
assert matches(threshold, "KEY", at=[(0.1,), (0.7,)]), "not yet right: where does 1 - eta * a reach -1?"
```
'''
KEY = ex.fingerprint(lambda e: 2 / e, at=[(0.1,), (0.7,)])


def test_fingerprints_of_numbers_functions_arrays_and_expressions():
    x = sp.Symbol("x")
    assert ex.fingerprint(0.5) == ex.fingerprint(1 / 2) == ex.fingerprint(sp.Rational(1, 2))
    assert ex.fingerprint(0.1 + 0.2) == ex.fingerprint(0.3), "rounding to 6 significant digits absorbs round-off"
    assert ex.fingerprint(0.3) != ex.fingerprint(0.3001)
    assert ex.fingerprint([1.0, 2.0]) == ex.fingerprint((1, 2)) != ex.fingerprint([2.0, 1.0])
    assert ex.fingerprint(lambda e: 2 / e, at=[(0.1,), (0.7,)]) == KEY
    assert ex.fingerprint(x**2 + 2 * x + 1, at=[{x: 0.5}, {x: 3}]) == ex.fingerprint((x + 1) ** 2,
                                                                                      at=[{x: 0.5}, {x: 3}])
    assert ex.fingerprint(sp.pi) == ex.fingerprint(math.pi)
    with pytest.raises(TypeError, match="at points"):
        ex.fingerprint(lambda e: e)
    with pytest.raises(TypeError, match="free symbols"):
        ex.fingerprint(x + 1)
    with pytest.raises(ValueError, match="digits"):
        ex.fingerprint(1.0, digits=0)


def test_matches_reports_instead_of_crashing():
    assert not ex.matches(..., KEY)
    assert not ex.matches(None, KEY)
    assert not ex.matches(lambda e: 1 / 0, KEY, at=[(0.1,)])
    assert not ex.matches("two", KEY)
    assert ex.matches(lambda e: 2.0 / e, KEY, at=[(0.1,), (0.7,)])
    assert not ex.kind_ok(..., callable) and ex.kind_ok(abs, callable) and ex.kind_ok(1.0, float)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exercise-book")
    code = "x = 1\n"
    root = make_book(tmp, "tiny", code)
    md = root / "chapters" / "p" / "tiny.md"
    md.write_text(chapter_text("tiny", code) + EXERCISE.replace("KEY", KEY))
    return root


def test_questions_and_their_errors(tiny, tmp_path):
    md = tiny / "chapters" / "p" / "tiny.md"
    qs = questions(md)
    assert list(qs) == ["tiny-threshold"] and len(qs["tiny-threshold"]["checks"]) == 2
    bad = tmp_path / "bad.md"
    bad.write_text(md.read_text().replace("  # SOLUTION", ""))
    with pytest.raises(ValueError, match="marks no solution"):
        questions(bad)
    bad.write_text(md.read_text().replace("# checks: tiny-threshold", "# checks: other"))
    with pytest.raises(ValueError, match="follow the answer cell"):
        questions(bad)


def _with_answer(nb, body: str):
    nb = nbformat.from_dict(nb)
    for c in nb.cells:
        if c.cell_type == "code" and c.source.startswith("# answer: tiny-threshold"):
            c.source = "# answer: tiny-threshold\ndef threshold(eta):\n    " + body
    return nb


@pytest.mark.book
def test_student_edition_checks_and_grading_with_otter(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("DLTHEORY_ROOT", str(tiny))
    out = tmp_path / "_build"
    [path] = build_student(out, quiet=True)
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert "2 / eta" not in text and "# SOLUTION" not in text and KEY in str(nb.metadata), "checks ride along"
    assert 'grader.check("tiny-threshold")' in text and "def threshold(eta):\n    ..." in text
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []) and "otter.Notebook(" in code[1].source
    assert (out / "student" / "autograder" / "tiny.zip").is_file()

    subs = tmp_path / "submissions"
    subs.mkdir()
    nbformat.write(nb, subs / "handed-out.ipynb")
    nbformat.write(_with_answer(nb, "return 2 / eta"), subs / "solved.ipynb")
    nbformat.write(_with_answer(nb, "return 1 / eta"), subs / "wrong.ipynb")
    lines = []
    csv_path = grade(subs, out, echo=lines.append)
    import csv

    rows = {r["file"]: r for r in csv.DictReader(open(csv_path))}
    assert float(rows["solved.ipynb"]["score"]) == 1.0
    assert float(rows["handed-out.ipynb"]["score"]) == 0.0
    assert float(rows["wrong.ipynb"]["score"]) == 0.0
    assert "not yet right" in rows["wrong.ipynb"]["feedback"], rows["wrong.ipynb"]
    assert "2 / eta" not in rows["wrong.ipynb"]["feedback"], "the feedback never shows the solution"


def test_grade_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .ipynb"):
        grade(tmp_path, tmp_path)
