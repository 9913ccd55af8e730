"""The one training loop every experiment uses.

Data lives on the device as whole tensors; a batch is an index slice of a per-epoch permutation
(airbench's trick: no DataLoader, no host-to-device copy per batch). The loop records tidy rows,
one per logged step: step, epoch, lr, batch_loss, grad_norm, wall_time, and at evaluation steps
train_loss/train_acc/val_loss/val_acc over the whole sets. A loss that becomes NaN or inf marks
the run diverged (with the step) and ends it; the pipeline goes on.

One loop, `run()`, trains S runs whose settings are equal but for the seed, as one *net* of S
members (the `Net` interface: every per-run quantity is held per member). A run alone, `train()`,
is its one-member case: the net is `ModuleNet`, the run's own module (built after
provenance.make_deterministic(seed), or given by the caller), so a run alone computes exactly what
its module computes; the runs of a cell trained together (stack.train_stack) are the S-member case,
with stack.StackedNet. The loop reads a run's settings in one place, `LoopSettings.read`, with no
defaults of its own: the plan completes every run's settings (trainfail.core.run_settings).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainfail.core import phases, progress
from trainfail.training import batchnorm, models, optim
from trainfail.training.data import Dataset
from trainfail.training.sizes import EVAL_CHUNK
from trainfail.core.run_record import RunResult

StepHook = Callable[[nn.Module, int], dict]


def loss_fn(name: str):
    if name == "cross_entropy":
        return F.cross_entropy
    if name == "mse":
        return lambda out, y: F.mse_loss(out.squeeze(-1), y)
    if name == "half_squared_error":
        # classification by regression on one-hot targets, Cohen et al.'s (2021) square loss:
        # (1/2) sum over classes of (out - onehot)^2, averaged over examples
        return lambda out, y: 0.5 * (out - F.one_hot(y, out.shape[-1]).to(out.dtype)).pow(2).sum(-1).mean()
    raise ValueError(f"unknown loss {name!r}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
             chunk: int = EVAL_CHUNK) -> tuple[float, float]:
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


@dataclass(frozen=True)
class LoopSettings:
    """What the loop reads from a run's settings, read here only (with total_steps, log_steps and
    eval_steps above): the optimizer, schedule, loss, batch size, length, logging and evaluation
    points and early stopping ({patience, min_delta}: "until the training loss stops improving"), and
    the sets evaluated again with BN statistics recomputed on the training set (`eval_recomputed`)."""
    optimizer: dict
    schedule: dict | None
    loss: str
    batch_size: int
    steps: int
    per_epoch: int
    log_at: set[int]
    eval_at: set[int]
    early_stop: bool
    patience: int
    min_delta: float
    recomputed: tuple[str, ...] = ()

    @classmethod
    def read(cls, settings: dict, n_train: int) -> "LoopSettings":
        steps, per_epoch = total_steps(settings, n_train)
        stop = settings.get("early_stop")  # absent: no early stopping; present: completed by the plan
        return cls(optimizer=settings["optimizer"], schedule=settings.get("schedule"),
                   loss=settings["loss"], batch_size=min(int(settings["batch_size"]), n_train),
                   steps=steps, per_epoch=per_epoch, log_at=log_steps(steps, settings),
                   eval_at=eval_steps(steps, settings), early_stop=stop is not None,
                   patience=int(stop["patience"]) if stop is not None else 0,
                   min_delta=float(stop["min_delta"]) if stop is not None else 0.0,
                   recomputed=tuple(settings.get("eval_recomputed") or ()))


def improved(loss: float, best: float, min_delta: float) -> bool:
    """Early stopping's improvement: a relative drop of at least min_delta below the best so far."""
    return not math.isfinite(best) or loss < best * (1 - min_delta)


class Net(Protocol):
    """What the loop trains: S members (runs) of one architecture. Batches are in member layout,
    (S, B, ...), each member its own; lists are per member, in stack position order."""
    params: dict[str, torch.Tensor]  # what the optimizer updates

    @property
    def size(self) -> int: ...

    def train(self, mode: bool = True) -> None: ...

    def losses(self, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
        """Each member's mean loss on its own batch, shape (S,); their sum's gradient is each member's own."""

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, loss: str) -> list[tuple[float, float]]:
        """Each member's (mean loss, accuracy) over a whole set (x, y shared), in eval mode."""

    def grad_norms(self) -> list[float]: ...

    def member_module(self, pos: int) -> nn.Module:
        """The member at stack position `pos` as a module with models.build's state-dict keys."""

    def narrow(self, keep: list[int], opt: torch.optim.Optimizer) -> None:
        """Keep only the members at positions `keep` (with their gradients and optimizer state)."""


class ModuleNet:
    """One run's module as a one-member net: what train() trains. Its numbers are the module's own
    (its forward, train.evaluate, train.grad_norm), whatever its layers: a model given by the caller,
    one with a layer the stack does not know."""

    size = 1

    def __init__(self, module: nn.Module):
        self.module = module
        self.params = dict(module.named_parameters())

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)

    def losses(self, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
        return loss_fn(loss)(self.module(x[0]), y[0]).unsqueeze(0)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, loss: str) -> list[tuple[float, float]]:
        return [evaluate(self.module, x, y, loss)]

    def grad_norms(self) -> list[float]:
        return [float(grad_norm(self.module))]

    def member_module(self, pos: int) -> nn.Module:
        return self.module

    def narrow(self, keep: list[int], opt: torch.optim.Optimizer) -> None:
        raise ValueError("a one-member net has no member to drop but the last: its run ends")


def run(settings_list: Sequence[dict], data: Dataset, device: torch.device, net: Net,
        on_eval: StepHook | None = None, on_step: Callable | None = None) -> list[RunResult]:
    with phases.phase("train_steps"):  # its evaluations are counted apart ("eval": trainfail.core.phases)
        return _run(settings_list, data, device, net, on_eval, on_step)


def _run(settings_list: Sequence[dict], data: Dataset, device: torch.device, net: Net,
         on_eval: StepHook | None = None, on_step: Callable | None = None) -> list[RunResult]:
    """The loop: train the runs of `settings_list` (equal but for the seed, and in a rate stack the
    learning rate; one per member of `net`, in order) on data already on `device`; one RunResult per run.

    Each member keeps its own data order (a generator seeded with its seed), rows, early stopping
    and divergence; a member that stops (finished, early-stopped, diverged) leaves the net, and its
    result keeps its module (net.member_module). Hooks, for a run alone (a ModuleNet) only, get its
    module:
    on_eval(model, step) -> extra columns for evaluation rows (e.g. BN statistics).
    on_step(model, optimizer, xb, yb, step) -> extra columns for logged rows; called before the
    update at logged steps, with gradients of the current batch already computed.
    """
    if len(settings_list) != net.size:
        raise ValueError(f"{len(settings_list)} runs for a net of {net.size} members")
    if (on_eval or on_step) and not isinstance(net, ModuleNet):
        raise ValueError("hooks see one run's module: they are given for a run alone (train.train) only")
    loop = LoopSettings.read(settings_list[0], data.n_train)
    steps, per_epoch, bs = loop.steps, loop.per_epoch, loop.batch_size
    # members at different rates (a rate stack, stack.rate_stacks): one optimizer at the largest rate,
    # each member's move scaled by its rate over that one after every step (optim.RATE_LINEAR)
    rates = [float(s["optimizer"]["lr"]) for s in settings_list]
    ref, scaled = max(rates), len(set(rates)) > 1
    opt = optim.make_optimizer(list(net.params.values()), {**loop.optimizer, "lr": ref} if scaled else loop.optimizer)
    schedule = optim.make_schedule(opt, loop.schedule, steps)
    S = net.size
    scale = torch.tensor([r / ref for r in rates], device=device)

    def lr_of(m: int) -> float:  # member m's rate now: the schedule's factor on its own rate, as LambdaLR computes it
        return rates[m] * schedule.lr_lambdas[0](schedule.last_epoch) if scaled else opt.param_groups[0]["lr"]
    best, since_best = [math.inf] * S, [0] * S
    generators = [torch.Generator(device=device).manual_seed(int(s["seed"])) for s in settings_list]
    results = [RunResult() for _ in settings_list]
    active = list(range(S))  # the member (run) at each position of the net
    # the first step whose batch loss was NaN/inf, per member, tracked on the device (no per-step
    # sync on a GPU) and read at logged steps, so diverged_step is exact even between logged steps
    first_bad = torch.full((S,), -1, dtype=torch.long, device=device)
    perms = None
    start = time.perf_counter()

    def eval_rows(step: int) -> list[dict]:
        with phases.phase("eval"):
            tr = net.evaluate(data.x_train, data.y_train, loop.loss)
            va = net.evaluate(data.x_test, data.y_test, loop.loss)
            rows = [{"train_loss": a[0], "train_acc": a[1], "val_loss": b[0], "val_acc": b[1]} for a, b in zip(tr, va)]
            for pos, row in enumerate(rows if loop.recomputed else []):  # <set>_{loss,acc}_recomputed, per member
                row.update(batchnorm.recomputed_evaluation(net.member_module(pos), data, loop.loss, loop.recomputed))
        phases.count("eval_examples", len(active) * (len(data.y_train) + len(data.y_test)))
        if on_eval:
            rows[0].update(on_eval(net.module, step))
        return rows

    def diverged_at(step: int, row: dict, bad: int) -> int | None:
        if bad >= 0:
            return bad
        return step if not math.isfinite(row.get("train_loss", 0.0)) else None

    def finish(ending: list[int]) -> None:
        """Members at positions `ending` stop: keep their module, drop them from the net."""
        nonlocal active, first_bad, perms, generators, scale
        if not ending:
            return
        for pos in ending:
            m = active[pos]
            results[m].model = net.member_module(pos)
            results[m].summary.update(steps_done=results[m].rows[-1]["step"] if results[m].rows else 0,
                                      wall_time=time.perf_counter() - start)
        keep = [p for p in range(len(active)) if p not in ending]
        if keep:
            net.narrow(keep, opt)
            first_bad = first_bad[keep]
            scale = scale[keep]
            perms = perms[keep] if perms is not None else None
        active = [active[p] for p in keep]
        generators = [generators[p] for p in keep]

    net.train(True)
    for step in range(steps + 1):
        logging = step in loop.log_at or step in loop.eval_at
        rows = eval_rows(step) if step in loop.eval_at else [{} for _ in active]
        if step in loop.eval_at:
            progress.evaluation(step, steps, [r["train_loss"] for r in rows])
        ending = []
        bads = None
        for pos, m in enumerate(active):
            row = rows[pos]
            if row and loop.early_stop and step > 0:
                if improved(row["train_loss"], best[m], loop.min_delta):
                    best[m], since_best[m] = row["train_loss"], 0
                else:
                    since_best[m] += 1
            if step == steps or (loop.early_stop and since_best[m] >= loop.patience):
                if row or logging:  # the final row: evaluation only, no update follows
                    sync(device)
                    results[m].rows.append({"step": step, "epoch": step / per_epoch, "lr": lr_of(m),
                                            "wall_time": time.perf_counter() - start, **row})
                bads = first_bad.tolist() if bads is None else bads
                bad = diverged_at(step, row, bads[pos])
                if bad is not None:  # diverged after the last logged step
                    results[m].diverged, results[m].diverged_step = True, bad
                ending.append(pos)
        finish(ending)
        if not active:
            break
        rows = [rows[p] for p in range(len(rows)) if p not in ending]
        if step % per_epoch == 0:  # every member draws its own permutation from its own generator
            perms = torch.stack([torch.randperm(data.n_train, device=device, generator=g) for g in generators])
        k = step % per_epoch
        idx = perms[:, k * bs:(k + 1) * bs]
        xb, yb = data.x_train[idx], data.y_train[idx]
        phases.count("train_examples", len(active) * bs)
        opt.zero_grad(set_to_none=True)
        losses = net.losses(xb, yb, loop.loss)
        losses.sum().backward()  # the sum: each member's gradient is its own loss's
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(losses.detach()), torch.full_like(first_bad, step),
                                first_bad)
        if logging:
            batch_loss = losses.detach().tolist()
            extra = on_step(net.module, opt, xb[0], yb[0], step) if on_step else {}
            norms, bads = net.grad_norms(), first_bad.tolist()
            sync(device)
            ending = []
            for pos, m in enumerate(active):
                results[m].rows.append({"step": step, "epoch": step / per_epoch, "lr": lr_of(m),
                                        "batch_loss": batch_loss[pos], "grad_norm": norms[pos],
                                        "wall_time": time.perf_counter() - start, **rows[pos], **extra})
                bad = diverged_at(step, rows[pos], bads[pos])
                if bad is not None:  # diverged: it stops here, before the update
                    results[m].diverged, results[m].diverged_step = True, bad
                    ending.append(pos)
            finish(ending)
            if not active:
                break
        if scaled:
            _scaled_step(opt, scale)
        else:
            opt.step()
        schedule.step()
    return results


def _scaled_step(opt: torch.optim.Optimizer, scale: torch.Tensor) -> None:
    """One step of `opt` (at the reference rate) with each member's move scaled by `scale` (S,):
    parameters carry the member axis first. The move is linear in the rate (optim.RATE_LINEAR), so a
    member moves as at its own rate, to float32 rounding of its parameters."""
    params = opt.param_groups[0]["params"]
    before = [p.detach().clone() for p in params]
    opt.step()
    with torch.no_grad():
        for p, b in zip(params, before):
            p.sub_(b).mul_(scale.view(-1, *[1] * (p.dim() - 1))).add_(b)


def train(settings: dict, data: Dataset, device: torch.device, model: nn.Module | None = None,
          on_eval: StepHook | None = None, on_step: Callable | None = None) -> RunResult:
    """Train one run as its settings say; the data must already be on `device`: the loop's
    one-member case, on the run's own module (`model` if given, else models.build's after
    provenance.make_deterministic(seed)); result.model is that module, trained. Hooks: see run().
    """
    from trainfail.core.provenance import make_deterministic

    make_deterministic(int(settings["seed"]))
    if model is None:
        model = models.build(settings["model"], data.input_shape, data.num_classes, seed=int(settings["seed"]))
    return run([settings], data, device, ModuleNet(model.to(device)), on_eval, on_step)[0]
