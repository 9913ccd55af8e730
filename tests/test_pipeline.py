"""End to end: the real Snakemake CLI on the smoke preset, bad configs, lint, report."""

import json

import pytest
import yaml

from trainfail import experiments
from trainfail.core import store
from trainfail.core.config import run_id
from trainfail.analysis.stats import CLAIM_COLUMNS, VERDICTS

from .repo_copy import copy_repo, snakemake

pytestmark = pytest.mark.e2e


def test_smoke_preset_runs_to_the_report(smoke_run):
    work, proc = smoke_run
    html = (work / "results/report/index.html").read_text()
    # the console says where the report is and counts the verdicts
    assert "trainfail report: results/report/index.html" in proc.stdout + proc.stderr
    assert "primary claims:" in proc.stdout + proc.stderr and "all test claims:" in proc.stdout + proc.stderr
    claims = store.read_table(work / "results/claims.csv")
    assert list(claims.columns)[:len(CLAIM_COLUMNS)] == CLAIM_COLUMNS
    assert set(claims["verdict"]) <= set(VERDICTS)
    smoke = yaml.safe_load((work / "presets/smoke.yaml").read_text())
    for exp in smoke["experiments"]:
        assert exp in experiments.REGISTRY
        assert (claims["experiment"] == exp).any(), f"{exp} has no claims"
        pngs = list((work / "results/figures" / exp).glob("*.png"))
        assert pngs and not list((work / "results/figures" / exp).glob("*.pdf"))  # figure_formats: [png]
        assert not store.read_table(work / "results/tables" / f"{exp}.csv").empty
        assert f"id='{exp}'" in html
    # the overview (verdict badges per section) comes before the sections, the full table after them
    assert html.index("<h2 id='overview'>") < html.index("<h2 id='section-1-2'>1.2 Batch size") < html.index("id='all-claims'")
    assert set(claims["kind"]) <= {"check", "demonstration", "test"}
    tests = claims["kind"].eq("test") & claims["applicable"].astype(bool)
    # each applicable test sits in one family (the primaries, or its section's secondaries) of its size
    sizes = claims[tests].groupby("family")["claim_id"].transform("size")
    assert (claims.loc[tests, "family_size"] == sizes).all() and (claims.loc[~tests, "family_size"] == 0).all()
    assert claims.loc[tests, "role"].isin(["primary", "secondary"]).all()
    assert f"the primaries (m = {int((claims.loc[tests, 'role'] == 'primary').sum())})" in html
    assert "Provenance" in html and "data:image/png;base64" in html
    audit = store.read_table(work / "results/audit.csv")
    assert len(audit) and audit["match"].all()  # re-trained runs give identical metrics on the CPU


def test_runs_carry_their_provenance(smoke_run):
    work, _ = smoke_run
    metas = [json.loads(p.read_text()) for p in (work / "results/runs").glob("*/meta.json")]
    assert metas
    for meta in metas:
        assert meta["run_id"] == meta["settings_hash"] == run_id(meta["settings"])
        assert {"torch", "python", "numpy"} <= set(meta["versions"]) and meta["device_name"]
        assert "diverged" in meta and "determinism" in meta and "git" in meta


def test_another_preset_is_refused_before_any_job(smoke_run):
    """The tree holds the smoke preset: a quick run into it would replace its report. Refused at
    parse time, naming what to do, with nothing run or written."""
    work, _ = smoke_run
    before = sorted(p.name for p in (work / "results").iterdir())
    proc = snakemake(work, "--cores", "1", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "holds the results of the 'smoke' preset" in out and "make clean" in out
    assert sorted(p.name for p in (work / "results").iterdir()) == before
    assert (work / "results/preset").read_text() == "smoke\n"


def test_second_run_has_nothing_to_do(smoke_run):
    work, _ = smoke_run
    proc = snakemake(work, "--configfile", "presets/smoke.yaml", "--cores", "1", "-n", check=False)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr


def test_snakemake_report(smoke_run):
    work, _ = smoke_run
    proc = snakemake(work, "--configfile", "presets/smoke.yaml", "--report", "results/report/snakemake.html", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (work / "results/report/snakemake.html").read_text()
    # the verdicts the report reads (family-wise, primaries first), not the per-experiment unadjusted ones
    assert len(page) > 10_000 and "report/verdicts.csv" in page
    assert "System Message" not in page and "Undefined substitution" not in page


def test_named_target_with_a_config_and_seeds_not_in_the_repo(tmp_path):
    work = copy_repo(tmp_path)
    # config.yaml gives batch_accuracy its own seeds and shard size: a user overrides them there
    (work / "mine.yaml").write_text(yaml.safe_dump({
        "experiments": {"batch_accuracy": {"datasets": [{"name": "digits", "model": {"arch": "cnn", "channels": [4]}}],
                                           "batch_sizes": [64, 256], "epochs": 1, "seeds": [11, 12], "shard_size": 3,
                                           "equal_updates": 5, "tuning": {"lrs": [0.001, 0.01], "seeds": [13, 14]},
                                           "optimizer": {"name": "adam", "lr": 0.01}}}}))
    proc = snakemake(work, "--configfile", "mine.yaml", "--cores", "2", "batch_accuracy", check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = store.read_table(work / "results/tables/batch_accuracy.csv")
    claimed = table[~table["arm"].isin(["sweep", "tuning"])]  # "tuning": one row per sweep's choice
    assert sorted(claimed["seed"].unique()) == [11, 12] and sorted(table["batch_size"].unique()) == [64, 256]
    assert set(table[table["arm"] == "sweep"]["seed"]) == {13, 14}
    assert set(table[table["arm"] == "tuned"]["lr"]) <= {0.001, 0.01}    # the rates the sweep chose
    assert not (work / "results/report").exists()  # only the named target was built
    # 16 runs in stage 0 and 4 tuned ones in stage 1 (cells of 2); a shard takes whole cells until it
    # holds at least 3 runs. stack_exact false: per batch size the lecture arm (lr 0.01) and the sweep
    # (0.001 and 0.01 on two tuning seeds) are one rate stack of 6; the equal-updates arms, longer, are
    # cells of 2: [6] [6] [2+2] and [2+2]
    assert len(list((work / "results/shards").glob("*.json"))) == 3 + 1
    # one choice per batch size's sweep, read by the tuned runs (meta.json) and the analysis
    choices = {p.stem: store.read_checked_json(p) for p in (work / "results/tuning").glob("*.json")}
    assert len(choices) == 2 and {c["lr"] for c in choices.values()} == set(table[table["arm"] == "tuned"]["lr"])
    tuned = table[table["arm"] == "tuned"]["run_id"]
    metas = [json.loads((work / "results/runs" / rid / "meta.json").read_text()) for rid in tuned]
    assert {m["choice"]["sweep_id"] for m in metas} == set(choices)


def test_dry_run_shows_a_tune_job_per_sweep_before_the_tuned_shard(tmp_path):
    """A sweep's choice is a job of its own: the dry run lists one tune job per sweep, reading the
    sweep's shard; the tuned runs' shard reads the choice files (not every earlier shard)."""
    import re

    work = copy_repo(tmp_path)
    out = snakemake(work, "momentum", "--configfile", "presets/smoke.yaml", "-n").stdout
    sweeps = set(re.findall(r"output: results/tuning/([0-9a-f]{16})\.json", out))
    assert len(sweeps) == 2 and re.search(r"^tune\s+2$", out, re.M), out[-3000:]
    tune_inputs = re.findall(r"input: (.*)\n\s+output: results/tuning/", out)
    assert tune_inputs == ["results/shards/momentum-000.json"] * 2
    tuned_inputs = re.search(r"input: (.*)\n\s+output: results/shards/momentum-stage1-000.json", out).group(1)
    assert {f"results/tuning/{s}.json" for s in sweeps} <= set(tuned_inputs.split(", "))
    assert "results/shards/" not in tuned_inputs


def test_bad_config_is_refused_before_any_job(tmp_path):
    """End to end, one case: Snakemake stops at parse time with the key and what is allowed, and
    writes nothing. Every kind of bad value is tested in-process (tests/test_config.py)."""
    work = copy_repo(tmp_path)
    (work / "bad.yaml").write_text(yaml.safe_dump({"experiments": {"batch_accuracy": {"batch_sizes": [-8, 64]}}}))
    proc = snakemake(work, "--configfile", "presets/smoke.yaml", "bad.yaml", "--cores", "1", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "invalid config" in out
    assert "experiments.batch_accuracy.batch_sizes.0" in out and "minimum 1" in out and "-8" in out
    assert not (work / "results").exists()


def test_changing_an_experiment_reruns_its_analysis_and_the_report(smoke_run, tmp_path):
    """The rules name their source files: editing an experiment's module reruns its analysis and
    the report, and nothing is retrained."""
    work, _ = smoke_run
    module = work / "src/trainfail/experiments/batch_path.py"
    original = module.read_text()
    module.write_text(original + "\n# an edit\n")
    try:
        proc = snakemake(work, "--configfile", "presets/smoke.yaml", "-n", "--quiet", "rules", check=False)
    finally:
        module.write_text(original)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "analyze_batch_path" in out and "report" in out
    assert "train " not in out and "analyze_batch_accuracy" not in out


def test_lint_is_clean(tmp_path):
    work = copy_repo(tmp_path)
    proc = snakemake(work, "--lint", check=False)
    assert proc.returncode == 0 and "good condition" in proc.stdout + proc.stderr, proc.stdout[-3000:]
