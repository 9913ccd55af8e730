"""The reproducibility audit: re-run a sample of finished runs and compare their metrics.

A deterministic sample of the finished runs (the same config gives the same sample) is trained
again from its stored settings into a scratch directory, with the stored run's thread count and
the way it was trained (a run trained in a stack is re-trained with the same stack, meta.json's
`stack`; a run trained alone, alone),
and each re-run's metrics.csv and summary.json (what experiments measure after training:
spectra, sharpness, test accuracies) are compared value by value with the stored ones. On the CPU a run
must reproduce bit for bit (tolerance 0: the same stack, the same kernels); when either side ran on a GPU, each number may differ
by at most `tolerance` x max(1, |stored value|) (GPU kernels may reduce in another order).
Columns that measure time (wall_time, time_per_update, ...) are not compared: they are
measurements of the machine, not results; results/audit.csv lists what was compared.

The canary (`check` = "alone"): the first sampled run that was trained in a stack is trained once
more *alone*, as train.train trains a single run, and compared with its stored metrics. Where this
CPU's kernels agree (stack.exact_here) and the stack was exact (meta.json's `stack.exact`: the
config's `stack_exact`) it must match bit for bit, the whole run; elsewhere (another CPU's kernels,
or a stack that batched every layer: grouped convolutions, float32 rounding instead of bit for bit)
a stacked member equals its run alone only before its first update (stack.py), so its first row is
compared, to stack.GRADIENT_TOLERANCE, and the row's note says which tolerance replaced exactness
and why. A stacked engine that mixed members' data or weights fails it, though the rerun with the
same stack would repeat the mistake and match. The rerun is trained with the stored stack's
exactness, so on the CPU it stays bit for bit either way.
"""

from __future__ import annotations

import hashlib
import math
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

AUDIT_COLUMNS = ["run_id", "check", "experiment_task", "seed", "device", "stored_device", "match", "max_abs_diff",
                 "tolerance", "rows", "compared_columns", "ignored_columns", "note"]
RERUN, ALONE = "rerun", "alone"  # `check`: retrained as it was (with its stack), or the canary

_TIME_COLUMN = re.compile(r"(^|_)(time|times|seconds|secs)(_|$)")


def sample(run_ids: list[str], n: int, seed: int = 0) -> list[str]:
    """n run ids chosen by hashing (seed, id): stable under reordering, and a bigger n keeps the
    smaller sample (so raising `sample` adds runs rather than reshuffling)."""
    ranked = sorted(set(run_ids), key=lambda r: hashlib.sha256(f"{seed}:{r}".encode()).hexdigest())
    return ranked[:max(0, n)]


def is_timing_column(name: str) -> bool:
    return bool(_TIME_COLUMN.search(name))


def compare(stored: pd.DataFrame, fresh: pd.DataFrame, tolerance: float) -> dict:
    """Compare two metrics tables. Returns match, the largest absolute difference, and which
    columns were compared. NaN equals NaN (a diverged run must diverge again), inf equals inf."""
    ignored = sorted(c for c in stored.columns if is_timing_column(c))
    if list(stored.columns) != list(fresh.columns):
        return {"match": False, "max_abs_diff": math.inf, "compared_columns": "", "ignored_columns": ";".join(ignored),
                "note": f"columns differ: {list(stored.columns)} vs {list(fresh.columns)}"}
    if len(stored) != len(fresh):
        return {"match": False, "max_abs_diff": math.inf, "compared_columns": "", "ignored_columns": ";".join(ignored),
                "note": f"row counts differ: {len(stored)} vs {len(fresh)}"}
    compared = [c for c in stored.columns if c not in ignored]
    worst, ok, notes = 0.0, True, []
    for col in compared:
        a, b = stored[col], fresh[col]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
            same = (x == y) | (np.isnan(x) & np.isnan(y))
            diff = np.where(same, 0.0, np.abs(x - y))
            diff = np.where(np.isnan(diff), math.inf, diff)  # NaN on one side only
            worst = max(worst, float(diff.max(initial=0.0)))
            allowed = tolerance * np.maximum(1.0, np.abs(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)))
            if np.any(diff > allowed):
                ok = False
                notes.append(col)
        elif not a.astype(str).equals(b.astype(str)):
            ok, worst = False, math.inf
            notes.append(col)
    return {"match": ok, "max_abs_diff": worst, "compared_columns": ";".join(compared),
            "ignored_columns": ";".join(ignored),
            "note": ("differs in " + ", ".join(notes)) if notes else ("" if compared else "nothing to compare")}


def summary_frame(summary: dict) -> pd.DataFrame:
    """A run's summary.json as one row: nested keys and list positions become columns
    (`summary.sharpness.0`), so the numbers experiments measure after training (spectra,
    sharpness, test accuracies) are compared like the metrics."""
    flat: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        else:
            flat[prefix] = value

    walk("summary", summary)
    return pd.DataFrame([flat]) if flat else pd.DataFrame()


def combine(*results: dict) -> dict:
    """One audit verdict from several comparisons (metrics, summary)."""
    return {"match": all(r["match"] for r in results),
            "max_abs_diff": max(r["max_abs_diff"] for r in results),
            "compared_columns": ";".join(r["compared_columns"] for r in results if r["compared_columns"]),
            "ignored_columns": ";".join(r["ignored_columns"] for r in results if r["ignored_columns"]),
            "note": "; ".join(r["note"] for r in results if r["note"] and r["note"] != "nothing to compare")}


def tolerance_for(devices: list[str], gpu_tolerance: float) -> float:
    """0 when every side ran on the CPU, else the GPU tolerance."""
    return gpu_tolerance if any(str(d).startswith("cuda") for d in devices) else 0.0


def audit_runs(results: Path, run_ids: list[str], n: int, gpu_tolerance: float, device: str,
               data_dir: Path, seed: int = 0, scratch: Path | None = None) -> pd.DataFrame:
    """Re-run a sample of the finished runs in `run_ids` and compare each with its stored metrics."""
    import torch

    from trainfail.core import provenance, run_record
    from trainfail.pipeline import execution
    from trainfail.training.context import RunEnv

    results = Path(results)
    env = RunEnv(provenance.resolve_device(device), Path(data_dir), results / "data", results)
    own_scratch = scratch is None
    scratch = Path(tempfile.mkdtemp(prefix=".audit-", dir=results)) if own_scratch else Path(scratch)
    rows = []
    try:
        for rid in sample(run_ids, n, seed):
            stored = run_record.load_run(results, rid)
            determinism = stored.meta.get("determinism", {})
            if determinism.get("num_threads"):
                torch.set_num_threads(int(determinism["num_threads"]))  # CPU reductions depend on the thread count
            # TF32 on a GPU as the stored run had it (torch's defaults before `tf32` existed: convs on)
            torch.backends.cuda.matmul.allow_tf32 = bool(determinism.get("matmul_allow_tf32", False))
            torch.backends.cudnn.allow_tf32 = bool(determinism.get("cudnn_allow_tf32", True))
            # the way it was trained: a stacked run with its whole stack, in the same order
            cell = execution.cell_of(stored.meta)
            if len(cell) > 1:  # with the stored stack's exactness (stack_exact), as it was trained
                execution.run_cell(cell, env, scratch, exact=bool(stored.meta["stack"].get("exact", True)))
            else:
                execution.run_one(stored.settings, env, scratch)
            tol = tolerance_for([stored.meta.get("device", "cpu"), str(env.device)], gpu_tolerance)
            rows.append(_row(rid, RERUN, stored, execution.run_dir(scratch, rid), env, tol, tol))
            if len(cell) > 1 and not any(r["check"] == ALONE for r in rows):
                rows.append(_canary(stored, env, scratch / ALONE, tol))
    finally:
        if own_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


def _canary(stored, env, scratch: Path, tol: float) -> dict:
    """A stacked run trained alone, compared as far as a run alone equals a stack member here."""
    from trainfail.pipeline import execution
    from trainfail.training import stack

    execution.run_one(stored.settings, env, scratch, "the audit's canary")
    exact = bool(stored.meta["stack"].get("exact", True))
    whole = env.device.type != "cpu" or (exact and stack.exact_here())
    canary_tol = tol if whole else max(tol, stack.GRADIENT_TOLERANCE)
    row = _row(stored.meta["run_id"], ALONE, stored, execution.run_dir(scratch, stored.meta["run_id"]), env,
               canary_tol, tol, first_row_only=not whole)
    if not whole:
        why = ("its stack batched every layer (stack_exact: false; grouped convolutions): a member equals its run "
               "alone to float32 rounding, not bit for bit" if not exact else
               "this CPU's kernels do not make a stacked member its run alone bit for bit")
        note = f"first row only, to tolerance {canary_tol:g} x max(1, |value|): {why}"
        row["note"] = "; ".join(n for n in (row["note"], note) if n)
    return row


def _row(rid: str, check: str, stored, fresh_dir: Path, env, tol: float, summary_tol: float,
         first_row_only: bool = False) -> dict:
    """One line of audit.csv: a stored run against its retrained copy in `fresh_dir`."""
    from trainfail.core import store

    fresh = store.read_table(fresh_dir / "metrics.csv")
    metrics = stored.metrics
    if first_row_only:
        metrics, fresh = metrics.head(1), fresh.head(1)
        result = compare(metrics, fresh, tol)
    else:
        fresh_summary = store.read_json(fresh_dir / "summary.json")
        result = combine(compare(metrics, fresh, tol),
                         compare(summary_frame(stored.summary), summary_frame(fresh_summary), summary_tol))
    print(f"[trainfail] audit {rid} ({check}): match={result['match']} max_abs_diff={result['max_abs_diff']:.3g}",
          flush=True)
    return {"run_id": rid, "check": check, "experiment_task": stored.settings["task"],
            "seed": stored.settings.get("seed"), "device": str(env.device), "stored_device": stored.meta.get("device"),
            "tolerance": tol, "rows": len(fresh), **result}
