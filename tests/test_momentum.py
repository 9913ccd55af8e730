"""momentum: the toy part's paths and claim; the network runs are optimizer_schedule's cells."""

from trainfail.config import run_id
from trainfail.context import Context, RunEnv
from trainfail.experiments import momentum as exp
from trainfail.experiments import optimizer_schedule as opt_sched

TOY = {"tilt": 0.6, "valley": 1.0, "start": [2.0, 1.0], "start_jitter": 0.1, "lr": 0.01, "momentum": 0.9, "steps": 300}
NET = {"dataset": "mnist1d", "model": {"arch": "mlp", "hidden": [8]}, "batch_size": 32, "steps": 10, "eval_points": 2,
       "lr": 0.05, "momentum": 0.9}


def test_network_runs_are_shared_with_optimizer_schedule():
    ctx = Context({"seeds": [0, 1]})
    cfg = {**NET, "optimizers": [{"name": "sgd", "lr": 0.05}, {"name": "momentum", "lr": 0.05, "momentum": 0.9}],
           "schedules": [{"name": "constant"}], "norms": ["none"], "lr_sweep": {"multipliers": []},
           "spike": {"optimizers": [], "lr_multiplier": 10.0, "warmup_steps": 3, "window": 3}}
    grid = {run_id({"task": "train", **r}) for r in opt_sched.runs(cfg, ctx)}
    mine = {run_id({"task": "train", **r}) for r in exp.network_runs({"network": NET}, ctx)}
    assert mine == grid


def test_momentum_rolls_past_the_shallow_minimum():
    env = RunEnv(device=None, data_dir=None, cache_dir=None)
    ctx = Context({"seeds": [0, 1, 2]})
    toy_runs = [r for r in exp.runs({"toy": TOY, "network": NET}, ctx) if r.get("task") == exp.ID]
    ends = {r["method"]: exp.execute(r, env).summary["per_start"] for r in toy_runs}
    assert all(p["final_w1"] > 0.5 for p in ends["gd"])         # stuck in the shallow minimum near +1
    assert all(p["final_w1"] < -0.5 for p in ends["momentum"])  # rolled into the deep one near -1
