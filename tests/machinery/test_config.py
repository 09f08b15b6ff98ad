"""``_config.yml`` names the repository in one place; the staged configuration turns the theme's buttons on only
when it is set (``dltheory.machinery.build.stage_config``)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from dltheory.machinery.build import stage_config
from dltheory.machinery.paths import repo_root


def _staged(tmp_path, url: str):
    p = tmp_path / "_config.yml"
    shutil.copy2(repo_root() / "_config.yml", p)
    cfg = yaml.safe_load(p.read_text())
    cfg["repository"]["url"] = url
    p.write_text(yaml.safe_dump(cfg))
    stage_config(p)
    return yaml.safe_load(p.read_text())


def test_the_repository_url_is_in_one_place():
    text = (repo_root() / "_config.yml").read_text()
    assert text.count("url:") == 1 and "repository:" in text


def test_buttons_follow_the_url(tmp_path):
    off = _staged(tmp_path, "")
    assert not off["html"]["use_repository_button"] and not off["html"]["use_issues_button"]
    assert "repository" not in off
    on = _staged(tmp_path, "https://github.com/me/ett")
    assert on["html"]["use_repository_button"] and on["html"]["use_issues_button"]
    assert on["repository"]["url"] == "https://github.com/me/ett" and on["repository"]["branch"] == "main"
    assert not on["html"]["use_edit_page_button"]


def test_a_bad_url_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="https://github.com/OWNER/REPO"):
        _staged(tmp_path, "github.com/me/ett")
