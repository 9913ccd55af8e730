"""Learning rates chosen by a sweep on tuning seeds, then used on the claim's seeds.

A claim that compares arms "each at its own tuned rate" must not pick the rate on the seeds it
is judged on (the chosen rate would be fitted to their noise). So an arm is tuned in two stages,
with the choice between them a file in the DAG:

  stage 0  the sweep: the arm's base settings at every candidate rate, for every *tuning* seed,
           as ordinary training runs;
  tune     one job per sweep (`python -m trainfail tune`, rule `tune`) reads the sweep's
           finished runs, scores every rate on every tuning seed and chooses the rate (`choose`),
           and writes the choice to results/tuning/<sweep id>.json with its checksum: the rate,
           the criterion, every score and the run ids it read (`make_choice`);
  stage 1  the tuned runs: one per claim seed. Their settings name the sweep (base settings,
           candidate rates, tuning seeds, criterion), not the rate, which is unknown when the
           plan is made: the choice file is an input of their shard. A tuned run trains at the
           file's rate and records it in its summary (`lr`, `criterion`) and the choice in its
           meta.json (`choice`: file, rate, `hash`), so that a changed choice retrains it
           (execution.run_shard) and the analysis refuses a run trained at another choice (`check`).

A choice at the edge of its grid (the smallest or the largest candidate rate) says only that the
best rate is there *or beyond*: the file marks it (`edge`, `edge_optimum`), and `choice_rows`
and `edge_note` carry the mark into an experiment's table and into the notes of the claims that
rest on it. The grid is not extended by the pipeline (the plan is fixed before any run trains):
an edge optimum is fixed by declaring a wider grid in the experiment's schema, decided from the
tuning seeds' scores. A choice is made on at least two tuning seeds (`MIN_TUNING_SEEDS`, the
config's lists): on one,
a rate's score is one draw of its noise. The file records the chosen rate's neighbours' mean
scores (`neighbours`), so how sharp the choice was shows beside it.

The sweep id is the hash of the sweep's settings, as a run id is of a run's. A run of an
experiment's own task that trains at a sweep's rate (internal_covariate_shift's claim runs) names the sweep under
"sweep" in its settings (`sweep_of`). Tuning seeds must be disjoint from the claim's seeds:
`plan` refuses an overlap.

The criterion reads the sweep run's final evaluation as the claim reads its own runs. For a network
with batch norm whose claims read the network with BN statistics recomputed on the training set
(batchnorm.recomputed_evaluation), `final_train_loss_recomputed` scores the training loss so
evaluated: its sweep's base must ask the training loop for that evaluation (`eval_recomputed`
holding "train": `base_for` adds it; `plan` refuses a base without it, naming the key). The eval-mode
loss (running statistics) of such a network can choose another rate: its running averages lag the
weights, and noisy batch norm's were collected on noisy activations.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from trainfail.core import store
from trainfail.core.config import canonical_json, run_id
from trainfail.core.run_record import final_eval, load_run

TASK = "tuned"
SWEEP_KEYS = ("base", "lrs", "tuning_seeds", "criterion")  # what names a sweep: its settings
CHOICES = "tuning"  # results/tuning/<sweep id>.json: each sweep's choice
# a choice by the mean over tuning seeds: one seed is one draw of a rate's noise. The config's tuning
# seed lists (config.schema.yaml's #/definitions/tuning_seeds) hold at least this many; plan() takes
# fewer (tests, a run's typed settings), the presets never do
MIN_TUNING_SEEDS = 2
# criterion -> (what is read from a sweep run's final evaluation, better = "min" | "max")
CRITERIA = {"final_train_loss": ("train_loss", "min"), "final_train_loss_recomputed": ("train_loss_recomputed", "min"),
            "final_val_acc": ("val_acc", "max"), "best_val_acc": ("val_acc", "max")}
# criterion -> the base setting whose evaluation it reads (the training loop evaluates so)
NEEDS = {"final_train_loss_recomputed": ("eval_recomputed", "train")}


def base_for(base: dict, criterion: str) -> dict:
    """`base` asking the training loop for the evaluation `criterion` reads (NEEDS), if any."""
    if criterion not in NEEDS:
        return base
    key, value = NEEDS[criterion]
    have = list(base.get(key) or ())
    return {**base, key: have if value in have else [*have, value]}


def check_criterion(base: dict, criterion: str) -> None:
    """Refuse an unknown criterion, or one whose column the base's runs do not evaluate."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown tuning criterion {criterion!r}; expected one of {', '.join(CRITERIA)}")
    if criterion in NEEDS:
        key, value = NEEDS[criterion]
        if value not in (base.get(key) or ()):
            raise ValueError(f"tuning criterion {criterion!r} reads {CRITERIA[criterion][0]}: the sweep's base must "
                             f"set {key}: [{value}] (the training loop evaluates it then) (got {base.get(key)!r})")


def with_lr(base: dict, lr: float, seed: int) -> dict:
    """Plain training settings: the base settings at one rate and seed (a sweep run)."""
    return {"task": "train", **base, "optimizer": {**base["optimizer"], "lr": float(lr)}, "seed": int(seed)}


def sweep(base: dict, lrs: list[float], tuning_seeds: list[int]) -> list[dict]:
    return [with_lr(base, lr, s) for lr in lrs for s in tuning_seeds]


def tuned(base: dict, lrs: list[float], tuning_seeds: list[int], seed: int,
          criterion: str = "final_train_loss", derive: dict | None = None) -> dict:
    """A stage-1 run: `base` trained with the rate the sweep chooses, on claim seed `seed`.
    `derive` (config schema's tuned_derive): trained at `lr_multiplier` x the chosen rate, with the
    model keys in `model` changed and `eval_recomputed` asked for (at_choice) - an arm defined
    relative to a tuned one (bn_speedup's BN at 5x the baseline's rate), read from the same sweep."""
    check_criterion(base, criterion)
    out = {"task": TASK, "base": base, "lrs": [float(v) for v in lrs],
           "tuning_seeds": [int(s) for s in tuning_seeds], "criterion": criterion, "seed": int(seed)}
    # what the base has already is no derivation: at 1x, with the base's norm, it is the underived run
    derive = dict(derive or {})
    model = {k: v for k, v in (derive.pop("model", None) or {}).items() if base["model"].get(k) != v}
    derive = {**derive, **({"model": model} if model else {})}
    if float(derive.get("lr_multiplier", 1.0)) == 1.0:
        derive.pop("lr_multiplier", None)
    return {**out, "derive": derive} if derive else out


def multiplier(settings: dict) -> float:
    """A tuned run's rate over the rate its sweep chose (1 unless derived)."""
    return float((settings.get("derive") or {}).get("lr_multiplier", 1.0))


def plan(base: dict, lrs: list[float], tuning_seeds: list[int], seeds: list[int],
         criterion: str = "final_train_loss") -> list[dict]:
    """The sweep (stage 0) and the tuned runs (stage 1) of one arm."""
    check_criterion(base, criterion)
    overlap = sorted(set(int(s) for s in tuning_seeds) & set(int(s) for s in seeds))
    if overlap:
        raise ValueError(f"tuning seeds {overlap} are also claim seeds: a rate tuned on the seeds a claim "
                         "is judged on is fitted to their noise; choose disjoint tuning seeds")
    return sweep(base, lrs, tuning_seeds) + [tuned(base, lrs, tuning_seeds, s, criterion) for s in seeds]


def stage(settings: dict) -> int:
    return 1 if settings.get("task") == TASK else 0


def sweep_of(settings: dict) -> dict | None:
    """The sweep whose choice a run trains at: a tuned run's own (its base, lrs, tuning_seeds and
    criterion), or the one a run of an experiment's own task names under "sweep"; None for others."""
    if settings.get("task") == TASK:
        return {k: settings[k] for k in SWEEP_KEYS}
    spec = settings.get("sweep")
    if settings["task"] != "train" and isinstance(spec, dict) and set(spec) == set(SWEEP_KEYS):
        return spec
    return None


def sweep_id(spec: dict) -> str:
    """A sweep's name: the hash of its settings (base, lrs, tuning_seeds, criterion), as a run's."""
    return run_id({k: spec[k] for k in SWEEP_KEYS})


def choice_file(spec: dict) -> str:
    """Where a sweep's choice lies, relative to the results root."""
    return f"{CHOICES}/{sweep_id(spec)}.json"


def score(record, criterion: str) -> float:
    """A sweep run's score; a diverged run scores its step-0 evaluation (run_record.final_eval), and
    `best_val_acc` is the highest validation accuracy evaluated during the run;
    `final_train_loss_recomputed` reads the same evaluation row (BN statistics recomputed)."""
    column, _ = CRITERIA[criterion]
    if criterion == "best_val_acc" and not record.diverged and column in record.metrics:
        values = pd.to_numeric(record.metrics[column], errors="coerce").dropna()
        if len(values):
            return float(values.max())
    return final_eval(record, (column,))[column]


def sweep_table(settings: dict, records: list) -> pd.DataFrame:
    """One row per sweep run of a sweep (`settings`: a sweep, or a tuned run naming one): lr, seed,
    score, diverged, run id."""
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


def rates(table: pd.DataFrame) -> pd.DataFrame:
    """Per candidate rate (the index, ascending): its mean score over tuning seeds, how many tuning
    seeds diverged, and whether it may be chosen (none diverged: a rate that diverged once is unsafe,
    whatever its mean)."""
    by_lr = table.groupby("lr")
    out = pd.DataFrame({"mean_score": by_lr["score"].mean(),
                        "diverged_seeds": by_lr["diverged"].apply(lambda d: int(d.astype(bool).sum()))})
    return out.assign(eligible=out["diverged_seeds"] == 0).sort_index()


def choose(table: pd.DataFrame, criterion: str) -> float:
    """The rate with the best mean score over tuning seeds; a rate where any tuning seed diverged is
    out (it is unsafe, whatever its mean). Ties go to the smaller rate."""
    per_rate = rates(table)
    means = per_rate[per_rate["eligible"]]["mean_score"]
    if means.empty:
        raise ValueError(f"every rate of the sweep {sorted(set(table['lr']))} diverged: lower the candidate rates")
    return float(means.idxmin() if CRITERIA[criterion][1] == "min" else means.idxmax())


def _number(value) -> float | None:
    """A score as JSON holds it: a non-finite one (never reached, undefined) as null."""
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def edge(lrs: list[float], lr: float) -> str | None:
    """Where a chosen rate sits in its grid: "low" (the smallest candidate), "high" (the largest),
    "only" (a one-rate grid), None (interior: a better rate beyond the grid is not in question). A
    rate below one that diverged is interior: the divergence bounds it from above."""
    grid = sorted(float(v) for v in lrs)
    lr = float(lr)
    if len(grid) == 1:
        return "only"
    return "low" if lr == grid[0] else "high" if lr == grid[-1] else None


def neighbours(rate_rows: list[dict], lr: float) -> dict:
    """The chosen rate's row of `rates` (`chosen`) and its neighbours' in the grid (`lower`, `upper`;
    None at an edge): how much better the chosen rate scored than the rates beside it."""
    grid = sorted(rate_rows, key=lambda r: r["lr"])
    i = next(k for k, r in enumerate(grid) if r["lr"] == float(lr))
    return {"lower": grid[i - 1] if i > 0 else None, "chosen": grid[i], "upper": grid[i + 1] if i + 1 < len(grid) else None}


def make_choice(spec: dict, records: list) -> dict:
    """A sweep's choice, as its file holds it: the sweep and its id, the criterion, the chosen rate,
    whether it is at an edge of the grid, per rate its mean score and diverged tuning seeds, the
    chosen rate's and its neighbours' rows, the score of every rate on every tuning seed with the
    run it was read from, and the run ids read."""
    spec = {k: spec[k] for k in SWEEP_KEYS}
    table = sweep_table(spec, records)
    per_rate = rates(table)
    lr = choose(table, spec["criterion"])
    rate_rows = [{"lr": float(v), "mean_score": _number(r.mean_score), "diverged_seeds": int(r.diverged_seeds),
                  "eligible": bool(r.eligible)} for v, r in per_rate.iterrows()]
    where = edge(spec["lrs"], lr)
    return {"sweep_id": sweep_id(spec), "sweep": spec, "criterion": spec["criterion"],
            "better": CRITERIA[spec["criterion"]][1], "lr": lr, "edge": where, "edge_optimum": where is not None,
            "rates": rate_rows, "neighbours": neighbours(rate_rows, lr),
            "scores": [{"lr": float(r.lr), "seed": int(r.seed), "score": _number(r.score), "diverged": bool(r.diverged),
                        "run_id": r.run_id} for r in table.itertuples()],
            "runs": table["run_id"].tolist()}


def tune(results: Path, spec: dict, out: Path | None = None) -> dict:
    """The tune job: read the sweep's finished runs under `results`, choose, write the choice (to
    `out`, by default results/tuning/<sweep id>.json) with its checksum; returns it."""
    runs = [load_run(results, run_id(s))  # FileNotFoundError names a missing run
            for s in sweep(spec["base"], spec["lrs"], spec["tuning_seeds"])]
    choice = make_choice(spec, runs)
    store.write_checked_json(out or Path(results) / choice_file(spec), choice)
    return choice


def read_choice(results: Path, spec: dict) -> dict:
    """A sweep's choice, read from its file (checksum verified)."""
    path = Path(results) / choice_file(spec)
    again = "run snakemake again: the tune job writes it from the sweep's runs"
    if not path.exists():
        raise FileNotFoundError(f"the choice of sweep {sweep_id(spec)} is missing: {path}; {again}")
    try:
        choice = store.read_checked_json(path)
    except store.CorruptFileError as e:
        raise store.CorruptFileError(f"{e}\ndelete it and {again}") from None
    if not isinstance(choice, dict) or choice.get("sweep_id") != sweep_id(spec) or "lr" not in choice:
        raise store.CorruptFileError(f"{path} is not the choice of sweep {sweep_id(spec)}: delete it and {again}")
    return choice


def choice_scores(choice: dict) -> pd.DataFrame:
    """The scores a choice file holds, one row per sweep run: lr, seed, score (NaN for null),
    diverged, run id."""
    rows = [{**s, "score": float("nan") if s["score"] is None else float(s["score"])} for s in choice["scores"]]
    return pd.DataFrame(rows, columns=["lr", "seed", "score", "diverged", "run_id"])


ROW_COLUMNS = ["sweep_id", "dataset", "optimizer", "batch_size", "criterion", "better", "tuning_seeds", "lr",
               "score", "lower_lr", "lower_score", "upper_lr", "upper_score", "edge", "edge_optimum", "grid"]


def choice_row(choice: dict) -> dict:
    """A choice as one table row: what was tuned (dataset, optimizer, batch size), the chosen rate and
    its mean score over the tuning seeds, its neighbours' rates and mean scores (NaN at an edge), the
    edge mark, and the grid. Computed from the file's rates (a file written before the edge mark
    reads the same)."""
    spec = choice["sweep"]
    rate_rows = [{**r, "mean_score": float("nan") if r["mean_score"] is None else float(r["mean_score"])}
                 for r in choice["rates"]]
    near = neighbours(rate_rows, choice["lr"])
    side = lambda k, col: float("nan") if near[k] is None else near[k][col]
    where = edge(spec["lrs"], choice["lr"])
    base = spec["base"]
    return {"sweep_id": choice["sweep_id"], "dataset": base["dataset"], "optimizer": base["optimizer"]["name"],
            "batch_size": int(base["batch_size"]), "criterion": choice["criterion"], "better": choice["better"],
            "tuning_seeds": " ".join(str(int(s)) for s in spec["tuning_seeds"]), "lr": float(choice["lr"]),
            "score": near["chosen"]["mean_score"], "lower_lr": side("lower", "lr"), "lower_score": side("lower", "mean_score"),
            "upper_lr": side("upper", "lr"), "upper_score": side("upper", "mean_score"), "edge": where or "",
            "edge_optimum": where is not None, "grid": " ".join(f"{v:g}" for v in sorted(spec["lrs"]))}


def choice_rows(records: list, results: Path) -> pd.DataFrame:
    """One row per sweep that `records` train at (choice_row, read from its file), in the order the
    records first name them: the table an experiment shows its tuning in."""
    specs: dict[str, dict] = {}
    for r in records:
        if (spec := sweep_of(r.settings)) is not None:
            specs.setdefault(sweep_id(spec), spec)
    return pd.DataFrame([choice_row(read_choice(results, spec)) for spec in specs.values()], columns=ROW_COLUMNS)


def edge_note(rows: pd.DataFrame, name: str = "optimizer") -> str:
    """A claim's note on the sweeps it rests on whose optimum is at an edge of the grid ("" when none):
    the best rate may lie beyond the grid, so the arm may be under-tuned. `name`: the column that says
    which arm a row is (its value leads each item)."""
    at = rows[rows["edge_optimum"].astype(bool)] if len(rows) else rows
    if not len(at):
        return ""
    items = "; ".join(f"{getattr(r, name)} lr {r.lr:g} ({r.edge} edge of {r.grid})" for r in at.itertuples())
    return f"edge_optimum: the chosen rate is at an edge of its sweep, the best may lie beyond: {items}"


def rows_in(table: pd.DataFrame, column: str, value: str) -> pd.DataFrame:
    """An experiment table's choice rows (those whose `column` is `value`); none, with choice_row's
    columns, in a table from before the rows existed (a figure fixture)."""
    if "edge_optimum" not in table or column not in table:
        return pd.DataFrame(columns=ROW_COLUMNS)
    return table[table[column] == value]


SHOWN = ["dataset", "optimizer", "batch_size", "criterion", "tuning_seeds", "grid", "lower_lr", "lower_score", "lr", "score",
         "upper_lr", "upper_score", "edge"]


def write_choices(rows: pd.DataFrame, outdir: Path, stem: str = "tuning_choices", keys: tuple[str, ...] = ()) -> None:
    """The choice rows (choice_rows; an experiment's table's tuning rows) as the CSV the report shows
    beside the figures: per sweep the chosen rate and its mean score over the tuning seeds, its
    neighbours' (blank at an edge), and the edge ("high"/"low": the best may lie beyond the grid).
    `keys`: the experiment's own columns shown first, where SHOWN's do not tell its sweeps apart (a
    cell's norm). Nothing when there are none (a table from before the rows existed)."""
    if not len(rows):
        return
    shown = rows[[*keys, *SHOWN]].copy()
    for col in ("lower_lr", "lower_score", "lr", "score", "upper_lr", "upper_score"):
        shown[col] = [f"{v:.4g}" if v == v else "" for v in pd.to_numeric(shown[col], errors="coerce")]
    shown["batch_size"] = shown["batch_size"].astype(int)
    store.write_text(Path(outdir) / f"{stem}.csv", shown.to_csv(index=False))


def flagged(claims: list[dict], note: str) -> list[dict]:
    """`claims` with `note` (edge_note's) added to each one's note: the claims that rest on the sweeps."""
    return [{**c, "note": "; ".join(x for x in (c.get("note", ""), note) if x)} for c in claims] if note else claims


def choice_hash(choice: dict) -> str:
    """What a run trained at a choice depends on: the sweep, the criterion and the rate (scores
    that move without moving the rate do not retrain it)."""
    key = canonical_json({k: choice[k] for k in ("sweep_id", "criterion", "lr")})
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def choice_record(choice: dict) -> dict:
    """What a run trained at a choice stores in its meta.json (`choice`)."""
    return {"file": f"{CHOICES}/{choice['sweep_id']}.json", "sweep_id": choice["sweep_id"],
            "criterion": choice["criterion"], "lr": float(choice["lr"]), "hash": choice_hash(choice)}


def stored_hash(meta: dict) -> str | None:
    """The hash of the choice a stored run was trained at (None: none recorded)."""
    return (meta.get("choice") or {}).get("hash")


def env_choice(settings: dict, env) -> dict:
    """The choice of the sweep `settings` trains at, read from the results tree the job writes to."""
    if getattr(env, "results", None) is None:
        raise ValueError("a run trained at a sweep's choice needs the results root (RunEnv.results) to read it")
    return read_choice(env.results, sweep_of(settings))


def derived_base(settings: dict) -> dict:
    """What a tuned run trains, but its rate: its sweep's base, with a derived run's model keys and
    evaluations (`derive`) applied."""
    base, derive = settings["base"], settings.get("derive") or {}
    if derive.get("model"):
        base = {**base, "model": {**base["model"], **derive["model"]}}
    if derive.get("eval_recomputed"):
        base = {**base, "eval_recomputed": list(derive["eval_recomputed"])}
    return base


def at_choice(settings: dict, choice: dict) -> dict:
    """A tuned run as plain training settings: its derived_base at the chosen rate (times its
    multiplier), on its claim seed."""
    plain = with_lr(derived_base(settings), multiplier(settings) * float(choice["lr"]), settings["seed"])
    plain.pop("task")
    return plain


def with_choice(result, choice: dict, settings: dict | None = None):
    """A trained tuned run's result, recording the rate it trained at (summary `lr`; a derived run's
    `baseline_lr` too, the chosen one) and the choice (meta.json)."""
    m = multiplier(settings or {})
    result.summary.update({"lr": m * float(choice["lr"]), "criterion": choice["criterion"]})
    if settings and settings.get("derive"):
        result.summary["baseline_lr"] = float(choice["lr"])
    result.choice = choice_record(choice)
    return result


def execute(settings: dict, env):
    """Train the tuned run at the rate its sweep's choice file holds."""
    from trainfail.training import train

    choice = env_choice(settings, env)
    plain = at_choice(settings, choice)
    return with_choice(train.train(plain, env.dataset(plain["dataset"]), env.device), choice, settings)


def check(record, results: Path) -> float:
    """The chosen rate a stored run was trained at (a tuned run's rate; bn_speedup's baseline rate),
    from its sweep's choice file; refused when the run was trained at another choice (the sweep was
    retrained since and chose again, and the run was not)."""
    choice = read_choice(results, sweep_of(record.settings))
    stored = stored_hash(record.meta)
    if stored != choice_hash(choice):
        was = f"choice {stored}" if stored else "a choice it did not record"
        path = Path(results) / choice_file(choice["sweep"])
        raise ValueError(f"run {record.run_id} was trained at {was}, but its sweep now chooses {choice['lr']} "
                         f"(choice {choice_hash(choice)}, {path}): run snakemake again (its shard retrains it), "
                         f"or delete results/runs/{record.run_id}")
    return float(choice["lr"])
