"""End to end: the real Snakemake CLI on the smoke preset, bad configs, lint, report."""

import json

import pytest
import yaml

from trainfail import experiments, store
from trainfail.config import run_id
from trainfail.stats import CLAIM_COLUMNS, VERDICTS

from .repo_copy import copy_repo, snakemake

pytestmark = pytest.mark.e2e


def test_smoke_preset_runs_to_the_report(smoke_run):
    work, _ = smoke_run
    html = (work / "results/report/index.html").read_text()
    claims = store.read_table(work / "results/claims.csv")
    assert list(claims.columns)[:len(CLAIM_COLUMNS)] == CLAIM_COLUMNS
    assert set(claims["verdict"]) <= set(VERDICTS)
    smoke = yaml.safe_load((work / "presets/smoke.yaml").read_text())
    for exp in smoke["experiments"]:
        assert exp in experiments.REGISTRY
        assert (claims["experiment"] == exp).any(), f"{exp} has no claims"
        pngs = list((work / "results/figures" / exp).glob("*.png"))
        assert pngs and all(p.with_suffix(".pdf").exists() for p in pngs)
        assert not store.read_table(work / "results/tables" / f"{exp}.csv").empty
        assert f"id='{exp}'" in html
    assert html.index("<h2>Test claims</h2>") < html.index("<h2>1.2 Batch size</h2>")
    assert set(claims["kind"]) <= {"check", "demonstration", "test"}
    tests = claims["kind"].eq("test") & claims["applicable"].astype(bool)
    assert (claims["family_size"] == tests.sum()).all() and f"m = {tests.sum()}" in html
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


def test_second_run_has_nothing_to_do(smoke_run):
    work, _ = smoke_run
    proc = snakemake(work, "--configfile", "presets/smoke.yaml", "--cores", "1", "-n", check=False)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr


def test_snakemake_report(smoke_run):
    work, _ = smoke_run
    proc = snakemake(work, "--configfile", "presets/smoke.yaml", "--report", "results/report/snakemake.html", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "results/report/snakemake.html").stat().st_size > 10_000


def test_named_target_with_a_config_and_seeds_not_in_the_repo(tmp_path):
    work = copy_repo(tmp_path)
    # config.yaml gives batch_accuracy its own seeds and shard size: a user overrides them there
    (work / "mine.yaml").write_text(yaml.safe_dump({
        "experiments": {"batch_accuracy": {"datasets": [{"name": "digits", "model": {"arch": "cnn", "channels": [4]}}],
                                           "batch_sizes": [64, 256], "epochs": 1, "seeds": [11, 12], "shard_size": 3,
                                           "equal_updates": 5, "tuning": {"lrs": [0.001, 0.01], "seeds": [13]},
                                           "optimizer": {"name": "adam", "lr": 0.01}}}}))
    proc = snakemake(work, "--configfile", "mine.yaml", "--cores", "2", "batch_accuracy", check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = store.read_table(work / "results/tables/batch_accuracy.csv")
    claimed = table[table["arm"] != "sweep"]
    assert sorted(claimed["seed"].unique()) == [11, 12] and sorted(table["batch_size"].unique()) == [64, 256]
    assert set(table[table["arm"] == "sweep"]["seed"]) == {13}
    assert set(table[table["arm"] == "tuned"]["lr"]) <= {0.001, 0.01}    # the rates the sweep chose
    assert not (work / "results/report").exists()  # only the named target was built
    # 12 runs in stage 0 (lecture, equal updates, sweep) and 4 tuned ones in stage 1, in shards of 3
    assert len(list((work / "results/shards").glob("*.json"))) == 4 + 2


BAD = {
    "unknown optimizer": ({"experiments": {"batch_accuracy": {"optimizer": {"name": "sgdd", "lr": 0.1}}}},
                          ["experiments.batch_accuracy.optimizer.name", "'momentum'"]),
    "unknown dataset": ({"experiments": {"batch_accuracy": {"datasets": [{"name": "imagenet", "model": {}}]}}},
                        ["experiments.batch_accuracy.datasets.0.name", "'fashion_mnist'"]),
    "negative batch size": ({"experiments": {"batch_accuracy": {"batch_sizes": [-8, 64]}}},
                            ["experiments.batch_accuracy.batch_sizes.0", "minimum 1", "-8"]),
    "wrong type": ({"experiments": {"batch_accuracy": {"epochs": "ten"}}},
                   ["experiments.batch_accuracy.epochs", "type integer", "'ten'"]),
    "unknown experiment": ({"experiments": {"batch_acuracy": {}}},
                           ["experiments.batch_acuracy", "'batch_accuracy'"]),
    "unknown device": ({"device": "tpu"}, ["device", "'cuda'"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_is_refused_before_any_job(tmp_path, case):
    overlay, expected = BAD[case]
    work = copy_repo(tmp_path)
    (work / "bad.yaml").write_text(yaml.safe_dump(overlay))
    proc = snakemake(work, "--configfile", "presets/smoke.yaml", "bad.yaml", "--cores", "1", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "invalid config" in out
    for text in expected:
        assert text in out, f"{text!r} not in:\n{out[-2000:]}"
    assert not (work / "results").exists()


def test_lint_is_clean(tmp_path):
    work = copy_repo(tmp_path)
    proc = snakemake(work, "--lint", check=False)
    assert proc.returncode == 0 and "good condition" in proc.stdout + proc.stderr, proc.stdout[-3000:]
