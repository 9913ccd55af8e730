"""The one training loop every experiment uses.

Data lives on the device as whole tensors; a batch is an index slice of a per-epoch permutation
(airbench's trick: no DataLoader, no host-to-device copy per batch). The loop records tidy rows,
one per logged step: step, epoch, lr, batch_loss, grad_norm, wall_time, and at evaluation steps
train_loss/train_acc/val_loss/val_acc over the whole sets. A loss that becomes NaN or inf marks
the run diverged (with the step) and ends it; the pipeline goes on.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import models, optim, progress
from .data import Dataset
from .records import RunResult

StepHook = Callable[[nn.Module, int], dict]


def loss_fn(name: str):
    if name == "cross_entropy":
        return F.cross_entropy
    if name == "mse":
        return lambda out, y: F.mse_loss(out.squeeze(-1), y)
    raise ValueError(f"unknown loss {name!r}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
             chunk: int = 4096) -> tuple[float, float]:
    """Mean loss and accuracy over a whole set, in eval mode, in chunks to bound memory."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    f = loss_fn(loss)
    for i in range(0, len(x), chunk):
        out = model(x[i:i + chunk])
        yb = y[i:i + chunk]
        total_loss += float(f(out, yb)) * len(yb)
        if loss == "cross_entropy":
            correct += int((out.argmax(1) == yb).sum())
    model.train(was_training)
    n = max(len(x), 1)
    return total_loss / n, (correct / n if loss == "cross_entropy" else math.nan)


def grad_norm(model: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def steps_per_epoch(batch_size: int, n_train: int) -> int:
    """Batches drop the last partial one: every update sees batch_size (at most the whole set)."""
    return max(n_train // min(int(batch_size), n_train), 1)


def total_steps(settings: dict, n_train: int) -> tuple[int, int]:
    """(total steps, steps per epoch)."""
    per_epoch = steps_per_epoch(settings["batch_size"], n_train)
    if settings.get("steps"):  # a run states its length in steps or in epochs (run_settings)
        return int(settings["steps"]), per_epoch
    return int(settings["epochs"]) * per_epoch, per_epoch


def log_steps(total: int, settings: dict) -> set[int]:
    """Steps at which to log a row: every `log_every` steps, or about `log_points` evenly."""
    every = settings.get("log_every") or max(total // int(settings["log_points"]), 1)
    return set(range(0, total + 1, int(every))) | {total}


def eval_steps(total: int, settings: dict) -> set[int]:
    every = settings.get("eval_every") or max(total // int(settings["eval_points"]), 1)
    return set(range(0, total + 1, int(every))) | {total}


def improved(loss: float, best: float, stop: dict) -> bool:
    """Early stopping's improvement: a relative drop of at least min_delta below the best so far."""
    return not math.isfinite(best) or loss < best * (1 - float(stop["min_delta"]))


def train(settings: dict, data: Dataset, device: torch.device, model: nn.Module | None = None,
          on_eval: StepHook | None = None, on_step: Callable | None = None) -> RunResult:
    """Train one run as its settings say (complete: run_settings.complete fills the defaults; this
    loop has none of its own); the data must already be on `device`.

    on_eval(model, step) -> extra columns for evaluation rows (e.g. BN statistics).
    on_step(model, optimizer, xb, yb, step) -> extra columns for logged rows; called before the
    update at logged steps, with gradients of the current batch already computed.
    """
    from .provenance import make_deterministic

    seed = int(settings["seed"])
    make_deterministic(seed)
    if model is None:
        model = models.build(settings["model"], data.input_shape, data.num_classes)
    model = model.to(device)
    opt = optim.make_optimizer(model.parameters(), settings["optimizer"])
    steps, per_epoch = total_steps(settings, data.n_train)
    schedule = optim.make_schedule(opt, settings.get("schedule"), steps)
    f = loss_fn(settings["loss"])
    bs = min(int(settings["batch_size"]), data.n_train)
    to_log, to_eval = log_steps(steps, settings), eval_steps(steps, settings)
    stop = settings.get("early_stop")  # {patience, min_delta}: "until the training loss stops improving"
    best, since_best = math.inf, 0
    generator = torch.Generator(device=device).manual_seed(seed)
    result = RunResult(model=model)
    perm = None
    start = time.perf_counter()

    def eval_row(step: int) -> dict:
        tl, ta = evaluate(model, data.x_train, data.y_train, settings["loss"])
        vl, va = evaluate(model, data.x_test, data.y_test, settings["loss"])
        row = {"train_loss": tl, "train_acc": ta, "val_loss": vl, "val_acc": va}
        if on_eval:
            row.update(on_eval(model, step))
        return row

    # the first step whose batch loss was NaN/inf, tracked on the device (no per-step sync on a
    # GPU) and read at logged steps, so diverged_step is exact even between logged steps
    first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def diverged_at(step: int, row: dict) -> int | None:
        bad = int(first_bad)
        if bad >= 0:
            return bad
        return step if not math.isfinite(row.get("train_loss", 0.0)) else None

    model.train()
    for step in range(steps + 1):
        logging = step in to_log or step in to_eval
        row: dict = {}
        if step in to_eval:
            row.update(eval_row(step))
            progress.evaluation(step, steps, [row["train_loss"]])
            if stop and step > 0:
                if improved(row["train_loss"], best, stop):
                    best, since_best = row["train_loss"], 0
                else:
                    since_best += 1
        if step == steps or (stop and since_best >= int(stop["patience"])):
            if row or logging:  # the final row: evaluation only, no update follows
                sync(device)
                result.rows.append({"step": step, "epoch": step / per_epoch, "lr": opt.param_groups[0]["lr"],
                                    "wall_time": time.perf_counter() - start, **row})
            bad = diverged_at(step, row)
            if bad is not None:  # diverged after the last logged step
                result.diverged, result.diverged_step = True, bad
            break
        if step % per_epoch == 0:
            perm = torch.randperm(data.n_train, device=device, generator=generator)
        k = step % per_epoch
        idx = perm[k * bs:(k + 1) * bs]
        xb, yb = data.x_train[idx], data.y_train[idx]
        opt.zero_grad(set_to_none=True)
        loss = f(model(xb), yb)
        loss.backward()
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()),
                                torch.full_like(first_bad, step), first_bad)
        if logging:
            batch_loss = float(loss.detach())
            extra = on_step(model, opt, xb, yb, step) if on_step else {}
            sync(device)
            result.rows.append({"step": step, "epoch": step / per_epoch, "lr": opt.param_groups[0]["lr"],
                                "batch_loss": batch_loss, "grad_norm": float(grad_norm(model)),
                                "wall_time": time.perf_counter() - start, **row, **extra})
            bad = diverged_at(step, row)
            if bad is not None:
                result.diverged, result.diverged_step = True, bad
                break
        opt.step()
        schedule.step()
    result.summary["steps_done"] = result.rows[-1]["step"] if result.rows else 0
    result.summary["wall_time"] = time.perf_counter() - start
    return result
