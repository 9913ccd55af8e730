"""Which source files a stage runs, so that Snakemake reruns it when its code changes.

The rules shell out to `python -m trainfail`, so Snakemake cannot see the Python they run. The
analysis and report rules therefore name their source files as inputs: the experiment's module
and every trainfail module it imports, found by reading the import statements (no import is
executed). Editing `plots.py` reruns every analysis that draws; editing one experiment reruns
that experiment's analysis and the report. Training is deliberately not tied to code: a run is
named by its settings, and retraining is asked for explicitly (see the README).

Two modules are leaves: `__main__` (the command line imports every stage lazily) and the
experiment registry `experiments/__init__` (it imports every experiment); their own files count,
what they import does not.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "trainfail"
ROOT = Path(__file__).resolve().parents[1]
LEAVES = {f"{PACKAGE}.__main__", f"{PACKAGE}.experiments"}


def module_file(name: str) -> Path:
    """trainfail.x.y -> its .py file (a package's __init__.py)."""
    rel = Path(*name.split(".")[1:])
    path = ROOT / rel
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Module names an `from ... import ...` statement may refer to (a name may be a submodule)."""
    if node.level:
        parts = current.split(".")
        base = parts if is_package else parts[:-1]
        base = base[:len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]


@functools.lru_cache(maxsize=None)  # every experiment's closure passes through the shared modules
def imports(name: str) -> frozenset[str]:
    """The trainfail modules that module `name` imports (anywhere in the file, lazily or not)."""
    path = module_file(name)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            candidates = _resolve(name, path.name == "__init__.py", node)
        else:
            continue
        found |= {c for c in candidates if c.split(".")[0] == PACKAGE and module_file(c).exists()}
    return frozenset(found - {name})


@functools.lru_cache(maxsize=None)
def closure(name: str) -> tuple[Path, ...]:
    """Module `name`'s file and the files of every trainfail module it imports, transitively."""
    seen, todo = set(), [name]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        if mod not in LEAVES or mod == name:
            todo += sorted(imports(mod))
    return tuple(sorted(module_file(m) for m in seen))


def _command(*modules: str) -> list[Path]:
    files = {module_file(f"{PACKAGE}.__main__")}
    for m in modules:
        files |= set(closure(f"{PACKAGE}.{m}"))
    return sorted(files)


def for_analysis(experiment_id: str) -> list[Path]:
    """What `python -m trainfail analyze <id>` runs: the command, the experiment and its imports,
    and the modules the command itself uses to load runs and write tables and claims."""
    return _command(f"experiments.{experiment_id}", "pipeline.execution", "analysis.stats", "core.store",
                    "training.context", "analysis.textables")


def for_report() -> list[Path]:
    """What `python -m trainfail report` runs."""
    return _command("pipeline.report", "analysis.stats", "core.store")


def for_slides(experiment_ids: list[str]) -> list[Path]:
    """What `python -m trainfail slides` runs: the slides, and the experiments whose figures it draws again."""
    return _command("pipeline.slides", "training.context", *(f"experiments.{e}" for e in experiment_ids))
