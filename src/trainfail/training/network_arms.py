"""The optimizer comparison on a real network: the run settings optimizer_schedule and momentum share.

optimizer_schedule's grid and tuned arm, and momentum's network part, build their runs here, so
equal settings give equal run ids: the momentum/SGD cells of the grid and the tuned sgd/momentum
runs are trained once for both experiments.
"""

from __future__ import annotations

from trainfail.training import tuning

CONSTANT = {"name": "constant"}
CRITERION = "final_train_loss"  # "trains faster": the lower training loss at an equal budget


def network_base(cfg: dict, optimizer: dict, schedule: dict, norm: str, steps: int | None = None,
                 every_step: bool = False) -> dict:
    """A run's settings without its seed. The batch loss is logged at every update only where a
    spike is measured; elsewhere 50 logged rows suffice (the curves are the evaluation rows)."""
    return {"dataset": cfg["dataset"], "model": {**cfg["model"], "norm": norm}, "optimizer": dict(optimizer),
            "schedule": dict(schedule), "batch_size": int(cfg["batch_size"]), "steps": int(steps or cfg["steps"]),
            "eval_points": int(cfg["eval_points"]), **({"log_every": 1} if every_step else {"log_points": 50})}


def network_run(cfg: dict, optimizer: dict, schedule: dict, norm: str, seed: int, steps: int | None = None,
                every_step: bool = False) -> dict:
    """One training run's settings; momentum's network part builds its runs here too, so equal
    settings give equal run ids and are trained once."""
    return {"task": "train", **network_base(cfg, optimizer, schedule, norm, steps, every_step), "seed": int(seed)}


def scaled(optimizer: dict, factor: float) -> dict:
    return {**optimizer, "lr": float(optimizer["lr"]) * factor}


def sweep_lrs(optimizer: dict, multipliers: list[float]) -> list[float]:
    """The candidate rates of one optimizer: its configured lr times each multiplier (to 12
    significant digits: 0.1 x 3 is the rate 0.3, in the run's settings and in the claims)."""
    return [float(f"{scaled(optimizer, m)['lr']:.12g}") for m in dict.fromkeys(float(m) for m in multipliers)]


def multipliers(t: dict, name: str) -> list[float]:
    """One optimizer's sweep multipliers: `t["multipliers"]` (a network_tuning block), extended by
    `t["extend"][name]` factor-3 steps beyond the largest (positive) or below the smallest (negative):
    the grid widened where the tuning seeds' optimum sat at its edge (config.schema.yaml)."""
    base = [float(m) for m in t["multipliers"]]
    k = int((t.get("extend") or {}).get(name, 0))
    more = [max(base) * 3.0 ** i for i in range(1, k + 1)] + [min(base) / 3.0 ** i for i in range(1, -k + 1)]
    return base + [float(f"{m:.12g}") for m in more]


def claim_seeds(cfg: dict, ctx) -> list[int]:
    return [int(s) for s in cfg["tuning"].get("claim_seeds") or ctx.seeds_for(cfg)]


def tuned_plan(cfg: dict, optimizer: dict, ctx) -> list[dict]:
    """One optimizer's sweep (stage 0, tuning seeds) and tuned runs (stage 1, claim seeds), constant
    schedule, BN off, `tuning.steps` updates."""
    t = cfg["tuning"]
    base = network_base(cfg, optimizer, CONSTANT, "none", steps=t["steps"])
    return tuning.plan(base, sweep_lrs(optimizer, multipliers(t, optimizer["name"])), t["seeds"], claim_seeds(cfg, ctx),
                       CRITERION)
