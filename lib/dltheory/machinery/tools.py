"""The command-line tools the build calls (``jupyter-book``, ``otter``), found beside this Python.

Kept apart from :mod:`dltheory.machinery.paths`, which chapters import (through the claims record): a module here
changes no chapter's cache key.
"""

from __future__ import annotations

import sys
from pathlib import Path


def tool(name: str) -> str:
    """The command ``name`` installed beside this Python (the venv's ``bin/``), else ``name`` itself (found on
    ``PATH``)."""
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else name
