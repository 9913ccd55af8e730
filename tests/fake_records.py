"""Stored runs made up for a table() test: a RunRecord with the settings, labels and metrics given."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from trainfail.core import contract, store
from trainfail.training import tuning
from trainfail.core.config import run_id
from trainfail.core.run_record import RunRecord


def record(run: dict, metrics: dict | pd.DataFrame, summary: dict | None = None, diverged: bool = False,
           labels: dict | None = None, choice: dict | None = None) -> RunRecord:
    """A finished run as load_labelled gives it: settings as planned (task set), the run's labels
    (those of a contract.labelled run unless `labels` is given), metrics as a DataFrame; a tuned
    run records the sweep's `choice` it was trained at (tuning.choice_record)."""
    settings = {"task": "train", **run}
    rid = run_id(settings)
    meta = {"settings": settings, "diverged": diverged, **({"choice": tuning.choice_record(choice)} if choice else {})}
    return RunRecord(rid, settings, meta, summary or {}, pd.DataFrame(metrics),
                     Path("results") / "runs" / rid, labels=contract.labels_of(run) if labels is None else labels)


def write_choice(results: Path, tuned: dict, sweep: list[RunRecord]) -> dict:
    """What a sweep's tune job writes under `results` for the tuned run `tuned`, from its sweep's records."""
    spec = tuning.sweep_of(tuned)
    choice = tuning.make_choice(spec, sweep)
    store.write_checked_json(Path(results) / tuning.choice_file(spec), choice)
    return choice
