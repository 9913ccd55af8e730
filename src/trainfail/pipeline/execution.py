"""Executing runs and reading them back.

Each run writes results/runs/<run id>/ atomically: metrics.csv (+ checksum), summary.json,
meta.json (settings, seed, device, versions, git commit, wall time, diverged flag and step, and
`stack`: whether it was trained stacked with the other runs of its cell, see stack.py) and,
when asked, model.pt (a state dict, read back with weights_only=True). A shard job skips runs
already complete, so a killed job resumes where it stopped (whole runs only: the members of a
stack are stored when the stack has finished). A run's numbers never depend on what was on disk
when it was trained: a cell with a run missing is trained whole, and a stored run is reused only
when it was trained the way the shard trains it now (trained_as).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from trainfail.core import phases, progress, provenance, store
from trainfail.training import stack, train, tuning
from trainfail.core.run_record import RunResult, run_dir
from trainfail.core.config import run_id
from trainfail.training.context import RunEnv


# What every finished run directory holds (model.pt is optional: a task may have no model to keep).
RUN_FILES = ("meta.json", "summary.json", "metrics.csv", "metrics.csv.sha256")


def run_problem(results: Path, settings: dict, verify: bool = True, rid: str | None = None) -> str | None:
    """Why a run's directory is not a finished run of these settings (missing, a file missing, a
    file that does not parse or match its checksum), or None. `verify=False` only looks for the
    files. `rid`: the settings' run id, when the caller has it."""
    rid = rid or run_id(settings)
    path = run_dir(results, rid)
    if not path.is_dir():
        return f"run directory {path} is missing"
    missing = [f for f in RUN_FILES if not (path / f).exists()]
    if missing:
        return f"{path} lacks {', '.join(missing)}"
    if not verify:
        return None
    try:
        if store.read_json(path / "meta.json").get("settings_hash") != rid:
            return f"{path / 'meta.json'} is not this run's"
        store.read_json(path / "summary.json")
        store.verified_bytes(path / "metrics.csv")  # the checksum vouches for the table as written
    except (OSError, store.CorruptFileError) as e:
        return str(e)
    return None


def shard_problem(results: Path, shard: str, rids: list[str], runs: dict[str, dict],
                  verify: bool = True) -> str | None:
    """Why a shard is not finished, or None: no manifest, a damaged manifest, or a run of the
    manifest that is no longer a finished run (a run directory deleted by hand to retrain it, a
    file lost, truncated or garbled: with `verify`, every file is parsed and metrics.csv checked
    against its checksum, as the shard's job checks before it reuses a run)."""
    manifest = Path(results) / "shards" / f"{shard}.json"
    if not manifest.exists():
        return "its manifest is missing"
    try:
        listed = [r["run_id"] for r in store.read_json(manifest)["runs"]]
    except (OSError, store.CorruptFileError, KeyError, TypeError):
        return f"{manifest} is damaged"
    if listed != rids:  # another config's shard of that name: its job reruns anyway (new settings file)
        return None
    problems = [p for r in rids if (p := run_problem(results, runs[r], verify=verify, rid=r))]
    if problems:
        return problems[0] + (f" (and {len(problems) - 1} more runs)" if len(problems) > 1 else "")
    return None


def unfinished_shards(results: Path, shards: dict[str, list[str]], runs: dict[str, dict],
                      verify: bool = True) -> dict[str, str]:
    """Shards that are not finished, shard -> why (shard_problem)."""
    out = {}
    for shard, rids in shards.items():
        if (why := shard_problem(results, shard, rids, runs, verify)) is not None:
            out[shard] = why
    return out


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def execute(settings: dict, env: RunEnv) -> RunResult:
    task = settings["task"]
    if task == "train":
        return train.train(settings, env.dataset(settings["dataset"]), env.device)
    if task == tuning.TASK:
        return tuning.execute(settings, env)
    from trainfail import experiments  # here: experiment modules import this module (final_eval)

    return experiments.get(task).execute(settings, env)


def execute_stack(cell: list[dict], env: RunEnv, exact: bool = True) -> list[RunResult]:
    """Train the runs of one cell as one stacked model (stack.why_not(cell) must be None);
    `exact` as stack.exact_for."""
    exact = stack.exact_for(env.device, exact)
    if cell[0]["task"] == tuning.TASK:  # one sweep, one chosen rate for the whole cell
        choice = tuning.env_choice(cell[0], env)
        plain = [tuning.at_choice(s, choice) for s in cell]  # derived runs: each at its multiple of the rate
        trained = stack.train_stack(plain, env.dataset(plain[0]["dataset"]), env.device, exact)
        return [tuning.with_choice(r, choice, s) for r, s in zip(trained, cell)]
    return stack.train_stack(cell, env.dataset(cell[0]["dataset"]), env.device, exact)


def store_run(settings: dict, result: RunResult, env: RunEnv, results: Path, wall_time: float,
              stacked: dict) -> dict:
    """Write one run's directory; returns its meta record. `stacked` says how it was trained
    (meta.json's `stack`: stacked or not, with which members, or why not)."""
    rid = run_id(settings)
    with phases.phase("write_runs"):  # provenance: versions, git state (a subprocess), host
        prov = {"versions": provenance.versions(), "git": provenance.git_state(),
                "determinism": provenance.determinism(), "host": provenance.host()}
    meta = {
        "run_id": rid,
        "settings_hash": rid,
        "settings": settings,
        "seed": settings.get("seed"),
        "diverged": result.diverged,
        "diverged_step": result.diverged_step,
        "wall_time": wall_time,
        "stack": stacked,
        **({"choice": result.choice} if result.choice else {}),  # a tuned run: the sweep's choice it trained at
        "device": str(env.device),
        "device_name": provenance.device_name(env.device),
        **prov,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    def fill(tmp: Path) -> None:
        store.write_table(pd.DataFrame(result.rows), tmp / "metrics.csv")
        store.write_json(tmp / "summary.json", _finite(result.summary))
        if settings.get("save_model") and result.model is not None:
            state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
            store._atomic(tmp / "model.pt", lambda f: torch.save(state, f))
        store.write_json(tmp / "meta.json", _finite(meta))  # last: its presence means complete

    with phases.phase("write_runs"):
        store.write_dir(run_dir(results, rid), fill)
    return meta


def run_one(settings: dict, env: RunEnv, results: Path, why: str = "trained alone",
            not_stackable: bool = False) -> dict:
    """Execute one run by itself and store it; returns its meta record. A crash inside the run is
    an error; a NaN/inf loss is not: it is recorded as diverged. `not_stackable`: its cell has a
    layer the stacked engine does not know (so alone is the only way it is trained)."""
    start = time.perf_counter()
    with progress.training(1):
        result = execute(settings, env)
    how = {"stacked": False, "reason": why, **({"not_stackable": True} if not_stackable else {})}
    return store_run(settings, result, env, results, time.perf_counter() - start, how)


STACK_OFF = "stacking turned off (stack: false)"


def run_cell(cell: list[dict], env: RunEnv, results: Path, stacked: bool = True,
             keep: set[str] | None = None, exact: bool = True) -> list[dict]:
    """Train the runs of one cell (stack.cells) and store each, or only those whose run id is in
    `keep` (the others trained only so that these are trained in their whole stack); returns the
    stored runs' meta records.

    Stacked when `stacked` and stack.why_not allows it; otherwise one run at a time. All members
    of a stack are stored after the stack finishes: a job killed mid-stack leaves none of them.
    `exact` (the config's `stack_exact`): see stack.exact_for; meta.json's `stack.exact` records
    what the stack ran."""
    ids = [run_id(s) for s in cell]
    wanted = [keep is None or rid in keep for rid in ids]
    why = stack.why_not(cell) if stacked else STACK_OFF
    start = time.perf_counter()
    fallback = False
    if why is None:
        try:
            with progress.training(len(cell)):
                trained = execute_stack(cell, env, exact)
        except stack.NotStackable as e:  # raised before any training: a layer the stack does not know
            why, fallback = str(e), True
    if why is not None:
        return [run_one(s, env, results, why, fallback) for s, w in zip(cell, wanted) if w]
    wall = time.perf_counter() - start  # the whole stack's: its members trained together
    info = {"stacked": True, "engine": stack.ENGINE, "exact": stack.exact_for(env.device, exact),
            "members": ids, "seeds": [int(s["seed"]) for s in cell]}
    if len({stack.rate_of(s) for s in cell}) > 1:  # a rate stack: each member's own rate
        info["lrs"] = [stack.rate_of(s) for s in cell]
    return [store_run(s, r, env, results, wall, {**info, "index": i})
            for i, (s, r, w) in enumerate(zip(cell, trained, wanted)) if w]


def trained_as(meta: dict, cell: list[dict], stacked: bool, exact: bool | None = None) -> bool:
    """Whether a stored run was trained the way a shard trains its cell now: in a stack of the same
    members (in any order) and, when `exact` is given, with that exactness (meta.json's
    `stack.exact`, stack.exact_for), or alone where the shard trains alone. A run trained in a
    smaller stack (seeds added since), alone (a retrain before this rule, or `stack: false` since
    switched on), stacked while `stack: false`, or with `stack_exact` switched since is trained
    again: its numbers would differ from a fresh tree's."""
    info = meta.get("stack") or {}
    why = stack.why_not(cell) if stacked else STACK_OFF
    if why is not None or info.get("not_stackable"):
        return not info.get("stacked")
    return bool(info.get("stacked")) and sorted(info.get("members", [])) == sorted(run_id(s) for s in cell) \
        and (exact is None or bool(info.get("exact", True)) == exact)


def at_current_choice(meta: dict, settings: dict, current: Callable[[dict], str]) -> bool:
    """Whether a stored run was trained at the choice its sweep's file holds now (meta.json's
    `choice` hash against `current(sweep)`, the file's); True for a run that reads no choice. A
    tuned run whose sweep chose again (a sweep run retrained) is trained again at the new rate."""
    spec = tuning.sweep_of(settings)
    return spec is None or tuning.stored_hash(meta) == current(spec)


def cell_of(meta: dict) -> list[dict]:
    """The cell a stored run was trained with, in its order: its settings at each member's seed
    (and, in a rate stack, rate: meta.json's `stack.lrs`; the audit re-trains the same stack). A run
    trained alone is its own cell."""
    info = meta.get("stack") or {}
    if not info.get("stacked"):
        return [meta["settings"]]
    cell = [{**meta["settings"], "seed": int(seed)} for seed in info["seeds"]]
    if "lrs" in info:  # a rate stack (stack.rate_stacks): the members' own rates (a tuned run's multipliers)
        cell = [stack.with_rate(s, lr) for s, lr in zip(cell, info["lrs"])]
    if [run_id(s) for s in cell] != info["members"]:
        raise ValueError(f"run {meta['run_id']}: its stack's members {info['members']} are not its settings "
                         f"at seeds {info['seeds']}" + (f" and rates {info['lrs']}" if "lrs" in info else ""))
    return cell


def set_tf32(on: bool) -> None:
    """TF32 matmuls and convolutions on a GPU (Ampere and later): faster float32 arithmetic with a
    10-bit mantissa. Off by default (torch's own default turns it on for convolutions), so float32
    means float32; meta.json's `determinism` records both flags, and the audit restores them."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def run_shard(settings_list: list[dict], device: str, results: Path, data_dir: Path,
              manifest: Path | None = None, threads: int | None = None, stacked: bool = True,
              tf32: bool = False, exact: bool = True) -> list[dict]:
    """Train a shard's runs, cell by cell (stacked where possible), reusing finished runs that were
    trained as the shard trains them (trained_as). A cell with any run to train is trained whole,
    and only its runs to train are stored: a retrained run is the run of a fresh tree. `exact`: the
    config's `stack_exact` (stack.exact_for); when False, a cell holds the runs that differ in their
    rate too (stack.rate_stacks: one stack per sweep's tuning seeds and rates)."""
    if threads:
        torch.set_num_threads(threads)
    set_tf32(tf32)
    env = RunEnv(provenance.resolve_device(device), Path(data_dir), Path(results) / "data", Path(results))
    hashes: dict[str, str] = {}  # sweep id -> the hash of its choice file now: each file read once

    def current(spec: dict) -> str:
        sid = tuning.sweep_id(spec)
        if sid not in hashes:
            hashes[sid] = tuning.choice_hash(tuning.read_choice(results, spec))
        return hashes[sid]

    done: dict[str, tuple[dict, str]] = {}
    todo: set[str] = set()
    rids = [run_id(s) for s in settings_list]
    rid_of = {id(s): rid for s, rid in zip(settings_list, rids)}  # each run id hashed once
    cells = stack.cells(settings_list, stack.rate_stacks(stacked, exact))
    for cell in cells:
        for settings in cell:
            rid = rid_of[id(settings)]
            if run_problem(results, settings, rid=rid) is None:
                meta = store.read_json(run_dir(results, rid) / "meta.json")
                if not at_current_choice(meta, settings, current):
                    print(f"[trainfail] run {rid} is trained again: its sweep's choice changed "
                          f"({tuning.stored_hash(meta)} -> {current(tuning.sweep_of(settings))})", flush=True)
                elif trained_as(meta, cell, stacked, stack.exact_for(env.device, exact)):
                    done[rid] = (meta, "reused")
                    continue
            todo.add(rid)
    print(f"[trainfail] {len(todo)} of {len(settings_list)} runs to train on {env.device}", flush=True)
    with progress.shard(len(todo)):
        for cell in cells:
            if not any(rid_of[id(s)] in todo for s in cell):
                continue
            for meta in run_cell(cell, env, results, stacked, keep=todo, exact=exact):
                done[meta["run_id"]] = (meta, "trained")
                info = meta.get("stack") or {}
                how = f" (stack of {len(info['members'])})" if info.get("stacked") else ""
                print(f"[trainfail] run {meta['run_id']} trained{how}{' (diverged)' if meta.get('diverged') else ''} "
                      f"in {meta.get('wall_time', 0):.2f}s", flush=True)
    rows = []
    for rid in rids:
        meta, status = done[rid]
        if status == "reused":
            print(f"[trainfail] run {rid} reused", flush=True)
        rows.append({"run_id": rid, "status": status, "diverged": meta.get("diverged"),
                     "wall_time": meta.get("wall_time")})
    if manifest:
        store.write_json(manifest, {"runs": rows, "device": str(env.device)})
    return rows
