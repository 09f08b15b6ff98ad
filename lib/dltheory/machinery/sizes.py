"""Size presets (``smoke`` for CI on 2 CPU cores, ``full`` for one GPU) and their validation.

Every chapter shows its sizes as a small dict per size and passes it to :func:`resolve_size`; see the
chapter contract in ``shared/DESIGN.md`` §3 and the "Running the book" page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import SimpleNamespace

SIZES = ("smoke", "full")


def _check_number(name: str, value, where: str) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"{where}: {name} = {value!r} must be a positive finite number (a width, a count, a step size)"
            )
        return
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 0:
            raise ValueError(f"{where}: {name} is an empty list; give at least one value")
        for v in value:
            _check_number(name, v, where)
        return
    if isinstance(value, str | None):
        return
    raise TypeError(f"{where}: {name} has type {type(value).__name__}; use numbers, lists of numbers or strings")


def resolve_size(size: str, presets: Mapping[str, Mapping], bounds: Mapping[str, tuple] | None = None,
                 **overrides) -> SimpleNamespace:
    """Validate ``size`` against ``presets`` and return its settings as a namespace.

    * ``size`` must be a key of ``presets`` (normally ``smoke`` and ``full``); otherwise ``ValueError`` names
      the allowed sizes.
    * Every number (or every number in a list) must be positive and finite; booleans and strings pass.
    * ``bounds`` optionally maps a setting to ``(low, high)``, inclusive, e.g. ``{"beta": (0, 1)}``.
    * ``overrides`` replace single settings (each validated the same way); an unknown name is an error.

    The namespace carries ``.size`` (the size's name) besides the settings.
    """
    if not isinstance(size, str):
        raise TypeError(f"size must be a string, one of {sorted(presets)}; got {type(size).__name__} {size!r}")
    if size not in presets:
        raise ValueError(f"unknown size {size!r}; allowed sizes: {', '.join(sorted(presets))}")
    settings = dict(presets[size])
    for key, val in overrides.items():
        if key not in settings:
            raise ValueError(f"unknown setting {key!r} for size {size!r}; settings: {', '.join(sorted(settings))}")
        settings[key] = val
    where = f"size {size!r}"
    for name, value in settings.items():
        _check_number(name, value, where)
        if bounds and name in bounds:
            lo, hi = bounds[name]
            vals = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
            for v in vals:
                if not (lo <= v <= hi):
                    raise ValueError(f"{where}: {name} = {v!r} must lie in [{lo}, {hi}]")
    return SimpleNamespace(size=size, **settings)
