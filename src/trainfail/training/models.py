"""Models: an MLP and a small conv net, each with a normalization and an activation choice.

The conv net uses 1-D convolutions for sequences (MNIST-1D: input (C, L)) and 2-D convolutions
for images (input (C, H, W)), so one `arch: cnn` serves every dataset.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch
from torch import nn

NORMS = ("none", "batch", "layer", "group", "instance", "weight", "noisy_batch")
ACTIVATIONS = ("relu", "sigmoid", "tanh", "linear")
ARCHS = ("mlp", "cnn")


def activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "linear": nn.Identity}[name]()


def _groups(channels: int) -> int:
    """GroupNorm's group count: 32 as in Wu & He 2018 (from 64 channels up), fewer for narrower layers,
    keeping at least 2 channels per group (1 per group would be InstanceNorm): 16 channels -> 8 groups."""
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0 and channels // g >= 2:
            return g
    return 1


def norm_layer(name: str, features: int, spatial_dims: int, batchnorm_momentum: float = 0.1) -> nn.Module:
    """The normalization after a linear or conv layer, before the activation.

    spatial_dims is 0 after a linear layer, 1 or 2 after a conv layer.
    """
    if name in ("none", "weight"):  # weight norm is a reparametrisation of the layer, not a layer
        return nn.Identity()
    if name in ("batch", "noisy_batch"):
        cls = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[spatial_dims]
        bn = cls(features, momentum=batchnorm_momentum)
        return NoisyBatchNorm(bn) if name == "noisy_batch" else bn
    if name == "layer":
        # normalise over all features of one example (channels and positions for conv layers)
        return nn.GroupNorm(1, features) if spatial_dims else nn.LayerNorm(features)
    if name == "group":
        return nn.GroupNorm(_groups(features), features)
    if name == "instance":
        if spatial_dims == 0:  # an instance of a vector has one value per feature: no statistics
            raise ValueError("instance norm needs a conv net (arch: cnn)")
        return nn.GroupNorm(features, features)  # = InstanceNorm with affine parameters
    raise ValueError(f"unknown norm {name!r}; expected one of {', '.join(NORMS)}")


NOISE_MODES = ("per_example", "per_channel")


class NoisyBatchNorm(nn.Module):
    """Santurkar et al. 2018's "noisy BatchNorm": batch norm, then noise whose distribution moves every step.

    The paper: "we perturb each activation for each sample in the batch using i.i.d. noise sampled
    from a non-zero mean and non-unit variance distribution ... this noise distribution changes at
    each time step". At every training forward (= every step) each channel c draws the step's
    noise distribution, mean mu_c ~ U(-s, s) and standard deviation sigma_c ~ U(1, k)
    (s = noise_shift, k = noise_scale; the uniform draws, the Gaussian and the magnitudes are
    ours: the paper gives only the description above), and then
      per_example (default, as the paper describes): every activation of every example gets its
                   own noise, y = x + e, e ~ N(mu_c, sigma_c^2) i.i.d. over examples and positions;
      per_channel: one affine distortion shared by the batch, y = sigma_c x + mu_c.
    `noise_magnitude` m scales the perturbation, y - x, by m (m = 1: the above; per_example
    y = x + m e, per_channel y = (1 + m (sigma_c - 1)) x + m mu_c): a dose-response from no noise
    (m = 0) through noise weaker than the unit-variance signal to noise that drowns it.
    Either way the next layer sees inputs whose mean and variance move every step, which BN was
    supposed to prevent. In eval mode: plain BN (no noise). `resample = False` reuses the last
    draw, so a measurement can redo a step at the same noise (on the same batch).

    The noise's random stream: `noise_seed` (set by models.build(..., seed=run's seed): noise_seed_for)
    seeds a torch.Generator of the layer's own, made on the device at the first draw, so a run's noise
    is a function of its seed alone, whatever else draws from the global stream, and the stacked
    engine (stack.py) draws each member's noise from that member's own generators in the order the
    run alone does. `noise_seed = None` (a layer built without a seed): the global stream.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, noise_shift: float = 0.5, noise_scale: float = 1.5,
                 noise: str = "per_example", noise_magnitude: float = 1.0):
        super().__init__()
        if noise not in NOISE_MODES:
            raise ValueError(f"unknown noise {noise!r}; expected one of {', '.join(NOISE_MODES)}")
        self.bn = bn
        self.noise_shift, self.noise_scale, self.noise = noise_shift, noise_scale, noise
        self.noise_magnitude = noise_magnitude
        self.resample = True
        self.mu: torch.Tensor | None = None      # the step's noise distribution, per channel
        self.sigma: torch.Tensor | None = None
        self.shift: torch.Tensor | None = None   # what is added to the BN output (per channel or per activation)
        self.scale: torch.Tensor | None = None   # what multiplies it (per_channel only)
        self.noise_seed: int | None = None        # the layer's own stream (None: the global one)
        self.generator: torch.Generator | None = None

    def stream(self, device: torch.device) -> torch.Generator | None:
        """The generator the noise is drawn from: the layer's own (seeded with noise_seed, made on
        `device` at the first draw), or None (the global stream) when it has no seed."""
        if self.noise_seed is None:
            return None
        if self.generator is None:
            self.generator = torch.Generator(device=device).manual_seed(self.noise_seed)
        return self.generator

    def draw(self, y: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """One step's noise for the BN output y, from `generator`: (scale or None, shift), the noisy
        output being y * scale + shift (per_channel) or y + shift (per_example). Sets mu and sigma.
        The stacked engine calls it per member with that member's y and generator."""
        c = self.bn.num_features
        view = (1, -1) + (1,) * (y.dim() - 2)  # per channel, broadcast over examples and positions
        self.mu = ((torch.rand(c, device=y.device, generator=generator) * 2 - 1) * self.noise_shift).view(view)
        self.sigma = (1 + torch.rand(c, device=y.device, generator=generator) * (self.noise_scale - 1)).view(view)
        m = self.noise_magnitude
        if self.noise == "per_channel":
            return 1 + m * (self.sigma - 1), m * self.mu
        e = torch.randn(y.shape, device=y.device, dtype=y.dtype, generator=generator)
        return None, m * (self.mu + self.sigma * e)

    def _draw(self, y: torch.Tensor) -> None:
        self.scale, self.shift = self.draw(y, self.stream(y.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)
        if not self.training:
            return y
        if self.resample or self.shift is None:
            self._draw(y)
        return y + self.shift if self.scale is None else y * self.scale + self.shift


def _maybe_weight_norm(layer: nn.Module, norm: str) -> nn.Module:
    if norm == "weight":
        return nn.utils.parametrizations.weight_norm(layer)
    return layer


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int,
                 norm: str = "none", act: str = "relu", bias: bool = True, batchnorm_momentum: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [_maybe_weight_norm(nn.Linear(width, h, bias=bias), norm),
                       norm_layer(norm, h, 0, batchnorm_momentum), activation(act)]
            width = h
        layers.append(nn.Linear(width, out_features, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvNet(nn.Module):
    """conv-norm-act blocks (each halving the resolution after the first), global average pool, linear."""

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int], out_features: int,
                 norm: str = "none", act: str = "relu", kernel_size: int = 3, batchnorm_momentum: float = 0.1):
        super().__init__()
        spatial = len(input_shape) - 1
        if spatial not in (1, 2):
            raise ValueError(f"cnn needs input (C, L) or (C, H, W), got {tuple(input_shape)}")
        conv = nn.Conv1d if spatial == 1 else nn.Conv2d
        pool = nn.MaxPool1d if spatial == 1 else nn.MaxPool2d
        gap = nn.AdaptiveAvgPool1d(1) if spatial == 1 else nn.AdaptiveAvgPool2d(1)
        layers: list[nn.Module] = []
        width = input_shape[0]
        for i, c in enumerate(channels):
            if i > 0:
                layers.append(pool(2))
            layers += [_maybe_weight_norm(conv(width, c, kernel_size, padding=kernel_size // 2), norm),
                       norm_layer(norm, c, spatial, batchnorm_momentum), activation(act)]
            width = c
        layers += [gap, nn.Flatten(), nn.Linear(width, out_features)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build(spec: dict, input_shape: Sequence[int], num_classes: int, seed: int | None = None) -> nn.Module:
    """A model from its settings: {arch, hidden (mlp) or channels (cnn), norm, activation}. `seed`
    (the run's): noisy batch norm's layers draw their noise from streams of their own seeded from it
    (noise_seed_for); without it, from the global stream."""
    arch = spec.get("arch", "mlp")
    norm, act = spec.get("norm", "none"), spec.get("activation", "relu")
    momentum = spec.get("batchnorm_momentum", 0.1)
    if arch == "mlp":
        return _configure_noise(MLP(math.prod(input_shape), spec.get("hidden", [64]), num_classes, norm, act,
                   spec.get("bias", True), momentum), spec, seed)
    if arch == "cnn":
        return _configure_noise(ConvNet(input_shape, spec.get("channels", [16, 32]), num_classes, norm, act,
                                        spec.get("kernel_size", 3), momentum), spec, seed)
    raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")


def noise_seed_for(seed: int, layer: int) -> int:
    """The seed of noisy batch norm layer `layer` (forward order) of the run with seed `seed`: a hash,
    so that the layers' streams and the run's data-order stream (seeded with `seed`) are unrelated."""
    digest = hashlib.sha256(f"noisy_batch_norm:{int(seed)}:{int(layer)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # below 2**63


def _configure_noise(model: nn.Module, spec: dict, seed: int | None = None) -> nn.Module:
    noisy = [m for m in model.modules() if isinstance(m, NoisyBatchNorm)]
    for k, m in enumerate(noisy):
        m.noise_shift = float(spec.get("noise_shift", m.noise_shift))
        m.noise_scale = float(spec.get("noise_scale", m.noise_scale))
        m.noise = spec.get("noise", m.noise)
        m.noise_magnitude = float(spec.get("noise_magnitude", m.noise_magnitude))
        if m.noise not in NOISE_MODES:
            raise ValueError(f"unknown noise {m.noise!r}; expected one of {', '.join(NOISE_MODES)}")
        m.noise_seed = None if seed is None else noise_seed_for(seed, k)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
