"""Labels travel with runs: runs() labels them, the plan keeps the labels per experiment and out of
the run id, the analysis reads one record per (run, labels) pair."""

import pandas as pd
import pytest

from trainfail import contract, records, store
from trainfail.config import load_yaml, merge, run_id, validate
from trainfail.plan import make_plan

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


def test_labels_that_are_not_json_are_refused_with_the_experiment(monkeypatch):
    from trainfail.experiments import warmup_large_batch as exp

    monkeypatch.setattr(exp, "runs", lambda cfg, ctx: [contract.labelled({"seed": 0}, variant={1, 2})])
    with pytest.raises(TypeError, match="warmup_large_batch.runs\\(\\): labels .* do not survive JSON"):
        make_plan(smoke(), [exp.ID])


def test_an_analysis_reads_a_record_per_run_and_labels(tmp_path):
    for rid in ("a", "b"):
        store.write_json(tmp_path / "runs" / rid / "meta.json", {"settings": {"seed": 0, "id": rid}})
        store.write_json(tmp_path / "runs" / rid / "summary.json", {})
        store.write_table(pd.DataFrame({"step": [0]}), tmp_path / "runs" / rid / "metrics.csv")
    got = records.load_labelled(tmp_path, [["a", {"arm": "x"}], ["b", {}], ["a", {"arm": "y"}]])
    assert [(r.run_id, r.labels) for r in got] == [("a", {"arm": "x"}), ("b", {}), ("a", {"arm": "y"})]
    assert got[0].metrics is got[2].metrics  # the run is read once
