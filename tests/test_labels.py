"""Labels travel with runs: runs() labels them, the plan keeps the labels per experiment and out of
the run id, the analysis reads one record per (run, labels) pair."""

import pandas as pd
import pytest

from trainfail.core import contract, run_record, store
from trainfail.core.config import load_yaml, merge, run_id, validate
from trainfail.pipeline.plan import make_plan

from .repo_copy import ROOT


def smoke() -> dict:
    return validate(merge(load_yaml(ROOT / "config.yaml"), load_yaml(ROOT / "presets/smoke.yaml")),
                    ROOT / "workflow/schemas/config.schema.yaml")


def test_labels_stay_out_of_the_settings_and_the_run_id():
    settings = {"dataset": "digits", "seed": 0}
    run = contract.labelled(settings, arm="tuned")
    assert run == settings and run.labels == {"arm": "tuned"} and contract.labels_of(settings) == {}
    assert run_id({"task": "train", **run}) == run_id({"task": "train", **settings})
    assert type({**run}) is dict  # a copy is plain settings: the labels cannot leak into a run id


def test_the_plan_keeps_labels_per_experiment_for_a_shared_run():
    """momentum's same-lr runs are optimizer_schedule's grid cells: one run, labelled by each
    experiment in its own way; and one momentum run is in two of its arms: two labels."""
    plan = make_plan(smoke(), ["optimizer_schedule", "momentum"])
    shared = set(plan.by_experiment["optimizer_schedule"]) & set(plan.by_experiment["momentum"])
    assert shared
    for rid in shared:
        assert {label["group"] for label in plan.labels_of("optimizer_schedule", rid)} <= {"grid", "sweep", "tuned"}
        assert all("group" not in label for label in plan.labels_of("momentum", rid))
    twice = [rid for rid in plan.by_experiment["momentum"] if len(plan.labels_of("momentum", rid)) == 2]
    assert twice and all(plan.labels_of("momentum", rid) == [{"arm": "same_lr"}, {"arm": "effective_step"}]
                         for rid in twice)
    # the pairs follow runs(): every run of the experiment, a pair per distinct label
    assert list(dict.fromkeys(rid for rid, _ in plan.labels["momentum"])) == plan.by_experiment["momentum"]
    assert len(plan.labels["momentum"]) == len(plan.by_experiment["momentum"]) + len(twice)
    assert all(labels == {} for _, labels in plan.labels["momentum"][:2])  # the toy runs: plain settings


def test_labels_that_are_not_json_are_refused_with_the_experiment(monkeypatch):
    from trainfail.experiments import warmup_large_batch as exp

    monkeypatch.setattr(exp, "runs", lambda cfg, ctx: [contract.labelled(
        {"task": "train", "dataset": "digits", "model": {"arch": "mlp"}, "optimizer": {"name": "sgd", "lr": 0.1},
         "batch_size": 32, "epochs": 1, "seed": 0}, variant={1, 2})])
    with pytest.raises(TypeError, match="warmup_large_batch.runs\\(\\): labels .* do not survive JSON"):
        make_plan(smoke(), [exp.ID])


def test_an_analysis_reads_a_record_per_run_and_labels(tmp_path):
    for rid in ("a", "b"):
        store.write_json(tmp_path / "runs" / rid / "meta.json", {"settings": {"seed": 0, "id": rid}})
        store.write_json(tmp_path / "runs" / rid / "summary.json", {})
        store.write_table(pd.DataFrame({"step": [0]}), tmp_path / "runs" / rid / "metrics.csv")
    got = run_record.load_labelled(tmp_path, [["a", {"arm": "x"}], ["b", {}], ["a", {"arm": "y"}]])
    assert [(r.run_id, r.labels) for r in got] == [("a", {"arm": "x"}), ("b", {}), ("a", {"arm": "y"})]
    assert got[0].metrics is got[2].metrics  # the run is read once
