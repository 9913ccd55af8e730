import pytest
import torch

from trainfail.training import models


@pytest.mark.parametrize("norm", models.NORMS)
@pytest.mark.parametrize("shape", [(1, 40), (1, 8, 8)])
def test_cnn_every_norm_on_sequences_and_images(norm, shape):
    net = models.build({"arch": "cnn", "channels": [8, 16], "norm": norm}, shape, 10)
    out = net(torch.randn(4, *shape))
    assert out.shape == (4, 10)
    out.sum().backward()


@pytest.mark.parametrize("norm", [n for n in models.NORMS if n != "instance"])
@pytest.mark.parametrize("act", models.ACTIVATIONS)
def test_mlp_every_norm_and_activation(norm, act):
    net = models.build({"arch": "mlp", "hidden": [16, 16], "norm": norm, "activation": act}, (1, 8, 8), 10)
    assert net(torch.randn(5, 1, 8, 8)).shape == (5, 10)


def test_norm_layers_are_the_right_ones():
    assert isinstance(models.norm_layer("batch", 8, 2), torch.nn.BatchNorm2d)
    assert isinstance(models.norm_layer("layer", 8, 0), torch.nn.LayerNorm)
    group = models.norm_layer("group", 32, 1)
    assert isinstance(group, torch.nn.GroupNorm) and group.num_groups == 16
    inst = models.norm_layer("instance", 8, 2)
    assert inst.num_groups == 8  # one group per channel = instance norm
    with pytest.raises(ValueError, match="instance norm needs a conv net"):
        models.norm_layer("instance", 8, 0)


def test_layer_norm_normalises_each_example():
    ln = models.norm_layer("layer", 6, 1)
    y = ln(torch.randn(3, 6, 10) * 5 + 2)
    assert torch.allclose(y.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5)


def test_weight_norm_is_a_parametrisation():
    net = models.build({"arch": "mlp", "hidden": [8], "norm": "weight"}, (4,), 2)
    names = [n for n, _ in net.named_parameters()]
    assert any("original0" in n for n in names) and any("original1" in n for n in names)


def test_batchnorm_momentum_is_passed():
    net = models.build({"arch": "mlp", "hidden": [8], "norm": "batch", "batchnorm_momentum": 0.3}, (4,), 2)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert bns and bns[0].momentum == 0.3


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="unknown arch"):
        models.build({"arch": "transformer"}, (4,), 2)
