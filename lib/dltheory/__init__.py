"""dltheory: the shared library of *Executable Training Theory*.

Every reusable computation of the book lives here; chapters hold narrative, derivations and plots.
Importing the package has no side effects (no seeding, no warning filters, no downloads); submodules
are imported lazily so ``import dltheory`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "device", "seeding", "sizes", "record", "curvature", "eos", "runner", "paths",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'dltheory' has no attribute {name!r}")
