import pandas as pd
import pytest

from trainfail.core import store
from trainfail.core.config import load_yaml, merge, run_id, validate
from trainfail.pipeline.plan import make_plan
from trainfail.training import stack, tuning

from .repo_copy import ROOT


def test_table_checksum_detects_corruption(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]})
    path = store.write_table(df, tmp_path / "t.csv")
    pd.testing.assert_frame_equal(store.read_table(path), df)
    path.write_text(path.read_text()[:-4])
    with pytest.raises(store.CorruptFileError, match="t.csv"):
        store.read_table(path)


def test_atomic_write_leaves_no_partial_file_on_error(tmp_path):
    def boom(tmp):
        (tmp / "x").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.write_dir(tmp_path / "run", boom)
    assert not (tmp_path / "run").exists() and not list(tmp_path.iterdir())


def test_plan_dedups_runs_and_shards_them():
    cfg = validate(merge(load_yaml(ROOT / "config.yaml"), load_yaml(ROOT / "presets/smoke.yaml")),
                   ROOT / "workflow/schemas/config.schema.yaml")
    cfg["experiments"]["batch_accuracy"]["shard_size"] = 2
    cfg["experiments"]["copy"] = {}
    plan = make_plan(cfg, ["batch_accuracy", "batch_accuracy"])
    ids = plan.by_experiment["batch_accuracy"]
    # 2 batch sizes x (2 seeds x 3 arms + 2 sweep rates x 2 tuning seeds)
    assert len(ids) == len(set(ids)) == len(plan.runs) == 20
    # a shard never splits a cell: at most shard_size runs, or one cell (a sweep's rates and tuning
    # seeds are one rate stack: stack_exact is false)
    assert plan.rates and all(len(v) <= 2 or len(plan.cells(s)) == 1 for s, v in plan.shards.items())
    assert sorted(r for s in plan.shards.values() for r in s) == sorted(ids)


def test_rate_stacks_hold_a_sweep_only_when_inexact():
    """With stack_exact false, a sweep's runs (rates x tuning seeds) are one cell in one shard, trained
    as one stack; with stack_exact true each rate is a cell of its own (bit-for-bit members)."""
    base = validate(merge(load_yaml(ROOT / "config.yaml"), load_yaml(ROOT / "presets/smoke.yaml")),
                    ROOT / "workflow/schemas/config.schema.yaml")
    for exact, stacking in ((False, True), (True, True), (False, False)):
        cfg = {**base, "stack_exact": exact, "stack": stacking}
        plan = make_plan(cfg, ["batch_accuracy"])
        assert plan.rates == (stacking and not exact)
        for spec in plan.sweeps.values():
            runs = tuning.sweep(spec["base"], spec["lrs"], spec["tuning_seeds"])
            shards = {plan.shard_of[run_id(s)] for s in runs}
            ids = {run_id(s) for s in runs}
            cells = [c for c in plan.cells(shards.pop()) if ids & {run_id(s) for s in c}]
            if plan.rates:
                assert not shards and len(cells) == 1 and ids <= {run_id(s) for s in cells[0]}
                assert stack.why_not(cells[0]) is None
            else:
                assert {len(c) for c in cells} == {len(spec["tuning_seeds"])}


def test_later_stages_wait_for_earlier_shards():
    cfg = validate(merge(load_yaml(ROOT / "config.yaml"), load_yaml(ROOT / "presets/smoke.yaml")),
                   ROOT / "workflow/schemas/config.schema.yaml")
    cfg["shard_size"] = 3
    cfg["experiments"]["bn_speedup"]["shard_size"] = 3
    plan = make_plan(cfg, ["bn_speedup"])
    first = [s for s in plan.shards if "-stage1-" not in s]
    second = [s for s in plan.shards if "-stage1-" in s]
    assert first and second
    assert all(plan.after[s] == [] for s in first)
    # stage 1: the baseline at the sweep's rate and the other variants (derived tuned runs: their
    # multiples of it); they wait for the sweeps' choice files (one sweep per data set), whose tune jobs
    # wait for the sweeps' shards
    stage1 = [plan.runs[r] for s in second for r in plan.shards[s]]
    assert {r["task"] for r in stage1} == {"tuned"} and any("derive" in r for r in stage1)
    assert len(plan.sweeps) == len(cfg["experiments"]["bn_speedup"]["datasets"])
    assert all(plan.after[s] == [] and plan.choices_for_shard(s) for s in second)
    read = {c for s in second for c in plan.choices_for_shard(s)}
    assert read == set(plan.sweeps) == set(plan.choices_for("bn_speedup"))
    assert all(set(plan.sweep_shards(sweep)) <= set(first) for sweep in plan.sweeps)


def test_checksummed_json_refuses_an_edited_file(tmp_path):
    path = store.write_checked_json(tmp_path / "choice.json", {"lr": 0.3})
    assert store.read_checked_json(path) == {"lr": 0.3}
    path.write_text(path.read_text().replace("0.3", "0.1"))
    with pytest.raises(store.CorruptFileError, match="do not match its checksum"):
        store.read_checked_json(path)


def test_json_that_does_not_parse_is_named(tmp_path):
    path = store.write_json(tmp_path / "meta.json", {"a": 1})
    assert store.read_json(path) == {"a": 1}
    for garbage in (b'{"a": 1', b"\x89PNG\x00\xff", b""):
        path.write_bytes(garbage)
        with pytest.raises(store.CorruptFileError, match=f"{path}: not valid JSON"):
            store.read_json(path)
