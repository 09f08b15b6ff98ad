"""pyproject.toml is the pip source of truth; environment.yml must pin the same packages."""

from __future__ import annotations

import re
import tomllib

import yaml

from dltheory.machinery.paths import repo_root


def _norm(req: str) -> str:
    name, _, ver = req.partition("==")
    return f"{re.sub(r'[-_.]+', '-', name.strip().lower())}=={ver.strip()}"


def test_environment_yml_matches_pyproject():
    root = repo_root()
    proj = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = proj["optional-dependencies"]
    pins = {_norm(r) for r in proj["dependencies"] + extras["test"] + extras["cluster"]}
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_pins = {_norm(r) for r in pip if "==" in r}
    assert conda_pins == pins, f"only in pyproject: {pins - conda_pins}; only in environment.yml: {conda_pins - pins}"
    assert "-e ." in pip
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])


def test_torch_is_pinned():
    proj = tomllib.loads((repo_root() / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in proj["dependencies"]
    assert any(r.startswith("jupyter-book==1.") for r in proj["dependencies"])


def test_make_test_sets_up_the_browser_itself():
    """`make test` runs the one browser set-up step before pytest, and .ci/run relies on it (no second copy)."""
    root = repo_root()
    make = (root / "Makefile").read_text()
    assert re.search(r"^test: venv browser\b", make, re.M), "make test must depend on the browser set-up"
    assert "scripts/ensure-browser.sh" in make
    ci = (root / ".ci" / "run").read_text()
    assert "make test" in ci and "apt-get" not in ci


def test_browser_setup_says_what_to_run_when_it_cannot_install(tmp_path):
    """No chromium, not root, no sudo: the script stops with one line naming the command, before any pytest."""
    import subprocess

    fake_id = tmp_path / "id"
    fake_id.write_text("#!/bin/sh\necho 1000\n")
    fake_id.chmod(0o755)
    bash = "/bin/bash"
    out = subprocess.run([bash, str(repo_root() / "scripts" / "ensure-browser.sh")], capture_output=True, text=True,
                         env={"PATH": str(tmp_path)})
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "apt-get install -y --no-install-recommends chromium" in lines[0], out.stderr
