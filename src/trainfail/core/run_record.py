"""What a finished run is, and the one policy for runs that diverged.

`RunResult` is what training returns (train.train, stack.train_stack, an experiment's execute);
`RunRecord` is a stored run read back (load_run, below). Both live here, apart from the executor, so
that experiment modules, the executor and the stacked engine import them without importing each
other.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from trainfail.core import store

if TYPE_CHECKING:  # torch is imported where a model is loaded: a tune job reads runs' files only
    from torch import nn


@dataclass
class RunResult:
    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    model: nn.Module | None = None
    diverged: bool = False
    diverged_step: int | None = None
    choice: dict | None = None  # the sweep's choice it trained at (tuning.choice_record): meta.json's `choice`


@dataclass
class RunRecord:
    run_id: str
    settings: dict
    meta: dict
    summary: dict
    metrics: pd.DataFrame
    path: Path
    # what the experiment's runs() labelled this run with (contract.labelled): arm, group, variant, ...
    labels: dict = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return bool(self.meta.get("diverged"))

    def state_dict(self) -> dict:
        import torch

        return torch.load(self.path / "model.pt", map_location="cpu", weights_only=True)


EVAL_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc")

# The one diverged-run policy, used by every experiment. A run whose loss became NaN/inf is kept
# (diverged = true in every table) and scored as having made no progress, never dropped: dropping
# diverged seeds would leave only the lucky ones and push verdicts towards "reproduced".
#   - end-of-run loss and accuracy: its step-0 evaluation (the untrained network), final_eval()
#   - steps to reach a target: never (NEVER)
#   - an early loss spike ratio: SPIKE_CAP, above any finite ratio
#   - measurements of the trained point (Hessian, sharpness): none exists; such claims use the
#     finished runs and say in their note how many diverged
DIVERGED_POLICY = ("a diverged run counts as no progress: its step-0 (untrained) evaluation, "
                   "never reaching a target, the spike cap; it is never dropped")
DIVERGED_SHORT = "diverged runs scored at step 0"
NEVER = float("inf")
SPIKE_CAP = 1e3


def final_eval(record: RunRecord, columns: tuple[str, ...] = EVAL_COLUMNS) -> dict:
    """The run's last full evaluation (train/val loss and accuracy, or other `columns` of that row,
    NaN where absent); for a diverged run, its step-0 evaluation (DIVERGED_POLICY)."""
    m = record.metrics
    if "train_loss" not in m:
        return {c: float("nan") for c in columns}
    evals = m.dropna(subset=["train_loss"])
    finite = evals[np.isfinite(evals["train_loss"].to_numpy(float))]
    if finite.empty:
        return {c: float("nan") for c in columns}
    row = finite.iloc[0] if record.diverged else finite.iloc[-1]
    return {c: float(row.get(c, float("nan"))) for c in columns}


def run_dir(results: Path, rid: str) -> Path:
    return Path(results) / "runs" / rid


def load_run(results: Path, rid: str) -> RunRecord:
    path = run_dir(results, rid)
    meta_path = path / "meta.json"
    # Snakemake, building its DAG, finds a finished shard whose run is gone or damaged (its files
    # parsed, metrics.csv checked against its checksum) and trains it again (common.smk)
    retrain = "run snakemake again to retrain it (README: Retraining runs)"
    if not meta_path.exists():
        raise FileNotFoundError(f"run {rid} has not finished: {meta_path} is missing; {retrain}")
    try:
        meta = store.read_json(meta_path)
        return RunRecord(rid, meta["settings"], meta, store.read_json(path / "summary.json"),
                         store.read_table(path / "metrics.csv"), path)
    except store.CorruptFileError as e:
        raise store.CorruptFileError(f"{e}\nrun {rid} is damaged ({path}): {retrain}") from None


def load_runs(results: Path, run_ids: list[str]) -> list[RunRecord]:
    return [load_run(results, rid) for rid in run_ids]


def load_labelled(results: Path, runs: list) -> list[RunRecord]:
    """An analysis's records: one per (run id, labels) pair of its job (plan.Plan.labels), in that
    order, each run read once; a run the experiment uses under two labels comes once per label."""
    loaded: dict[str, RunRecord] = {}
    out = []
    for rid, labels in runs:
        if rid not in loaded:
            loaded[rid] = load_run(results, rid)
        out.append(replace(loaded[rid], labels=dict(labels)))
    return out
