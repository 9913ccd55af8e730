"""The experiment registry: every module in this package is an experiment (trainfail.core.contract).

The modules are found, not listed: adding an experiment is its module here, its schema file
(workflow/schemas/experiments/<id>.schema.yaml), its caption (workflow/report/<id>.rst), its
lines in presets/smoke.yaml and its figure fixture; tests/test_registry.py names whatever is
missing, all of it in one failure. MODULES is the lecture's order: by section
(contract.SECTIONS), then by each module's ORDER within it.

REGISTRY and MODULES are built on first use, not at import: importing this package (or one
experiment module) never fails for another module's fault, so that `scan()` can report every
module's problems together. Built, they refuse a module that breaks the contract (TypeError
naming every problem of every module).
"""

from __future__ import annotations

import importlib
import pkgutil
import traceback
from types import ModuleType

from trainfail.core import contract

# built on first use (__getattr__ below); bare annotations, so that the names stay unbound until then
REGISTRY: dict[str, ModuleType]
MODULES: list[str]


def scan() -> tuple[dict[str, ModuleType], dict[str, list[str]]]:
    """Every module of this package: (the ones that satisfy the contract's names and constants, in
    the lecture's order; name -> its problems, for the others). Raises nothing: a module that
    cannot be imported is a problem named with its error."""
    found: dict[str, ModuleType] = {}
    problems: dict[str, list[str]] = {}
    for info in pkgutil.iter_modules(__path__):
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
        except Exception as e:  # noqa: BLE001 - reported, with where it was raised
            where = traceback.extract_tb(e.__traceback__)[-1]
            problems[info.name] = [f"the module cannot be imported: {type(e).__name__}: {e} "
                                   f"({where.filename}:{where.lineno})"]
            continue
        mine = contract.problems(module, info.name)
        if mine:
            problems[info.name] = mine
        else:
            found[module.ID] = module
    ordered = dict(sorted(found.items(), key=lambda kv: (contract.SECTIONS.index(kv[1].SECTION), kv[1].ORDER, kv[0])))
    return ordered, problems


def _registry() -> dict[str, ModuleType]:
    if "REGISTRY" not in globals():
        # import errors propagate as they are (their own traceback is the best message)
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        found, problems = scan()
        if problems:
            raise TypeError("experiment modules that break the contract (trainfail.core.contract):\n" + "\n".join(
                f"  {name}: {p}" for name, ps in problems.items() for p in ps))
        globals()["REGISTRY"] = found
        globals()["MODULES"] = list(found)
    return globals()["REGISTRY"]


def __getattr__(name: str):
    """REGISTRY (id -> module) and MODULES (the ids in the lecture's order), built on first use."""
    if name in ("REGISTRY", "MODULES"):
        _registry()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get(experiment_id: str) -> ModuleType:
    registry = _registry()
    try:
        return registry[experiment_id]
    except KeyError:
        raise KeyError(f"unknown experiment {experiment_id!r}; known: {', '.join(registry)}") from None
