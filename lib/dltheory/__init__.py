"""dltheory: the shared library of *Executable Training Theory*.

Every reusable computation of the book lives here; chapters hold narrative, derivations and plots. The package
has the book's shape (``shared/DESIGN.md`` §9); imports only go downward:

* :mod:`dltheory.machinery`: what makes a notebook an executable chapter (claims and results JSON, sizes, device,
  runner, cache, build, student edition, CLI); it knows nothing about deep learning;
* :mod:`dltheory.numerics`: shared numerics that more than one part uses (validation, seeding, curvature,
  optimizers, kernels, the MLP, the shared transformer, data);
* one subpackage per part of the book, named like the folders under ``chapters/``:
  :mod:`dltheory.optimization`, :mod:`dltheory.overparametrization`, :mod:`dltheory.distillation`,
  :mod:`dltheory.transfer`, :mod:`dltheory.learned_algorithms`. A part uses the shared numerics and never
  another part.

Importing the package has no side effects (no seeding, no warning filters, no downloads); subpackages are
imported lazily so ``import dltheory`` stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy access to subpackages: ``dltheory.numerics`` is imported on first use."""
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'dltheory' has no attribute {name!r}")
