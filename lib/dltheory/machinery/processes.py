"""Cancelling a run: SIGINT or SIGTERM (Ctrl-C, CI cancellation, Slurm preemption) stops every process a run started.

A chapter runs in a pool worker, which starts a Jupyter kernel in a session of its own (``jupyter_client`` launches
kernels with ``start_new_session``), so neither a signal to the runner's process group nor the death of the runner
reaches the kernel. The runner therefore

1. turns SIGINT and SIGTERM into :class:`Cancelled` while a run is in flight (:func:`cancel_on_signals`);
2. sends SIGTERM to each worker, whose handler (:func:`worker_init`) raises ``KeyboardInterrupt`` inside papermill,
   so nbclient shuts its kernel down and the worker removes its staging folder;
3. after a grace period kills what is left of each worker's process tree, kernel included
   (:func:`kill_tree`, read from ``/proc``).

Outputs are moved into place only when a chapter succeeded and its cache key is written last, so a cancelled run
never leaves an output that looks complete; the next run removes staging folders whose process is gone
(:func:`remove_stale_staging`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path


class Cancelled(Exception):
    """The run was cancelled by a signal; ``signum`` is SIGINT or SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(f"cancelled by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_cancelled(signum, frame):
    raise Cancelled(signum)


@contextlib.contextmanager
def cancel_on_signals():
    """Inside the block, SIGINT and SIGTERM raise :class:`Cancelled` (in the main thread); outside, the previous
    handlers are back."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise_cancelled) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"cancelled by {signal.Signals(signum).name}")


def worker_init() -> None:
    """Initializer of a pool worker: SIGTERM interrupts the chapter like Ctrl-C does, so papermill's clean-up (shut
    the kernel down) and the runner's (remove the staging folder) run. SIGINT from a terminal reaches the worker's
    process group too and does the same."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def alive(pid: int) -> bool:
    """Is process ``pid`` running (a zombie counts as gone)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), read from ``/proc``; empty where there is none."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(pids: list[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM every process in ``pids`` and below them, wait up to ``grace_s`` seconds, then SIGKILL what is left.
    Returns the pids that had to be killed."""
    tree = list(dict.fromkeys(p for pid in pids for p in (pid, *descendants(pid))))
    for p in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in tree):
        time.sleep(0.1)
    tree += [d for p in tree if alive(p) for d in descendants(p) if d not in tree]
    killed = [p for p in tree if alive(p)]
    for p in killed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    return killed


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove ``<out>/.staging/<slug>.<pid>.<ns>`` folders whose process is gone (left by a killed run)."""
    staging = Path(out) / ".staging"
    removed = []
    if not staging.is_dir():
        return removed
    for d in staging.iterdir():
        parts = d.name.rsplit(".", 2)
        pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
        if pid is None or not alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed
