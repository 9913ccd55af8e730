"""The experiment contract, checked for every experiment in a second (trainfail.contract).

Adding an experiment is its module, its schema file, its caption and its smoke lines; each test
here names what is missing when one is absent.
"""

import json
import re
import typing
from pathlib import Path

import pandas as pd
import pytest
import yaml

from trainfail import contract, experiments, report, tuning
from trainfail.config import load_schema, load_yaml, merge, validate
from trainfail.context import Context, RunEnv
from trainfail.records import RunRecord, RunResult

from .repo_copy import ROOT

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
IDS = list(experiments.REGISTRY)


def smoke() -> dict:
    return validate(merge(load_yaml(ROOT / "config.yaml"), load_yaml(ROOT / "presets/smoke.yaml")), SCHEMA)


@pytest.mark.parametrize("exp", IDS)
def test_every_experiment_has_its_parts(exp):
    module = experiments.get(exp)
    assert isinstance(module, contract.Experiment), f"{exp}: the module does not satisfy trainfail.contract.Experiment"
    assert module.SECTION in contract.SECTIONS and isinstance(module.ORDER, int) and module.TITLE
    schema_file = ROOT / "workflow/schemas/experiments" / f"{exp}.schema.yaml"
    assert schema_file.exists(), f"{exp}: its config schema {schema_file.relative_to(ROOT)} is missing"
    caption = ROOT / "workflow/report" / f"{exp}.rst"
    assert caption.exists(), f"{exp}: its caption {caption.relative_to(ROOT)} is missing"
    assert report.caption_problems(caption.read_text()) == [], f"{exp}: its caption is not clean reStructuredText"
    preset = load_yaml(ROOT / "presets/smoke.yaml")
    assert exp in preset.get("experiments", {}), f"{exp}: presets/smoke.yaml has no lines for it (the smoke preset must stay fast)"
    for hook in ("execute", "stage"):
        if hasattr(module, hook):
            assert callable(getattr(module, hook)), f"{exp}.{hook} must be a function"


# the names the contract's annotations use (it imports them only for type checkers)
TYPES = {"Context": Context, "RunEnv": RunEnv, "RunRecord": RunRecord, "RunResult": RunResult, "pd": pd,
         "Path": Path, "Settings": contract.Settings, "Claim": contract.Claim}
PROTOCOLS = {**{h: contract.Experiment for h in ("runs", "table", "figures", "claims")},
             "execute": contract.Executes, "stage": contract.Staged}


@pytest.mark.parametrize("exp", IDS)
def test_hooks_carry_the_contracts_types(exp):
    """Every hook is annotated exactly as the contract's Protocol says (parameters and return)."""
    module = experiments.get(exp)
    for hook, protocol in PROTOCOLS.items():
        if not hasattr(module, hook):
            continue
        expected = typing.get_type_hints(getattr(protocol, hook), localns=TYPES)
        expected.pop("self", None)
        got = typing.get_type_hints(getattr(module, hook))
        assert got == expected, f"{exp}.{hook} is annotated {got}, the contract says {expected}"


def test_no_schema_file_without_an_experiment():
    files = {p.name.removesuffix(".schema.yaml") for p in (ROOT / "workflow/schemas/experiments").glob("*.schema.yaml")}
    assert files == set(IDS), f"schema files without a module: {sorted(files - set(IDS))}"


@pytest.mark.parametrize("exp", IDS)
def test_runs_are_jsonable_and_deterministic(exp):
    cfg = smoke()
    ctx = Context(cfg)
    module = experiments.get(exp)
    first = module.runs(cfg["experiments"][exp], ctx)
    again = module.runs(cfg["experiments"][exp], ctx)
    text = json.dumps(first, sort_keys=True)  # raises if a setting is not JSON-able
    assert json.loads(text) == first, f"{exp}.runs() gives settings that do not survive JSON"
    assert text == json.dumps(again, sort_keys=True), f"{exp}.runs() is not deterministic"
    tasks = {s.get("task", "train") for s in first}
    assert tasks <= {"train", tuning.TASK, exp}, f"{exp}.runs() makes tasks of other experiments: {tasks}"
    if exp in tasks:
        assert hasattr(module, "execute"), f"{exp}: runs with task {exp!r} need an execute()"


def test_experiments_are_in_the_lectures_order():
    sections = [contract.SECTIONS.index(experiments.get(e).SECTION) for e in IDS]
    assert sections == sorted(sections)
    for exp in IDS:  # README's table spells each section the one way
        readme = (ROOT / "README.md").read_text()
        row = re.search(r"^\| ([^|]+) \| `%s` \|" % exp, readme, flags=re.M)
        if row:
            assert row.group(1) == str(experiments.get(exp).SECTION), f"README spells {exp}'s section {row.group(1)!r}"


def test_no_experiment_imports_another():
    for exp in IDS:
        source = (ROOT / "src/trainfail/experiments" / f"{exp}.py").read_text()
        siblings = re.findall(r"^\s*from \.(\w+) import", source, flags=re.M)
        siblings += re.findall(r"^\s*from \. import (\w+)", source, flags=re.M)
        assert not siblings, f"{exp} imports a sibling experiment ({siblings}): move what they share to a shared module"


def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    else:
        yield path, value


def _schema_default(schema: dict, path: tuple):
    node = schema
    for key in path:
        props = node.get("properties", {})
        if key not in props:
            return None, False
        node = props[key]
        if "$ref" in node and "properties" not in node:
            ref = node["$ref"].split("/")[-1]
            node = {**schema["definitions"][ref], **{k: v for k, v in node.items() if k != "$ref"}}
    return node.get("default"), "default" in node


def test_each_value_lives_in_one_place():
    """config.yaml sets only what differs from the schema's defaults (the quick preset's values
    are the defaults); a value set in both places would be two homes that can drift apart."""
    schema = load_schema(SCHEMA)
    twice = [".".join(path) for path, value in _leaves(load_yaml(ROOT / "config.yaml"))
             if _schema_default(schema, path) == (value, True)]
    assert not twice, f"config.yaml repeats schema defaults: {twice}"


def test_presets_validate():
    for preset in ("smoke", "full"):
        cfg = validate(merge(load_yaml(ROOT / "config.yaml"), load_yaml(ROOT / f"presets/{preset}.yaml")), SCHEMA)
        assert set(cfg["experiments"]) == set(IDS)
    assert yaml.safe_load((ROOT / "config.yaml").read_text()).get("experiments") is None
