"""Tests of the library core: device, seeding, sizes, records and results JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dltheory.machinery.claims import ClaimFailed, check, provenance_html, start_chapter, write_json_atomic
from dltheory.machinery.device import pick_device
from dltheory.machinery.sizes import resolve_size

PRESETS = {"smoke": {"n": 10, "eta": 0.1, "etas": [0.1, 0.2], "act": "tanh"},
           "full": {"n": 1000, "eta": 0.01, "etas": [0.1], "act": "tanh"}}


def test_pick_device_cpu_and_auto(monkeypatch):
    assert pick_device("cpu").type == "cpu"
    monkeypatch.setenv("DLTHEORY_DEVICE", "cpu")
    assert pick_device("auto").type == "cpu"
    assert pick_device(None).type == "cpu"


def test_pick_device_errors():
    with pytest.raises(ValueError, match="use one of auto, cpu, cuda, mps"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="available: cpu"):
            pick_device("cuda")


def test_resolve_size():
    cfg = resolve_size("smoke", PRESETS)
    assert cfg.size == "smoke" and cfg.n == 10 and cfg.etas == [0.1, 0.2]
    assert resolve_size("full", PRESETS, n=5).n == 5


@pytest.mark.parametrize("size,msg", [("huge", "allowed sizes: full, smoke"), ("Smoke", "allowed sizes")])
def test_resolve_size_unknown(size, msg):
    with pytest.raises(ValueError, match=msg):
        resolve_size(size, PRESETS)


def test_resolve_size_bad_values():
    with pytest.raises(TypeError, match="size must be a string"):
        resolve_size(1, PRESETS)
    with pytest.raises(ValueError, match="must be a positive finite number"):
        resolve_size("smoke", PRESETS, n=-3)
    with pytest.raises(ValueError, match="must be a positive finite number"):
        resolve_size("smoke", PRESETS, etas=[0.1, float("nan")])
    with pytest.raises(ValueError, match="unknown setting 'm'"):
        resolve_size("smoke", PRESETS, m=3)
    with pytest.raises(ValueError, match=r"must lie in \[0, 0.05\]"):
        resolve_size("smoke", PRESETS, bounds={"eta": (0, 0.05)})


def test_check_comparisons():
    assert check(1.05, 1.0, 0.1) and not check(1.2, 1.0, 0.1)
    assert check(3.0, 2.0, 0.0, "at_least") and not check(1.0, 2.0, 0.5, "at_least")
    assert check(1.0, 2.0, 0.0, "at_most") and not check(float("nan"), 2.0, 1.0, "at_most")
    with pytest.raises(ValueError, match="unknown comparison"):
        check(1, 1, 0, "about")
    with pytest.raises(ValueError, match="tolerance"):
        check(1, 1, -1)


def test_results_json_schema(tmp_path):
    run = start_chapter("demo-chapter", size="smoke", seed=0, device="cpu")
    assert run.value("eta", torch.tensor(0.02)) == pytest.approx(0.02)
    run.value("label", "2/eta")
    run.claim("c1", "a true claim", value=np.float64(0.98), expected=1.0, tolerance=0.1, source="paper, Fig. 1",
              name="ratio")
    data = run.finish(results_dir=tmp_path, display=False)
    on_disk = json.loads((tmp_path / "demo-chapter.json").read_text())
    assert on_disk == data
    assert list(on_disk) == ["chapter", "size", "seed", "device", "versions", "wall_s", "values", "claims"]
    assert {"python", "torch", "dltheory"} <= set(on_disk["versions"])
    assert on_disk["values"] == {"eta": pytest.approx(0.02), "label": "2/eta", "ratio": pytest.approx(0.98)}
    c = on_disk["claims"][0]
    assert {k: c[k] for k in ("id", "statement", "value", "expected", "tolerance", "holds", "source")} == {
        "id": "c1", "statement": "a true claim", "value": pytest.approx(0.98), "expected": 1.0,
        "tolerance": 0.1, "holds": True, "source": "paper, Fig. 1"}
    assert "1 of 1 claims held" in provenance_html(data)


def test_failed_claim_raises_after_writing(tmp_path):
    run = start_chapter("demo", size="smoke", seed=1, device="cpu")
    run.claim("bad", "a false claim", value=2.0, expected=1.0, tolerance=0.1, source="nowhere, Eq. 0")
    run.claim("good", "a true claim", value=1.0, expected=1.0, tolerance=0.1, source="nowhere, Eq. 0")
    with pytest.raises(ClaimFailed, match="bad: value 2"):
        run.finish(results_dir=tmp_path, display=False)
    data = json.loads((tmp_path / "demo.json").read_text())
    assert [c["holds"] for c in data["claims"]] == [False, True]


def test_record_rejects_bad_input():
    with pytest.raises(ValueError, match="lower-case letters"):
        start_chapter("Bad Slug", size="smoke", seed=0, device="cpu")
    run = start_chapter("demo", size="smoke", seed=0, device="cpu")
    with pytest.raises(ValueError, match="identifier"):
        run.value("not a name", 1)
    with pytest.raises(TypeError, match="scalar"):
        run.value("arr", torch.ones(3))
    with pytest.raises(ValueError, match="finite"):
        run.value("x", float("inf"))
    with pytest.raises(ValueError, match="needs a source"):
        run.claim("c", "s", 1.0, 1.0, 0.1, source="")
    run.claim("c", "s", 1.0, 1.0, 0.1, source="x")
    with pytest.raises(ValueError, match="used twice"):
        run.claim("c", "s", 1.0, 1.0, 0.1, source="x")


def test_write_json_atomic_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind
