"""Shared fixtures: the chapters are executed once per session (through the runner and its cache) and the
book is rendered once; library tests need neither."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run, so CI is reproducible; set
# HYPOTHESIS_PROFILE=explore to search with fresh random examples instead.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "_build" / "test-artifacts"


@pytest.fixture(scope="session")
def executed_chapters():
    """Run every chapter at smoke size (cached) and return the runner's results by slug."""
    from dltheory.machinery.runner import run_chapters

    jobs = int(os.environ.get("DLTHEORY_TEST_JOBS", "0")) or None
    results = run_chapters(None, size="smoke", seed=0, device="cpu", jobs=jobs)
    return {r.slug: r for r in results}


@pytest.fixture(scope="session")
def rendered_book(executed_chapters):
    """Render the HTML book (-W -n) from the executed chapters; returns the html folder."""
    from dltheory.machinery.build import build_html

    failed = [s for s, r in executed_chapters.items() if r.status == "failed"]
    assert not failed, f"chapters failed to execute: {failed}; see _build/executed/<slug>.failed.ipynb"
    rc = build_html()
    assert rc == 0, "jupyter-book build failed with warnings-as-errors; see the log above"
    return ROOT / "_build" / "html"
