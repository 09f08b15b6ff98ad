"""Tests of the runner and CLI: chapter resolution, cache keys, notebook tagging, bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dltheory.machinery import runner
from dltheory.machinery.cli import main
from dltheory.machinery.paths import repo_root

from .books import make_book

ROOT = repo_root()


def test_chapters_in_toc_order():
    ch = runner.chapters(ROOT)
    assert next(iter(ch)) == "edge-of-stability"
    for slug, src in ch.items():
        assert src.suffix == ".md" and src.stem == slug and src.is_file()


def test_unknown_chapter_names_the_fix():
    with pytest.raises(KeyError, match="available chapters: edge-of-stability"):
        runner.resolve(["no-such-chapter"], ROOT)


def test_cli_unknown_chapter_exit_code(capsys):
    assert main(["run", "no-such-chapter"]) == 2
    err = capsys.readouterr().err
    assert "unknown chapter 'no-such-chapter'" in err and "_toc.yml" in err


@pytest.mark.parametrize("args,msg", [(["run", "--size", "huge"], "invalid choice: 'huge'"),
                                      (["run", "--jobs", "-2"], "expected a positive integer"),
                                      (["run", "--seed", "-1"], "non-negative integer seed"),
                                      (["run", "--device", "tpu"], "invalid choice: 'tpu'")])
def test_cli_bad_arguments(args, msg, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert msg in capsys.readouterr().err


def test_run_help_explains_sizes_devices_jobs_outputs():
    out = subprocess.run([sys.executable, "-m", "dltheory", "run", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for word in ("smoke", "full", "cuda", "mps", "--jobs", "results/<slug>.json", "executed/<slug>.ipynb",
                 "cache"):
        assert word in out


def test_prepare_notebook_hides_parameters(tmp_path):
    nb = runner.prepare_notebook(ROOT / "chapters" / "optimization" / "edge-of-stability.md")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata["tags"] and "hide-cell" in code[0].metadata["tags"]
    bad = tmp_path / "bad.md"
    bad.write_text("---\njupytext:\n  text_representation:\n    format_name: myst\n---\n# T\n\n"
                   "```{code-cell} ipython3\nx = 1\n```\n")
    with pytest.raises(ValueError, match="tagged 'parameters'"):
        runner.prepare_notebook(bad)


def test_failed_run_leaves_no_complete_looking_outputs(tmp_path, monkeypatch):
    """A chapter whose claim fails: no <slug>.json / .ipynb / .key, but .failed.* for inspection."""
    root = make_book(tmp_path, "failing", "from dltheory.machinery.claims import start_chapter\n"
                     "run = start_chapter('failing', size=size, seed=seed, device='cpu')\n"
                     "run.claim('c', 'false', 2.0, 1.0, 0.1, source='test')\nrun.finish()\n")
    out = tmp_path / "out"
    # stale outputs from an earlier good run must disappear
    paths = runner.output_paths("failing", out)
    for key in ("ipynb", "json", "key"):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        paths[key].write_text("stale")
    monkeypatch.setenv("DLTHEORY_ROOT", str(root))
    res = runner.run_chapters(["failing"], out=out, jobs=1, echo=lambda *_: None)
    assert res[0].status == "failed" and "ClaimFailed" in res[0].error
    assert not paths["ipynb"].exists() and not paths["json"].exists() and not paths["key"].exists()
    assert paths["failed_ipynb"].is_file() and paths["failed_json"].is_file()
    assert not (out / ".staging").exists() or not any((out / ".staging").iterdir())


def test_build_refuses_unexecuted_chapters(tmp_path):
    from dltheory.machinery.build import stage

    with pytest.raises(FileNotFoundError, match="run `python -m dltheory run`"):
        stage(out=tmp_path)


def test_student_cli_writes_every_chapter(tmp_path, capsys):
    assert main(["student", "--build-dir", str(tmp_path)]) == 0
    written = sorted(p.stem for p in (tmp_path / "student").glob("*.ipynb"))
    assert written == sorted(runner.chapters(ROOT))


def test_chapter_table_reads_results(tmp_path):
    import json

    from dltheory.machinery.build import chapter_table

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "edge-of-stability.json").write_text(json.dumps({
        "wall_s": 12.3, "claims": [{"statement": "sharpness hovers at 2/eta", "source": "Cohen et al. 2021",
                                    "holds": True}]}))
    table = chapter_table(ROOT, tmp_path)
    assert "sharpness hovers at 2/eta (1/1 claims hold) | Cohen et al. 2021 | 12 s" in table
    assert table.count("not executed yet") == len(runner.chapters(ROOT)) - 1
