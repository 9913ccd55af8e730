"""Runs trained together: the runs of a cell as one stacked model in one process.

A *cell* is a set of runs whose settings are equal except for the seed: same dataset, model,
optimizer and rate, schedule, batch size, steps or epochs, evaluation and logging points, loss
and early stopping. Small networks leave a GPU idle (kernel launches, not arithmetic, set the
pace) and a CPU core mostly in Python, so a shard trains each cell as one model whose tensors
carry a leading member axis: S members cost about the launches of one.

How the members are kept apart (grouped layers; benchmarks/bench_stack.py measures them against
the one-run loop and against torch.func.vmap, which was slower on the CPU):

  linear        one batched matmul, (S, B, in) x (S, in, out); on the CPU, matrices where bmm
                rounds otherwise than mm (bmm_is_mm) one per member (below)
  convolution   one grouped convolution, the member axis folded into the channels,
                (B, S*C, ...) with groups = S; on the CPU one convolution per member (below)
  batch norm    one batch norm over S*C channels (per member and channel, as before), the
                running statistics being views of the stacked buffers
  noisy batch   that batch norm, then each member's noise drawn from that member's own generators
  norm          (models.NoisyBatchNorm.draw, in the order and shapes of its run alone) and laid
                side by side in fold layout: element-wise, so each member's numbers are its own
  group and     one group norm over S*g groups
  instance norm
  layer norm    one group norm with S groups; on the CPU one layer norm per member (below)
  weight norm   one weight-norm call on the (S*out, ...) folded weight (the norm is per output row)
  activations,  element-wise or per channel: applied as they are
  pooling
  evaluation    on a GPU the whole set once for all members (the first layer multiplies the
                shared input by every member's weights at once); on the CPU member by member

Every member keeps what it would have alone: its initialization (models.build after
provenance.make_deterministic(seed), exactly as train.train), its own data order (its own
generator), its own metrics rows, divergence, early stopping, and its own state dict with the
keys of models.build's. The loss is the *sum* of the members' mean losses, so each member's
gradient is its own, and the element-wise optimizers of torch.optim (all of optim.OPTIMIZERS)
update stacked tensors exactly as they would update each member alone. In an exact stack the
members of a cell share the learning rate (runs that differ in rate are different cells). In an
inexact one (`stack_exact: false`, rate_stacks) plain training runs that differ in rate only, such
as a sweep's rates on its tuning seeds, are one cell: one optimizer steps at the largest rate and
each member's move is scaled by its own rate over it (train.run; every optimizer here moves
linearly in its rate, optim.RATE_LINEAR), so a member moves as at its own rate to float32 rounding
of its parameters; meta.json's `stack.lrs` lists the members' rates. A member that stops
(finished, early-stopped, diverged) leaves the stack: its parameters, buffers, gradients and optimizer state are sliced out, and the others
go on unaffected. The loop itself is train.run, the one training loop: a run alone (train.train)
is its one-member case on the run's own module, a stack its S-member case on a StackedNet, so
both read a run's settings the same way, in one place (train.LoopSettings).

What holds between a stacked member and the same run trained alone (tests/test_stack.py):
  on every CPU   the member computes its own function: before its first update its losses equal
                 the run's to FORWARD_TOLERANCE and its gradient norm to GRADIENT_TOLERANCE
                 (relative). Later rows are not bounded: training amplifies a rounding difference
                 (measured: an adaptive optimizer turns the rounding noise of a bias that batch norm
                 makes irrelevant into steps of +-lr), so two CPUs give different trajectories.
  where the CPU's kernels agree (exact_here(): the batched matmul, the folded batch and group norms
                 and the stacked optimizer step sum each member's numbers in the order one run's
                 kernels do, as on this project's CI machines): bit for bit, metrics, summary and
                 state dict, for every optimizer, norm and arch. The few operations whose batched
                 forms always sum in another order (a convolution, layer norm with per-member affine
                 parameters, the mean of a loss, tiny matrix products, the evaluation) run member by
                 member on the CPU (`exact`) to make this possible.
  on any machine a stack against its own rerun: bit for bit (the same kernels by construction); the
                 audit re-trains a run with its stored stack for that reason, and a sampled stacked
                 run alone as a canary (audit.py).
A shard trains a cell whole whenever one of its runs is missing, and reuses a stored run only when it
was trained the way the plan trains it now (the same members, or alone): a run's numbers never
depend on which of its cell's runs happened to be on disk (execution.run_shard). On a GPU everything is
batched, for speed: members equal the loop up to float32 rounding, as two GPU runs do (the audit's
GPU tolerance); benchmarks/bench_stack.py prints the difference. The config's `stack_exact: false`
(exact_for) batches everything on the CPU too (one grouped convolution for all members instead of
one convolution per member: 1.2-1.6x less CPU time for the quick preset's conv nets): members then equal their
runs alone to float32 rounding (the first row to FORWARD_TOLERANCE and GRADIENT_TOLERANCE on any
CPU, tests/test_stack.py), meta.json's `stack.exact` says so, and the audit's canary compares the
first row to GRADIENT_TOLERANCE and states it; a stack against its own rerun stays bit for bit.

Not stacked (trained one by one by train.train, and recorded as such): experiments' own tasks
(settings["task"] other than "train" or "tuned": they have their own execute()), a layer this module
does not know (NotStackable), and a cell of one run. Noisy batch norm is stacked: each member's
noise comes from generators of its own seeded from its seed (models.noise_seed_for), as in its run
alone, not from the process's global stream.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from trainfail.core import run_record
from trainfail.training import models, optim, sizes, train
from trainfail.core.config import canonical_json
from trainfail.training.data import Dataset

ENGINE = "grouped"
TRAIN, TUNED = "train", "tuned"  # tuning.TASK: a tuned arm's runs read their rate from one choice
STACKED_TASKS = (TRAIN, TUNED)
# How far a stacked member may be from the same run trained alone, on any CPU, before its first
# update (relative; the module docstring says what holds later). Measured against runs alone under
# other kernels (MKL's compatible branch, ATen's default capability, oneDNN capped at SSE4.1, as
# tests/test_stack.py does on every run): losses within 2.0e-7, gradient norms
# within 3.6e-4 (group norm over groups of two channels, whose variance of two values amplifies
# rounding). A member that read another member's data or weights would be off by far more.
FORWARD_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 5e-3


# torch's CPU bmm multiplies each matrix of the batch with the BLAS call that mm uses, so a batched
# linear layer is bit for bit each member's own, except when rows x contraction x columns is below
# this (bmm then runs a loop of its own) or a dimension is 1 (mm then takes a matrix-vector path):
# exact stacks run those member by member. tests/test_stack.py checks the rule on a grid of shapes.
BMM_OWN_LOOP = 400


def bmm_is_mm(rows: int, inputs: int, outputs: int) -> bool:
    """Whether a batched (rows x inputs) @ (inputs x outputs) equals one mm per matrix on the CPU."""
    return rows * inputs * outputs >= BMM_OWN_LOOP and min(rows, inputs, outputs) > 1


def exact_on(device: torch.device) -> bool:
    """Whether a stack on `device` runs member by member the operations whose batched forms always
    sum in another order (the CPU); bit for bit only where exact_here() too."""
    return torch.device(device).type == "cpu"


def exact_for(device: torch.device, stack_exact: bool = True) -> bool:
    """The engine's choice under the config's `stack_exact`: exact on the CPU unless the config
    allows float32 rounding instead (`stack_exact: false`: every layer batched, as on a GPU: one
    grouped convolution for all members, one group norm for layer norm, one batched loss and one
    pass of evaluation), never on a GPU (nothing there is bit for bit)."""
    return exact_on(device) and bool(stack_exact)


@functools.lru_cache(maxsize=None)
def exact_here() -> bool:
    """Whether this CPU's kernels make a stacked member bit for bit its run alone: a probe of a few
    updates of the engine's layouts (linear with and without batch norm under Adam, the conv net
    with batch norm), stacked against alone, on random data (1-2 s, once per process). True on
    this project's CI machines; false where the batched kernels sum in another order (seen on an
    AMD EPYC). Tests that pin stacked = alone bit for bit run only where it is true."""
    from trainfail.training.data import Dataset

    g = torch.Generator().manual_seed(0)
    ds = Dataset("probe", torch.randn(96, 1, 8, 8, generator=g), torch.randint(0, 10, (96,), generator=g),
                 torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g), 10)
    base = {"task": "train", "dataset": "probe", "batch_size": 32, "steps": 4, "eval_points": 2, "log_every": 1,
            "loss": "cross_entropy"}
    probes = [{"model": {"arch": "mlp", "hidden": [16], "norm": norm}, "optimizer": {"name": "adam", "lr": 0.01}}
              for norm in ("none", "batch")]
    probes.append({"model": {"arch": "cnn", "channels": [4, 8], "norm": "batch"},
                   "optimizer": {"name": "momentum", "lr": 0.05}})
    cpu = torch.device("cpu")
    for probe in probes:
        cell = [{**base, **probe, "seed": seed} for seed in (0, 1, 2)]
        for stacked, alone in zip(train_stack(cell, ds, cpu), (train.train(s, ds, cpu) for s in cell)):
            if not same_result(stacked, alone):
                return False
    return True


def same_result(a: run_record.RunResult, b: run_record.RunResult) -> bool:
    """Bit for bit the same run: rows (but wall time), divergence and state dict (NaN equal to NaN)."""
    def row(r: dict) -> dict:
        return {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items() if k != "wall_time"}

    if (a.diverged, a.diverged_step) != (b.diverged, b.diverged_step) or \
            [row(r) for r in a.rows] != [row(r) for r in b.rows]:
        return False
    x, y = a.model.state_dict(), b.model.state_dict()
    return list(x) == list(y) and all(
        x[k].shape == y[k].shape and bool(((x[k] == y[k]) | (x[k].isnan() & y[k].isnan())).all()) for k in y)


class NotStackable(ValueError):
    """A model with a layer the stacked engine does not know: its cell is trained run by run."""


def rate_stacks(stacked: bool, exact: bool) -> bool:
    """Whether runs that differ in their learning rate (as well as their seed) share a stack: with
    stacking on and `stack_exact: false` (the config's), where a member need only equal its run
    alone to float32 rounding (see `rate_of` and train.run's per-member rates). The plan packs
    shards and a training job forms stacks by this one rule."""
    return bool(stacked) and not bool(exact)


def rate_of(settings: dict) -> float | None:
    """What a rate stack may vary in a run: a plain training run's learning rate (task "train", or
    no task: a tuned run's plain settings, tuning.at_choice), a tuned run's multiplier of the rate
    its sweep chooses (tuning.multiplier: a sweep's runs at 1x, 5x and 30x are one stack), each
    with one of optim.RATE_LINEAR's optimizers; None for an experiment's own task (it trains in
    its own way)."""
    task = settings.get("task", TRAIN)
    if task not in STACKED_TASKS:
        return None
    spec = settings.get("optimizer") if task == TRAIN else settings["base"].get("optimizer")
    if not isinstance(spec, dict) or spec.get("name") not in optim.RATE_LINEAR:
        return None
    if task == TRAIN:
        return float(spec["lr"])
    return float((settings.get("derive") or {}).get("lr_multiplier", 1.0))


def with_rate(settings: dict, rate: float | None) -> dict:
    """`settings` with what rate_of reads set to `rate` (a stored rate stack's member: execution.cell_of),
    or left out when `rate` is None (the part of a rate stack's cell_key that its members share)."""
    if settings.get("task", TRAIN) == TRAIN:
        spec = {k: v for k, v in settings["optimizer"].items() if k != "lr"}
        return {**settings, "optimizer": spec if rate is None else {**spec, "lr": rate}}
    derive = {k: v for k, v in (settings.get("derive") or {}).items() if k != "lr_multiplier"}
    if rate is not None and rate != 1.0:
        derive["lr_multiplier"] = rate
    out = {k: v for k, v in settings.items() if k != "derive"}
    return {**out, "derive": derive} if derive else out


def cell_key(settings: dict, rates: bool = False) -> str:
    """What the runs of one cell share: everything but the seed, and, when `rates` (rate_stacks),
    but what a rate stack may vary (rate_of)."""
    key = {k: v for k, v in settings.items() if k != "seed"}
    if rates and rate_of(settings) is not None:
        key = with_rate(key, None)
    return canonical_json(key)


# A rate stack takes the seed cells of its rates while its estimated memory (training.sizes) stays
# under this: small networks (where a stack pays: launches and Python, not arithmetic, set the pace)
# are merged whole; a large one (a CIFAR-10 conv net at batch 512) keeps one cell per rate, within
# any job's memory limit.
RATE_STACK_BYTES = 2 * 2 ** 30


def cells(settings_list: Sequence[dict], rates: bool = False) -> list[list[dict]]:
    """The runs grouped into cells (cell_key), in order of first appearance. With `rates`
    (rate_stacks), the cells of runs that differ only in rate are merged, whole, in order, into
    rate stacks of at most RATE_STACK_BYTES by training.sizes' estimate."""
    out: dict[str, list[dict]] = {}
    for s in settings_list:
        out.setdefault(cell_key(s), []).append(s)
    if not rates:
        return list(out.values())
    merged: dict[str, list[list[dict]]] = {}
    for cell in out.values():
        stacks = merged.setdefault(cell_key(cell[0], rates=True), [[]])
        if stacks[-1] and _bytes(cell[0], len(stacks[-1]) + len(cell)) > RATE_STACK_BYTES:
            stacks.append([])
        stacks[-1] += cell
    return [c for stacks in merged.values() for c in stacks]


def _bytes(settings: dict, members: int) -> float:
    try:
        return sizes.run_bytes(settings, members)[0]
    except (sizes.SizeError, KeyError, TypeError, ValueError):  # not estimable: not merged
        return math.inf


def why_not(cell: Sequence[dict]) -> str | None:
    """Why a cell is trained one run at a time, or None when it is stacked."""
    if len(cell) < 2:
        return "a cell of one run"
    if len({(int(s["seed"]), rate_of(s)) for s in cell}) < len(cell):
        return "two runs of the cell share a seed"
    first = cell[0]
    task = first["task"]
    if task not in STACKED_TASKS:
        return f"task {task!r} has its own execute()"
    return None


# --- the stacked model ---------------------------------------------------------------------------
# Activations travel in one of three layouts:
#   member  (S, B, ...)    each member its own batch (training)
#   shared  (B, ...)       one input for every member (evaluation on a whole set)
#   fold    (B, S*C, ...)  the member axis folded into the channels, member-major
# Each layer takes the layout it computes in best; shared input becomes fold at the first layer.

class _ContiguousGrad(torch.autograd.Function):
    """Identity whose gradient is made contiguous. Placed before every change of layout, so that
    each layer's backward gets its gradient in the memory layout it has in a run alone: some CPU
    kernels (the bias gradient's sum over the batch) add in another order on a strided tensor."""

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        return h.view_as(h)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        return g.contiguous()


def _to_fold(h: torch.Tensor, layout: str, S: int) -> torch.Tensor:
    if layout == "fold":
        return h
    if layout == "member":  # (S, B, C, ...) -> (B, S*C, ...)
        h = _ContiguousGrad.apply(h)
        return h.transpose(0, 1).reshape(h.shape[1], S * h.shape[2], *h.shape[3:])
    return h.unsqueeze(1).expand(h.shape[0], S, *h.shape[1:]).reshape(h.shape[0], S * h.shape[1], *h.shape[2:])


def _to_member(h: torch.Tensor, layout: str, S: int) -> torch.Tensor:
    if layout == "member":
        return h
    if layout == "fold":  # (B, S*C, ...) -> (S, B, C, ...)
        h = _ContiguousGrad.apply(h)
        return h.view(h.shape[0], S, h.shape[1] // S, *h.shape[2:]).transpose(0, 1).contiguous()
    return h.unsqueeze(0).expand(S, *h.shape)


def _members(h: torch.Tensor, layout: str, S: int) -> list[torch.Tensor]:
    """Each member's activations as the contiguous tensor a run alone would have."""
    if layout == "member":
        return list(h.unbind(0))
    if layout == "fold":
        h = _ContiguousGrad.apply(h)
        return [t.contiguous() for t in h.view(h.shape[0], S, h.shape[1] // S, *h.shape[2:]).unbind(1)]
    return [h] * S


def _cat_members(outs: list[torch.Tensor]) -> torch.Tensor:
    """Members' outputs (B, C, ...) side by side in fold layout (B, S*C, ...), each member's
    gradient coming back contiguous."""
    return torch.cat([_ContiguousGrad.apply(o) for o in outs], 1)


class StackedNet:
    """S networks of one architecture (models.build's) as stacked tensors, run as grouped layers.

    `params` and `buffers` map models.build's state-dict keys to tensors with a leading member
    axis; `template` is a copy of the first member, read for its layer structure only.

    `exact` (the CPU's choice): the layers whose batched forms round differently from one run's
    (a convolution, layer norm with per-member affine parameters, a matrix product where bmm is
    not mm) run member by member, so that every member computes what it would compute alone (bit for
    bit where exact_here()). Off (on a GPU, where launches cost more than arithmetic and nothing is
    bit-exact anyway), everything is batched.
    """

    def __init__(self, members: Sequence[nn.Module], exact: bool = True):
        self.exact = exact
        self.template = copy.deepcopy(members[0])
        if not isinstance(getattr(self.template, "net", None), nn.Sequential):
            raise NotStackable(f"{type(self.template).__name__} has no `net` sequence of layers")
        named = [dict(m.named_parameters()) for m in members]
        self.params = {k: torch.stack([p[k].detach() for p in named]).requires_grad_(True)
                       for k in named[0]}
        bufs = [dict(m.named_buffers()) for m in members]
        self.buffers = {k: torch.stack([b[k] for b in bufs]) for k in bufs[0]}
        self.training = True
        self.layers = [(f"net.{name}", layer) for name, layer in self.template.net.named_children()]
        for prefix, layer in self.layers:
            self._check(prefix, layer)
        # noisy batch norm: each member's own layer (its seed, its generator: copies, so that drawing
        # here moves no stream of the modules given), per layer, in stack order
        self.noisy = {prefix: [copy.deepcopy(dict(m.named_modules())[prefix]) for m in members]
                      for prefix, layer in self.layers if isinstance(layer, models.NoisyBatchNorm)}
        for prefix, layers in self.noisy.items():
            if any(layer.noise_seed is None for layer in layers):
                raise NotStackable(f"layer {prefix}: noisy batch norm without a seed draws from the global stream "
                                   "(models.build(..., seed=...))")

    @property
    def size(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def _check(self, prefix: str, layer: nn.Module) -> None:
        if isinstance(layer, models.NoisyBatchNorm):  # batch norm, then noise (_apply)
            return self._check(f"{prefix}.bn", layer.bn)
        known = (nn.Flatten, nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm,
                 nn.LayerNorm, nn.Identity, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.MaxPool1d, nn.MaxPool2d,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
        if type(layer) not in known and not any(type(layer).__name__ == f"Parametrized{k.__name__}"
                                                for k in (nn.Linear, nn.Conv1d, nn.Conv2d)):
            raise NotStackable(f"layer {prefix} ({type(layer).__name__}) is not stacked")
        if parametrize.is_parametrized(layer):
            p = layer.parametrizations
            if list(p) != ["weight"] or len(p.weight) != 1 or type(p.weight[0]).__name__ != "_WeightNorm" \
                    or p.weight[0].dim != 0:
                raise NotStackable(f"layer {prefix}: only weight norm over dim 0 is stacked")
        if isinstance(layer, nn.Flatten) and (layer.start_dim != 1 or layer.end_dim != -1):
            raise NotStackable(f"layer {prefix}: only Flatten() from the first axis on is stacked")
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)) and (layer.padding_mode != "zeros" or layer.groups != 1):
            raise NotStackable(f"layer {prefix}: only zero-padded, ungrouped convolutions are stacked")
        if isinstance(layer, nn.LayerNorm) and (len(layer.normalized_shape) != 1 or not layer.elementwise_affine):
            raise NotStackable(f"layer {prefix}: only affine layer norm over the last axis is stacked")
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) and (layer.momentum is None or not layer.track_running_stats
                                                                   or not layer.affine):
            raise NotStackable(f"layer {prefix}: only affine batch norm with momentum and running statistics is stacked")
        if isinstance(layer, nn.GroupNorm) and not layer.affine:
            raise NotStackable(f"layer {prefix}: only affine group norm is stacked")

    def _weight(self, prefix: str, layer: nn.Module) -> torch.Tensor:
        """The stacked weight (S, out, ...), weight norm applied per member and output row."""
        if not parametrize.is_parametrized(layer, "weight"):
            return self.params[f"{prefix}.weight"]
        g = self.params[f"{prefix}.parametrizations.weight.original0"]
        v = self.params[f"{prefix}.parametrizations.weight.original1"]
        S, out = v.shape[:2]
        return torch._weight_norm(v.reshape(S * out, *v.shape[2:]), g.reshape(S * out, *g.shape[2:]), 0).view(v.shape)

    def _apply(self, prefix: str, layer: nn.Module, h: torch.Tensor, layout: str) -> tuple[torch.Tensor, str]:
        S = self.size
        if isinstance(layer, nn.Flatten):
            return h.flatten(2 if layout == "member" else 1), layout
        if isinstance(layer, nn.Linear):
            w, b = self._weight(prefix, layer), self.params.get(f"{prefix}.bias")
            if layout == "shared" and not self.exact:  # one matmul against every member's weights
                return F.linear(h, w.reshape(-1, w.shape[-1]), None if b is None else b.reshape(-1)), "fold"
            rows = h.shape[1 if layout == "member" else 0]
            if self.exact and (layout == "shared" or not bmm_is_mm(rows, w.shape[2], w.shape[1])):
                return torch.stack([F.linear(x, w[i], None if b is None else b[i])
                                    for i, x in enumerate(_members(h, layout, S))]), "member"
            h = _to_member(h, layout, S)
            wt = w.transpose(1, 2)
            return (torch.bmm(h, wt) if b is None else torch.baddbmm(b.unsqueeze(1), h, wt)), "member"
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            w, b = self._weight(prefix, layer), self.params.get(f"{prefix}.bias")
            conv = F.conv1d if isinstance(layer, nn.Conv1d) else F.conv2d
            args = (layer.stride, layer.padding, layer.dilation)
            if self.exact:
                return _cat_members([conv(x, w[i], None if b is None else b[i], *args)
                                     for i, x in enumerate(_members(h, layout, S))]), "fold"
            if layout == "shared":  # one convolution with every member's filters
                return conv(h, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1), *args), "fold"
            return conv(_to_fold(h, layout, S), w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1),
                        *args, S), "fold"
        if isinstance(layer, models.NoisyBatchNorm):
            h, layout = self._apply(f"{prefix}.bn", layer.bn, h, layout)  # fold: member-major channels
            if not self.training:
                return h, layout
            C = h.shape[1] // S
            draws = [m.draw(h[:, i * C:(i + 1) * C], m.stream(h.device)) for i, m in enumerate(self.noisy[prefix])]
            shift = torch.cat([d[1] for d in draws], 1)
            if draws[0][0] is None:  # per example: y + shift
                return h + shift, layout
            return h * torch.cat([d[0] for d in draws], 1) + shift, layout  # per channel: y * scale + shift
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            h = _to_fold(h, layout, S)
            mean, var = self.buffers[f"{prefix}.running_mean"], self.buffers[f"{prefix}.running_var"]
            if self.training:
                self.buffers[f"{prefix}.num_batches_tracked"].add_(1)
            # the running statistics are updated in place through these views of the stacked buffers
            return F.batch_norm(h, mean.view(-1), var.view(-1), self.params[f"{prefix}.weight"].reshape(-1),
                                self.params[f"{prefix}.bias"].reshape(-1), self.training, layer.momentum,
                                layer.eps), "fold"
        if isinstance(layer, nn.LayerNorm) and self.exact:
            w, b = self.params[f"{prefix}.weight"], self.params[f"{prefix}.bias"]
            return torch.stack([F.layer_norm(x, layer.normalized_shape, w[i], b[i], layer.eps)
                                for i, x in enumerate(_members(h, layout, S))]), "member"
        if isinstance(layer, (nn.GroupNorm, nn.LayerNorm)):  # layer norm = group norm with one group
            groups = layer.num_groups if isinstance(layer, nn.GroupNorm) else 1
            return F.group_norm(_to_fold(h, layout, S), S * groups, self.params[f"{prefix}.weight"].reshape(-1),
                                self.params[f"{prefix}.bias"].reshape(-1), layer.eps), "fold"
        if isinstance(layer, (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            return layer(h if layout == "shared" else _to_fold(h, layout, S)), "fold" if layout != "shared" else layout
        return layer(h), layout  # element-wise: any layout

    def __call__(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Outputs (S, B, classes): for x of shape (S, B, ...) (each member its own batch) or, when
        `shared`, x of shape (B, ...) seen by every member."""
        h, layout = x, "shared" if shared else "member"
        for prefix, layer in self.layers:
            h, layout = self._apply(prefix, layer, h, layout)
        return _to_member(h, layout, self.size)

    def train(self, mode: bool = True) -> None:
        self.training = mode

    def losses(self, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
        """Each member's mean loss on its own batch, (S,): x (S, B, ...), y (S, B)."""
        return member_losses(self(x), y, loss, self.exact)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, loss: str) -> list[tuple[float, float]]:
        return evaluate(self, x, y, loss)

    def grad_norms(self) -> list[float]:
        return grad_norms(self)

    def member_state(self, pos: int) -> dict[str, torch.Tensor]:
        """Member `pos`'s state dict, with models.build's keys."""
        stacked = {**self.params, **self.buffers}
        return {k: stacked[k][pos].detach().clone() for k in self.template.state_dict()}

    def member_view(self, pos: int) -> nn.Module:
        """Member `pos` as a module whose tensors are views of the stacked ones (no copy): its
        forward is the architecture's own, so it computes what the run alone computes."""
        stacked = {**self.params, **self.buffers}
        return _MemberView(self.template, {k: stacked[k][pos] for k in stacked})

    def member_module(self, pos: int) -> nn.Module:
        module = copy.deepcopy(self.template)
        module.load_state_dict(self.member_state(pos))
        named = dict(module.named_modules())
        for prefix, layers in self.noisy.items():  # the member's own noise streams, where they stand
            named[prefix].noise_seed, named[prefix].generator = layers[pos].noise_seed, copy.deepcopy(layers[pos].generator)
        return module

    def narrow(self, keep: list[int], opt: torch.optim.Optimizer) -> None:
        """Keep only the members at positions `keep`: parameters (with their gradients), buffers
        and the optimizer's per-parameter state are sliced; the optimizer object stays (the
        schedule holds it)."""
        index = torch.tensor(keep, device=next(iter(self.params.values())).device)
        swap = {}
        for k, p in self.params.items():
            q = p.detach()[index].requires_grad_(True)
            if p.grad is not None:
                q.grad = p.grad[index]
            swap[p], self.params[k] = q, q
        for group in opt.param_groups:
            group["params"] = [swap[p] for p in group["params"]]
        for old, new in swap.items():
            state = opt.state.pop(old, None)
            if state is not None:
                opt.state[new] = {k: v[index] if torch.is_tensor(v) and v.dim() > 0 and v.shape == old.shape else v
                                  for k, v in state.items()}
        self.buffers = {k: v[index] for k, v in self.buffers.items()}
        self.noisy = {k: [v[p] for p in keep] for k, v in self.noisy.items()}


class _MemberView(nn.Module):
    def __init__(self, template: nn.Module, state: dict[str, torch.Tensor]):
        super().__init__()
        self.template, self.state = template, state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        return functional_call(self.template, self.state, (x,))


# --- losses, evaluation, gradient norms per member ---------------------------------------------

def member_losses(out: torch.Tensor, y: torch.Tensor, loss: str, exact: bool = True) -> torch.Tensor:
    """Each member's mean loss, shape (S,): out (S, B, classes), y (S, B) or (B,) shared.
    `exact`: member by member, with train.loss_fn, as each run alone (a batched mean sums in
    another order)."""
    S, B = out.shape[:2]
    y = y.expand(S, B) if y.dim() == 1 else y
    if exact:
        f = train.loss_fn(loss)
        return torch.stack([f(o, t) for o, t in zip(out.unbind(0), y.unbind(0))])
    if loss == "cross_entropy":
        return F.cross_entropy(out.reshape(S * B, -1), y.reshape(-1), reduction="none").view(S, B).mean(1)
    if loss == "mse":
        return F.mse_loss(out.squeeze(-1), y, reduction="none").mean(1)
    raise ValueError(f"unknown loss {loss!r}")


@torch.no_grad()
def evaluate(net: StackedNet, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
             chunk: int | None = None) -> list[tuple[float, float]]:
    """(mean loss, accuracy) of each member over a whole set, in eval mode. Exact: each member by
    train.evaluate, as alone (its layers are the architecture's own, on views of the stacked
    tensors). Otherwise one pass over the set for all members, in chunks to bound memory."""
    S = net.size
    if net.exact:
        return [train.evaluate(net.member_view(i), x, y, loss) for i in range(S)]
    chunk = chunk or max(256, 8192 // S)
    was_training = net.training
    net.train(False)
    totals, correct = [0.0] * S, [0] * S
    for i in range(0, len(x), chunk):
        out, yb = net(x[i:i + chunk], shared=True), y[i:i + chunk]
        # as train.evaluate: a float per chunk, weighted by its length
        totals = [t + v * len(yb) for t, v in zip(totals, member_losses(out, yb, loss, exact=False).tolist())]
        if loss == "cross_entropy":
            correct = [c + v for c, v in zip(correct, (out.argmax(-1) == yb).sum(1).tolist())]
    net.train(was_training)
    n = max(len(x), 1)
    return [(t / n, (c / n if loss == "cross_entropy" else math.nan)) for t, c in zip(totals, correct)]


def grad_norms(net: StackedNet) -> list[float]:
    """Each member's gradient norm over all its parameters (train.grad_norm, member by member)."""
    grads = [p.grad for p in net.params.values() if p.grad is not None]
    if not grads:
        return [0.0] * net.size
    if net.exact:
        return [float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm([g[i] for g in grads]))))
                for i in range(net.size)]
    per_param = torch.stack([torch.linalg.vector_norm(g.reshape(net.size, -1), dim=1) for g in grads])
    return torch.linalg.vector_norm(per_param, dim=0).tolist()


# --- the stacked training: the one loop (train.run) on a StackedNet --------------------------------

def train_stack(settings_list: Sequence[dict], data: Dataset, device: torch.device,
                exact: bool | None = None) -> list[run_record.RunResult]:
    """Train the runs of one cell together; one RunResult per run, in order, as train.train gives.

    The loop is train.run, the one loop train.train drives with one member; here its net is a
    StackedNet whose members are built exactly as train.train builds its model. `exact` (default:
    on the CPU) runs member by member what always batches in another order (see the module
    docstring for what then holds).
    """
    from trainfail.core.provenance import make_deterministic

    first = settings_list[0]
    exact = exact_on(device) if exact is None else exact
    if len({cell_key(s, rates=not exact) for s in settings_list}) != 1:
        raise ValueError("a stack trains the runs of one cell: their settings may differ only in the seed "
                         "(and, in an inexact stack, in the learning rate)")
    members = []
    for s in settings_list:  # each member exactly as train.train builds it
        make_deterministic(int(s["seed"]))
        members.append(models.build(first["model"], data.input_shape, data.num_classes, seed=int(s["seed"])).to(device))
    net = StackedNet(members, exact=exact)
    del members
    return train.run(settings_list, data, device, net)
