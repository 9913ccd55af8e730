"""Rates tuned on tuning seeds, then used on the claim's seeds (trainfail.tuning)."""

import pandas as pd
import pytest
import torch

from trainfail import records, runs, tuning
from trainfail.config import load_yaml, merge, run_id, validate
from trainfail.context import RunEnv
from trainfail.plan import make_plan
from trainfail.run_settings import complete

from .repo_copy import ROOT

# the training settings of a sweep (run_settings: completed with the defaults a plan fills in)
BASE = {k: v for k, v in complete({"task": "train", "seed": 0, "dataset": "digits", "model": {"arch": "mlp", "hidden": [8]},
                                   "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 64, "steps": 30,
                                   "eval_points": 3, "log_points": 3}).items() if k not in ("task", "seed")}


def test_plan_refuses_tuning_on_the_claim_seeds():
    with pytest.raises(ValueError, match="tuning seeds \\[1\\]"):
        tuning.plan(BASE, [0.1, 1.0], [1, 100], [0, 1])
    out = tuning.plan(BASE, [0.1, 1.0], [100, 101], [0, 1])
    assert [tuning.stage(s) for s in out] == [0, 0, 0, 0, 1, 1]
    assert {s["optimizer"]["lr"] for s in out[:4]} == {0.1, 1.0} and {s["seed"] for s in out[:4]} == {100, 101}


def test_choose_skips_unsafe_rates_and_follows_the_criterion():
    t = pd.DataFrame({"lr": [0.01, 0.01, 0.1, 0.1, 1.0, 1.0], "seed": [0, 1] * 3,
                      "score": [0.5, 0.6, 0.2, 0.3, 0.01, 9.0], "diverged": [False] * 5 + [True]})
    assert tuning.choose(t, "final_train_loss") == 0.1     # 1.0 is out: one tuning seed diverged
    assert tuning.choose(t, "final_val_acc") == 0.01
    with pytest.raises(ValueError, match="diverged"):
        tuning.choose(t.assign(diverged=True), "final_train_loss")


def test_tuned_runs_train_at_the_sweeps_choice(tmp_path):
    env = RunEnv(torch.device("cpu"), tmp_path / "data", tmp_path / "results" / "data")
    settings = tuning.plan(BASE, [0.001, 0.3], [100], [0])
    for s in settings[:-1]:
        runs.run_one(s, env, tmp_path / "results")
    meta = runs.run_one(settings[-1], env, tmp_path / "results")
    tuned = records.load_run(tmp_path / "results", meta["run_id"])
    sweep = records.load_runs(tmp_path / "results", [run_id(s) for s in settings[:-1]])
    assert tuned.summary["lr"] == 0.3 == tuning.check(tuned, sweep)   # the larger rate trains faster here
    assert tuned.metrics["train_loss"].iloc[-1] < sweep[0].metrics["train_loss"].iloc[-1]
    # the tuned run is the plain run at the chosen rate on the claim seed, trained the same way
    plain = runs.run_one(tuning.with_lr(BASE, 0.3, 0), env, tmp_path / "results")
    assert records.load_run(tmp_path / "results", plain["run_id"]).metrics["train_loss"].equals(tuned.metrics["train_loss"])


def test_the_plan_puts_tuned_runs_after_their_sweep():
    cfg = validate(merge(load_yaml(ROOT / "config.yaml"), load_yaml(ROOT / "presets/smoke.yaml")),
                   ROOT / "workflow/schemas/config.schema.yaml")
    plan_runs = tuning.plan(BASE, [0.1, 0.3], [100], [0, 1])
    from trainfail import experiments

    class Fake:
        ID = "fake"

        @staticmethod
        def runs(cfg, ctx):
            return plan_runs

    experiments.REGISTRY["fake"] = Fake
    try:
        cfg["experiments"]["fake"] = {}
        plan = make_plan(cfg, ["fake"])
    finally:
        del experiments.REGISTRY["fake"]
    first = [s for s in plan.shards if "-stage1-" not in s]
    second = [s for s in plan.shards if "-stage1-" in s]
    assert first and second and all(plan.after[s] == first for s in second)
    assert all(plan.runs[r]["task"] == "tuned" for s in second for r in plan.shards[s])


def test_tuned_runs_wait_for_sweep_runs_another_experiment_planned():
    """Two experiments whose sweeps share runs: the second's tuned runs need sweep runs that the
    first planned (and sharded), so its stage-1 shards must wait for the first's shards too."""
    from trainfail import experiments

    def fake(name, lrs):
        class Fake:
            ID = name

            @staticmethod
            def runs(cfg, ctx):
                return tuning.plan(BASE, lrs, [100], [0, 1])
        return Fake

    experiments.REGISTRY["fake_a"] = fake("fake_a", [0.1, 0.3])
    experiments.REGISTRY["fake_b"] = fake("fake_b", [0.1, 0.3, 1.0])
    try:
        plan = make_plan({"experiments": {"fake_a": {}, "fake_b": {}}}, ["fake_a", "fake_b"])
    finally:
        del experiments.REGISTRY["fake_a"], experiments.REGISTRY["fake_b"]
    a_sweep = [s for s in plan.shards if s.startswith("fake_a-") and "-stage1-" not in s]
    b_tuned = [s for s in plan.shards if s.startswith("fake_b-stage1-")]
    assert a_sweep and b_tuned
    for shard in b_tuned:
        needed = {plan.shard_of[run_id(s)] for s in tuning.sweep(BASE, [0.1, 0.3, 1.0], [100])}
        assert needed <= set(plan.after[shard]), (needed, plan.after[shard])
