"""Exercises that check themselves: the answer key of an auto-checked exercise, kept as a fingerprint.

An auto-checked exercise in a chapter is three things (see "Add a chapter" in ``book/running.md``)::

    ```{exercise-start}            the question, in words: what to compute and under which name
    ...
    ```{code-cell} ipython3        tags: [answer, hide-input] -- the solution in the book (folded), an empty
    # answer: <question-id>          body (``...``) in the student notebook
    def stability_threshold(eta):
        return 2 / eta
    ```{code-cell} ipython3        tags: [autocheck, remove-cell] -- the checks, plain ``assert`` statements
    # checks: <question-id>          (one test case per ``# case`` block); they run in the book, so every build
    from dltheory.machinery.exercises import matches     proves the solution passes
    assert matches(stability_threshold, "3f2a...", at=[(0.1,), (0.5,)]), "..."

The checks compare a *fingerprint* of the student's answer -- a hash of its value rounded to ``digits``
significant digits (for a function: of its values at the points ``at``; for a sympy expression: of its values at
the substitutions ``at``) -- with the fingerprint of the solution. The check cell a student runs therefore says
whether the answer is right and, through the assertion's message, what to look at, but it never shows the solution
or the expected number. The key is computed once from the solution with :func:`fingerprint` and written into
the check; because the check also runs in the book, a key that does not match its solution fails the build.

The student edition and the autograder are made by otter-grader (:mod:`dltheory.machinery.student`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable

DIGITS = 6


def _flatten(value) -> list:
    """Numbers in ``value`` (a number, a nested sequence, a numpy array or torch tensor), as a flat list."""
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            out.extend(_flatten(v))
        return out
    if isinstance(value, bool):
        return [float(value)]
    try:
        return [complex(value)] if isinstance(value, complex) else [float(value)]
    except (TypeError, ValueError):
        raise TypeError(f"expected a number, an array or a sequence of numbers, got {type(value).__name__}") from None


def _round(x: float, digits: int) -> str:
    if isinstance(x, complex):
        return _round(x.real, digits) + "," + _round(x.imag, digits)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    return f"{x:.{digits - 1}e}"


def _num(x):
    """A plain Python number from a number-like ``x`` (sympy numbers included): real when its imaginary part is 0."""
    try:
        return float(x)
    except TypeError:
        c = complex(x)
        return c.real if c.imag == 0 else c


def evaluate(answer, at: Iterable | None = None) -> list:
    """The numbers a fingerprint is taken of: ``answer`` itself, or ``answer(*args)`` for every ``args`` in ``at``
    (a callable), or ``answer`` with every substitution dict ``s`` of ``at`` applied (a sympy expression)."""
    is_expr = hasattr(answer, "free_symbols") and hasattr(answer, "subs")
    if at is None:
        if callable(answer) and not is_expr:
            raise TypeError("a function is checked at points: give `at=[(x1,), (x2,), ...]`")
        if is_expr:
            if answer.free_symbols:
                raise TypeError(f"the expression still has free symbols {sorted(map(str, answer.free_symbols))}: "
                                "give the substitutions `at=[{x: 1.5}, ...]`")
            return [_num(answer.evalf())]
        return [answer]
    points = list(at)
    if is_expr:
        return [_num(answer.subs(s).evalf()) for s in points]
    if callable(answer):
        return [answer(*(p if isinstance(p, tuple) else (p,))) for p in points]
    raise TypeError(f"`at` is given, so the answer must be a function or a sympy expression, "
                    f"got {type(answer).__name__}")


def fingerprint(answer, at: Iterable | None = None, digits: int = DIGITS) -> str:
    """A short hash of ``answer``'s values rounded to ``digits`` significant digits (see :func:`evaluate`)."""
    if not (isinstance(digits, int) and 1 <= digits <= 15):
        raise ValueError(f"digits must be an integer from 1 to 15, got {digits!r}")
    nums = _flatten(evaluate(answer, at))
    text = f"{len(nums)}:" + ";".join(_round(x, digits) for x in nums)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def matches(answer, key: str, at: Iterable | None = None, digits: int = DIGITS) -> bool:
    """Whether ``answer`` has the fingerprint ``key``. Never raises for a wrong answer (an answer of the wrong
    kind, ``...`` or an answer that raises counts as not matching), so that the check reports, not crashes."""
    if answer is Ellipsis or answer is None:
        return False
    try:
        return fingerprint(answer, at, digits) == key
    except Exception:  # noqa: BLE001 - any failure of a student's answer is a wrong answer
        return False


def kind_ok(answer, expected: type | tuple | Callable) -> bool:
    """A first, gentle check: ``answer`` is filled in (not ``...``) and is of the expected kind (a type, a tuple
    of types, or a predicate)."""
    if answer is Ellipsis or answer is None:
        return False
    if isinstance(expected, type | tuple):
        return isinstance(answer, expected)
    return bool(expected(answer))
