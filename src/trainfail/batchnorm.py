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


def bn_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """The BN layers in forward order (registration order: our models are nn.Sequential)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _channel_dims(x: torch.Tensor) -> tuple[int, ...]:
    """BN normalises each channel (dim 1) over the examples and, in a conv net, every position."""
    return (0,) + tuple(range(2, x.dim()))


@torch.no_grad()
def population_statistics(model: nn.Module, x: torch.Tensor, chunk: int = 4096) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, unbiased variance) of every BN layer's input over all of `x`, with the current weights.

    Layer by layer: the statistics of layer k's input are computed with layers 1..k-1 already
    normalising by their own population statistics, i.e. the network exactly as it is evaluated
    with population statistics. Sums are accumulated in float64 over chunks to bound memory.
    """
    net = copy.deepcopy(model).eval()
    out = []
    for _, layer in bn_layers(net):
        acc = {"n": 0, "s": 0.0, "ss": 0.0}

        def record(module, inputs):
            v = inputs[0].double()
            dims = _channel_dims(v)
            acc["n"] += v.numel() // v.shape[1]
            acc["s"] = acc["s"] + v.sum(dims)
            acc["ss"] = acc["ss"] + (v * v).sum(dims)

        handle = layer.register_forward_pre_hook(record)
        for i in range(0, len(x), chunk):
            net(x[i:i + chunk])
        handle.remove()
        n = acc["n"]
        mean = acc["s"] / n
        var = (acc["ss"] / n - mean * mean).clamp_min(0) * n / max(n - 1, 1)  # unbiased, as PyTorch's running_var
        layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
        layer.running_var.copy_(var.to(layer.running_var.dtype))
        out.append((layer.running_mean.clone(), layer.running_var.clone()))
    return out


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
