import copy

import pytest
import yaml

from trainfail.core.config import ConfigError, load_yaml, merge, run_id, validate

from .repo_copy import ROOT

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def quick() -> dict:
    """The quick preset as Snakemake reads it, every experiment's defaults filled in."""
    return validate(load_yaml(ROOT / "config.yaml"), SCHEMA)


def test_presets_validate_and_defaults_are_filled():
    for preset in ("smoke", "full"):
        cfg = validate(merge(quick(), load_yaml(ROOT / "presets" / f"{preset}.yaml")), SCHEMA)
        assert cfg["preset"] == preset
    cfg = validate({}, SCHEMA)
    assert cfg["seeds"] == [0, 1, 2] and cfg["device"] == "auto"
    assert cfg["experiments"]["batch_path"]["batch_sizes"] == [1, 20]   # every experiment, defaults filled


def test_a_missing_required_key_is_named():
    cfg = {"experiments": {"batch_accuracy": {"optimizer": {"name": "sgd"}}}}
    with pytest.raises(ConfigError) as e:
        validate(cfg, SCHEMA)
    assert "experiments.batch_accuracy.optimizer.lr" in str(e.value) and "required" in str(e.value)


def test_merge_is_recursive_like_snakemake():
    merged = merge({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": 3}, "l": [9]})
    assert merged == {"a": {"b": 3, "c": 2}, "l": [9]}


@pytest.mark.parametrize("path, value, key, allowed", [
    (("experiments", "batch_accuracy", "optimizer", "name"), "sgdd", "experiments.batch_accuracy.optimizer.name", "'adam'"),
    (("experiments", "batch_accuracy", "datasets", 0, "name"), "imagenet", "experiments.batch_accuracy.datasets.0.name", "'mnist1d'"),
    (("experiments", "batch_accuracy", "batch_sizes", 0), -8, "experiments.batch_accuracy.batch_sizes.0", "minimum 1"),
    (("experiments", "batch_accuracy", "epochs"), "ten", "experiments.batch_accuracy.epochs", "type integer"),
    (("device",), "tpu", "device", "'cuda'"),
    (("seeds",), [], "seeds", "minItems"),
])
def test_bad_values_name_the_key_and_what_is_allowed(path, value, key, allowed):
    cfg = quick()
    node = cfg
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as e:
        validate(cfg, SCHEMA)
    assert key in str(e.value) and allowed in str(e.value)


def test_unknown_experiment_lists_the_known_ones():
    cfg = quick()
    cfg["experiments"]["batch_acuracy"] = {}
    with pytest.raises(ConfigError) as e:
        validate(cfg, SCHEMA)
    assert "experiments.batch_acuracy" in str(e.value) and "'batch_accuracy'" in str(e.value)


def test_run_id_is_a_stable_hash_of_settings():
    a = {"seed": 0, "model": {"arch": "mlp", "hidden": [8]}}
    b = copy.deepcopy(a)
    assert run_id(a) == run_id(b) == run_id(dict(reversed(list(a.items()))))
    b["seed"] = 1
    assert run_id(a) != run_id(b)


# --- what JSON Schema alone lets through (issue 14) -------------------------------------------

def _refused(yaml_text: str) -> str:
    """The error a config overlay (YAML, read as Snakemake reads it) gets over the quick preset."""
    with pytest.raises(ConfigError) as e:
        validate(merge(quick(), yaml.safe_load(yaml_text)), SCHEMA)
    return str(e.value)


@pytest.mark.parametrize("text, key", [
    ("on: 1", "True"),                                           # YAML 1.1: on -> True
    ("experiments: {batch_path: {yes: 3}}", "experiments.batch_path.True"),
    ("experiments: {momentum: {toy: {1: 2}}}", "experiments.momentum.toy.1"),
    ("experiments: {ill_conditioned_convex: {methods: [{no: x}]}}", "experiments.ill_conditioned_convex.methods.0.False"),
])
def test_non_string_keys_are_refused_with_their_path(text, key):
    message = _refused(text)
    assert f"  {key} (the key " in message and "quote" in message


@pytest.mark.parametrize("text, key", [
    ("audit: {tolerance: .nan}", "audit.tolerance"),
    ("audit: {tolerance: .inf}", "audit.tolerance"),
    ("experiments: {batch_accuracy: {optimizer: {name: sgd, lr: .nan}}}", "experiments.batch_accuracy.optimizer.lr"),
    ("experiments: {optimizer_schedule: {optimizers: [{name: adam, lr: 0.001, betas: [0.9, -.inf]}],"
     " spike: {optimizers: [adam]}}}", "experiments.optimizer_schedule.optimizers.0.betas.1"),
    ("experiments: {momentum: {network: {momentum: .nan}}}", "experiments.momentum.network.momentum"),
])
def test_nan_and_infinity_are_refused(text, key):
    message = _refused(text)
    assert f"{key}: expected a finite number" in message


@pytest.mark.parametrize("text, key, why", [
    ("audit: {sample: 2.0}", "audit.sample", "without a decimal point"),
    ("seeds: [0, 1.0]", "seeds.1", "type integer"),
    ("experiments: {batch_accuracy: {epochs: 1.0e+300}}", "experiments.batch_accuracy.epochs", "type integer"),
    ("experiments: {batch_accuracy: {epochs: 1e300}}", "experiments.batch_accuracy.epochs", "type integer"),  # a string
    ("shard_size: 100000000000", "shard_size", "maximum 1000000"),
    ("seeds: [2147483648]", "seeds.0", "maximum 2147483647"),
    ("seeds: [true]", "seeds.0", "type integer"),
])
def test_integers_are_integers_of_a_sane_size(text, key, why):
    message = _refused(text)
    assert f"{key}: expected" in message and why in message


def test_a_spike_optimizer_must_be_a_configured_one():
    message = _refused("experiments: {optimizer_schedule: {spike: {optimizers: [adamm]}}}")
    assert "experiments.optimizer_schedule.spike.optimizers: expected a name from optimizers.name" in message
    assert "'adam'" in message and "(got 'adamm')" in message
    # leaving an optimizer out must leave it out of the spike set too: said, not silently dropped
    message = _refused("experiments: {optimizer_schedule: {optimizers: [{name: adam, lr: 0.001}]}}")
    assert "(got 'momentum')" in message


@pytest.mark.parametrize("text, key", [
    ("experiments: {optimizer_schedule: {optimizers: [{name: sgd, lr: 0.1}, {name: sgd, lr: 0.2}],"
     " spike: {optimizers: [sgd]}}}", "experiments.optimizer_schedule.optimizers.1.name"),
    ("experiments: {ill_conditioned_convex: {methods: [{id: a, label: A, optimizer: {name: sgd, lr: 0.1}, steps: 3},"
     " {id: a, label: B, optimizer: {name: sgd, lr: 0.2}, steps: 3}]}}", "experiments.ill_conditioned_convex.methods.1.id"),
])
def test_names_that_tell_items_apart_are_unique(text, key):
    assert f"{key}: expected a" in _refused(text) and "no other item" in _refused(text)


def test_a_label_that_would_be_bad_mathtext_is_accepted_and_drawn_as_written(tmp_path):
    """Labels are text: plots draws them literally (text.parse_math off), so `$\\notacommand$`
    is a valid label, not a crash in a figure step."""
    from trainfail.analysis import plots

    bad = r"$\notacommand$"
    cfg = quick()
    cfg["experiments"]["ill_conditioned_convex"]["methods"][0]["label"] = bad
    validate(cfg, SCHEMA)
    fig, axes = plots.figure()
    axes[0][0].plot([0, 1], [0, 1], label=bad)
    axes[0][0].legend()
    plots.save(fig, tmp_path, "label")
    assert (tmp_path / "label.png").exists()


def test_an_experiments_own_check_is_a_config_error_before_any_job():
    from trainfail.pipeline.plan import make_plan

    cfg = quick()
    cfg["experiments"]["optimizer_schedule"]["spike"].update(window=10, warmup_steps=30)
    with pytest.raises(ConfigError, match="experiments.optimizer_schedule.spike.window"):
        make_plan(cfg, ["optimizer_schedule"])
    cfg = quick()
    cfg["experiments"]["momentum"]["network"]["tuning"]["seeds"] = [0]  # also a claim seed
    with pytest.raises(ConfigError, match="experiments.momentum: tuning seeds"):
        make_plan(cfg, ["momentum"])
