"""momentum: the toy part's paths and claim; the network runs are optimizer_schedule's cells."""

import numpy as np
import pandas as pd

from trainfail.core.config import run_id
from trainfail.training.context import Context, RunEnv
from trainfail.experiments import momentum as exp
from trainfail.experiments import optimizer_schedule as opt_sched
from trainfail.training.network_arms import CONSTANT, network_run

from .fake_records import record

TOY = {"tilt": 0.6, "valley": 1.0, "start": [2.0, 1.0], "start_jitter": 0.1, "lr": 0.01, "momentum": 0.9, "steps": 300}
NET = {"no_gain_margin": 0.02, "dataset": "mnist1d", "model": {"arch": "mlp", "hidden": [8]}, "batch_size": 32, "steps": 10, "eval_points": 2,
       "lr": 0.05, "momentum": 0.9, "tuning": {"multipliers": [1.0, 3.0], "seeds": [100], "steps": 20}}


def test_network_runs_are_shared_with_optimizer_schedule():
    ctx = Context({"seeds": [0, 1]})
    cfg = {**NET, "optimizers": [{"name": "sgd", "lr": 0.05}, {"name": "momentum", "lr": 0.05, "momentum": 0.9}],
           "schedules": [{"name": "constant"}], "norms": ["none"],
           "spike": {"optimizers": [], "lr_multiplier": 10.0, "warmup_steps": 3, "window": 6}}
    grid = {run_id({"task": "train", **r}) for r in opt_sched.runs(cfg, ctx)}
    arms = exp.network_arms({"network": NET}, ctx)
    shared = {run_id({"task": "train", **r}) for arm in ("same_lr", "tuned") for r in arms[arm]}
    assert shared <= grid                       # the same-lr cells and the whole tuned arm, sweep included
    assert len(shared) == 4 + 4 + 4             # same lr 2 x 2 seeds, sweep 2 x 2 rates, tuned 2 x 2 seeds
    effective = arms["effective_step"]
    assert {(r["optimizer"]["name"], r["optimizer"]["lr"]) for r in effective} == {("sgd", 0.05 / (1 - 0.9)),
                                                                                    ("momentum", 0.05)}
    assert all(r["steps"] == 20 for r in effective)   # the tuned arm's horizon


def _network_table():
    """The same-lr arm (momentum's 10x effective step) says momentum wins; at the same effective
    step SGD wins; at tuned rates they tie."""
    rows = []
    for seed in range(4):
        j = 0.01 * seed
        for arm, steps, (lr_sgd, loss_sgd), (lr_mom, loss_mom) in (
                ("same_lr", 10, (0.05, 1.6 + j), (0.05, 1.0 + j)),
                ("effective_step", 20, (0.5, 0.8 + j), (0.05, 0.9 + 2 * j)),
                ("tuned", 20, (0.5, 0.8 + j), (0.15, 0.8 + 1.5 * j))):
            rows += [{"part": "network_final", "arm": arm, "method": m, "seed": seed, "lr": lr, "steps": steps,
                      "train_loss": loss, "diverged": False} for m, lr, loss in (("sgd", lr_sgd, loss_sgd),
                                                                                 ("momentum", lr_mom, loss_mom))]
    return pd.DataFrame(rows)


def test_the_verdicts_follow_the_controlled_arms():
    toy = pd.DataFrame([{"part": "toy", "method": m, "seed": s, "final_loss": loss, "final_w1": w1}
                        for s in range(2) for m, loss, w1 in (("gd", 0.5, 1.0), ("momentum", -0.7, -1.0))])
    claims = {c["claim_id"]: c for c in exp.claims(pd.concat([toy, _network_table()]), {"toy": TOY, "network": NET})}
    same = claims["momentum_lower_training_loss_same_lr"]
    assert same["kind"] == "demonstration" and same["verdict_unadjusted"] == "reproduced"
    assert "10x SGD's" in same["note"]                    # labelled: the uncontrolled effective step
    effective = claims["momentum_lower_training_loss_effective_step"]
    assert effective["kind"] == "test" and effective["verdict_unadjusted"] == "not_reproduced"
    assert np.isclose(effective["value"], -0.115) and "SGD lr 0.5" in effective["statement"]
    tuned = claims["momentum_lower_training_loss"]
    assert tuned["kind"] == "test" and tuned["verdict_unadjusted"] != "reproduced"
    assert "momentum lr 0.15" in tuned["statement"]


def test_momentum_rolls_past_the_shallow_minimum():
    env = RunEnv(device=None, data_dir=None, cache_dir=None)
    ctx = Context({"seeds": [0, 1, 2]})
    toy_runs = [r for r in exp.runs({"toy": TOY, "network": NET}, ctx) if r.get("task") == exp.ID]
    ends = {r["method"]: exp.execute(r, env).summary["per_start"] for r in toy_runs}
    assert all(p["final_w1"] > 0.5 for p in ends["gd"])         # stuck in the shallow minimum near +1
    assert all(p["final_w1"] < -0.5 for p in ends["momentum"])  # rolled into the deep one near -1


def test_table_reads_each_runs_arm_from_its_labels():
    """No config to re-derive the arms from: the arm is the label the run came with. A momentum run
    in both the same-lr and the effective-step arm (equal horizons) is a row in each; sweep runs
    are not rows."""
    m = {"step": [0, 10], "train_loss": [2.3, 1.0], "train_acc": [0.1, 0.6], "val_loss": [2.3, 1.1], "val_acc": [0.1, 0.5]}
    mom = network_run(NET, {"name": "momentum", "lr": 0.05, "momentum": 0.9}, CONSTANT, "none", 0)
    sweep = network_run(NET, {"name": "sgd", "lr": 0.15}, CONSTANT, "none", 100)
    recs = [record(mom, m, labels={"arm": "same_lr"}), record(sweep, m, labels={"arm": "sweep"}),
            record(mom, m, labels={"arm": "effective_step"})]
    t = exp.table({}, recs, Context({}))
    finals = t[t["part"] == "network_final"]
    assert list(finals["arm"]) == ["same_lr", "effective_step"] and finals["run_id"].nunique() == 1
    assert set(t[t["part"] == "network"]["arm"]) == {"same_lr", "effective_step"} and 100 not in set(t["seed"])
