"""From the config to the grid of runs: settings records, run ids, and shards.

A run id is a hash of the run's settings, so a run that two experiments share is trained once,
and a changed setting is a new run. Runs are grouped into shards: one job trains a shard in one
process, paying Python and PyTorch start-up once for many tiny runs. A shard holds whole cells
(runs equal but for the seed), which its job trains as stacks (stack.py).

Labels (contract.labelled: arm, group, variant, ...) are kept per experiment, outside the settings
and the run id: a run two experiments share can carry different labels in each, and a run one
experiment uses under two labels (two arms that happen to share settings) is trained once and
analysed once per label.
A run trained at a rate a sweep chooses (a tuned run, tuning.py) reads the sweep's choice file,
results/tuning/<sweep id>.json, which the sweep's tune job writes from the shards that hold the
sweep's runs: its shard waits for that file, not for every earlier shard.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trainfail import experiments
from trainfail.core import contract, run_settings
from trainfail.training import sizes, stack, tuning
from trainfail.core.config import ConfigError, canonical_json, run_id
from trainfail.training.context import Context

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Plan:
    runs: dict[str, dict] = field(default_factory=dict)             # run id -> settings
    by_experiment: dict[str, list[str]] = field(default_factory=dict)  # experiment -> run ids
    shards: dict[str, list[str]] = field(default_factory=dict)       # shard id -> run ids
    shard_of: dict[str, str] = field(default_factory=dict)           # run id -> shard id
    after: dict[str, list[str]] = field(default_factory=dict)        # shard id -> shards it waits for
    # experiment -> its (run id, labels) pairs in runs() order, each distinct pair once: what its
    # analysis reads, one record per pair (a list, not a map by run id: the order is the table's)
    labels: dict[str, list[tuple[str, dict]]] = field(default_factory=dict)
    sweeps: dict[str, dict] = field(default_factory=dict)            # sweep id -> its settings (tuning.SWEEP_KEYS)
    reads: dict[str, str] = field(default_factory=dict)              # run id -> the sweep whose choice it trains at
    rates: bool = False  # cells hold runs that differ in rate too (stack.rate_stacks: stack on, stack_exact off)

    def cells(self, shard_id: str) -> list[list[dict]]:
        """The cells (stacks, where stack.why_not allows) a shard's job trains."""
        return stack.cells(self.shard_settings(shard_id), self.rates)

    def shards_for(self, experiment_id: str) -> list[str]:
        return sorted({self.shard_of[r] for r in self.by_experiment.get(experiment_id, [])})

    def sweep_shards(self, sweep_id: str) -> list[str]:
        """The shards holding a sweep's runs: what its tune job reads."""
        spec = self.sweeps[sweep_id]
        return sorted({self.shard_of[run_id(s)] for s in tuning.sweep(spec["base"], spec["lrs"], spec["tuning_seeds"])})

    def choices_for_shard(self, shard_id: str) -> list[str]:
        """The sweeps whose choice files a shard's runs train at (its job's inputs)."""
        return sorted({self.reads[r] for r in self.shards[shard_id] if r in self.reads})

    def choices_for(self, experiment_id: str) -> list[str]:
        """The sweeps whose choices an experiment's runs train at (its analysis reads the files)."""
        return sorted({self.reads[r] for r in self.by_experiment.get(experiment_id, []) if r in self.reads})

    def shard_settings(self, shard_id: str) -> list[dict]:
        return [self.runs[r] for r in self.shards[shard_id]]

    def labels_of(self, experiment_id: str, rid: str) -> list[dict]:
        """The labels an experiment gives a run (one per use; [{}] for a run without labels)."""
        return [labels for r, labels in self.labels.get(experiment_id, []) if r == rid]


def pack(run_ids: list[str], runs: dict[str, dict], size: int, rates: bool = False) -> list[list[str]]:
    """Run ids cut into shards, in order, never splitting a cell (the runs that differ only in
    seed: one job trains them as one stack, see stack.py): a shard takes whole cells until it
    holds at least `size` runs (so a shard may hold a cell's worth more, and a large cell is a
    shard of its own). `rates`: cells as stack.rate_stacks forms them."""
    rid_of = {id(runs[rid]): rid for rid in run_ids}
    shards: list[list[str]] = [[]]
    for cell in stack.cells([runs[rid] for rid in run_ids], rates):
        if len(shards[-1]) >= size:
            shards.append([])
        shards[-1] += [rid_of[id(s)] for s in cell]
    return [s for s in shards if s]


def enabled_experiments(config: dict) -> list[str]:
    """Experiments in the config with `enabled` true, in the lecture's order."""
    exps = config.get("experiments", {})
    return [e for e in experiments.MODULES if e in exps and exps[e].get("enabled", True)]


def _runs(exp: str, ctx: Context) -> list[tuple[dict, dict]]:
    """An experiment's runs as (settings, labels): the settings a plain dict, checked against their
    definition and completed with its defaults (run_settings.complete: a key it does not define is
    refused, naming it), the labels kept apart (contract.labelled). A setting its runs()
    refuses (a check the schema cannot express, such as a window shorter than the warm-up) is a
    config error naming the experiment's key."""
    try:
        emitted = list(contract.call(experiments.get(exp).runs, ctx.experiment(exp), ctx=ctx))
    except ConfigError:
        raise
    except ValueError as e:
        where = "" if str(e).startswith(f"experiments.{exp}") else f"experiments.{exp}: "
        raise ConfigError(f"invalid config:\n  {where}{e}") from e
    # dict(run): a plain dict, so labels stay out of the settings and the id
    return [(run_settings.complete(dict(run), f"experiments.{exp} (its runs())"), _labels(exp, run))
            for run in emitted]


def _labels(exp: str, run: dict) -> dict:
    """A run's labels, refused unless they survive JSON: its analysis reads them from its job file."""
    labels = contract.labels_of(run)
    try:
        ok = json.loads(json.dumps(labels)) == labels
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TypeError(f"{exp}.runs(): labels {labels!r} do not survive JSON (the analysis reads them from a job file)")
    return labels


# The config's `limits` (config.schema.yaml) when a config without them is planned (a test's)
RUNS_LIMIT = 20000
JOB_MEMORY_GIB = 64


def limits(config: dict) -> tuple[int, float]:
    """(most runs a plan may hold, most GiB a training job may need) from the config's `limits`."""
    own = config.get("limits") or {}
    return int(own.get("runs", RUNS_LIMIT)), float(own.get("job_memory_gib", JOB_MEMORY_GIB))


def _lists(node, path: tuple = ()) -> list[tuple[tuple, int]]:
    """(path, length) of every list below `node`."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        if isinstance(v, list):
            out.append(((*path, k), len(v)))
        out += _lists(v, (*path, k))
    return out


def _too_many(exp: str, config: dict, n: int, total: int, limit: int, counted: bool = False) -> ConfigError:
    lists = sorted(_lists(config.get("experiments", {}).get(exp, {}), ("experiments", exp)), key=lambda p: -p[1])
    if "seeds" not in config.get("experiments", {}).get(exp, {}):
        lists.append((("seeds",), len(config.get("seeds", []))))
    longest = ", ".join(f"{'.'.join(map(str, p))} ({n} items)" for p, n in lists[:3] if n > 1) or "-"
    how = " (counted from its lists, before listing them)" if counted else ""
    return ConfigError(
        f"invalid config:\n  experiments.{exp}: {n:,} runs{how} (the plan {total:,}), more than limits.runs = {limit:,} "
        f"a plan may hold; its longest lists: {longest}. Shorten them, or raise limits.runs if this many runs is meant")


SEED_LISTS = ("seeds", "claim_seeds", "tuning_seeds")  # the keys of the schema's #/definitions/seeds


def _seed_lists(config: dict, exp: str) -> list[tuple]:
    """Paths of the seed lists `exp`'s runs may draw on: the top-level seeds and its own."""
    own = [("experiments", exp, *p) for p, _ in _lists(config.get("experiments", {}).get(exp, {}))
           if p[-1] in SEED_LISTS]
    return [("seeds",), *own] if isinstance(config.get("seeds"), list) else own


def _at(node, path: tuple):
    for key in path:
        node = node[key]
    return node


def _replace(node, path: tuple, value):
    """`node` with the value at `path` replaced, copying only the containers along the path."""
    if not path:
        return value
    out = copy.copy(node)
    out[path[0]] = _replace(node[path[0]], path[1:], value)
    return out


def _cut(config: dict, paths: list[tuple], longer: tuple | None = None) -> Context:
    """The config with every seed list at `paths` cut to its first seed (`longer`: its first two)."""
    for path in paths:
        config = _replace(config, path, list(_at(config, path)[:2 if path == longer else 1]))
    return Context(config)


def estimated_runs(exp: str, config: dict, limit: int) -> int | None:
    """How many runs `exp` lists, counted without listing them when they may be more than
    `limit`: its runs with every seed list cut to one seed, and with each list in turn cut to two,
    give each seed list's share (a run is one seed of one list, or holds all of them: the count is
    linear in each list's length; ensembles of a few seeds, minimum_ratio's, make it an
    underestimate, and the runs are then listed and counted). None when they cannot be more than
    `limit`, or when a cut config is refused (the whole one then says why)."""
    module = experiments.get(exp)
    lengths = {p: len(_at(config, p)) for p in _seed_lists(config, exp)}

    def count(longer: tuple | None = None) -> int:
        ctx = _cut(config, list(lengths), longer)
        return len(contract.call(module.runs, ctx.experiment(exp), ctx=ctx))

    try:
        base = count()
        if base * max(lengths.values(), default=1) <= limit:  # at most this many: no need to count
            return None
        return base + sum((count(p) - base) * (n - 1) for p, n in lengths.items() if n > 1)
    except (ValueError, IndexError):
        return None


def _model_key(node, spec: dict, prefix: str) -> str:
    """The dotted key of the model settings in an experiment's config that `spec` (a run's model)
    was made from: the first mapping with its arch and layers; the experiment when none is."""
    if isinstance(node, dict):
        if "arch" in node and node.get("arch") == spec.get("arch", "mlp") and sizes.layers(node) == sizes.layers(spec):
            return prefix
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return ""
    for k, v in items:
        if found := _model_key(v, spec, f"{prefix}.{k}"):
            return found
    return ""


def _model_of(settings: dict) -> dict:
    base = sizes.training_base(settings) or settings
    return base.get("model", {})


def check_memory(plan: Plan, config: dict) -> None:
    """Refuse a plan with a training job whose estimated memory (trainfail.training.sizes) is over
    limits.job_memory_gib, or with a model that cannot be built on its data, naming the key."""
    _, gib = limits(config)
    stacking = bool(config.get("stack", True))
    for shard, ids in plan.shards.items():
        exp = shard.split("-")[0]
        cells = plan.cells(shard)
        cfg = config.get("experiments", {}).get(exp, {})
        try:
            need = sizes.job_bytes(cells, stacking)
        except sizes.SizeError as e:
            bad = next(c[0] for c in cells if _fails(c[0]))
            key = _model_key(cfg, _model_of(bad), f"experiments.{exp}") or f"experiments.{exp}"
            raise ConfigError(f"invalid config:\n  {key}: {e} (on {_dataset_of(bad)})") from e
        if need > gib * sizes.GIB:
            cell = max(cells, key=lambda c: sizes.run_bytes(c[0], len(c) if stacking else 1)[0])
            model = _model_of(cell[0])
            key = _model_key(cfg, model, f"experiments.{exp}") or f"experiments.{exp}"
            widths = sizes.layers(model)
            shown = str(widths) if len(widths) <= 4 else f"[{widths[0]}, {widths[1]}, ..., {widths[-1]}] ({len(widths)} layers)"
            what = f"{model.get('arch', 'mlp')} {shown} on {_dataset_of(cell[0])}" if model else f"task {cell[0].get('task')}"
            members = f", a stack of {len(cell)} runs" if stacking and len(cell) > 1 else ""
            raise ConfigError(
                f"invalid config:\n  {key}: a training job ({shard}: {what}{members}) needs about {sizes.gib(need)} "
                f"by the estimate of trainfail.training.sizes, more than limits.job_memory_gib = {gib:g}. "
                "Make the model, batch or stack smaller, or raise limits.job_memory_gib if the machine has it")


def _fails(settings: dict) -> bool:
    try:
        sizes.run_bytes(settings)
    except sizes.SizeError:
        return True
    return False


def _dataset_of(settings: dict) -> str:
    return (sizes.training_base(settings) or settings).get("dataset", "its data")


def make_plan(config: dict, experiment_ids: list[str] | None = None) -> Plan:
    """The plan of `experiment_ids` (default: every configured experiment). A plan over the
    config's `limits` (runs, a job's estimated memory) is a ConfigError naming the key: counted
    before any run id is hashed, the memory estimated from the settings (trainfail.training.sizes)."""
    ctx = Context(config)
    shard_size = int(config.get("shard_size", 8))
    max_runs, _ = limits(config)
    plan = Plan(rates=stack.rate_stacks(config.get("stack", True), config.get("stack_exact", False)))
    for exp in experiment_ids if experiment_ids is not None else list(config.get("experiments", {})):
        if exp not in experiments.REGISTRY:
            continue
        ids, fresh, uses = [], [], {}
        # so many runs that listing them would take a while (seconds a million): counted first. Runs
        # it shares with the experiments before it count twice here: refused at 10x the limit, the
        # runs are otherwise listed and their run ids counted
        estimate = estimated_runs(exp, config, max_runs - len(plan.runs))
        if estimate is not None and len(plan.runs) + estimate > 10 * max_runs:
            raise _too_many(exp, config, estimate, len(plan.runs) + estimate, max_runs, counted=True)
        planned = _runs(exp, ctx)
        total = len(plan.runs) + len(planned)
        if total > max_runs and len(planned) <= 10 * max_runs:  # runs two experiments share count once
            total = len(plan.runs.keys() | {run_id(s) for s, _ in planned})
        if total > max_runs:
            raise _too_many(exp, config, len(planned), total, max_runs)
        for settings, labels in planned:
            rid = run_id(settings)
            ids.append(rid)
            if rid not in plan.runs:
                plan.runs[rid] = settings
                fresh.append(rid)
                if (spec := tuning.sweep_of(settings)) is not None:  # it trains at a sweep's choice
                    plan.sweeps.setdefault(tuning.sweep_id(spec), spec)
                    plan.reads[rid] = tuning.sweep_id(spec)
            uses.setdefault(canonical_json([rid, labels]), (rid, labels))
        plan.by_experiment[exp] = list(dict.fromkeys(ids))
        plan.labels[exp] = list(uses.values())
        # an experiment of many tiny runs may ask for bigger shards (start-up paid fewer times)
        size = int(ctx.experiment(exp).get("shard_size", shard_size))
        # runs of a later stage (the module's stage(settings); by default tuned runs are stage 1)
        # wait for every shard of the earlier stages, and for the shards of earlier experiments that
        # hold this one's earlier-stage runs (a run two experiments share was sharded by the first);
        # a shard whose runs all train at sweeps' choices waits for the choice files instead (whose
        # tune jobs wait for the shards holding the sweeps' runs, whichever experiment planned them)
        stage_of = getattr(experiments.get(exp), "stage", tuning.stage)
        fresh_ids = set(fresh)
        shared = [r for r in plan.by_experiment[exp] if r not in fresh_ids]
        earlier: list[str] = []
        for stage in sorted({stage_of(plan.runs[r]) for r in fresh}):
            members = [r for r in fresh if stage_of(plan.runs[r]) == stage]
            prefix = f"{exp}-" if stage == 0 else f"{exp}-stage{stage}-"
            before = sorted({plan.shard_of[r] for r in shared if stage_of(plan.runs[r]) < stage} - set(earlier))
            this_stage = []
            for i, runs in enumerate(pack(members, plan.runs, size, plan.rates)):
                shard = f"{prefix}{i:03d}"
                plan.shards[shard] = runs
                reads_choices = stage > 0 and all(r in plan.reads for r in runs)
                plan.after[shard] = [] if reads_choices else list(earlier) + before
                this_stage.append(shard)
                for rid in plan.shards[shard]:
                    plan.shard_of[rid] = shard
            earlier += this_stage
    missing = {sid: run_id(s) for sid, spec in plan.sweeps.items()
               for s in tuning.sweep(spec["base"], spec["lrs"], spec["tuning_seeds"]) if run_id(s) not in plan.runs}
    if missing:  # an experiment names a sweep it does not plan (tuning.plan plans both)
        sid, rid = next(iter(missing.items()))
        raise ValueError(f"sweep {sid} is read by runs of the plan, but its run {rid} is not planned")
    check_memory(plan, config)
    return plan


def _flat(value, prefix: str = "") -> dict:
    """Nested settings as dotted keys: {"optimizer": {"lr": 0.1}} -> {"optimizer.lr": 0.1}."""
    if isinstance(value, dict):
        out: dict = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def describe(plan: Plan) -> pd.DataFrame:
    """One row per run: shard, stage, run id, the experiments that use it, its task, the choice file
    it trains at (a tuned run: tuning/<sweep id>.json under the results root, written by that
    sweep's tune job; empty for others), and the settings that differ between the runs of its
    experiment (`key=value; ...`), so a reader sees what a shard such as bn_speedup-stage1-000 trains."""
    import pandas as pd

    users: dict[str, list[str]] = {}
    for exp, ids in plan.by_experiment.items():
        for rid in ids:
            users.setdefault(rid, []).append(exp)
    flat = {rid: _flat(settings) for rid, settings in plan.runs.items()}  # each run flattened once
    varying: dict[str, list[str]] = {}
    for exp, ids in plan.by_experiment.items():
        flats = [flat[r] for r in ids]
        keys = sorted({k for f in flats for k in f})
        varying[exp] = [k for k in keys if len({canonical(f.get(k)) for f in flats}) > 1]
    rows = []
    for shard, ids in plan.shards.items():
        stage = int(shard.split("-stage")[1].split("-")[0]) if "-stage" in shard else 0
        for rid in ids:
            keys = varying[users[rid][0]]
            rows.append({"shard": shard, "stage": stage, "run_id": rid, "experiments": ",".join(users[rid]),
                         "task": plan.runs[rid]["task"],
                         "choice": tuning.choice_file(plan.sweeps[plan.reads[rid]]) if rid in plan.reads else "",
                         "differs": "; ".join(f"{k}={canonical(flat[rid].get(k))}" for k in keys)})
    return pd.DataFrame(rows, columns=["shard", "stage", "run_id", "experiments", "task", "choice", "differs"])


def canonical(value) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


# --- scheduling: longest first ------------------------------------------------------------------

STEP_S, FLOP_RATE = 2e-3, 5e9  # a CPU step's fixed cost (Python, kernel launches), sustained multiply-adds/s


def cell_seconds(cell: list[dict]) -> float:
    """A rough cost in seconds of training one cell (runs equal but the seed, one stack): each step
    pays a fixed cost (STEP_S) for the whole stack plus its arithmetic, (examples trained x 3 +
    examples evaluated) x (parameters + 8 x activations per example: a conv layer's work grows with
    its positions) per member at FLOP_RATE. Counted from the settings (trainfail.training.sizes,
    the network not built). Tasks with an execute of their own that sizes cannot read count as
    1 s. Only the order matters: it ranks jobs (priorities)."""
    from trainfail.training import train

    base = sizes.training_base(cell[0])
    if base is None or base.get("dataset") not in sizes.SHAPES:
        return 1.0
    shape, n_train, n_test = sizes.SHAPES[base["dataset"]]
    try:
        params, kept, _ = sizes.network(base["model"], shape, sizes.CLASSES.get(base["dataset"], 10))
        steps, _ = train.total_steps(base, n_train)
        evals = len(train.eval_steps(steps, base))
    except (sizes.SizeError, KeyError, TypeError, ValueError):
        return 1.0
    examples = 3 * steps * min(int(base["batch_size"]), n_train) + evals * (n_train + n_test)
    return steps * STEP_S + len(cell) * examples * (params + 8 * kept) / FLOP_RATE


def job_priorities(plan: Plan, measured: dict[str, float] | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """Snakemake priorities (0-100, larger first) of the training and tune jobs: longest path
    first. A shard's rank is its cost plus the largest rank of the jobs that wait for it (shards
    after it; the tuned shards that read a choice its runs decide): the classic list-scheduling
    rank, so that two cores finish together rather than one idling while the other trains a long
    last shard. Costs: `measured` (shard -> CPU seconds, e.g. a previous run's benchmark files)
    where every shard has one, else cell_seconds' estimate. Returns (shard -> priority, sweep id ->
    priority: its tuned shards' rank, so a choice is made as soon as its runs are)."""
    if measured and all(s in measured for s in plan.shards):
        cost = {s: float(measured[s]) for s in plan.shards}
    else:
        cost = {s: sum(cell_seconds(c) for c in plan.cells(s)) for s in plan.shards}
    waiting: dict[str, set[str]] = {s: set() for s in plan.shards}  # shard -> the shards waiting for it
    for shard, before in plan.after.items():
        for b in before:
            waiting[b].add(shard)
    readers: dict[str, set[str]] = {}  # sweep id -> shards reading its choice
    for shard in plan.shards:
        for sid in plan.choices_for_shard(shard):
            readers.setdefault(sid, set()).add(shard)
    for sid, shards in readers.items():
        for holder in plan.sweep_shards(sid):
            waiting[holder] |= shards
    rank: dict[str, float] = {}

    def rank_of(shard: str) -> float:  # iterative enough: stages are few, so the recursion is shallow
        if shard not in rank:
            rank[shard] = cost[shard] + max((rank_of(w) for w in waiting[shard] if w != shard), default=0.0)
        return rank[shard]

    top = max((rank_of(s) for s in plan.shards), default=0.0) or 1.0
    shards = {s: int(round(100 * rank_of(s) / top)) for s in plan.shards}
    sweeps = {sid: max((shards[s] for s in readers.get(sid, ())), default=0) for sid in plan.sweeps}
    return shards, sweeps
