"""The one argument validator (``dltheory.numerics.validate``): one wording for every part of the library."""

from __future__ import annotations

import numpy as np
import pytest

from dltheory.numerics.validate import check_int, check_nonnegative, check_positive, check_seeds


def test_accepts_and_converts():
    assert check_int("n", np.int64(3)) == 3 and type(check_int("n", np.int64(3))) is int
    assert check_int("k", 0, 0) == 0 and check_int("k", 2, 2) == 2
    assert check_positive("lr", np.float32(0.5)) == 0.5 and check_nonnegative("eps", 0) == 0.0
    assert check_seeds(range(3)) == [0, 1, 2]


@pytest.mark.parametrize("call,msg", [
    (lambda: check_int("width", 0), "width must be a positive integer, got 0"),
    (lambda: check_int("steps", -1, 0), "steps must be a non-negative integer, got -1"),
    (lambda: check_int("k", 1, 2), "k must be an integer >= 2, got 1"),
    (lambda: check_int("n", True), "n must be a positive integer, got True"),
    (lambda: check_int("n", 2.0), "n must be a positive integer, got 2.0"),
    (lambda: check_positive("lr", 0.0), "lr must be a positive finite number, got 0.0"),
    (lambda: check_positive("lr", float("inf")), "lr must be a positive finite number"),
    (lambda: check_nonnegative("eps", -1e-3), "eps must be a finite number >= 0"),
    (lambda: check_seeds([]), "seeds must be a non-empty list of non-negative integers"),
    (lambda: check_seeds([0, -1]), "seeds must be a non-empty list of non-negative integers"),
])
def test_one_wording(call, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        call()
