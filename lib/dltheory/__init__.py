"""dltheory: the shared library of *Executable Training Theory*.

Every reusable computation of the book lives here; chapters hold narrative, derivations and plots.
Importing the package has no side effects (no seeding, no warning filters, no downloads); submodules
are imported lazily so ``import dltheory`` stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.1.0"



def __getattr__(name: str):
    """Lazy access to submodules: ``dltheory.curvature`` imports ``dltheory/curvature.py`` on first use."""
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'dltheory' has no attribute {name!r}")
