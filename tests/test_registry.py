"""The experiment contract, checked for every experiment in seconds (trainfail.core.contract).

Adding an experiment is its module, its schema file, its caption, its smoke lines and its figure
fixture (CONTRIBUTING.md). test_every_experiment_has_its_parts collects every missing or wrong
part of every experiment, and the parts that belong to no experiment, into one list and fails
once, naming them all with what to do; so one run of the fast tier tells a newcomer everything
still to write. The tests after it check rules across experiments.

The experiments are found with experiments.scan(), which raises nothing: a module that breaks
the contract (a hook missing, a wrong ID) is one more entry of the list, and the other checks
still run.
"""

from __future__ import annotations

import json
import re
import sys
import typing
from pathlib import Path

import pandas as pd
import pytest
import yaml

from trainfail import experiments
from trainfail.core import contract
from trainfail.pipeline import report
from trainfail.training import tuning
from trainfail.core.config import ConfigError, load_schema, load_yaml, merge, validate
from trainfail.training.context import Context, RunEnv
from trainfail.core.run_record import RunRecord, RunResult

from .repo_copy import ROOT

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
SCHEMAS = ROOT / "workflow/schemas/experiments"
CAPTIONS = ROOT / "workflow/report"
SMOKE = ROOT / "presets/smoke.yaml"
FIXTURES = ROOT / "tests/data/figure_tables"
MODULES = ROOT / "src/trainfail/experiments"
FOUND, BROKEN = experiments.scan()   # the modules that satisfy the contract's names; name -> problems
IDS = list(FOUND)

# the names the contract's annotations use (it imports them only for type checkers)
TYPES = {"Context": Context, "RunEnv": RunEnv, "RunRecord": RunRecord, "RunResult": RunResult, "pd": pd,
         "Path": Path, "Settings": contract.Settings, "Claim": contract.Claim}
PROTOCOLS = {**{h: contract.Experiment for h in ("runs", "table", "figures", "claims")},
             "execute": contract.Executes, "stage": contract.Staged}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def preset_config(name: str) -> dict:
    return validate(merge(load_yaml(ROOT / "config.yaml"), load_yaml(ROOT / f"presets/{name}.yaml")), SCHEMA)


def _type_name(t) -> str:
    if t is type(None):
        return "None"
    return t.__name__ if isinstance(t, type) else str(t).replace("typing.", "")


def _signature(hints: dict, order: list[str]) -> str:
    params = ", ".join(f"{k}: {_type_name(hints[k])}" for k in order if k in hints and k != "return")
    return f"({params}) -> {_type_name(hints['return']) if 'return' in hints else '(no annotation)'}"


def hook_problems(module) -> list[str]:
    """Every hook is annotated exactly as the contract's Protocol says (parameters and return)."""
    out = []
    for hook, protocol in PROTOCOLS.items():
        fn = getattr(module, hook, None)
        if not callable(fn):
            continue  # missing or not a function: contract.problems says so
        expected = typing.get_type_hints(getattr(protocol, hook), localns=TYPES)
        expected.pop("self", None)
        if not contract.takes_ctx(fn):  # ctx is optional: a hook that does not read it leaves it out
            expected.pop("ctx", None)
        try:
            got = typing.get_type_hints(fn)
        except Exception as e:  # noqa: BLE001 - an annotation naming what the module did not import
            out.append(f"{hook}(): its annotations cannot be read ({type(e).__name__}: {e})")
            continue
        if got != expected:
            order = list(expected)
            out.append(f"{hook}() is annotated {_signature(got, order + [k for k in got if k not in order])}, "
                       f"the contract says {_signature(expected, order)}")
    return out


def file_problems(exp: str, smoke_lines: dict) -> list[str]:
    """The files beside the module: schema, caption (docutils reads it without a message), smoke
    lines, figure fixture."""
    out = []
    schema = SCHEMAS / f"{exp}.schema.yaml"
    if not schema.exists():
        out.append(f"schema: {rel(schema)} is missing (every key typed and documented, with a default; the "
                   "defaults are the quick preset: copy another experiment's)")
    caption = CAPTIONS / f"{exp}.rst"
    if not caption.exists():
        out.append(f"caption: {rel(caption)} is missing (reStructuredText: the lecture's claim, what is "
                   "measured, how to read it; no numbers of one preset)")
    elif messages := report.caption_problems(caption.read_text()):
        out.append(f"caption: docutils has messages about {rel(caption)}: {'; '.join(messages)}")
    if exp not in (smoke_lines.get("experiments") or {}):
        out.append(f"smoke block: {rel(SMOKE)} has no lines under experiments.{exp} (the smoke preset runs every "
                   "experiment in a few seconds: shrink seeds, steps, sizes; `{}` if the defaults are already tiny)")
    fixture = FIXTURES / f"{exp}.csv.gz"
    if not fixture.exists():
        out.append(f"figure fixture: {rel(fixture)} is missing (its smoke table, for tests/test_figures.py: "
                   f"python -m tests.refresh_fixtures {exp} --run)")
    return out


def runs_problems(exp: str, module, smoke: dict | None) -> list[str]:
    """runs() on the smoke preset's config: JSON-able, deterministic, tasks of its own only."""
    if not callable(getattr(module, "runs", None)):
        return []
    if smoke is None:
        return ["runs(): not checked: the smoke preset does not validate (below)"]
    if exp not in smoke["experiments"]:
        return ["runs(): not checked: it has no config until its schema file exists"]
    ctx = Context(smoke)
    try:
        first = contract.call(module.runs, smoke["experiments"][exp], ctx=ctx)
        again = contract.call(module.runs, smoke["experiments"][exp], ctx=ctx)
    except Exception as e:  # noqa: BLE001 - reported with the others
        return [f"runs() raises on the smoke preset's config: {type(e).__name__}: {e}"]
    try:
        text = json.dumps(first, sort_keys=True)
    except (TypeError, ValueError) as e:
        return [f"runs() gives settings that are not JSON-able: {e}"]
    out = []
    if json.loads(text) != first:
        out.append("runs() gives settings that do not survive JSON (tuples, non-string keys, ...)")
    if text != json.dumps(again, sort_keys=True):
        out.append("runs() is not deterministic: two calls give different settings")
    tasks = {s.get("task", "train") for s in first if isinstance(s, dict)}
    if not tasks <= {"train", tuning.TASK, exp}:
        out.append(f"runs() makes tasks of other experiments: {sorted(tasks - {'train', tuning.TASK, exp})}")
    if exp in tasks and not callable(getattr(module, "execute", None)):
        out.append(f"runs with task {exp!r} need an execute()")
    return out


def section_problems(module) -> list[str]:
    section = getattr(module, "SECTION", None)
    if section in contract.SECTIONS and not (section.claim.strip().endswith(".") and "\n" not in section.claim):
        return [f"section {section.number}: its claim (trainfail.core.contract) must be one sentence"]
    return []


def problems() -> dict[str, list[str]]:
    """Where -> what is missing or wrong: every experiment module (working or not), then the presets
    and the files that belong to no module."""
    out: dict[str, list[str]] = {}
    smoke_lines = load_yaml(SMOKE) or {}
    try:
        smoke = preset_config("smoke")
    except ConfigError as e:
        smoke = None
        out.setdefault(rel(SMOKE), []).append(f"does not validate: {e}")
    names = sorted({*FOUND, *BROKEN})
    for exp in names:
        module = FOUND.get(exp) or _module_as_is(exp)
        mine = list(BROKEN.get(exp, []))
        if module is not None:
            mine += section_problems(module) + hook_problems(module)
        mine += file_problems(exp, smoke_lines)
        if module is not None:
            mine += runs_problems(exp, module, smoke)
        if mine:
            out[exp] = mine
    try:
        preset_config("full")
    except ConfigError as e:
        out.setdefault("presets/full.yaml", []).append(f"does not validate: {e}")
    schemas = {p.name.removesuffix(".schema.yaml") for p in SCHEMAS.glob("*.schema.yaml")}
    for orphan in sorted(schemas - set(names)):
        out.setdefault(orphan, []).append(f"{rel(SCHEMAS / f'{orphan}.schema.yaml')} has no module "
                                          f"{rel(MODULES / f'{orphan}.py')}: remove it, or add the module")
    return out


def _module_as_is(name: str):
    """A module that breaks the contract, if it imported: its other parts are still checked."""
    return sys.modules.get(f"{experiments.__name__}.{name}")


def test_every_experiment_has_its_parts():
    """Module (names, constants, hooks and their annotations), schema file, caption, smoke lines,
    figure fixture, runs() JSON-able and deterministic, the presets validate: all of every
    experiment, in one message."""
    found = problems()
    if found:
        lines = [f"missing or wrong parts of {len(found)} experiment{'s' if len(found) > 1 else ''} (the contract: "
                 "src/trainfail/core/contract.py; how to add an experiment: CONTRIBUTING.md):"]
        for where, mine in found.items():
            lines.append(f"  {where}:")
            lines += [f"    - {p}" for p in mine]
        pytest.fail("\n".join(lines), pytrace=False)


def test_contract_problems_names_every_one():
    from types import SimpleNamespace

    module = SimpleNamespace(ID="other", SECTION="1.3 Momentum", ORDER="2", TITLE="", HEADLINE=3, runs=1,
                             table=lambda: None)
    assert contract.problems(module, "mine") == [
        "the module lacks figures(), claims() (trainfail.core.contract.REQUIRED)",
        "ID is 'other': the ID must be the module's name, 'mine'",
        "SECTION is '1.3 Momentum': it must be one of trainfail.core.contract.SECTIONS",
        "ORDER is '2': it must be an int (its place within the section)",
        "TITLE is '': it must be a non-empty str",
        "HEADLINE is 3: it must be a non-empty str",
        "runs must be a function"]


def test_the_registry_refuses_a_module_that_breaks_the_contract(monkeypatch):
    """Built for the pipeline, the registry names every problem of every module, then stops."""
    monkeypatch.setattr(experiments, "scan", lambda: ({}, {"a": ["the module lacks claims()"], "b": ["x", "y"]}))
    built = {name: vars(experiments).pop(name) for name in ("REGISTRY", "MODULES") if name in vars(experiments)}
    try:
        with pytest.raises(TypeError) as e:
            experiments.get("a")
    finally:
        vars(experiments).update(built)
    assert str(e.value).splitlines()[1:] == ["  a: the module lacks claims()", "  b: x", "  b: y"]


def test_experiments_are_in_the_lectures_order():
    sections = [contract.SECTIONS.index(FOUND[e].SECTION) for e in IDS]
    assert sections == sorted(sections)
    readme = (ROOT / "README.md").read_text()
    for exp in IDS:  # README's table spells each section the one way
        row = re.search(r"^\| ([^|]+) \| `%s` \|" % exp, readme, flags=re.M)
        if row:
            assert row.group(1) == str(FOUND[exp].SECTION), f"README spells {exp}'s section {row.group(1)!r}"


def test_no_experiment_imports_another():
    for path in sorted(MODULES.glob("*.py")):
        source = path.read_text()
        siblings = re.findall(r"^\s*from \.(\w+) import", source, flags=re.M)
        siblings += re.findall(r"^\s*from \. import (\w+)", source, flags=re.M)
        assert not siblings, f"{path.stem} imports a sibling experiment ({siblings}): move what they share to a shared module"


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
    assert yaml.safe_load((ROOT / "config.yaml").read_text()).get("experiments") is None
