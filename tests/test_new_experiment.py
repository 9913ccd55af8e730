"""Adding an experiment, as a newcomer would, in a throw-away copy of the repository: the module
alone makes the registry test fail once, naming every part still missing; the module and four more
files (five in all) make it pass, and the figure test draws the new experiment from its fixture.

Fast tier: two pytest runs in subprocesses, no pipeline: 18 CPU-s measured (most of it importing
torch twice), about 20 s on two idle cores.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .repo_copy import ROOT, copy_repo, env_for

ID = "minimal_example"

# the module as first written: no claims() yet, figures() without its annotations
FIRST_DRAFT = '''"""minimal_example: a made-up experiment (tests/test_new_experiment.py writes it into a copy)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from trainfail.analysis import plots
from trainfail.core import contract
from trainfail.training.context import Context
from trainfail.core.contract import Settings
from trainfail.core.run_record import RunRecord

ID = "minimal_example"
SECTION = contract.MOMENTUM
ORDER = 2
TITLE = "A squared number grows faster than the number"
HEADLINE = "squares"


def runs(cfg: dict, ctx: Context) -> list[Settings]:
    return []


def table(cfg: dict, records: list[RunRecord], ctx: Context) -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, "x": x, "y": x * x + s / 100} for s in ctx.seeds_for(cfg) for x in range(4)])


def figures(table, cfg, outdir, ctx):
    import seaborn as sns

    fig, axes = plots.figure()
    sns.lineplot(table, x="x", y="y", errorbar=plots.BAND, ax=axes[0][0])
    plots.save(fig, outdir, "squares", note=plots.BAND_NOTE)
'''

MODULE = FIRST_DRAFT.replace("from trainfail.analysis import plots\n", "from trainfail.analysis import plots, stats\n").replace(
    "from trainfail.core.contract import Settings\n", "from trainfail.core.contract import Claim, Settings\n").replace(
    "def figures(table, cfg, outdir, ctx):",
    "def figures(table: pd.DataFrame, cfg: dict, outdir: Path, ctx: Context) -> None:") + '''

def claims(table: pd.DataFrame, cfg: dict, ctx: Context) -> list[Claim]:
    last = table[table["x"] == table["x"].max()]
    return [stats.claim(ID, "square_above_number", "x^2 > x at the largest x", "y - x",
                        stats.mean(last["y"] - last["x"]), 0.0, ">", kind="check")]
'''

SCHEMA = """description: A made-up experiment (tests/test_new_experiment.py).
type: object
additionalProperties: false
properties:
  enabled: {$ref: '#/definitions/enabled'}
  seeds: {$ref: '#/definitions/seeds'}
"""

CAPTION = """**Lecture claim (1.3):** a squared number grows faster than the number itself: the figure
draws x squared against x, one line per seed, with the mean and its 95% interval.
"""


def pytest_in(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**env_for(repo), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=300)


def changed_files(repo: Path) -> list[str]:
    """Files of the copy that are new or differ from this working tree's."""
    out = []
    for path in sorted(p for p in repo.rglob("*") if p.is_file()):
        rel = path.relative_to(repo)
        if "__pycache__" in rel.parts:
            continue
        original = ROOT / rel
        if not original.is_file() or original.read_bytes() != path.read_bytes():
            out.append(str(rel))
    return out


@pytest.mark.slow
def test_adding_an_experiment_is_one_message_then_five_files(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    module = repo / "src/trainfail/experiments" / f"{ID}.py"
    module.write_text(FIRST_DRAFT)

    first = pytest_in(repo, "tests/test_registry.py")
    out = first.stdout + first.stderr
    assert first.returncode == 1 and re.search(r"\b1 failed, \d+ passed\b", out) and " error" not in out, out[-6000:]
    assert "missing or wrong parts of 1 experiment (" in out, out[-6000:]
    for part in (f"{ID}:", "the module lacks claims()",
                 "figures() is annotated () -> (no annotation), the contract says "
                 "(table: DataFrame, cfg: dict, outdir: Path, ctx: Context) -> None",
                 f"schema: workflow/schemas/experiments/{ID}.schema.yaml is missing",
                 f"caption: workflow/report/{ID}.rst is missing",
                 f"smoke block: presets/smoke.yaml has no lines under experiments.{ID}",
                 f"figure fixture: tests/data/figure_tables/{ID}.csv.gz is missing",
                 "runs(): not checked: it has no config until its schema file exists"):
        assert part in out, f"the registry test's message does not name {part!r}:\n{out[-6000:]}"

    module.write_text(MODULE)
    (repo / "workflow/schemas/experiments" / f"{ID}.schema.yaml").write_text(SCHEMA)
    (repo / "workflow/report" / f"{ID}.rst").write_text(CAPTION)
    smoke = repo / "presets/smoke.yaml"
    text = smoke.read_text()
    assert text.count("\nexperiments:\n") == 1
    smoke.write_text(text.replace("\nexperiments:\n", f"\nexperiments:\n  {ID}:\n    seeds: [0, 1]\n\n"))
    rows = "".join(f"{s},{x},{x * x + s / 100}\n" for s in (0, 1) for x in range(4))
    (repo / "tests/data/figure_tables" / f"{ID}.csv.gz").write_bytes(gzip.compress(("seed,x,y\n" + rows).encode(),
                                                                                   mtime=0))
    assert len(changed_files(repo)) <= 5, changed_files(repo)

    second = pytest_in(repo, "-rA", "tests/test_registry.py", "tests/test_figures.py", "-k", f"test_registry or {ID}")
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-6000:]
    assert "PASSED tests/test_registry.py::test_every_experiment_has_its_parts" in out, out[-6000:]
    assert f"PASSED tests/test_figures.py::test_figures_are_legible_and_draw_the_claims_interval[{ID}]" in out, \
        out[-6000:]
