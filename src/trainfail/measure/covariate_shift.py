"""Internal covariate shift and the loss landscape along the gradient (Santurkar et al. 2018).

ICS of layer i (their Definition 2.1): G = the gradient of the loss w.r.t. layer i's weights, and
G' = the same gradient, on the same batch, after the layers before i have taken their update
(layer i and the layers after it unchanged). ||G - G'|| and cos(G, G') say how much layer i's
optimisation problem moved because its inputs moved; ||G - G'|| / ||G|| says it without the
gradient's scale.

Landscape along the gradient (their Section 3.1, Figure 4): from w, step to w - eta g for several
step sizes eta, on the same batch, and measure
  loss variation            max_eta L(w - eta g) - min_eta L(w - eta g)
  gradient predictiveness   max_eta ||grad L(w - eta g) - grad L(w)||
  effective beta-smoothness max_eta ||grad L(w - eta g) - grad L(w)|| / ||eta g||
Every measurement works on a copy of the model (train mode, BN with batch statistics as in the
step itself, noisy-BN noise frozen at the step's draw), so training is not disturbed.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import torch
from torch import nn

from trainfail.training.models import NoisyBatchNorm

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _measuring_copy(model: nn.Module) -> nn.Module:
    """A copy that redoes the current step: same mode, same noise draw (no resampling)."""
    net = copy.deepcopy(model)
    for m in net.modules():
        if isinstance(m, NoisyBatchNorm):
            m.resample = False
    return net


def weight_indices(model: nn.Module) -> list[int]:
    """Positions in model.parameters() of each layer's weight matrix or kernel (dim >= 2), in forward order."""
    return [i for i, p in enumerate(model.parameters()) if p.dim() >= 2]


def _gradients(net: nn.Module, loss: Loss, x: torch.Tensor, y: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    params = list(net.parameters())
    value = loss(net(x), y)
    grads = list(torch.autograd.grad(value, params))
    return float(value.detach()), grads


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def internal_covariate_shift(model: nn.Module, loss: Loss, x: torch.Tensor, y: torch.Tensor,
                             lr: float) -> list[tuple[float, float, float]]:
    """(||G - G'||, cos(G, G'), ||G - G'|| / ||G||) for every weight layer after the first (the
    first has no preceding layers). The relative distance is free of the gradients' scale, which
    BN changes, so it compares networks with and without BN; the paper plots ||G - G'||.

    The preceding layers take the plain SGD update -lr * gradient (all of their parameters, BN's
    gamma and beta included). Their sets are nested, so one copy is updated progressively.
    """
    net = _measuring_copy(model)
    params = list(net.parameters())
    _, before = _gradients(net, loss, x, y)
    out, updated = [], 0
    for j in weight_indices(net)[1:]:
        with torch.no_grad():
            for p, g in zip(params[updated:j], before[updated:j]):
                p.sub_(lr * g)
        updated = j
        value = loss(net(x), y)
        after = torch.autograd.grad(value, params[j])[0]
        g0 = before[j]
        l2 = float(torch.linalg.vector_norm(g0 - after))
        denom = float(torch.linalg.vector_norm(g0) * torch.linalg.vector_norm(after))
        cos = float((g0 * after).sum()) / denom if denom > 0 else math.nan
        norm = float(torch.linalg.vector_norm(g0))
        out.append((l2, cos, l2 / norm if norm > 0 else math.nan))
    return out


def landscape_along_gradient(model: nn.Module, loss: Loss, x: torch.Tensor, y: torch.Tensor,
                             step_sizes: Sequence[float]) -> dict:
    """Loss variation, gradient predictiveness and effective beta-smoothness along -grad (see module doc)."""
    net = _measuring_copy(model)
    params = list(net.parameters())
    start = [p.detach().clone() for p in params]
    _, g = _gradients(net, loss, x, y)
    g_flat = _flat(g)
    g_norm = float(torch.linalg.vector_norm(g_flat))
    losses, changes, betas = [], [], []
    for eta in step_sizes:
        with torch.no_grad():
            for p, p0, gi in zip(params, start, g):
                p.copy_(p0 - eta * gi)
        value, g_eta = _gradients(net, loss, x, y)
        change = float(torch.linalg.vector_norm(_flat(g_eta) - g_flat))
        losses.append(value)
        changes.append(change)
        betas.append(change / (eta * g_norm) if g_norm > 0 else math.nan)
    return {"loss_variation": max(losses) - min(losses), "gradient_predictiveness": max(changes),
            "beta_smoothness": max(betas)}


class LayerInputMoments:
    """Per-channel mean and std of each weight layer's input (after the first) at the last two
    training forwards: how far a layer's input distribution moves in one step.

    `active = False` pauses recording (measurement copies share these hooks)."""

    def __init__(self, model: nn.Module):
        layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))][1:]
        self.previous: list = [None] * len(layers)
        self.current: list = [None] * len(layers)
        self.active = True
        for k, layer in enumerate(layers):
            layer.register_forward_pre_hook(self._hook(k))

    def _hook(self, k: int):
        def record(module, inputs):
            if not (self.active and module.training):
                return
            v = inputs[0].detach()
            v = v.transpose(0, 1).reshape(v.shape[1], -1)  # channel x (examples, positions)
            self.previous[k] = self.current[k]
            self.current[k] = (v.mean(1), v.std(1))
        return record

    def shift(self) -> list[float]:
        """Per layer: mean over channels of |change of mean| + |change of std| between the last two steps."""
        out = []
        for prev, cur in zip(self.previous, self.current):
            if prev is None or cur is None:
                out.append(math.nan)
            else:
                out.append(float((cur[0] - prev[0]).abs().mean() + (cur[1] - prev[1]).abs().mean()))
        return out



SNR_CAP = 1e6  # an SNR at or above this is reported as it: the noise is an affine map of the signal


def snr(clean: torch.Tensor, noised: torch.Tensor) -> float:
    """SNR of `noised` about `clean` (examples x channels x ...): per channel over the batch (examples
    and positions), the variance of the least-squares fit of noised on clean (signal) against the
    residual's (noise), summed over channels; capped at SNR_CAP."""
    z = clean.detach().double().transpose(0, 1).reshape(clean.shape[1], -1)
    y = noised.detach().double().transpose(0, 1).reshape(noised.shape[1], -1)
    z, y = z - z.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    var_z = (z * z).mean(1)
    slope = (z * y).mean(1) / var_z.clamp_min(1e-30)
    signal = float((slope ** 2 * var_z).sum())
    noise = float(((y - slope[:, None] * z) ** 2).mean(1).sum())
    return SNR_CAP if noise <= signal / SNR_CAP else signal / noise


class NoiseSNR:
    """Signal-to-noise ratio (`snr`) of each noisy BN layer's output about its clean BN output at the
    last training forward: the information the noise destroys, not how far it moves the
    distribution. per_channel noise (y = sigma z + mu, shared by the batch) is an affine map of the
    signal (SNR at SNR_CAP); per_example noise y = z + m e on unit-variance z has SNR ~ 1 / (m sigma)^2.

    `active = False` pauses recording (measurement copies share these hooks)."""

    def __init__(self, model: nn.Module):
        layers = [m for m in model.modules() if isinstance(m, NoisyBatchNorm)]
        self.clean: list = [None] * len(layers)
        self.noised: list = [None] * len(layers)
        self.active = True
        for k, layer in enumerate(layers):
            layer.bn.register_forward_hook(self._hook(self.clean, k))
            layer.register_forward_hook(self._hook(self.noised, k))

    def _hook(self, store: list, k: int):
        def record(module, inputs, output):
            if self.active and module.training:
                store[k] = output.detach()
        return record

    def snr(self) -> list[float]:
        """Per noisy BN layer, in forward order (NaN before the first training forward)."""
        return [math.nan if z is None or y is None else snr(z, y) for z, y in zip(self.clean, self.noised)]
