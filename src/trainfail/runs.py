"""Executing runs and reading them back.

Each run writes results/runs/<run id>/ atomically: metrics.csv (+ checksum), summary.json,
meta.json (settings, seed, device, versions, git commit, wall time, diverged flag and step) and,
when asked, model.pt (a state dict, read back with weights_only=True). A shard job skips runs
already complete, so a killed job resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import provenance, store, train
from .config import run_id
from .context import RunEnv


@dataclass
class RunRecord:
    run_id: str
    settings: dict
    meta: dict
    summary: dict
    metrics: pd.DataFrame
    path: Path

    @property
    def diverged(self) -> bool:
        return bool(self.meta.get("diverged"))

    def state_dict(self) -> dict:
        return torch.load(self.path / "model.pt", map_location="cpu", weights_only=True)


def run_dir(results: Path, rid: str) -> Path:
    return Path(results) / "runs" / rid


def is_complete(results: Path, settings: dict) -> bool:
    meta = run_dir(results, run_id(settings)) / "meta.json"
    if not meta.exists():
        return False
    try:
        return store.read_json(meta).get("settings_hash") == run_id(settings)
    except (OSError, json.JSONDecodeError):
        return False


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def execute(settings: dict, env: RunEnv) -> train.RunResult:
    task = settings.get("task", "train")
    if task == "train":
        return train.train(settings, env.dataset(settings["dataset"]), env.device)
    from . import tuning

    if task == tuning.TASK:
        return tuning.execute(settings, env)
    from . import experiments  # here: experiment modules import this module (final_eval)

    return experiments.get(task).execute(settings, env)


def run_one(settings: dict, env: RunEnv, results: Path) -> dict:
    """Execute one run and store it; returns its meta record. A crash inside the run is an error;
    a NaN/inf loss is not: it is recorded as diverged."""
    rid = run_id(settings)
    start = time.perf_counter()
    result = execute(settings, env)
    meta = {
        "run_id": rid,
        "settings_hash": rid,
        "settings": settings,
        "seed": settings.get("seed"),
        "diverged": result.diverged,
        "diverged_step": result.diverged_step,
        "wall_time": time.perf_counter() - start,
        "device": str(env.device),
        "device_name": provenance.device_name(env.device),
        "versions": provenance.versions(),
        "git": provenance.git_state(),
        "determinism": provenance.determinism(),
        "host": provenance.host(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    def fill(tmp: Path) -> None:
        store.write_table(pd.DataFrame(result.rows), tmp / "metrics.csv")
        store.write_json(tmp / "summary.json", _finite(result.summary))
        if settings.get("save_model") and result.model is not None:
            state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
            store._atomic(tmp / "model.pt", lambda f: torch.save(state, f))
        store.write_json(tmp / "meta.json", _finite(meta))  # last: its presence means complete

    store.write_dir(run_dir(results, rid), fill)
    return meta


def run_shard(settings_list: list[dict], device: str, results: Path, data_dir: Path,
              manifest: Path | None = None, threads: int | None = None) -> list[dict]:
    if threads:
        torch.set_num_threads(threads)
    env = RunEnv(provenance.resolve_device(device), Path(data_dir), Path(results) / "data")
    rows = []
    for settings in settings_list:
        rid = run_id(settings)
        if is_complete(results, settings):
            meta = store.read_json(run_dir(results, rid) / "meta.json")
            status = "reused"
        else:
            meta = run_one(settings, env, results)
            status = "trained"
        rows.append({"run_id": rid, "status": status, "diverged": meta.get("diverged"),
                     "wall_time": meta.get("wall_time")})
        print(f"[trainfail] run {rid} {status}{' (diverged)' if meta.get('diverged') else ''} "
              f"in {meta.get('wall_time', 0):.2f}s", flush=True)
    if manifest:
        store.write_json(manifest, {"runs": rows, "device": str(env.device)})
    return rows


def load_run(results: Path, rid: str) -> RunRecord:
    path = run_dir(results, rid)
    meta_path = path / "meta.json"
    if not meta_path.exists():
        shards = [p for p in sorted((Path(results) / "shards").glob("*.json"))
                  if rid in p.read_text()] if (Path(results) / "shards").exists() else []
        hint = (f"; its shard finished, so the run directory was removed afterwards: delete {shards[0]} "
                "and run snakemake again to retrain it") if shards else ""
        raise FileNotFoundError(f"run {rid} has not finished: {meta_path} is missing{hint}")
    meta = store.read_json(meta_path)
    return RunRecord(rid, meta["settings"], meta, store.read_json(path / "summary.json"),
                     store.read_table(path / "metrics.csv"), path)


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


def final_eval(record: RunRecord) -> dict:
    """The run's last full evaluation (train/val loss and accuracy); for a diverged run, its step-0
    evaluation (DIVERGED_POLICY)."""
    m = record.metrics
    if "train_loss" not in m:
        return {c: float("nan") for c in EVAL_COLUMNS}
    evals = m.dropna(subset=["train_loss"])
    finite = evals[np.isfinite(evals["train_loss"].to_numpy(float))]
    if finite.empty:
        return {c: float("nan") for c in EVAL_COLUMNS}
    row = finite.iloc[0] if record.diverged else finite.iloc[-1]
    return {c: float(row.get(c, float("nan"))) for c in EVAL_COLUMNS}


def load_runs(results: Path, run_ids: list[str]) -> list[RunRecord]:
    return [load_run(results, rid) for rid in run_ids]
