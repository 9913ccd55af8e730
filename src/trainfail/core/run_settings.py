"""A run's settings, typed: one definition, checked and completed with defaults when the plan is made.

The definition lives in the config schema beside the model, optimizer and schedule it is built from
(workflow/schemas/config.schema.yaml):

  task "train"     definitions.run_body (dataset, model, optimizer, schedule, batch size, epochs or
                   steps, loss, evaluation and logging points, early stopping, save_model) + seed
  task "tuned"     definitions.tuning_sweep (base = a run_body, candidate rates, tuning seeds,
                   criterion) + seed (+ derive, definitions.tuned_derive): trainfail.training.tuning
                   trains `base` at the rate the sweep chose (derived: at a multiple of it, the model
                   changed)
  task <ID>        an experiment's own runs: `x-run` in its schema file
                   (workflow/schemas/experiments/<ID>.schema.yaml), its keys' types; with
                   `x-train: true` it also takes run_body's keys (its execute() trains a network)

complete() validates a run against its definition and fills the defaults in, so the defaults are in
the settings and so in the run id (a changed default is a new run), and the training loop holds no
policy defaults of its own. A key that is not in the definition (a misspelt `eval_point`) is refused
with its name, before any job. `x-unless: other` on a default: filled only when `other` is absent
(eval_points unless eval_every).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from trainfail.core.config import SCHEMA_PATH, ConfigError, canonical_json, describe_errors, load_schema, make_validator

TRAIN, TUNED = "train", "tuned"


@functools.lru_cache(maxsize=4)
def _root(schema_path: str) -> dict:
    return load_schema(schema_path)


def _extend(definition: dict, properties: dict, required: list[str]) -> dict:
    """An object definition with more properties and required keys (JSON Schema cannot extend an
    object whose additionalProperties is false, so the run definitions are composed here)."""
    out = copy.deepcopy(definition)
    out["properties"] = {**out.get("properties", {}), **properties}
    out["required"] = list(dict.fromkeys([*required, *out.get("required", [])]))
    out["additionalProperties"] = False
    out["type"] = "object"
    return out


SEED_MAX = 2**31 - 1  # torch and numpy take 32-bit seeds
SEED = {"type": "integer", "minimum": 0, "maximum": SEED_MAX}


@functools.lru_cache(maxsize=64)
def definition(task: str, schema_path: str = str(SCHEMA_PATH)) -> dict:
    """The schema of a run of `task`, with the config schema's definitions beside it for its $refs."""
    root = _root(schema_path)
    defs = root["definitions"]
    if task == TRAIN:
        schema = _extend(defs["run_body"], {"task": {"const": TRAIN}, "seed": SEED}, ["task", "seed"])
    elif task == TUNED:
        schema = _extend(defs["tuning_sweep"], {"task": {"const": TUNED}, "seed": SEED,
                                                 "derive": {"$ref": "#/definitions/tuned_derive"}}, ["task", "seed"])
    else:
        block = root["properties"]["experiments"].get("properties", {}).get(task)
        if block is None or "x-run" not in block:
            raise ConfigError(f"invalid run settings: task {task!r} is neither train, tuned nor an experiment whose "
                              "schema file declares its runs' settings (x-run)")
        own = block["x-run"]
        body = defs["run_body"] if own.get("x-train") else {"properties": {}, "required": []}
        schema = _extend(body, {"task": {"const": task}, **own.get("properties", {})},
                         ["task", *own.get("required", [])])
        if not own.get("x-train"):
            schema.pop("anyOf", None)
    return {**schema, "definitions": defs}


def complete(settings: dict, where: str = "a run", schema_path: str | Path = SCHEMA_PATH) -> dict:
    """The run's settings checked against their definition, with the defaults filled in (a copy).
    Raises ConfigError naming every offending key, and `where` the run came from."""
    if not isinstance(settings, dict) or "task" not in settings:
        raise ConfigError(f"invalid run settings from {where}: 'task' is required (train, tuned or the "
                          f"experiment's id), got {settings!r}"[:400])
    # Runs that differ only in their seed complete alike: each such set is checked once (a plan of
    # 20,000 runs would otherwise spend seconds here), with a seed every definition allows standing
    # in for the run's own, which is then put back.
    seed = settings.get("seed")
    stands_in = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX
    key = canonical_json([str(schema_path), {**settings, "seed": 0} if stands_in else settings])
    done = _COMPLETED.get(key)
    if done is None:
        out = copy.deepcopy({**settings, "seed": 0} if stands_in else settings)
        schema = definition(str(settings["task"]), str(schema_path))
        errors = list(make_validator(schema).iter_errors(out))
        if errors:
            raise ConfigError(f"invalid run settings from {where} (task {settings['task']!r}):\n"
                              + describe_errors(errors))
        done = _COMPLETED[key] = out
    out = copy.deepcopy(done)
    if stands_in:
        out["seed"] = seed
    return out


_COMPLETED: dict[str, dict] = {}  # canonical settings (seed 0) -> completed settings

