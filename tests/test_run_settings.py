"""A run's settings, typed (trainfail.core.run_settings): one definition, checked and completed at plan time."""

from __future__ import annotations

import pytest
import torch

from trainfail import experiments
from trainfail.core import run_settings
from trainfail.training import data, train
from trainfail.core.config import ConfigError, load_yaml, merge, validate
from trainfail.pipeline.plan import make_plan

from .repo_copy import ROOT

PLAIN = {"task": "train", "dataset": "digits", "model": {"arch": "mlp", "hidden": [16]},
         "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 32, "epochs": 3, "seed": 0}


def preset(*names: str) -> dict:
    config = load_yaml(ROOT / "config.yaml")
    for name in names:
        config = merge(config, load_yaml(ROOT / "presets" / f"{name}.yaml"))
    return validate(config, ROOT / "workflow/schemas/config.schema.yaml")


def test_defaults_are_filled_into_the_settings_and_so_into_the_run_id():
    full = run_settings.complete(PLAIN)
    assert {k: full[k] for k in ("loss", "eval_points", "log_points", "save_model")} == {
        "loss": "cross_entropy", "eval_points": 20, "log_points": 100, "save_model": False}
    assert full["model"]["norm"] == "none" and full["model"]["activation"] == "relu"  # the model's own defaults
    assert run_settings.complete(full) == full  # idempotent: the plan's settings complete themselves
    assert PLAIN.get("loss") is None  # a copy: the caller's settings are left alone
    # a default that gives way to the key that replaces it
    every = run_settings.complete({**PLAIN, "eval_every": 5, "log_every": 2})
    assert "eval_points" not in every and "log_points" not in every
    early = run_settings.complete({**PLAIN, "early_stop": {"min_delta": 0.01}})
    assert early["early_stop"] == {"min_delta": 0.01, "patience": 5}


@pytest.mark.parametrize("change,named", [
    ({"eval_point": 4}, "eval_point"),                       # a misspelt key
    ({"optimizer": {"name": "sgd", "lr": 0.1, "momentun": 0.9}}, "optimizer.momentun"),
    ({"loss": "hinge"}, "loss"),
    ({"batch_size": 0}, "batch_size"),
    ({"epochs": None}, "epochs"),
])
def test_a_key_the_definition_does_not_allow_is_refused_with_its_name(change, named):
    with pytest.raises(ConfigError, match=f"  {named}: expected"):
        run_settings.complete({**PLAIN, **change}, "experiments.x")


def test_task_and_a_length_are_required():
    with pytest.raises(ConfigError, match="'task' is required"):
        run_settings.complete({k: v for k, v in PLAIN.items() if k != "task"})
    with pytest.raises(ConfigError, match="one of the keys 'epochs' or 'steps'"):
        run_settings.complete({k: v for k, v in PLAIN.items() if k != "epochs"})
    with pytest.raises(ConfigError, match="task 'nonesuch' is neither"):
        run_settings.complete({**PLAIN, "task": "nonesuch"})


def test_an_experiment_that_emits_an_unknown_key_is_refused_before_any_job(monkeypatch):
    class Fake:
        ID = "fake"

        @staticmethod
        def runs(cfg, ctx):
            return [{**PLAIN, "eval_point": 4}]

    monkeypatch.setitem(experiments.REGISTRY, "fake", Fake)
    monkeypatch.setattr(experiments, "get", lambda e: experiments.REGISTRY[e])
    with pytest.raises(ConfigError) as e:
        make_plan({"experiments": {"fake": {}}}, ["fake"])
    assert "experiments.fake" in str(e.value) and "eval_point: expected" in str(e.value)


@pytest.mark.parametrize("names", [(), ("smoke",), ("full",), ("full", "papers")])
def test_every_presets_runs_are_complete_and_each_custom_task_is_declared(names):
    plan = make_plan(preset(*names))
    assert plan.runs and all(run_settings.complete(s) == s for s in plan.runs.values())
    for exp in experiments.MODULES:  # an experiment with its own runs declares their settings
        if hasattr(experiments.get(exp), "execute"):
            assert run_settings.definition(exp)["properties"]["task"] == {"const": exp}


def test_the_training_loop_holds_no_defaults_of_its_own():
    """A setting the plan did not fill is an error in the loop, not a silent default."""
    ds = data.load("digits").subset(64)
    full = run_settings.complete({**PLAIN, "steps": 1, "batch_size": 32})
    train.train(full, ds, torch.device("cpu"))
    for key in ("loss", "eval_points", "log_points"):
        with pytest.raises(KeyError, match=key):
            train.train({k: v for k, v in full.items() if k != key}, ds, torch.device("cpu"))
