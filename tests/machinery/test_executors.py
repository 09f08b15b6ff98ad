"""Running chapters on Dask (``dltheory.machinery.executors``): a LocalCluster with two workers gives exactly the
results of the local pool; an unreachable scheduler fails fast naming its address; a worker killed in the middle
of a task leaves no half-written output; the default path never imports Dask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from dltheory.machinery import executors, runner
from dltheory.machinery.cli import main

from .books import TINY, make_book

distributed = pytest.importorskip("distributed", reason="the cluster extras are installed by `make test`")


def _results(out, slug="tiny"):
    """Values and claims of a run, from its results JSON or, when a claim failed, its failed JSON."""
    paths = runner.output_paths(slug, out)
    data = json.loads((paths["json"] if paths["json"].is_file() else paths["failed_json"]).read_text())
    return data["values"], [{k: c[k] for k in ("id", "value", "holds")} for c in data["claims"]]


@pytest.fixture(scope="module")
def local_cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster:
        yield cluster


def test_parse_cluster_and_slurm_options():
    assert executors.parse_cluster(None) == ("local", None) == executors.parse_cluster("local")
    assert executors.parse_cluster("tcp://10.1.2.3:8786") == ("tcp", "tcp://10.1.2.3:8786")
    assert executors.parse_cluster("slurm") == ("slurm", None)
    with pytest.raises(ValueError, match="use local, tcp://HOST:PORT"):
        executors.parse_cluster("kubernetes")
    with pytest.raises(ValueError, match="HH:MM:SS"):
        executors.SlurmOptions(walltime="2h")
    with pytest.raises(ValueError, match="--slurm-jobs must be a positive integer"):
        executors.SlurmOptions(jobs=0)


def test_slurm_job_script_asks_for_partition_gpus_and_walltime():
    pytest.importorskip("dask_jobqueue")
    cluster = executors.slurm_cluster(executors.SlurmOptions(partition="gpu", gpus_per_job=1, walltime="02:00:00",
                                                             jobs=3))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p gpu" in script and "--gres=gpu:1" in script and "#SBATCH -t 02:00:00" in script
    assert "--resources GPU=1" in script and "--nthreads 1" in script


def test_local_cluster_matches_the_local_pool(tmp_path, monkeypatch, local_cluster):
    root = make_book(tmp_path, "tiny", TINY)
    monkeypatch.setenv("DLTHEORY_ROOT", str(root))
    for seed in (0, 1):
        a, b = tmp_path / f"local-{seed}", tmp_path / f"dask-{seed}"
        runner.run_chapters(["tiny"], seed=seed, device="cpu", out=a, jobs=1, echo=lambda *_: None)
        res = runner.run_chapters(["tiny"], seed=seed, device="cpu", out=b, echo=lambda *_: None,
                                  cluster=local_cluster.scheduler_address)
        assert res[0].status in ("ran", "failed") and res[0].seed == seed
        assert _results(a) == _results(b), "Dask must give exactly the numbers of the local pool"
        if seed == 0:  # the claim holds at seed 0 only: a cache key is written for complete runs alone
            assert (b / "executed" / "tiny.key").read_text() == (a / "executed" / "tiny.key").read_text()
    # the cache decides before anything is sent
    res = runner.run_chapters(["tiny"], seed=0, device="cpu", out=tmp_path / "dask-0", echo=lambda *_: None,
                              cluster="tcp://127.0.0.1:9")
    assert res[0].status == "cached"


def test_unreachable_scheduler_fails_fast_naming_it(tmp_path, monkeypatch, capsys):
    root = make_book(tmp_path, "tiny", TINY)
    monkeypatch.setenv("DLTHEORY_ROOT", str(root))
    t0 = time.monotonic()
    rc = main(["run", "tiny", "--device", "cpu", "--build-dir", str(tmp_path / "out"), "--cluster",
               "tcp://127.0.0.1:9"])
    assert rc == 2 and time.monotonic() - t0 < 15
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err


KILLABLE = ("import os, pathlib, time\n"
            "marker = pathlib.Path(os.environ['KILL_MARKER'])\n"
            "if not marker.exists():\n"
            "    marker.write_text(str(os.getppid()))\n"
            "    time.sleep(30)\n") + TINY


def test_worker_killed_mid_task_leaves_no_half_written_output(tmp_path, monkeypatch):
    root = make_book(tmp_path, "tiny", KILLABLE)
    marker = tmp_path / "worker.pid"
    monkeypatch.setenv("DLTHEORY_ROOT", str(root))
    monkeypatch.setenv("KILL_MARKER", str(marker))
    out = tmp_path / "out"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster:
        killer = subprocess.Popen([sys.executable, "-c", (
            "import os, pathlib, signal, sys, time\n"
            f"p = pathlib.Path({str(marker)!r})\n"
            "t = time.time()\n"
            "while not (p.exists() and p.read_text()) and time.time() - t < 120: time.sleep(0.1)\n"
            f"assert not pathlib.Path({str(out / 'results' / 'tiny.json')!r}).exists()\n"
            "time.sleep(1)\nos.kill(int(p.read_text()), signal.SIGKILL)\n")])
        res = runner.run_chapters(["tiny"], device="cpu", out=out, echo=lambda *_: None,
                                  cluster=cluster.scheduler_address)
        assert killer.wait(timeout=30) == 0, "the worker was not killed mid-task"
    r = res[0]
    assert r.status in ("ran", "failed")
    if r.status == "ran":  # retried on the restarted worker: a complete, correct result
        assert _results(out)[0] == {"twice": 0}
        assert (out / "executed" / "tiny.key").is_file()
    else:  # reported failed: nothing that looks complete
        assert not (out / "results" / "tiny.json").exists() and not (out / "executed" / "tiny.key").exists()
    assert not any((out / ".staging").iterdir())


def test_the_default_path_never_imports_dask(tmp_path):
    root = make_book(tmp_path, "tiny", TINY)
    code = ("import sys\nfrom dltheory.machinery.cli import main\n"
            f"main(['run', 'tiny', '--device', 'cpu', '--build-dir', {str(tmp_path / 'out')!r}])\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'dask_jobqueue'))\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DLTHEORY_ROOT": str(root)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads((tmp_path / "out" / "results" / "tiny.json").read_text())["values"] == {"twice": 0}

