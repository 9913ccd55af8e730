"""The package's layout is its journey: each module sits in one stage folder, and a module imports
from its own stage and the stages before it only (a lazy import inside a function counts; an
import under `if TYPE_CHECKING:` names a type for annotations and does not). The stages are
read from the folders, so a new module needs no entry here, only a folder."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from .repo_copy import ROOT

PKG = ROOT / "src" / "trainfail"
# lowest first; `__main__` (the command line) is above every stage
STAGES = ["core", "training", "measure", "analysis", "experiments", "pipeline"]
TOP = {"__init__": -1, "__main__": len(STAGES)}  # the package's own files


def stage_of(path: Path) -> int | None:
    """The stage of a file of the package (its folder's place), None for a folder not a stage."""
    rel = path.relative_to(PKG)
    if len(rel.parts) == 1:
        return TOP.get(rel.stem)
    return STAGES.index(rel.parts[0]) if rel.parts[0] in STAGES else None


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside `if TYPE_CHECKING:` blocks."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            for child in node.body:
                inside |= {id(n) for n in ast.walk(child)}
    return inside


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every trainfail module a file imports at run time."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = type_checking_nodes(tree)
    me = module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from trainfail.core import store` imports trainfail.core.store
            out += [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return [(line, m) for line, m in out if m.split(".")[0] == "trainfail"]


def target_stage(module: str) -> int | None:
    """The stage of an imported module name (trainfail.<stage>[.x]), None for the package itself."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    if parts[1] in STAGES:
        return STAGES.index(parts[1])
    return TOP.get(parts[1])


def files() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def test_every_module_sits_in_a_stage_folder():
    stray = [p.relative_to(PKG).as_posix() for p in files() if stage_of(p) is None]
    assert not stray, (f"modules outside the stage folders {STAGES} (or a folder that is not a stage): {stray}; "
                       f"put each in the folder of its stage")


def test_no_module_imports_from_a_later_stage():
    upward = []
    for path in files():
        mine = stage_of(path)
        for line, module in imported(path):
            theirs = target_stage(module)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{path.relative_to(PKG)}:{line} ({STAGES[mine] if mine >= 0 else 'trainfail'}) "
                              f"imports {module}")
    assert not upward, "imports from a later stage (move the code down, or pass it in):\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself: a core module importing from the pipeline, lazily, is caught; the same
    import under TYPE_CHECKING is not."""
    pkg = tmp_path / "trainfail"
    (pkg / "core").mkdir(parents=True)
    (pkg / "core" / "a.py").write_text("def f():\n    from trainfail.pipeline import plan\n")
    (pkg / "core" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                       "    from ..pipeline.plan import Plan\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    assert [target_stage(m) for _, m in imported(pkg / "core" / "a.py")] == [STAGES.index("pipeline")]
    assert imported(pkg / "core" / "b.py") == []
