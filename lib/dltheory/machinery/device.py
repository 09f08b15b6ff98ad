"""Device selection for every chapter: cuda → mps → cpu, overridable.

Chapters never pick a device themselves; they call :func:`pick_device` with their ``device`` parameter
(papermill injects it; the runner's ``--device`` sets it, resolved, so the cache key names the real device). torch
is imported only when a device is picked: the machinery imports no science at import time.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ALLOWED = ("auto", "cpu", "cuda", "mps")


def pick_device(requested: str | None = "auto") -> torch.device:
    """Return the torch device to run on.

    ``requested`` is one of ``auto``, ``cpu``, ``cuda``, ``mps`` (``None`` means ``auto``). ``auto`` honours
    the environment variable ``DLTHEORY_DEVICE`` first, then takes cuda, then mps, then cpu. Asking for an
    accelerator that is absent raises an error naming the devices that are available here.
    """
    import torch

    if requested is None:
        requested = "auto"
    if not isinstance(requested, str) or requested.split(":")[0] not in ALLOWED:
        raise ValueError(f"unknown device {requested!r}; use one of {', '.join(ALLOWED)}")
    if requested == "auto":
        env = os.environ.get("DLTHEORY_DEVICE", "").strip()
        if env and env != "auto":
            return pick_device(env)
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = requested.split(":")[0]
    available = available_devices()
    if kind not in available:
        raise RuntimeError(
            f"device {requested!r} is not available on this machine; available: {', '.join(available)} "
            "(use --device auto to pick the best one)"
        )
    return torch.device(requested)


def available_devices() -> list[str]:
    """The device kinds torch can use on this machine."""
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out
