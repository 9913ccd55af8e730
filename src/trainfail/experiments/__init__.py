"""The experiment registry: every module in this package is an experiment (trainfail.contract).

The modules are found, not listed: adding an experiment is its module here, its schema file
(workflow/schemas/experiments/<id>.schema.yaml), its caption (workflow/report/<id>.rst) and its
lines in presets/smoke.yaml; tests/test_registry.py names whatever is missing. MODULES is the
lecture's order: by section (contract.SECTIONS), then by each module's ORDER within it.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from .. import contract


def _discover() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        missing = [name for name in contract.REQUIRED if not hasattr(module, name)]
        if missing:
            raise TypeError(f"experiment module {module.__name__} lacks {', '.join(missing)} (see trainfail.contract)")
        if module.ID != info.name:
            raise TypeError(f"experiment module {module.__name__} has ID {module.ID!r}: the ID must be the module's name")
        if module.SECTION not in contract.SECTIONS:
            raise TypeError(f"experiment {module.ID}: SECTION must be one of trainfail.contract.SECTIONS")
        found[module.ID] = module
    return dict(sorted(found.items(), key=lambda kv: (contract.SECTIONS.index(kv[1].SECTION), kv[1].ORDER, kv[0])))


REGISTRY: dict[str, ModuleType] = _discover()
MODULES: list[str] = list(REGISTRY)


def get(experiment_id: str) -> ModuleType:
    try:
        return REGISTRY[experiment_id]
    except KeyError:
        raise KeyError(f"unknown experiment {experiment_id!r}; known: {', '.join(REGISTRY)}") from None
