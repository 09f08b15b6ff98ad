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
    pins = {_norm(r) for r in proj["dependencies"] + proj["optional-dependencies"]["test"]}
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
