"""Batch normalization at test time: running, population and per-batch statistics (lecture 3.5).

In training, BN normalises with the statistics of the current batch and keeps exponential moving
averages of them (PyTorch: running <- (1 - momentum) running + momentum batch, momentum 0.1). At
test time there may be no batch, so the network uses the running averages in place of the "true"
population statistics: the mean and variance of each BN layer's input over the whole training set
with the current weights. These functions compute the population statistics, compare them with
the running ones, and evaluate a network with each kind of statistics.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from trainfail.training.sizes import EVAL_CHUNK  # train.evaluate's chunk: a set within it is one forward


def bn_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """The BN layers in forward order (registration order: our models are nn.Sequential)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _channel_dims(x: torch.Tensor) -> tuple[int, ...]:
    """BN normalises each channel (dim 1) over the examples and, in a conv net, every position."""
    return (0,) + tuple(range(2, x.dim()))


@torch.no_grad()
def population_statistics(model: nn.Module, x: torch.Tensor, chunk: int = EVAL_CHUNK) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, unbiased variance) of every BN layer's input over all of `x`, with the current weights.
    (population_pass: the same, with the network's outputs on x when one forward computed them.)

    Layer by layer: the statistics of layer k's input are computed with layers 1..k-1 already
    normalising by their own population statistics, i.e. the network exactly as it is evaluated
    with population statistics. Chunks bound memory; their moments are merged in float64.
    When `x` fits in one chunk, one forward does every layer: each layer's statistics are set
    (by a pre-hook) before it normalises, so the layers after it see the same inputs as above.
    """
    return population_pass(model, x, chunk)[0]


@torch.no_grad()
def population_pass(model: nn.Module, x: torch.Tensor, chunk: int = EVAL_CHUNK) -> tuple[list, torch.Tensor | None]:
    """population_statistics, and when `x` fits in one chunk the outputs of that one forward: the
    network's outputs on x in eval mode with the statistics it set, the forward an evaluation with
    them would compute again (None when x took several passes)."""
    net = copy.deepcopy(model).eval()
    layers = [layer for _, layer in bn_layers(net)]

    def accumulate(acc: dict):
        # per chunk: torch's two-pass mean and variance; chunks merged in float64 (Chan et al.'s
        # pairwise update), so no sum of squares over the whole set loses precision
        def record(module, inputs):
            v = inputs[0]
            var, mean = torch.var_mean(v, _channel_dims(v), unbiased=False)
            n, mean, m2 = v.numel() // v.shape[1], mean.double(), var.double() * (v.numel() // v.shape[1])
            if acc["n"]:
                delta, total = mean - acc["mean"], acc["n"] + n
                acc["m2"] = acc["m2"] + m2 + delta * delta * acc["n"] * n / total
                acc["mean"] = acc["mean"] + delta * n / total
                acc["n"] = total
            else:
                acc.update(n=n, mean=mean, m2=m2)
        return record

    def store(layer, acc: dict) -> None:
        n = acc["n"]
        var = acc["m2"] / max(n - 1, 1)  # unbiased, as PyTorch's running_var
        layer.running_mean.copy_(acc["mean"].to(layer.running_mean.dtype))
        layer.running_var.copy_(var.to(layer.running_var.dtype))

    if len(x) <= chunk:
        def set_statistics(module, inputs):
            acc = {"n": 0}
            accumulate(acc)(module, inputs)
            store(module, acc)

        handles = [layer.register_forward_pre_hook(set_statistics) for layer in layers]
        out = net(x)
        for h in handles:
            h.remove()
    else:
        out = None
        for layer in layers:
            acc = {"n": 0}
            handle = layer.register_forward_pre_hook(accumulate(acc))
            for i in range(0, len(x), chunk):
                net(x[i:i + chunk])
            handle.remove()
            store(layer, acc)
    return [(layer.running_mean.clone(), layer.running_var.clone()) for layer in layers], out


@torch.no_grad()
def recompute_statistics(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """`model` itself, its BN layers' running statistics replaced by the population statistics of
    x at its current weights: in eval mode it then computes a function of its parameters alone
    (what Keskar's measurements of a batch-norm net need at every point they visit)."""
    for (_, layer), (mean, var) in zip(bn_layers(model), population_statistics(model, x)):
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var)
    return model


def statistics_distance(running_mean: torch.Tensor, running_var: torch.Tensor,
                        pop_mean: torch.Tensor, pop_var: torch.Tensor) -> tuple[float, float]:
    """How far running statistics are from the population's, scale-free:
    mean: the RMS over channels of (running - population mean) in units of the population std;
    variance: the mean over channels of |running / population variance - 1| (relative error)."""
    pop_var = pop_var.clamp_min(1e-12)
    mean_dist = float(torch.sqrt((((running_mean - pop_mean) ** 2) / pop_var).mean()))
    var_dist = float((running_var / pop_var - 1).abs().mean())
    return mean_dist, var_dist


def with_population_statistics(model: nn.Module, stats: list[tuple[torch.Tensor, torch.Tensor]]) -> nn.Module:
    """A copy of `model` whose BN layers hold the given statistics in place of the running ones."""
    net = copy.deepcopy(model)
    for (_, layer), (mean, var) in zip(bn_layers(net), stats):
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var)
    return net


def with_batch_statistics(model: nn.Module) -> nn.Module:
    """A copy of `model` that normalises with each test batch's own statistics in eval mode.

    PyTorch's BN uses batch statistics in eval mode when it has no running buffers; nothing is
    updated. A BN layer after a linear layer has one value per channel per example, so at test
    batch size 1 its variance is 0 and its output is beta whatever the input: ConvNets (statistics
    over positions) are defined at batch 1, MLPs are not (PyTorch raises; accuracy_in_batches gives NaN).
    """
    net = copy.deepcopy(model)
    for _, layer in bn_layers(net):
        layer.track_running_stats = False
        layer.running_mean = None
        layer.running_var = None
    return net


@torch.no_grad()
def accuracy_in_batches(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Test accuracy when the test set arrives in consecutive batches of `batch_size` (the last may
    be smaller), in eval mode. With `with_batch_statistics` each batch is normalised by itself."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        try:
            out = model(x[i:i + batch_size])
        except ValueError:  # PyTorch: "Expected more than 1 value per channel": one vector has no variance
            model.train(was_training)
            return math.nan
        correct += int((out.argmax(1) == y[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(x), 1)


def with_recomputed_statistics(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A copy of `model` whose BN layers hold the population statistics of `x` with the current
    weights: what the running averages estimate, without their lag or the noise they were
    collected under (noisy BN's running statistics saw noisy activations)."""
    return with_population_statistics(model, population_statistics(model, x))


def recomputed_evaluation(model: nn.Module, data, loss: str = "cross_entropy", sets: tuple = ("train", "val")) -> dict:
    """Loss and accuracy on `sets` (train, val) with BN statistics recomputed on the training set
    (columns <set>_loss_recomputed, <set>_acc_recomputed). A network without BN is evaluated as it is.
    The training set's are read from the outputs of the pass that computed the statistics where one
    forward did (population_pass): the forward train.evaluate would repeat, on the same inputs."""
    from trainfail.training.train import evaluate, loss_fn

    net, seen = model, None
    if bn_layers(model):
        stats, seen = population_pass(model, data.x_train)
        net = with_population_statistics(model, stats)
    out = {}
    for name in sets:
        x, y = (data.x_train, data.y_train) if name == "train" else (data.x_test, data.y_test)
        if name == "train" and seen is not None and len(x) <= EVAL_CHUNK:
            # train.evaluate's numbers for one chunk, from the outputs it would compute
            value = float(loss_fn(loss)(seen, y)) * len(y) / max(len(y), 1)
            acc = int((seen.argmax(1) == y).sum()) / max(len(y), 1) if loss == "cross_entropy" else math.nan
            out[f"{name}_loss_recomputed"], out[f"{name}_acc_recomputed"] = value, acc
        else:
            out[f"{name}_loss_recomputed"], out[f"{name}_acc_recomputed"] = evaluate(net, x, y, loss)
    return out


@torch.no_grad()
def moving_average_floor(model: nn.Module, x: torch.Tensor, batch_size: int, steps: int,
                         generator: torch.Generator, burn_in: int | None = None) -> list[tuple[float, float]]:
    """Per BN layer: the distance (statistics_distance: mean, variance) from the population
    statistics that a moving average of per-batch statistics keeps even when the weights stop
    moving: its sampling floor at this batch size and momentum.

    Measured, not derived: the weights are frozen, the running buffers start at the population
    statistics, and `burn_in + steps` training-mode forwards of batches drawn as in training
    (a permutation per epoch) update them with the layers' own momentum; the floor is the mean
    distance over the last `steps`. (A closed form, Var = m / (2 - m) x the variance of a batch
    statistic, needs that variance, which correlations between positions in a conv net change.)
    The running averages of a trained network can come no closer than this on average.
    """
    net = copy.deepcopy(model)
    pop = population_statistics(net, x)
    layers = [layer for _, layer in bn_layers(net)]
    for layer, (mean, var) in zip(layers, pop):
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var)
    momentum = min(float(layer.momentum) for layer in layers) if layers else 1.0
    burn_in = math.ceil(5 / momentum) if burn_in is None else burn_in  # (1 - m)^burn_in < 1%: the start is forgotten
    net.train()
    n, bs = len(x), min(batch_size, len(x))
    per_epoch = max(n // bs, 1)
    totals = [[0.0, 0.0] for _ in layers]
    perm = None
    for step in range(burn_in + steps):
        if step % per_epoch == 0:
            perm = torch.randperm(n, device=x.device, generator=generator)
        k = step % per_epoch
        net(x[perm[k * bs:(k + 1) * bs]])
        if step >= burn_in:
            for total, layer, (mean, var) in zip(totals, layers, pop):
                d_mean, d_var = statistics_distance(layer.running_mean, layer.running_var, mean, var)
                total[0] += d_mean / steps
                total[1] += d_var / steps
    return [(a, b) for a, b in totals]
