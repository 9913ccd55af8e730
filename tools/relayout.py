"""Lay the library out by stage (issue 20): move every module of src/trainfail/ into its stage
folder and rewrite every reference to it. Idempotent, and meant to be run again on a later main:

    python tools/relayout.py          # moves (git mv) and rewrites in place; prints what it did
    python tools/relayout.py --check  # only says whether anything is left to do (exit 1 if so)

What it does, in order:
1. refuses to start if a module sits at the top of src/trainfail/ that MOVES does not place
   (a module added since: give it a stage in MOVES and run again);
2. creates the stage packages (an __init__.py saying what the stage holds) where missing;
3. rewrites every tracked or new text file of the repository (.py, .smk, Snakefile, .md, .yaml,
   .rst, .toml, .sh, Makefile; not this script, not tests/data): import statements (relative
   imports inside the package become absolute, so that the stage shows in each import line),
   `trainfail.<old>` and `src/trainfail/<old>.py` in strings, comments and docs, `<old>.<name>`
   for the two renamed modules (`runs.run_shard` -> `execution.run_shard`, any name the module
   defines), the bare module names that `sources._command` takes, and PATCHES (context-dependent
   strings, each a literal replacement in one file);
4. fixes `Path(__file__)` in each module it moves (one folder deeper: parents[n] -> parents[n+1]);
5. `git mv`s each module that is still at its old place;
6. regenerates the library's lines of README.md's Layout section from the folders.

A rerun on a tree already laid out finds nothing to do. Run the tests afterwards: pyflakes
(tests/test_static.py) catches a name the rewrite missed, tests/test_layers.py an upward import.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "trainfail"
SRC = ROOT / "src" / PKG

# The stages, lowest first: a module may import from its own stage and the stages before it only
# (tests/test_layers.py checks this; `experiments` and `__main__` stay where they are).
STAGES = {
    "core": "What every stage shares: the config and its schema, a run's settings, files, run records,\n"
            "provenance, progress lines, and the experiment contract.",
    "training": "Training runs: data, models, optimizers, the training loop, stacked cells, tuned rates,\n"
                "batch norm's statistics, the arms that experiments share, and the memory estimate.",
    "measure": "Measurements taken on trained or toy models: Hessians, sharpness, loss landscapes,\n"
               "internal covariate shift, loss spikes, step timing.",
    "analysis": "From tables to verdicts and pictures: statistics, figures, LaTeX tables.",
    "pipeline": "Plumbing the Snakemake rules call: the plan, executing shards of runs, tuning and audit\n"
                "jobs, source tracking, the results tree, GPU assignment, the report.",
}
ORDER = ["core", "training", "measure", "analysis", "experiments", "pipeline"]

# old module (src/trainfail/<old>.py) -> new dotted path under trainfail
MOVES = {
    # core
    "config": "core.config",
    "store": "core.store",
    "records": "core.run_record",  # a local `records` (a list of RunRecord) shadowed the module
    "progress": "core.progress",
    "provenance": "core.provenance",
    "contract": "core.contract",
    "run_settings": "core.run_settings",
    # training
    "data": "training.data",
    "models": "training.models",
    "optim": "training.optim",
    "train": "training.train",
    "stack": "training.stack",
    "tuning": "training.tuning",
    "batchnorm": "training.batchnorm",
    "network_arms": "training.network_arms",
    "context": "training.context",
    "sizes": "training.sizes",
    # measure
    "hessian": "measure.hessian",
    "sharpness": "measure.sharpness",
    "landscape": "measure.landscape",
    "covariate_shift": "measure.covariate_shift",
    "spikes": "measure.spikes",
    "timing": "measure.timing",
    # analysis
    "stats": "analysis.stats",
    "power": "analysis.power",
    "plots": "analysis.plots",
    "textables": "analysis.textables",
    # pipeline
    "plan": "pipeline.plan",
    "runs": "pipeline.execution",  # "runs" also named the runs() hook, results/runs, plan.runs, --runs
    "audit": "pipeline.audit",
    "sources": "pipeline.sources",
    "results_tree": "pipeline.results_tree",
    "gpus": "pipeline.gpus",
    "report": "pipeline.report",
}
RENAMED = {old: new.rsplit(".", 1)[1] for old, new in MOVES.items() if new.rsplit(".", 1)[1] != old}
KEEP = {"__init__", "__main__"}  # stay at the top of the package

# What the rules above cannot know: strings whose meaning depends on their context (a path
# relative to the package root, compared with a file name elsewhere) and lines the rewrite makes
# too long. Literal replacements, by the file's path after the move, applied after the rewrite
# when the old text is there; one whose old and new texts are both missing is reported.
PATCHES = [
    ("src/trainfail/pipeline/sources.py",
     '"pipeline.execution", "analysis.stats", "core.store", "training.context", "analysis.textables")',
     '"pipeline.execution", "analysis.stats", "core.store",\n'
     '                    "training.context", "analysis.textables")'),
    ("src/trainfail/__init__.py",
     "The data's journey, one module per stage:\n"
     "config (validated) -> plan (runs, run ids, shards) -> train (metrics rows + metadata per run)\n"
     "-> experiments/<id>.table (pandas) -> experiments/<id>.figures (seaborn)\n"
     "-> experiments/<id>.claims (verdicts with intervals) -> report (HTML).\n",
     "The data's journey:\n"
     "config (validated) -> plan (runs, run ids, shards) -> train (metrics rows + metadata per run)\n"
     "-> experiments/<id>.table (pandas) -> experiments/<id>.figures (seaborn)\n"
     "-> experiments/<id>.claims (verdicts with intervals) -> report (HTML).\n"
     "\n"
     "The library is laid out by stage, lowest first; a module imports from its own stage and lower\n"
     "ones only (tests/test_layers.py): core/ (config, run settings, files, run records, the\n"
     "experiment contract) < training/ (data, models, the training loop, stacked cells, tuned rates)\n"
     "< measure/ (Hessians, sharpness, landscapes, covariate shift, spikes, timing) < analysis/\n"
     "(statistics, figures, tables) < experiments/ (one module per experiment) < pipeline/ (plan,\n"
     "shard execution, audit, source tracking, GPUs, report) < __main__ (the commands the rules call).\n"),
    ("CONTRIBUTING.md", "`network_arms`, `spikes`, `landscape`,\n`records`, ...)",
     "`network_arms`, `spikes`, `landscape`,\n`run_record`, ...)"),
    ("CONTRIBUTING.md", "- `records` — a stored run read back", "- `run_record` — a stored run read back"),
    ("tests/test_new_experiment.py",  # the module template: one import a line, as a newcomer writes it
     "from trainfail.analysis import plots; from trainfail.core import contract\n",
     "from trainfail.analysis import plots\nfrom trainfail.core import contract\n"),
    ("tests/test_new_experiment.py",
     'FIRST_DRAFT.replace("from trainfail.analysis import plots; from trainfail.core import contract\\n", '
     '"from trainfail.analysis import plots, stats; from trainfail.core import contract\\n")',
     'FIRST_DRAFT.replace("from trainfail.analysis import plots\\n", "from trainfail.analysis import plots, stats\\n")'),
    ("tests/test_workflow.py",
     '{"experiments/momentum.py", "network_arms.py", "plots.py", "stats.py", "__main__.py"}',
     '{"experiments/momentum.py", "training/network_arms.py", "analysis/plots.py", "analysis/stats.py",\n'
     '            "__main__.py"}'),
    ("tests/test_workflow.py",
     '"experiments/batch_path.py", "report.py"}',
     '"experiments/batch_path.py", "pipeline/report.py"}'),
]

TEXT_SUFFIXES = {".py", ".smk", ".md", ".yaml", ".yml", ".rst", ".toml", ".sh", ".cfg", ".txt"}
TEXT_NAMES = {"Snakefile", "Makefile"}
SKIP = ("tests/data/", "tools/relayout.py")
OLD = "|".join(sorted(MOVES, key=len, reverse=True))


def new_path(old: str) -> Path:
    return SRC.joinpath(*MOVES[old].split(".")).with_suffix(".py")


def module_names(old: str) -> list[str]:
    """The top-level names module `old` defines or imports (read wherever it is now)."""
    path = SRC / f"{old}.py" if (SRC / f"{old}.py").exists() else new_path(old)
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):  # runs.run_dir is records.run_dir
            names += [(a.asname or a.name).split(".")[0] for a in node.names]
    return names


# ---------------------------------------------------------------- import statements

def module_of(path: Path) -> str | None:
    """The dotted module name of a file inside the package, None outside it."""
    try:
        rel = path.relative_to(SRC.parent)
    except ValueError:
        return None
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(node: ast.ImportFrom, current: str | None, is_package: bool) -> str | None:
    """The absolute module an ImportFrom names (None: a relative import outside the package)."""
    if not node.level:
        return node.module
    if current is None:
        return None
    parts = current.split(".")
    base = parts if is_package else parts[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def mapped(module: str) -> str:
    """trainfail.<old>[.rest] -> trainfail.<new>[.rest]; anything else unchanged."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == PKG and parts[1] in MOVES:
        return ".".join([PKG, *MOVES[parts[1]].split("."), *parts[2:]])
    return module


def alias_text(name: str, asname: str | None) -> str:
    return f"{name} as {asname}" if asname and asname != name else name


def bound_alias(old: str, asname: str | None) -> str | None:
    """The `as` name a renamed module gets: tf_<old> -> tf_<new>; no alias stays none."""
    if asname == f"tf_{old}":
        return f"tf_{RENAMED[old]}"
    return asname


def from_lines(module: str, aliases: list[tuple[str, str | None]], indent: str | None) -> list[str]:
    """`indent` None: never wrapped (an import written inside a string)."""
    names = ", ".join(alias_text(n, a) for n, a in aliases)
    line = f"from {module} import {names}"
    if indent is None or len(indent) + len(line) <= 120:
        return [line]
    return [f"from {module} import (", *[f"    {alias_text(n, a)}," for n, a in aliases], ")"]


def rewrite_import(node: ast.stmt, current: str | None, is_package: bool, indent: str | None) -> list[str] | None:
    """The new text of one import statement (its lines, unindented), None if unchanged."""
    if isinstance(node, ast.Import):
        out, changed = [], False
        for a in node.names:
            new = mapped(a.name)
            changed |= new != a.name
            out.append(f"import {alias_text(new, a.asname)}")
        return out if changed else None
    assert isinstance(node, ast.ImportFrom)
    module = absolute(node, current, is_package)
    if module is None or module.split(".")[0] != PKG:
        return None
    relative = node.level > 0
    groups: dict[str, list[tuple[str, str | None]]] = {}
    if module == PKG:
        for a in node.names:
            if a.name in MOVES:
                parent, leaf = (f"{PKG}.{MOVES[a.name]}").rsplit(".", 1)
                asname = bound_alias(a.name, a.asname) if a.name in RENAMED else a.asname
                groups.setdefault(parent, []).append((leaf, asname))
            else:
                groups.setdefault(PKG, []).append((a.name, a.asname))
    else:
        groups[mapped(module)] = [(a.name, a.asname) for a in node.names]
    if not relative and list(groups) == [module] and groups[module] == [(a.name, a.asname) for a in node.names]:
        return None
    lines = []
    for mod in sorted(groups):
        lines += from_lines(mod, groups[mod], indent)
    return lines


def import_nodes(text: str, python: bool):
    """(node, first line, last line, indent) of every import statement; for text that is not
    Python (Snakemake files, Markdown), of every line that parses alone as an import."""
    if python:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            python = False
        else:
            lines = text.splitlines()
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    first = lines[node.lineno - 1]
                    if first[:node.col_offset].strip():  # `x; import y`: left alone
                        continue
                    yield node, node.lineno - 1, node.end_lineno - 1, first[:node.col_offset]
            return
    for i, line in enumerate(text.splitlines()):
        m = re.match(r"(\s*)((from\s+\S+\s+import\s+[^#(]+)|(import\s+[^#]+))(#.*)?$", line)
        if not m or PKG not in line and "from ." not in line:
            continue
        try:
            node = ast.parse(m.group(2).strip()).body[0]
        except SyntaxError:
            continue
        yield node, i, i, m.group(1)


def rewrite_imports(text: str, path: Path, python: bool) -> str:
    current = module_of(path)
    is_package = path.name == "__init__.py"
    if not python:
        current = None  # relative imports in Markdown or Snakemake files name nothing we know
    lines = text.splitlines(keepends=True)
    edits = []
    for node, first, last, indent in import_nodes(text, python):
        new = rewrite_import(node, current, is_package, indent)
        if new is None:
            continue
        tail = lines[last].rstrip("\n")
        end_col = node.end_col_offset if python and node.end_lineno - 1 == last else None
        if end_col is None:
            stmt_end = re.search(r"\s*(#.*)?$", tail).start()
        else:
            stmt_end = end_col
        comment = tail[stmt_end:]
        if "#" in "".join(lines[first:last]):
            print(f"  note: {path.relative_to(ROOT)}:{first + 1}: comments inside an import statement are dropped")
        newline = "\n" if lines[last].endswith("\n") else ""
        body = [indent + ln for ln in new]
        body[-1] += comment
        edits.append((first, last, "\n".join(body) + newline))
    for first, last, new in sorted(edits, reverse=True):
        lines[first:last + 1] = [new]
    return rewrite_inline("".join(lines), current, is_package)


INLINE = re.compile(r"\bfrom (\.{1,3}[\w.]*|trainfail(?:\.\w+)*) import (\w+(?: as \w+)?(?:, \w+(?: as \w+)?)*)")
# where an import written inside a string (a module template, a script run with python -c) or in
# prose is relative, it is read as an experiment module's (the only module tests write out)
TEMPLATE = f"{PKG}.experiments._template"


def rewrite_inline(text: str, current: str | None, is_package: bool) -> str:
    """Imports that are not statements of this file (in strings, in prose): rewritten in place;
    one that now names two stages becomes two statements joined by "; " on the same line."""
    def repl(m: re.Match) -> str:
        try:
            node = ast.parse(m.group(0)).body[0]
        except SyntaxError:
            return m.group(0)
        cur, package = (current, is_package) if current else (TEMPLATE, False)
        module = absolute(node, cur, package)
        if module is None or mapped(module) == module and not (
                module == PKG and any(a.name in MOVES for a in node.names)):
            return m.group(0)  # names no moved module (e.g. `from .repo_copy import ROOT`)
        new = rewrite_import(node, cur, package, None)
        return m.group(0) if new is None else "; ".join(new)
    return INLINE.sub(repl, text)


# ---------------------------------------------------------------- references in any text

def _open_bracket(line: str) -> int | None:
    """The column of the innermost bracket left open at the end of a line of code (strings and a
    comment skipped, roughly), None if all are closed."""
    stack, quote, i = [], None, 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif line.startswith(quote, i):
                i += len(quote) - 1
                quote = None
        elif ch == "#":
            break
        elif ch in "\"'":
            quote = line[i:i + 3] if line[i:i + 3] in ('"""', "'''") else ch
            i += len(quote) - 1
        elif ch in "([{":
            stack.append(i)
        elif ch in ")]}" and stack:
            stack.pop()
        i += 1
    return stack[-1] if stack else None


def renamed_lines(text: str, subs: list, realign: bool) -> str:
    """Apply the substitutions line by line; in code, a continuation line aligned with a bracket
    that a longer name pushed right moves with it."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        old = lines[i]
        new = old
        for pattern, repl in subs:
            new = re.sub(pattern, repl, new)
        lines[i] = new
        col = _open_bracket(old) if realign and new != old else None
        if col is not None:
            shift = (_open_bracket(new) or col) - col
            j = i + 1
            while shift and j < len(lines) and len(lines[j]) - len(lines[j].lstrip(" ")) == col + 1 \
                    and lines[j].strip():
                lines[j] = " " * shift + lines[j]
                j += 1
        i += 1
    return "\n".join(lines)


def rewrite_text(text: str, path: Path, renamed_names: dict[str, list[str]]) -> str:
    # src/trainfail/<old>.py, trainfail/<old>.py
    text = re.sub(rf"\b{PKG}/({OLD})\.py\b", lambda m: f"{PKG}/{MOVES[m.group(1)].replace('.', '/')}.py", text)
    # trainfail.<old> (a module path in a string, a comment, a docstring, a doc)
    text = re.sub(rf"\b{PKG}\.({OLD})\b(?![\w/])", lambda m: f"{PKG}.{MOVES[m.group(1)]}", text)
    code = path.suffix in (".py", ".smk") or path.name == "Snakefile"
    for old, new in RENAMED.items():
        names = "|".join(sorted(renamed_names[old], key=len, reverse=True))
        # runs.run_shard, tf_runs.run_one -> execution.run_shard, tf_execution.run_one
        text = renamed_lines(text, [(rf"(?<![\w.])(tf_)?{old}\.({names})\b",
                                     lambda m, new=new: f"{m.group(1) or ''}{new}.{m.group(2)}"),
                                    (rf"(?<![\w.])tf_{old}\b", f"tf_{new}")], realign=code)
        # `runs.py` in prose (not test_runs.py, not results/runs.py)
        text = re.sub(rf"(?<![\w./]){old}\.py\b", f"{new}.py", text)
    # sources._command("runs", "stats", ...): bare module names under trainfail
    text = re.sub(r"_command\(([^()]*)\)", lambda m: "_command(" + re.sub(
        rf"([\"'])({OLD})\1", lambda q: f"{q.group(1)}{MOVES[q.group(2)]}{q.group(1)}", m.group(1)) + ")", text)
    return text


def fix_file_paths(text: str) -> str:
    """A module moved one folder deeper: its Path(__file__) anchors climb one more level."""
    text = re.sub(r"(Path\(__file__\)(?:\.resolve\(\))?)\.parents\[(\d+)\]",
                  lambda m: f"{m.group(1)}.parents[{int(m.group(2)) + 1}]", text)
    return re.sub(r"(Path\(__file__\)(?:\.resolve\(\))?)\.parent\b(?!s)", r"\1.parents[1]", text)


# ---------------------------------------------------------------- the files

def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def text_files() -> list[Path]:
    names = git("ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    out = []
    for name in sorted(set(filter(None, names))):
        p = ROOT / name
        if name.startswith(SKIP) or not p.is_file():
            continue
        if p.suffix in TEXT_SUFFIXES or p.name in TEXT_NAMES:
            out.append(p)
    return out


def readme_layout() -> list[str]:
    """The library's lines of README.md's Layout block, from the folders."""
    def modules(folder: Path) -> str:
        return ", ".join(p.stem for p in sorted(folder.glob("*.py")) if p.stem != "__init__")
    lines = [f"src/{PKG}/            the library, one folder per stage, lowest first (a module imports"]
    lines.append("                          from its own stage and lower ones only: tests/test_layers.py):")
    for stage in ORDER:
        if stage == "experiments":
            lines.append("  experiments/<id>.py     one per experiment, discovered (the contract: core/contract.py)")
            continue
        words = modules(SRC / stage).split(", ")
        head = f"  {stage}/".ljust(26)
        row = head
        for w in words:
            piece = w + ", "
            if len(row) + len(piece) > 110 and row.strip() != stage + "/":
                lines.append(row.rstrip())
                row = " " * 26
            row += piece
        lines.append(row.rstrip(", ").rstrip())
    lines.append("  __main__.py             the commands the rules call (`python -m trainfail ...`)")
    return lines


def update_readme(apply: bool) -> bool:
    path = ROOT / "README.md"
    text = path.read_text()
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith(f"src/{PKG}/ ")), None)
    if start is None:
        print("  note: README.md has no Layout line for src/trainfail/: not updated")
        return False
    end = start + 1
    while end < len(lines) and lines[end].startswith(" "):
        end += 1
    new = readme_layout()
    if lines[start:end] == new:
        return False
    if apply:
        path.write_text("\n".join(lines[:start] + new + lines[end:]) + ("\n" if text.endswith("\n") else ""))
    return True


def init_text(stage: str) -> str:
    return f'"""{STAGES[stage]}\n\nLayer {ORDER.index(stage) + 1} of {len(ORDER)}: ' \
           f'{" < ".join(ORDER)} < __main__ (tests/test_layers.py)."""\n'


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is left to do")
    check = args.parse_args(argv).check

    stray = sorted(p.stem for p in SRC.glob("*.py") if p.stem not in KEEP and p.stem not in MOVES)
    if stray:
        sys.exit(f"relayout: src/{PKG}/ holds modules that MOVES does not place: {', '.join(stray)}.\n"
                 f"Give each a stage in MOVES (tools/relayout.py) and run again.")
    clash = [old for old in MOVES if (SRC / f"{old}.py").exists() and new_path(old).exists()]
    if clash:
        sys.exit(f"relayout: both the old and the new file exist for {', '.join(clash)}: merge them by hand")
    for stage in STAGES:
        assert stage not in MOVES and stage != "experiments", stage

    todo: list[str] = []
    renamed_names = {old: module_names(old) for old in RENAMED}
    to_move = [old for old in MOVES if (SRC / f"{old}.py").exists()]
    moving = {SRC / f"{old}.py" for old in to_move}

    for stage in STAGES:
        init = SRC / stage / "__init__.py"
        if not init.exists():
            todo.append(f"create {init.relative_to(ROOT)}")
            if not check:
                init.parent.mkdir(exist_ok=True)
                init.write_text(init_text(stage))
                git("add", str(init))

    for path in text_files():
        text = path.read_text()
        python = path.suffix == ".py"
        new = text
        if python or path.suffix in (".smk", ".md") or path.name == "Snakefile":
            new = rewrite_imports(new, path, python)
        new = rewrite_text(new, path, renamed_names)
        if path in moving:
            new = fix_file_paths(new)
        rel = path.relative_to(ROOT).as_posix()
        dest = (new_path(path.stem) if path in moving else path).relative_to(ROOT).as_posix()
        for file, old_s, new_s in PATCHES:
            if file == dest and old_s in new:
                new = new.replace(old_s, new_s)
        if new != text:
            todo.append(f"rewrite {rel}")
            if not check:
                path.write_text(new)

    for file, old_s, new_s in PATCHES:
        p = ROOT / file
        if not check and p.exists() and old_s not in p.read_text() and new_s not in p.read_text() and not check:
            print(f"  note: patch for {file} found neither its old nor its new text: check by hand:\n    {new_s}")

    for old in to_move:
        dest = new_path(old)
        todo.append(f"git mv src/{PKG}/{old}.py {dest.relative_to(ROOT)}")
        if not check:
            git("mv", str(SRC / f"{old}.py"), str(dest))

    if not check or not to_move:
        if update_readme(apply=not check):
            todo.append("rewrite README.md's Layout block")

    for line in todo:
        print(("to do: " if check else "") + line)
    print(f"relayout: {len(todo)} {'things to do' if check else 'changes'}"
          + ("" if todo else " (already laid out)"))
    return 1 if check and todo else 0


if __name__ == "__main__":
    sys.exit(main())
