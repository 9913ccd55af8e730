"""Optimizers (torch.optim) and learning-rate schedules as pure functions of the step.

Every schedule is a multiplier on the base learning rate, `lr_factor(spec, step, total_steps)`,
plugged into torch.optim.lr_scheduler.LambdaLR, so each can be tested against its closed form.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "radam")
# Optimizers whose step, given their state, is linear in the learning rate, and whose state (momentum
# buffer, moments, sums of squares) does not depend on it: a step at rate r moves each parameter by
# r/r_ref times the step at r_ref from the same state. So members at different rates can share one
# optimizer at a reference rate, each member's move scaled (train.run; stack.rate_of). True of every
# optimizer here: SGD and its momentum forms (weight decay is added to the gradient), Adagrad (no
# lr_decay), RMSprop, Adam and RAdam (their moments do not read the rate), AdamW (its decay,
# p *= 1 - lr wd, is part of the move, linear in lr); tests/test_stack.py checks each.
RATE_LINEAR = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "radam")
SCHEDULES = ("constant", "step", "cosine", "warmup_cosine", "warmup_constant", "noam", "inverse_sqrt", "power")


def make_optimizer(params: Iterable[torch.nn.Parameter], spec: dict) -> torch.optim.Optimizer:
    """spec: {name, lr, momentum?, weight_decay?, betas?, eps?, alpha?}"""
    name, lr = spec["name"], float(spec["lr"])
    wd = float(spec.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if name in ("momentum", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=float(spec.get("momentum", 0.9)),
                               nesterov=name == "nesterov", weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd, eps=float(spec.get("eps", 1e-10)))
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=float(spec.get("alpha", 0.99)),
                                   eps=float(spec.get("eps", 1e-8)), weight_decay=wd)
    betas = tuple(spec.get("betas", (0.9, 0.999)))
    eps = float(spec.get("eps", 1e-8))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=float(spec.get("weight_decay", 0.01)))
    if name == "radam":
        return torch.optim.RAdam(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def lr_factor(spec: dict, step: int, total_steps: int) -> float:
    """The multiplier on the base learning rate at `step` (0-based) of `total_steps`.

    constant        1
    step            gamma ** (step // step_size)                  (step_size default: total/3)
    cosine          0.5 (1 + cos(pi t / T))                          (Loshchilov & Hutter 2017)
    warmup_cosine   (t+1)/W for t < W, then cosine over the remaining T - W steps
    warmup_constant (t+1)/W for t < W, then 1                      (Goyal et al. 2017)
    noam            sqrt(W) min((t+1)^-1/2, (t+1) W^-3/2): peaks at 1 at t+1 = W
                    (Vaswani et al. 2017, normalised so the base lr is the peak)
    inverse_sqrt    1 / sqrt(1 + t / decay_steps)                  (Adagrad-style decay)
    power           (t + 1) ** exponent    exponent 0.5 turns torch's Adagrad (which divides by the
                    root of the *sum* of squared gradients) into the lecture's form (the root *mean*
                    square, sigma = sqrt(sum / (t + 1)), with a constant eta); -0.5 is 1/sqrt(t+1) decay
    """
    name = spec.get("name", "constant")
    t, total = step, max(int(total_steps), 1)
    warmup = max(int(spec.get("warmup_steps", max(total // 10, 1))), 1)
    if name == "constant":
        return 1.0
    if name == "step":
        size = max(int(spec.get("step_size", max(total // 3, 1))), 1)
        return float(spec.get("gamma", 0.1)) ** (t // size)
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))
    if name == "warmup_cosine":
        if t < warmup:
            return (t + 1) / warmup
        rest = max(total - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(t - warmup, rest) / rest))
    if name == "warmup_constant":
        return (t + 1) / warmup if t < warmup else 1.0
    if name == "noam":
        n = t + 1
        return math.sqrt(warmup) * min(n ** -0.5, n * warmup ** -1.5)
    if name == "inverse_sqrt":
        return 1.0 / math.sqrt(1.0 + t / float(spec.get("decay_steps", 1.0)))
    if name == "power":
        return float(t + 1) ** float(spec.get("exponent", -0.5))
    raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")


def make_schedule(optimizer: torch.optim.Optimizer, spec: dict | None, total_steps: int):
    spec = spec or {"name": "constant"}
    lr_factor(spec, 0, total_steps)  # fail early on an unknown name
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(spec, step, total_steps))
