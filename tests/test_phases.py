"""The phase timer (trainfail.core.phases): nested phases counted exclusively, written per job."""

from __future__ import annotations

import json
import time
from pathlib import Path

from trainfail import __main__ as cli
from trainfail.core import phases


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_nested_phases_are_counted_to_the_innermost(tmp_path):
    phases.begin()
    with phases.phase("outer"):
        busy(0.05)
        with phases.phase("inner"):
            busy(0.15)
    with phases.phase("outer"):
        pass
    snap = phases.snapshot()
    outer, inner = snap["phases"]["outer"], snap["phases"]["inner"]
    assert outer["calls"] == 2 and inner["calls"] == 1
    assert inner["cpu"] >= 0.14 and 0.04 <= outer["cpu"] < 0.14  # the inner phase's time is not the outer's
    assert abs(snap["cpu"] - sum(p["cpu"] for p in snap["phases"].values())) < 1e-5
    assert snap["phases"]["start_up"]["calls"] == 1
    phases.count("examples", 3)
    phases.dump(tmp_path / "a" / "job.json", command="x")
    written = json.loads((tmp_path / "a" / "job.json").read_text())
    assert written["command"] == "x" and written["counts"] == {"examples": 3} and "inner" in written["phases"]


def test_each_job_writes_its_phases_beside_the_benchmarks(monkeypatch):
    args = cli.argparse.Namespace
    monkeypatch.delenv("TRAINFAIL_PHASES", raising=False)
    assert cli.phases_file(args(command="train", manifest="r/shards/bn-000.json", results="r")) == \
        Path("r/benchmarks/phases/train/bn-000.json")
    assert cli.phases_file(args(command="analyze", experiment="momentum", claims="r/claims/momentum.csv",
                                results="r")) == Path("r/benchmarks/phases/analyze/momentum.json")
    assert cli.phases_file(args(command="prepare-data", out="r/data/digits.pt")) == \
        Path("r/benchmarks/phases/prepare_data/digits.json")
    assert cli.phases_file(args(command="train", manifest=None, results="r")) is None  # by hand, no manifest
    monkeypatch.setenv("TRAINFAIL_PHASES", "0")
    assert cli.phases_file(args(command="tune", out="r/tuning/x.json", results="r")) is None


def test_jobs_on_the_longest_chain_start_first():
    from trainfail.pipeline.plan import Plan, job_priorities

    plan = Plan(shards={"a-000": ["r1"], "a-stage1-000": ["r2"], "c-000": ["r3"]},
                after={"a-000": [], "a-stage1-000": ["a-000"], "c-000": []})
    shards, sweeps = job_priorities(plan, {"a-000": 1.0, "a-stage1-000": 10.0, "c-000": 5.0})
    # a-000 is short, but a long shard waits for it: it starts before c-000, which nothing waits for
    assert shards["a-000"] == 100 > shards["a-stage1-000"] > shards["c-000"] > 0 and sweeps == {}
