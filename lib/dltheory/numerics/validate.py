"""The one argument validator of the library: every public function checks its integer and number arguments here,
so a bad argument always gets the same wording and names the argument.

>>> check_int("width", 64)
64
>>> check_int("width", 0)
Traceback (most recent call last):
...
ValueError: width must be a positive integer, got 0

Used by every part of the book (the chapters' library functions raise these messages when a reader changes a
parameter in "Try it" to something that cannot work).
"""

from __future__ import annotations

import math
import numbers


def _int_words(minimum: int) -> str:
    if minimum == 1:
        return "a positive integer"
    if minimum == 0:
        return "a non-negative integer"
    return f"an integer >= {minimum}"


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as a python ``int`` if it is an integer (python or numpy, not a bool) of at least ``minimum``;
    otherwise ``ValueError: <name> must be a positive integer, got <value>`` (or "a non-negative integer",
    "an integer >= m" for other minima)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be {_int_words(minimum)}, got {value!r}")
    return int(value)


def _real(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def check_positive(name: str, value) -> float:
    """``value`` as a ``float`` if it is a finite number ``> 0``; otherwise
    ``ValueError: <name> must be a positive finite number, got <value>``."""
    if not (_real(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_nonnegative(name: str, value) -> float:
    """``value`` as a ``float`` if it is a finite number ``>= 0``; otherwise
    ``ValueError: <name> must be a finite number >= 0, got <value>``."""
    if not (_real(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_seeds(seeds) -> list[int]:
    """``seeds`` as a list of python ``int`` if it is a non-empty sequence of non-negative integers (the seeds of
    replicas trained side by side); otherwise ``ValueError: seeds must be a non-empty list of non-negative
    integers, got <seeds>``."""
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of non-negative integers, got {seeds!r}")
    return [int(s) for s in seeds]
