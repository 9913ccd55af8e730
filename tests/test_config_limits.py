"""Issue 23: sizes with limits, alias bombs, models an experiment needs, and the smaller refusals.

Each input is refused before any job (a ConfigError naming the key, in validation or when the plan
is made) or planned within the config's `limits`, quickly and without allocating what it asks for.
"""

from __future__ import annotations

import copy
import functools
import itertools
import re
import time

import pytest
import yaml

from trainfail.core import config as tf_config
from trainfail import experiments
from trainfail.pipeline import plan, results_tree
from trainfail.training import data, models, sizes, stack
from trainfail.core.config import ConfigError, load_schema, load_yaml, merge, validate
from trainfail.pipeline.plan import make_plan

from .repo_copy import ROOT

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


@functools.lru_cache(maxsize=None)
def _quick() -> dict:
    return validate(load_yaml(ROOT / "config.yaml"), SCHEMA)


def quick() -> dict:
    """The quick preset as Snakemake reads it, every experiment's defaults filled in."""
    return copy.deepcopy(_quick())


def preset(*names: str) -> dict:
    cfg = load_yaml(ROOT / "config.yaml")
    for name in names:
        cfg = merge(cfg, load_yaml(ROOT / "presets" / f"{name}.yaml"))
    return validate(cfg, SCHEMA)


def refused(cfg: dict, experiment: str | None = None) -> str:
    """The refusal `cfg` gets, by validation or when its plan is made; at most 5 s."""
    start = time.monotonic()
    with pytest.raises(ConfigError) as e:
        validate(cfg, SCHEMA)
        make_plan(cfg, [experiment] if experiment else list(experiments.MODULES))
    assert time.monotonic() - start < 5, "a refusal must be quick"
    return str(e.value)


def overlay(text: str) -> dict:
    """The quick preset with a YAML overlay over it, as Snakemake merges --configfile files."""
    return merge(load_yaml(ROOT / "config.yaml"), yaml.safe_load(text))


# --- item 3: YAML alias bombs; item 7: every error at once, data_dir -----------------------------

def bomb(levels: int = 9, width: int = 9, where: str = "seeds") -> str:
    """A config whose `where` stands for width ** levels values in a dozen lines."""
    lines = ["anchors:", "  - &a0 [0, 1, 2, 3, 4, 5, 6, 7, 8]"]
    for i in range(1, levels):
        lines.append(f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + f"\n{where}: [" + ", ".join([f"*a{levels - 1}"] * width) + "]\n"


def test_an_alias_bomb_is_refused_quickly_naming_its_key():
    cfg = yaml.safe_load(bomb())
    del cfg["anchors"]
    message = refused(cfg)
    assert "  seeds: stands for " in message and "aliases" in message and "100,000" in message


def test_an_alias_bomb_under_an_experiment_with_a_non_string_key_is_refused_quickly():
    text = bomb(where="x").replace("x: ", "experiments: {batch_accuracy: {1: ", 1).rstrip() + "}}\n"
    cfg = yaml.safe_load(text)
    del cfg["anchors"]
    message = refused(cfg)
    assert "experiments.batch_accuracy" in message and "stands for" in message


def test_shared_nodes_are_walked_once_and_named_once():
    """Aliases are fine at a sane size: the shared node's non-string key is named once, at its first path."""
    cfg = yaml.safe_load("x: &n {1: a}\nexperiments: {batch_accuracy: {tuning: *n}, batch_timing: {model: *n}}")
    del cfg["x"]
    message = refused(cfg)
    assert message.count("(the key 1 is not a string") == 1


def test_a_self_containing_alias_is_refused():
    cfg = yaml.safe_load("seeds: &s [0, *s]")
    assert "nested deeper than 32 levels" in refused(cfg)


def test_a_million_seeds_are_refused_before_the_schema_reads_them():
    cfg = overlay("preset: quick")
    cfg["seeds"] = list(range(1_000_000))
    message = refused(cfg)
    assert "  seeds: a list of 1,000,000 items" in message


def test_every_kind_of_error_in_a_block_is_named_together():
    """A non-string key used to hide a misspelt key beside it; two misspelt keys, the second."""
    cfg = overlay("experiments: {batch_path: {yes: 3, epochz: 2, lrr: 0.1, n_examples: -1}}")
    message = refused(cfg)
    for key in ("experiments.batch_path.True (the key True is not a string", "experiments.batch_path.epochz: expected",
                "experiments.batch_path.lrr: expected", "experiments.batch_path.n_examples: expected"):
        assert key in message, message


def test_many_errors_are_counted_not_flooded():
    cfg = overlay("preset: quick")
    cfg["seeds"] = [f"s{i}" for i in range(40)]
    message = refused(cfg)
    assert "... and " in message and len(message.splitlines()) <= tf_config.MAX_SHOWN + 2


def test_a_long_value_is_cut_short_in_the_message():
    cfg = quick()
    cfg["device"] = "x" * 5000
    message = refused(cfg)
    assert "5,002 characters" in message and len(message) < 600


@pytest.mark.parametrize("where", ["file", "file/below"])
def test_a_data_dir_that_is_a_file_is_refused_naming_data_dir(tmp_path, where):
    (tmp_path / "file").write_text("not a directory")
    cfg = quick()
    cfg["data_dir"] = str(tmp_path / where)
    message = refused(cfg)
    assert "  data_dir: expected a directory" in message and "a file" in message


# --- item 2: sizes have limits ----------------------------------------------------------------

@pytest.mark.parametrize("text, key, allowed", [
    # 1e9 points once allocated 7.45 GiB while Snakemake read the workflow
    ("experiments: {generalization_gap: {interpolation: {points: 1000000000}}}",
     "experiments.generalization_gap.interpolation.points", "maximum 1000"),
    ("experiments: {batch_accuracy: {datasets: [{name: digits, model: {arch: mlp, hidden: [100000, 100000]}}]}}",
     "experiments.batch_accuracy.datasets.0.model.hidden.0", "maximum 16384"),
    ("experiments: {bn_speedup: {steps: 2147483647}}", "experiments.bn_speedup.steps", "maximum 1000000"),
    ("experiments: {batch_timing: {repeats: 100000}}", "experiments.batch_timing.repeats", "maximum 1000"),
    ("experiments: {momentum: {network: {tuning: {claim_seeds: [" + ", ".join(map(str, range(300))) + "]}}}}",
     "experiments.momentum.network.tuning.claim_seeds", "maxItems 256"),
    ("experiments: {normalization_variants: {model: {arch: cnn, channels: [8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]}}}",
     "experiments.normalization_variants.model.channels", "maxItems 16"),
])
def test_a_size_past_its_limit_is_refused_naming_the_key(text, key, allowed):
    message = refused(overlay(text))
    assert f"{key}: expected" in message and allowed in message


def test_every_size_in_the_schema_has_a_limit():
    """Every integer key has a maximum and every list a maxItems (JSON Schema draft 7 ignores what
    sits beside a $ref, so a limit there would be no limit: none may)."""
    schema = load_schema(SCHEMA)
    checked = set(tf_config._Validator.VALIDATORS) - {"$ref", "description", "default"}
    missing = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            assert not checked & set(node), f"{path}: beside a $ref, {sorted(checked & set(node))} is ignored"
            return
        if node.get("type") == "integer" and "maximum" not in node:
            missing.append(f"{path}: an integer without a maximum")
        if node.get("type") == "array" and "maxItems" not in node:
            missing.append(f"{path}: a list without maxItems")
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{name}")
        walk(node.get("items"), f"{path}[]")

    walk(schema, "")
    for name, sub in schema["definitions"].items():
        walk(sub, f"#{name}")
    assert not missing, missing


@pytest.mark.parametrize("names", [(), ("smoke",), ("full",), ("full", "papers")])
def test_every_preset_is_planned_within_the_limits(names):
    cfg = preset(*names)
    p = make_plan(cfg, list(experiments.MODULES))
    runs, gib = plan.limits(cfg)
    assert len(p.runs) <= runs
    stacking = cfg["stack"]
    largest = max(sizes.job_bytes(stack.cells(p.shard_settings(s)), stacking) for s in p.shards)
    assert 0 < largest <= gib * sizes.GIB


def test_the_plans_limits_are_the_schemas_defaults():
    assert plan.limits({}) == plan.limits(validate({}, SCHEMA)) == (20000, 64.0)


def test_a_plan_of_too_many_runs_is_refused_naming_the_lists_before_hashing_them():
    """Every list at its limit: 2 data sets x 32 batch sizes x (256 seeds x 3 arms + 32 rates x 256
    tuning seeds) = 573,440 runs, refused in well under the 5 s `refused` allows."""
    cfg = quick()
    b = cfg["experiments"]["batch_accuracy"]
    b.update(seeds=list(range(256)), batch_sizes=list(range(1, 33)))
    b["tuning"].update(lrs=[0.01 * i for i in range(1, 33)], seeds=list(range(1000, 1256)))
    message = refused(cfg, "batch_accuracy")
    assert "experiments.batch_accuracy: 573,440 runs" in message and "more than limits.runs = 20,000" in message
    assert "experiments.batch_accuracy.seeds (256 items)" in message


def test_the_run_limit_counts_runs_two_experiments_share_once():
    cfg = quick()
    exps = ["optimizer_schedule", "momentum"]  # momentum's network runs are optimizer_schedule's
    total = len(make_plan(cfg, exps).runs)
    alone = len(make_plan(cfg, exps[:1]).runs)
    cfg["limits"]["runs"] = total
    make_plan(cfg, exps)
    cfg["limits"]["runs"] = total - 1
    with pytest.raises(ConfigError) as e:
        make_plan(cfg, exps)
    assert "experiments.momentum: " in str(e.value) and f"(the plan {total:,})" in str(e.value) and alone < total


def test_a_job_over_the_memory_budget_is_refused_naming_the_model_and_the_estimate():
    cfg = quick()
    cfg["experiments"]["batch_accuracy"]["datasets"][0]["model"]["hidden"] = [16384] * 8
    message = refused(cfg, "batch_accuracy")
    assert "experiments.batch_accuracy.datasets.0.model: a training job" in message
    # the stack is the claim seeds' (the power rule sets their count); the estimate scales with it
    found = re.search(r"mlp \[16384, 16384, \.\.\., 16384\] \(8 layers\) on mnist1d, a stack of (\d+) runs\) "
                      r"needs about ([\d,]+) GiB", message)
    assert found, message
    assert int(found.group(1)) == len(cfg["experiments"]["batch_accuracy"]["seeds"])
    assert int(found.group(2).replace(",", "")) > 64
    assert "limits.job_memory_gib = 64" in message
    cfg["limits"]["job_memory_gib"] = 1024  # a larger machine: planned
    make_plan(cfg, ["batch_accuracy"])


@pytest.mark.parametrize("arch, norm, widths, shape", list(itertools.product(
    ["mlp", "cnn"], ["none", "batch", "layer", "group", "instance", "weight", "noisy_batch"],
    [[], [8], [16, 32, 8]], [(1, 40), (1, 8, 8), (3, 32, 32)])))
def test_the_estimate_counts_the_parameters_models_build_has(arch, norm, widths, shape):
    spec = {"arch": arch, "norm": norm, ("channels" if arch == "cnn" else "hidden"): widths}
    try:
        built = models.count_parameters(models.build(spec, shape, 10))
    except ValueError:  # a model models.build refuses is one the estimate refuses
        with pytest.raises(sizes.SizeError):
            sizes.network(spec, shape, 10)
        return
    assert sizes.network(spec, shape, 10)[0] == built


def test_the_estimate_knows_the_data_sets_shapes():
    ds = data.load("digits")  # the one that loads in milliseconds (the others: their published sizes)
    assert sizes.SHAPES["digits"] == (ds.input_shape, ds.n_train, len(ds.x_test))


@pytest.mark.parametrize("key, model, why", [
    ("normalization_variants", {"arch": "cnn", "channels": [8, 8, 8, 8, 8]}, "5 conv stages pool an input of (1, 8, 8) to nothing"),
    ("normalization_variants", {"arch": "mlp", "hidden": [8]}, "instance norm needs a conv net"),
    ("batch_timing", {"arch": "cnn", "channels": [8]}, "a conv net (arch cnn) needs inputs with positions"),
])
def test_a_model_that_cannot_be_built_on_its_data_is_refused_when_planned(key, model, why):
    cfg = quick()
    cfg["experiments"][key]["model"] = {**cfg["experiments"][key]["model"], **model}
    message = refused(cfg, key)
    assert f"experiments.{key}.model: " in message and why in message


# --- item 4: a model an experiment needs ------------------------------------------------------

@pytest.mark.parametrize("experiment, model, key", [
    ("bn_inference", {"arch": "cnn", "channels": []}, "experiments.bn_inference.model.channels"),
    ("internal_covariate_shift", {"arch": "cnn", "channels": []}, "experiments.internal_covariate_shift.model.channels"),
    ("bn_speedup", {"arch": "cnn", "channels": []}, "experiments.bn_speedup.model.channels"),
    ("normalization_variants", {"arch": "cnn", "channels": []}, "experiments.normalization_variants.model.channels"),
    ("optimizer_schedule", {"arch": "mlp", "hidden": []}, "experiments.optimizer_schedule.model.hidden"),
])
def test_a_model_without_the_layer_an_experiment_measures_is_refused_when_planned(experiment, model, key):
    cfg = quick()
    cfg["experiments"][experiment]["model"] = {**cfg["experiments"][experiment]["model"], **model}
    message = refused(cfg, experiment)
    assert f"{key}: expected at least one layer" in message


def test_a_linear_model_is_still_a_model_where_no_layer_is_measured():
    cfg = quick()
    cfg["experiments"]["stuck_not_critical"]["model"]["hidden"] = []
    assert make_plan(cfg, ["stuck_not_critical"]).runs


def test_internal_covariate_shift_needs_sgd_when_planned():
    cfg = quick()
    cfg["experiments"]["internal_covariate_shift"]["optimizer"] = {"name": "adam", "lr": 0.001}
    assert "experiments.internal_covariate_shift.optimizer.name: expected 'sgd'" in refused(cfg, "internal_covariate_shift")


# --- item 7: the smaller ones ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["quick ", " quick", "a\nb", "tab\there", ""])
def test_a_preset_name_with_space_at_an_end_or_a_control_character_is_refused(name):
    cfg = quick()
    cfg["preset"] = name
    assert "  preset: expected a name with no space at either end" in refused(cfg)


def test_a_tree_reads_back_the_preset_it_wrote(tmp_path):
    """A tree claimed with 'quick ' (before names were checked) once refused its own preset on the
    second run: the marker was read stripped. Read as written, each name claims its tree again."""
    for name in ("full+papers", "quick "):
        results_tree.claim(tmp_path / name, name)
        results_tree.claim(tmp_path / name, name)
        assert (tmp_path / name / "preset").read_text() == name + "\n"


def test_a_download_into_a_file_blames_data_dir_not_the_network(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda *a, **k: pytest.fail("no download was needed"))
    with pytest.raises(data.DatasetUnavailable) as e:
        data.download("mnist", "train-images-idx3-ubyte.gz", tmp_path / "file")
    assert "data_dir" in str(e.value) and "not a file" in str(e.value) and "could not be downloaded" not in str(e.value)


@pytest.mark.parametrize("label", ["=HYPERLINK(\"http://x\")", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_a_label_a_spreadsheet_would_run_as_a_formula_is_refused(label):
    cfg = quick()
    cfg["experiments"]["ill_conditioned_convex"]["methods"][0]["label"] = label
    message = refused(cfg)
    assert "experiments.ill_conditioned_convex.methods.0.label: expected text not beginning with =" in message


def test_a_network_label_may_not_begin_with_a_dash():
    cfg = quick()
    cfg["experiments"]["generalization_gap"]["networks"][0]["label"] = "-like"
    assert "not beginning with '-'" in refused(cfg)


def test_a_failed_analysis_removes_the_report_that_links_its_outputs(tmp_path):
    """Snakemake removes a forced analysis' table before the job: the job removes the report that
    links it, so that when the analysis fails no report is left linking a missing table."""
    from trainfail.__main__ import main

    report = tmp_path / "report" / "index.html"
    report.parent.mkdir()
    report.write_text("<a href='../tables/batch_path.csv'>")
    job = tmp_path / "job.json"
    job.write_text('{"config": {}, "runs": ["0000000000000000"]}')  # a run that is not there: the analysis fails
    with pytest.raises(Exception):
        main(["analyze", "batch_accuracy", "--job", str(job), "--results", str(tmp_path), "--table", str(tmp_path / "t.csv"),
              "--claims", str(tmp_path / "c.csv"), "--figures", str(tmp_path / "f"), "--report", str(report)])
    assert not report.exists()
