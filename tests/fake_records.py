"""Stored runs made up for a table() test: a RunRecord with the settings, labels and metrics given."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from trainfail import contract
from trainfail.config import run_id
from trainfail.records import RunRecord


def record(run: dict, metrics: dict | pd.DataFrame, summary: dict | None = None, diverged: bool = False,
           labels: dict | None = None) -> RunRecord:
    """A finished run as load_labelled gives it: settings as planned (task set), the run's labels
    (those of a contract.labelled run unless `labels` is given), metrics as a DataFrame."""
    settings = {"task": "train", **run}
    rid = run_id(settings)
    return RunRecord(rid, settings, {"settings": settings, "diverged": diverged}, summary or {}, pd.DataFrame(metrics),
                     Path("results") / "runs" / rid, labels=contract.labels_of(run) if labels is None else labels)
