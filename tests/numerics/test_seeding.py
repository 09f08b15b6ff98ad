"""Seeding and CPU determinism (``dltheory.numerics.seeding``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dltheory.numerics.seeding import seed_everything


def test_seed_everything_is_deterministic():
    seed_everything(3)
    a = torch.randn(5), np.random.rand(3)
    seed_everything(3)
    b = torch.randn(5), np.random.rand(3)
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True, 2**32])
def test_seed_rejects_bad(bad):
    with pytest.raises(ValueError, match="seed must be"):
        seed_everything(bad)
