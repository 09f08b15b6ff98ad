"""The student edition: no solution or check leaks, parameters first, outputs cleared, and it executes."""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import subprocess
import sys

import nbformat
import pytest

from dltheory.machinery.runner import chapters
from dltheory.machinery.student import build_student, student_notebook

SLUGS = list(chapters())
SOLUTION_RE = re.compile(r"```\{solution-start\}.*?```\{solution-end\}\n```", re.S)


def _solution_lines(md_text: str) -> list[str]:
    out = []
    for block in SOLUTION_RE.findall(md_text):
        for line in block.splitlines():
            line = line.strip()
            if len(line) > 25 and not line.startswith(("```", ":class:")):
                out.append(line)
    return out


@pytest.mark.parametrize("slug", SLUGS)
def test_student_notebook_has_no_solutions_or_checks(slug):
    md = chapters()[slug]
    nb = student_notebook(md)
    text = "\n".join(c.source for c in nb.cells)
    assert "{solution-start}" not in text and "{solution-end}" not in text
    assert "run.claim(" not in text and "run.finish(" not in text
    for line in _solution_lines(md.read_text()):
        assert line not in text, f"solution text leaked into the student notebook: {line!r}"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(not c.outputs for c in code)
    assert "{exercise-start}" in text, "the exercises stay"


@pytest.mark.chapters
def test_student_notebooks_execute_at_smoke(tmp_path, monkeypatch):
    paths = build_student(tmp_path / "build", quiet=True)
    assert sorted(p.stem for p in paths) == sorted(SLUGS)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("DLTHEORY_RESULTS_DIR", str(tmp_path / "results"))

    def execute(p):
        # One papermill process per notebook, started in the notebook's folder: otter.Notebook reads its own file by
        # a relative name, and papermill's ``cwd=`` is a process-wide chdir that races between threads.
        out = tmp_path / f"{p.stem}.out.ipynb"
        res = subprocess.run([sys.executable, "-m", "papermill", p.name, str(out), "-p", "size", "smoke",
                              "-k", "python3", "--no-progress-bar"], cwd=p.parent, capture_output=True, text=True)
        assert res.returncode == 0, f"{p.stem}: {res.stderr[-3000:]}"
        return p.stem

    with cf.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        done = list(pool.map(execute, paths))
    assert sorted(done) == sorted(SLUGS)
    for p in paths:
        nb = nbformat.read(tmp_path / f"{p.stem}.out.ipynb", as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors


def test_strip_solutions_handles_several_blocks_and_blocks_across_cells():
    from dltheory.machinery.student import _strip_solutions

    text = ("Intro\n```{exercise-start}\n```\nQ1\n```{exercise-end}\n```\n"
            "```{solution-start} a\n:class: dropdown\n```\nS1 secret\n```{solution-end}\n```\n"
            "```{exercise-start}\n```\nQ2\n```{exercise-end}\n```\n"
            "```{solution-start} b\n:class: dropdown\n```\nS2 secret\n```{solution-end}\n```\nOutro")
    kept, open_ = _strip_solutions(text, False)
    assert "secret" not in kept and "solution" not in kept and not open_
    assert kept.startswith("Intro") and "Q1" in kept and "Q2" in kept and kept.endswith("Outro")
    # a block that opens in one cell and closes in a later one
    first, open_ = _strip_solutions("Q\n```{solution-start} c\n:class: dropdown\n```\nhidden", False)
    assert first == "Q" and open_
    second, open_ = _strip_solutions("more hidden\n```{solution-end}\n```\nAfter", True)
    assert second == "After" and not open_


def _answer_name(code: str) -> str:
    import ast

    for node in ast.parse(code).body:
        if isinstance(node, ast.FunctionDef):
            return node.name
        if isinstance(node, ast.Assign):
            return node.targets[0].id
    raise AssertionError("an answer cell defines a function or assigns a name")


def _run_checks(answer_code: str, checks: list[str], wrap=None) -> list[str]:
    """Execute an answer cell and its checks in a fresh namespace; the messages of the checks that failed."""
    ns: dict = {}
    exec(compile(answer_code, "<answer>", "exec"), ns)
    if wrap is not None:
        name = _answer_name(answer_code)
        ns[name] = wrap(ns[name])
    failed = []
    for case in checks:
        try:
            exec(compile(case, "<check>", "exec"), ns)
        except AssertionError as exc:
            failed.append(str(exc))
    return failed


def _wrong(value):
    """A deliberately wrong answer: 10% off (a function's values, a number, an expression)."""
    if callable(value) and not hasattr(value, "free_symbols"):
        return lambda *a, **k: 1.1 * value(*a, **k)
    return 1.1 * value


@pytest.mark.parametrize("slug", SLUGS)
def test_every_chapter_has_auto_checked_exercises(slug):
    """At least two exercises per chapter check a student's answer (otter-grader, ``grader.check``)."""
    from dltheory.machinery.student import questions

    assert len(questions(chapters()[slug])) >= 2, f"{slug}: give two exercises an answer and a check cell"


@pytest.mark.parametrize("slug", SLUGS)
def test_auto_checks_pass_the_solution_and_fail_blank_and_wrong_answers(slug):
    """The solved answer passes every check; the answer as handed out (solution lines replaced by ``...``) fails;
    a deliberately wrong answer fails with a message that does not give the solution away."""
    from dltheory.machinery.student import blank_solution, questions

    for q, d in questions(chapters()[slug]).items():
        assert _run_checks(d["answer"], d["checks"]) == [], f"{slug}/{q}: the solution fails its own checks"
        blank = blank_solution(d["answer"])
        assert "# SOLUTION" not in blank and "..." in blank
        assert _run_checks(blank, d["checks"]), f"{slug}/{q}: the blank answer passes the checks"
        wrong = _run_checks(d["answer"], d["checks"], wrap=_wrong)
        assert wrong and all(m.strip() for m in wrong), f"{slug}/{q}: a wrong answer must fail with a message"
        solution_lines = [ln.split("#")[0].strip() for ln in d["answer"].splitlines() if "# SOLUTION" in ln]
        for m in wrong:
            assert not any(s and s in m for s in solution_lines), f"{slug}/{q}: the message shows the solution"
