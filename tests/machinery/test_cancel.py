"""Cancelling a run (``dltheory.machinery.processes``): SIGTERM or SIGINT to ``python -m dltheory run`` stops its pool
worker and the Jupyter kernel within seconds, leaves no output that looks complete and says what was cancelled; the
next run removes stale staging folders. Tested with a real subprocess and a real signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dltheory.machinery import processes

from .books import make_book

SLOW = ("import os, pathlib, time\n"
        "pathlib.Path(os.environ['SLOW_PID_FILE']).write_text(f'{os.getpid()} {os.getppid()}')\n"
        "while True:\n    sum(i * i for i in range(10**5))\n")


def _wait_for(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_worker_and_kernel(tmp_path, sig):
    root, out, pid_file = make_book(tmp_path, "slow", SLOW), tmp_path / "out", tmp_path / "kernel.pid"
    env = {**os.environ, "DLTHEORY_ROOT": str(root), "SLOW_PID_FILE": str(pid_file), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dltheory", "run", "slow", "--device", "cpu", "--build-dir",
                             str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_for(lambda: pid_file.is_file() and pid_file.read_text().strip(), 90), "the kernel never started"
        kernel, worker = map(int, pid_file.read_text().split())
        assert processes.alive(kernel) and processes.alive(worker)
        t0 = time.monotonic()
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 15, "the runner took too long to stop"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, output
    assert "cancelled" in output and "slow (seed 0)" in output
    assert _wait_for(lambda: not processes.alive(kernel) and not processes.alive(worker), 5), \
        "the worker or the kernel outlived the runner"
    assert not (out / "results" / "slow.json").exists() and not (out / "executed" / "slow.key").exists()
    assert not (out / ".staging").exists() or not any((out / ".staging").iterdir())


def test_next_run_removes_stale_staging(tmp_path):
    stage = tmp_path / ".staging"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (stage / f"slow.{dead.pid}.123").mkdir(parents=True)
    (stage / f"live.{os.getpid()}.456").mkdir(parents=True)
    removed = processes.remove_stale_staging(tmp_path)
    assert [p.name for p in removed] == [f"slow.{dead.pid}.123"]
    assert (stage / f"live.{os.getpid()}.456").is_dir()


def test_kill_tree_kills_a_child_in_its_own_session():
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time\n"
                               "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
                               "start_new_session=True)\nprint(c.pid, flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert child in processes.descendants(parent.pid)
    processes.kill_tree([parent.pid], grace_s=2)
    parent.wait(timeout=5)
    assert _wait_for(lambda: not processes.alive(child), 5)
