"""The workflow's own hygiene: formatting, captions, the plan table, the code each stage runs."""

import shutil
import subprocess
import sys

import pytest

from trainfail import experiments
from trainfail.pipeline import report, sources
from trainfail.pipeline.plan import describe, make_plan
from trainfail.core.config import load_yaml, merge, validate

from .repo_copy import ROOT


def test_snakefmt_is_clean():
    exe = shutil.which("snakefmt") or str(ROOT / ".venv/bin/snakefmt")
    proc = subprocess.run([exe, "--check", "Snakefile", "workflow/rules"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("caption", sorted((ROOT / "workflow/report").glob("*.rst")), ids=lambda p: p.stem)
def test_captions_are_clean_restructuredtext(caption):
    """Both reports render captions with docutils: a caption must give no warning or error
    (e.g. |x| is a substitution reference in reStructuredText)."""
    assert report.caption_problems(caption.read_text()) == []


def test_caption_problems_are_found():
    assert report.caption_problems("the box |z_i| <= eps")
    assert "<strong>Claim:</strong>" in report.caption_html("**Claim:** a ``literal``")


def test_analysis_sources_follow_the_imports():
    files = {p.relative_to(sources.ROOT).as_posix() for p in sources.for_analysis("momentum")}
    # the experiment, the shared modules it imports, the command; not other experiments
    assert {"experiments/momentum.py", "training/network_arms.py", "analysis/plots.py", "analysis/stats.py",
            "__main__.py"} <= files
    assert not {"experiments/optimizer_schedule.py", "experiments/batch_path.py", "pipeline/report.py"} & files
    assert "report.py" in {p.name for p in sources.for_report()}


def test_plan_table_says_what_each_shard_trains():
    cfg = validate(merge(load_yaml(ROOT / "config.yaml"), load_yaml(ROOT / "presets/smoke.yaml")),
                   ROOT / "workflow/schemas/config.schema.yaml")
    table = describe(make_plan(cfg, [e for e in experiments.MODULES if e in cfg["experiments"]]))
    assert set(table.columns) == {"shard", "stage", "run_id", "experiments", "task", "choice", "differs"}
    # a tuned run names the choice file it trains at; the runs that read none name none
    tuned = table["task"] == "tuned"
    assert tuned.any() and table[tuned]["choice"].str.fullmatch(r"tuning/[0-9a-f]{16}\.json").all()
    assert (table[table["task"] == "train"]["choice"] == "").all()
    ba = table[table["experiments"].str.contains("batch_accuracy")]
    assert ba["differs"].str.contains("batch_size=").all() and ba["differs"].str.contains("seed=").all()
    assert (table[table["shard"].str.contains("-stage1-")]["stage"] == 1).all()


def test_cli_lists_every_command_with_help():
    out = subprocess.run([sys.executable, "-m", "trainfail", "--help"], capture_output=True, text=True).stdout
    for command in ("plan", "prepare-data", "train", "tune", "analyze", "report", "audit", "download"):
        assert command in out
    sub = subprocess.run([sys.executable, "-m", "trainfail", "train", "--help"], capture_output=True, text=True).stdout
    assert "file (or inline JSON)" in sub
