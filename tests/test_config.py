import copy

import pytest

from trainfail.config import ConfigError, load_yaml, merge, run_id, validate

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
