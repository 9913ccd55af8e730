"""Learning rates chosen by a sweep on tuning seeds, then used on the claim's seeds.

A claim that compares arms "each at its own tuned rate" must not pick the rate on the seeds it
is judged on (the chosen rate would be fitted to their noise). So an arm is tuned in two stages:

  stage 0  the sweep: the arm's base settings at every candidate rate, for every *tuning* seed,
           as ordinary training runs;
  stage 1  the tuned runs: one per claim seed. Their settings name the sweep (base settings,
           candidate rates, tuning seeds, criterion), not the rate, which is unknown when the
           plan is made; at execution a tuned run reads the sweep's finished runs, chooses the
           rate, trains with it and records it in its summary (`lr`).

The plan puts tuned runs in stage 1 (`stage`), so their shards wait for every sweep shard.
Tuning seeds must be disjoint from the claim's seeds: `plan` refuses an overlap.
"""

from __future__ import annotations

import math

import pandas as pd

from .records import final_eval, load_run

TASK = "tuned"
# criterion -> (what is read from a sweep run's final evaluation, better = "min" | "max")
CRITERIA = {"final_train_loss": ("train_loss", "min"), "final_val_acc": ("val_acc", "max"),
            "best_val_acc": ("val_acc", "max")}


def with_lr(base: dict, lr: float, seed: int) -> dict:
    """Plain training settings: the base settings at one rate and seed (a sweep run)."""
    return {"task": "train", **base, "optimizer": {**base["optimizer"], "lr": float(lr)}, "seed": int(seed)}


def sweep(base: dict, lrs: list[float], tuning_seeds: list[int]) -> list[dict]:
    return [with_lr(base, lr, s) for lr in lrs for s in tuning_seeds]


def tuned(base: dict, lrs: list[float], tuning_seeds: list[int], seed: int,
          criterion: str = "final_train_loss") -> dict:
    """A stage-1 run: `base` trained with the rate the sweep chooses, on claim seed `seed`."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown tuning criterion {criterion!r}; expected one of {', '.join(CRITERIA)}")
    return {"task": TASK, "base": base, "lrs": [float(v) for v in lrs],
            "tuning_seeds": [int(s) for s in tuning_seeds], "criterion": criterion, "seed": int(seed)}


def plan(base: dict, lrs: list[float], tuning_seeds: list[int], seeds: list[int],
         criterion: str = "final_train_loss") -> list[dict]:
    """The sweep (stage 0) and the tuned runs (stage 1) of one arm."""
    overlap = sorted(set(int(s) for s in tuning_seeds) & set(int(s) for s in seeds))
    if overlap:
        raise ValueError(f"tuning seeds {overlap} are also claim seeds: a rate tuned on the seeds a claim "
                         "is judged on is fitted to their noise; choose disjoint tuning seeds")
    return sweep(base, lrs, tuning_seeds) + [tuned(base, lrs, tuning_seeds, s, criterion) for s in seeds]


def stage(settings: dict) -> int:
    return 1 if settings.get("task") == TASK else 0


def score(record, criterion: str) -> float:
    """A sweep run's score; a diverged run scores its step-0 evaluation (records.final_eval), and
    `best_val_acc` is the highest validation accuracy evaluated during the run."""
    column, _ = CRITERIA[criterion]
    if criterion == "best_val_acc" and not record.diverged and column in record.metrics:
        values = pd.to_numeric(record.metrics[column], errors="coerce").dropna()
        if len(values):
            return float(values.max())
    return final_eval(record)[column]


def sweep_table(settings: dict, records: list) -> pd.DataFrame:
    """One row per sweep run of a tuned run's sweep: lr, seed, score, diverged."""
    from .config import run_id

    by_id = {r.run_id: r for r in records}
    rows = []
    for s in sweep(settings["base"], settings["lrs"], settings["tuning_seeds"]):
        rid = run_id(s)
        if rid not in by_id:
            raise KeyError(f"sweep run {rid} (lr {s['optimizer']['lr']}, seed {s['seed']}) is not among the records")
        r = by_id[rid]
        rows.append({"lr": s["optimizer"]["lr"], "seed": s["seed"], "score": score(r, settings["criterion"]),
                     "diverged": r.diverged, "run_id": rid})
    return pd.DataFrame(rows)


def choose(table: pd.DataFrame, criterion: str) -> float:
    """The rate with the best mean score over tuning seeds; a rate where any tuning seed diverged is
    out (it is unsafe, whatever its mean). Ties go to the smaller rate."""
    ok = table.groupby("lr").filter(lambda g: not g["diverged"].astype(bool).any())
    if ok.empty:
        raise ValueError(f"every rate of the sweep {sorted(set(table['lr']))} diverged: lower the candidate rates")
    means = ok.groupby("lr")["score"].mean().sort_index()
    return float(means.idxmin() if CRITERIA[criterion][1] == "min" else means.idxmax())


def chosen_lr(settings: dict, records: list) -> float:
    """The rate a tuned run uses, from the sweep's records (the analysis checks stored runs with it)."""
    return choose(sweep_table(settings, records), settings["criterion"])


_CHOSEN: dict[str, float] = {}  # results root + sweep -> its rate: a job reads a sweep's runs once


def sweep_lr(settings: dict, env) -> float:
    """The rate the sweep of `settings` (base, lrs, tuning_seeds, criterion) chose, read from its
    finished runs (an earlier stage: they do not change while a job runs)."""
    from .config import canonical_json, run_id

    results = env.cache_dir.parent  # RunEnv's cache_dir is <results>/data
    key = canonical_json([str(results)] + [settings[k] for k in ("base", "lrs", "tuning_seeds", "criterion")])
    if key not in _CHOSEN:
        runs = [load_run(results, run_id(s))  # FileNotFoundError names a missing run
                for s in sweep(settings["base"], settings["lrs"], settings["tuning_seeds"])]
        _CHOSEN[key] = chosen_lr(settings, runs)
    return _CHOSEN[key]


def resolve(settings: dict, env) -> tuple[dict, dict]:
    """A tuned run as plain training settings at the rate its sweep chooses (read from the sweep's
    finished runs), and what its summary adds: the rate and the criterion."""
    lr = sweep_lr(settings, env)
    plain = with_lr(settings["base"], lr, settings["seed"])
    plain.pop("task")
    return plain, {"lr": lr, "criterion": settings["criterion"]}


def execute(settings: dict, env):
    """Read the sweep's finished runs, choose the rate, train the tuned run with it."""
    from . import train

    plain, extra = resolve(settings, env)
    result = train.train(plain, env.dataset(plain["dataset"]), env.device)
    result.summary.update(extra)
    return result


def check(record, records: list) -> float:
    """The stored tuned run's rate, refused if the sweep (retrained since?) now chooses another."""
    lr = float(record.summary["lr"])
    now = chosen_lr(record.settings, records)
    if not math.isclose(lr, now):
        raise ValueError(f"tuned run {record.run_id} was trained at lr {lr}, but its sweep now chooses {now}: "
                         f"delete results/runs/{record.run_id} and run snakemake again")
    return lr
