"""`seed_offset`: fresh seeds for every claim and tuning run in one setting (trainfail.training.context)."""

from __future__ import annotations

import pytest

from trainfail.pipeline import plan
from trainfail.core.config import load_schema, load_yaml, merge, validate
from trainfail.training.context import SEED_KEYS

from .repo_copy import ROOT

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def _seed_keys(node, path=()):
    """Every (path, key) in the experiments' schemas whose value is a seeds list."""
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, dict) and v.get("$ref") == "#/definitions/seeds":
                yield path, k
            yield from _seed_keys(v, (*path, k))
    elif isinstance(node, list):
        for v in node:
            yield from _seed_keys(v, path)


def test_every_seeds_key_of_an_experiment_is_shifted():
    blocks = load_schema(SCHEMA)["properties"]["experiments"]["properties"]
    names = {k for _, k in _seed_keys(blocks)} | {k for _, k in _seed_keys(load_yaml(SCHEMA)["properties"])}
    assert names <= set(SEED_KEYS), f"seed keys that seed_offset would not shift: {sorted(names - set(SEED_KEYS))}"


def _seeds(config: dict) -> dict[str, list[int]]:
    p = plan.make_plan(config, plan.enabled_experiments(config))
    out: dict[str, list[int]] = {}
    for exp, ids in p.by_experiment.items():
        out[exp] = sorted(int(p.runs[r]["seed"]) for r in ids if "seed" in p.runs[r])
    return out


@pytest.mark.parametrize("preset", ["smoke"])
def test_an_offset_shifts_every_run_seed_and_keeps_the_counts(preset):
    base = merge(load_yaml(ROOT / "config.yaml"), load_yaml(ROOT / "presets" / f"{preset}.yaml"))
    before = _seeds(validate(merge(base, {}), SCHEMA))
    after = _seeds(validate(merge(base, {"seed_offset": 1000}), SCHEMA))
    assert before.keys() == after.keys()
    for exp in before:
        assert [s + 1000 for s in before[exp]] == after[exp], exp
    # tuning seeds stay disjoint from claim seeds: no run id of the shifted plan is one of the original's
    p0 = plan.make_plan(validate(merge(base, {}), SCHEMA))
    p1 = plan.make_plan(validate(merge(base, {"seed_offset": 1000}), SCHEMA))
    seeded = {r for r, s in p1.runs.items() if "seed" in s}
    assert not seeded & set(p0.runs)
