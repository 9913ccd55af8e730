"""Issue 23: sizes with limits, alias bombs, models an experiment needs, and the smaller refusals.

Each input is refused before any job (a ConfigError naming the key, in validation or when the plan
is made) or planned within the config's `limits`, quickly and without allocating what it asks for.
"""

from __future__ import annotations

import copy
import functools
import time

import pytest
import yaml

from trainfail import config as tf_config
from trainfail import experiments
from trainfail.config import ConfigError, load_yaml, merge, validate
from trainfail.plan import make_plan

from .repo_copy import ROOT

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


@functools.lru_cache(maxsize=None)
def _quick() -> dict:
    return validate(load_yaml(ROOT / "config.yaml"), SCHEMA)


def quick() -> dict:
    """The quick preset as Snakemake reads it, every experiment's defaults filled in."""
    return copy.deepcopy(_quick())


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
