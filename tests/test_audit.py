"""The audit's sampling and comparison logic, and its report section, on small inputs."""

from __future__ import annotations

import math

import pandas as pd

from trainfail.pipeline import audit, report

IDS = [f"{i:016x}" for i in range(20)]


def test_sample_is_deterministic_and_grows_by_adding():
    a = audit.sample(IDS, 5)
    assert a == audit.sample(list(reversed(IDS)), 5)  # order of the input does not matter
    assert audit.sample(IDS, 8)[:5] == a  # a bigger sample keeps the smaller one
    assert audit.sample(IDS, 5, seed=1) != a
    assert audit.sample(IDS, 0) == [] and len(audit.sample(IDS, 99)) == 20


def metrics(**cols):
    base = {"step": [0, 10, 20], "loss": [2.3, 1.1, 0.5], "wall_time": [0.0, 0.1, 0.2]}
    return pd.DataFrame({**base, **cols})


def test_identical_metrics_match_and_timing_is_ignored():
    r = audit.compare(metrics(), metrics(wall_time=[0.0, 0.3, 0.9]), tolerance=0.0)
    assert r["match"] and r["max_abs_diff"] == 0.0
    assert r["ignored_columns"] == "wall_time" and "loss" in r["compared_columns"].split(";")


def test_any_difference_fails_on_the_cpu_and_is_measured():
    r = audit.compare(metrics(), metrics(loss=[2.3, 1.1, 0.5 + 1e-7]), tolerance=0.0)
    assert not r["match"] and math.isclose(r["max_abs_diff"], 1e-7, rel_tol=1e-3) and "loss" in r["note"]


def test_gpu_tolerance_is_relative_to_the_value():
    fresh = metrics(loss=[2.3 + 2e-4, 1.1, 0.5 + 5e-5])
    assert audit.compare(metrics(), fresh, tolerance=1e-4)["match"]  # 2e-4 <= 1e-4 x 2.3
    assert not audit.compare(metrics(), metrics(loss=[2.3, 1.1, 0.5 + 2e-4]), tolerance=1e-4)["match"]


def test_nan_must_diverge_again():
    nan = metrics(loss=[2.3, float("nan"), float("nan")])
    assert audit.compare(nan, nan.copy(), tolerance=0.0)["match"]
    r = audit.compare(nan, metrics(), tolerance=1e-4)
    assert not r["match"] and r["max_abs_diff"] == math.inf


def test_shape_or_column_changes_fail():
    assert not audit.compare(metrics(), metrics().iloc[:2], 0.0)["match"]
    assert not audit.compare(metrics(), metrics().rename(columns={"loss": "l"}), 0.0)["match"]


def test_tolerance_only_when_a_gpu_is_involved():
    assert audit.tolerance_for(["cpu", "cpu"], 1e-4) == 0.0
    assert audit.tolerance_for(["cuda", "cpu"], 1e-4) == 1e-4
    assert audit.tolerance_for(["cpu", "cuda:0"], 1e-4) == 1e-4


def test_timing_columns():
    assert all(audit.is_timing_column(c) for c in ["wall_time", "time_per_update", "time_per_epoch", "seconds"])
    assert not any(audit.is_timing_column(c) for c in ["step", "val_acc", "lr", "timestep_loss"])


def test_report_section_lists_each_run():
    table = pd.DataFrame([{"run_id": "abc", "experiment_task": "train", "seed": 0, "device": "cpu",
                           "stored_device": "cpu", "match": True, "max_abs_diff": 0.0, "tolerance": 0.0,
                           "rows": 3, "compared_columns": "loss", "ignored_columns": "", "note": ""},
                          {"run_id": "def", "experiment_task": "train", "seed": 1, "device": "cpu",
                           "stored_device": "cpu", "match": False, "max_abs_diff": 0.5, "tolerance": 0.0,
                           "rows": 3, "compared_columns": "loss", "ignored_columns": "", "note": "differs in loss"}])
    html = report.audit_section(table, {"audit": {"sample": 2, "tolerance": 1e-4}})
    assert "1 of 2 match" in html and "abc" in html and "differs in loss" in html


def test_audit_reruns_a_stored_run_and_catches_a_doctored_one(tmp_path):
    """End to end without Snakemake: one tiny real run, audited; then its stored metrics are
    rewritten (checksum and all, so only a re-run can tell) and the audit must say so."""
    import torch

    from trainfail.core import provenance, store
    from trainfail.pipeline import execution
    from trainfail.core.config import run_id
    from trainfail.training.context import RunEnv
    from trainfail.core.run_settings import complete

    torch.set_num_threads(1)
    settings = {"task": "train", "dataset": "digits", "model": {"arch": "mlp", "hidden": [8]},
                "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 128, "epochs": 1, "seed": 3,
                "eval_points": 2, "log_points": 5}
    settings = complete(settings)
    env = RunEnv(provenance.resolve_device("cpu"), tmp_path / "data", tmp_path / "results" / "data")
    execution.run_one(settings, env, tmp_path / "results")
    rid = run_id(settings)

    table = audit.audit_runs(tmp_path / "results", [rid], 1, 1e-4, "cpu", tmp_path / "data")
    assert table["match"].tolist() == [True] and table["max_abs_diff"].tolist() == [0.0]

    path = execution.run_dir(tmp_path / "results", rid) / "metrics.csv"
    doctored = store.read_table(path)
    doctored.loc[doctored.index[-1], "train_loss"] *= 0.9
    store.write_table(doctored, path)
    table = audit.audit_runs(tmp_path / "results", [rid], 1, 1e-4, "cpu", tmp_path / "data")
    assert table["match"].tolist() == [False] and table["max_abs_diff"].iloc[0] > 0
    assert "train_loss" in table["note"].iloc[0]
    assert not any(p.name.startswith(".audit-") for p in (tmp_path / "results").iterdir())  # scratch removed


def test_summary_values_are_compared_too():
    stored = {"sharpness": [1.5, 2.0], "note": "x", "wall_time": 3.0, "nested": {"acc": 0.9}}
    same = audit.compare(audit.summary_frame(stored), audit.summary_frame({**stored, "wall_time": 9.0}), 0.0)
    assert same["match"] and "summary.wall_time" in same["ignored_columns"]
    other = audit.compare(audit.summary_frame(stored), audit.summary_frame({**stored, "sharpness": [1.5, 2.5]}), 0.0)
    assert not other["match"] and other["max_abs_diff"] == 0.5 and "summary.sharpness.1" in other["note"]
    both = audit.combine(same, other)
    assert not both["match"] and both["max_abs_diff"] == 0.5
