"""Where the book lives on disk: the repository root and the build tree.

Used by the runner (``python -m dltheory run``) and by :mod:`dltheory.machinery.claims` to find ``_build/results``.
"""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The repository root: ``$DLTHEORY_ROOT`` if set, else the folder holding ``_toc.yml`` above this file
    or above the current directory."""
    env = os.environ.get("DLTHEORY_ROOT")
    if env:
        return Path(env).resolve()
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for p in (start, *start.parents):
            if (p / "_toc.yml").is_file() and (p / "lib" / "dltheory").is_dir():
                return p
    raise FileNotFoundError(
        "cannot find the book root (a folder with _toc.yml and lib/dltheory); "
        "run from inside the repository or set DLTHEORY_ROOT=/path/to/repo"
    )


def build_dir() -> Path:
    """The build tree, ``$DLTHEORY_BUILD_DIR`` or ``<root>/_build``."""
    env = os.environ.get("DLTHEORY_BUILD_DIR")
    return Path(env).resolve() if env else repo_root() / "_build"


def results_dir() -> Path:
    """Where results JSON files go: ``$DLTHEORY_RESULTS_DIR`` or ``<build>/results``."""
    env = os.environ.get("DLTHEORY_RESULTS_DIR")
    return Path(env).resolve() if env else build_dir() / "results"
