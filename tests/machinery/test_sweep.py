"""Seed sweeps (``dltheory.machinery.sweep``): seeds parsed with clear errors, every seed kept, claims aggregated
across seeds, a seed that raises reported as failed without stopping the others."""

from __future__ import annotations

import json

import pytest

from dltheory.machinery import sweep as S
from dltheory.machinery.cli import main

from .books import TINY, make_book


@pytest.mark.parametrize("text,seeds", [("0-4", [0, 1, 2, 3, 4]), ("3", [3]), ("0,2,5", [0, 2, 5]),
                                        ("0-1,4", [0, 1, 4])])
def test_parse_seeds(text, seeds):
    assert S.parse_seeds(text) == seeds


@pytest.mark.parametrize("text,msg", [("", "empty"), ("4-0", "reversed; write 0-4"), ("-1", "non-negative"),
                                      ("-2-3", "non-negative"), ("a", "not a seed or a range"),
                                      ("0-2,1", "twice")])
def test_parse_seeds_errors(text, msg):
    with pytest.raises(ValueError, match=msg):
        S.parse_seeds(text)


def _res(seed, value, holds, extra=None):
    return {"chapter": "c", "size": "smoke", "seed": seed, "device": "cpu", "versions": {}, "wall_s": 1.0,
            "values": {"x": value, "flag": True, **(extra or {})},
            "claims": [{"id": "k", "statement": "s", "value": value, "expected": 1.0, "tolerance": 0.5,
                        "holds": holds, "source": "src", "comparison": "within", "headline": True}]}


def test_aggregate_counts_holds_spreads_and_failures():
    agg = S.aggregate("c", {0: _res(0, 1.0, True), 1: _res(1, 2.0, False), 2: _res(2, 1.2, True), 3: None},
                      errors={3: "ValueError in the notebook: boom"}, keys={0: "a"})
    (c,) = agg["claims"]
    assert (c["holds"], c["n"], c["fails_at"], c["headline"]) == (2, 3, [1], True)
    assert (c["min"], c["median"], c["max"]) == (1.0, 1.2, 2.0)
    assert agg["values"]["x"]["median"] == 1.2 and "median" not in agg["values"]["flag"]
    assert agg["failed"] == [{"seed": 3, "error": "ValueError in the notebook: boom"}]
    assert agg["seeds"] == [0, 1, 2, 3] and agg["seeds_ok"] == [0, 1, 2]
    assert "fails at seed 1" in S.summary_line(agg) and "failed seeds: 3" in S.summary_line(agg)


CHAPTER = "if seed == 2:\n    raise RuntimeError('seed 2 breaks')\n" + TINY


def test_sweep_end_to_end_with_a_failing_seed(tmp_path, monkeypatch, capsys):
    root = make_book(tmp_path, "tiny", CHAPTER)
    monkeypatch.setenv("DLTHEORY_ROOT", str(root))
    out = tmp_path / "out"
    rc = main(["sweep", "--seeds", "0-2", "--device", "cpu", "--jobs", "2", "--build-dir", str(out)])
    assert rc == 1, "a seed that raised makes the sweep exit non-zero"
    printed = capsys.readouterr().out
    assert "tiny" in printed and "failed seeds: 2" in printed
    agg = json.loads((out / "results" / "tiny.sweep.json").read_text())
    assert agg["seeds"] == [0, 1, 2] and [f["seed"] for f in agg["failed"]] == [2]
    assert "seed 2 breaks" in agg["failed"][0]["error"]
    (claim,) = agg["claims"]
    assert (claim["holds"], claim["n"], claim["fails_at"]) == (1, 2, [1]), "a failed claim is a finding, not a crash"
    assert agg["values"]["twice"]["per_seed"] == {"0": 0, "1": 2}
    assert (out / "results" / "tiny.json").is_file(), "seed 0 is the book's own run"
    for s in (0, 1):
        kept = json.loads((out / "results" / "tiny" / f"seed-{s}.json").read_text())
        assert kept["seed"] == s
    assert not (out / "results" / "tiny" / "seed-2.json").exists()
    # a second sweep is answered by the cache for the seed that succeeded
    main(["sweep", "--seeds", "0", "--device", "cpu", "--build-dir", str(out)])
    assert "1 cached, 0 to run" in capsys.readouterr().out


def test_save_writes_the_commit_with_each_aggregate(tmp_path):
    agg = S.aggregate("c", {0: _res(0, 1.0, True)})
    (path,) = S.save({"c": agg}, tmp_path / "sweeps", commit="abc123")
    data = json.loads(path.read_text())
    assert path.name == "c.json" and data["commit"] == "abc123" and data["claims"][0]["holds"] == 1
