"""The papers' reference networks as ``ptl prune`` sees them: parameter counts, what is pruned, biases."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptl_cli import plugins
from ptl_prune import supermask
from ptl_prune.edgepopup import EdgePopup
from ptl_prune.supermask import num_pruned

from .conftest import build, train_steps


def cifar(name: str, width: float = 1.0) -> nn.Module:
    return plugins.get("models", name).build(10, 3, 32, width)


def _conv_linear(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def test_conv6_matches_the_paper():
    """3×3 convs 3→64→64→128→128→256→256 with three max-pools, FC 4096→256→256→10: 2,262,602."""
    model = cifar("conv6")
    layers = _conv_linear(model)
    assert [tuple(m.weight.shape) for m in layers] == [
        (64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3), (128, 128, 3, 3), (256, 128, 3, 3),
        (256, 256, 3, 3), (256, 4096), (256, 256), (10, 256),
    ]  # fmt: skip
    assert sum(p.numel() for p in model.parameters()) == 2_262_602  # weights + biases
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_conv6_biases_stay_zero_and_untrained_under_edge_popup(fashion):
    images, labels = fashion
    pruner = EdgePopup(sparsity=0.5)
    model = pruner.prepare(build("conv6", width=0.25), seed=0)
    train_steps(model, pruner, images, labels, steps=2, batch=16)
    biases = [m.bias for m in _conv_linear(model)]
    assert len(biases) == 9 and all(not b.requires_grad and not b.any() for b in biases)


@pytest.mark.parametrize(
    ("name", "prunable", "layers"), [("resnet18", 11_164_362, 21), ("resnet34", 21_265_098, 37)]
)
def test_cifar_resnets_match_the_paper(name, prunable, layers):
    """Conv/Linear weights and the classifier's bias at width 1; every one of them pruned at p."""
    model = cifar(name)
    modules = _conv_linear(model)
    counted = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0) for m in modules)
    assert counted == prunable and len(modules) == layers
    stem = modules[0]
    assert stem.weight.shape == (64, 3, 3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    model = EdgePopup(sparsity=0.6).prepare(model, seed=0)
    masks = list(supermask.masked_layers(model))
    assert len(masks) == layers  # stem, shortcuts and the classifier included
    assert all(int((~m.kept()).sum()) == num_pruned(m.scores.numel(), 0.6) for *_, m in masks)


def test_width_factor_scales_stages_but_not_the_stem():
    model = cifar("resnet18", width=0.25)
    stem, first_block = model.conv1, model.layer1[0]
    assert stem.out_channels == 64  # not scaled
    assert first_block.conv1.in_channels == 64 and first_block.conv1.out_channels == 16
    assert isinstance(first_block.shortcut, nn.Sequential)  # 64 -> 16 channels: a 1×1 conv + BN shortcut
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    assert [stage[0].conv1.out_channels for stage in stages] == [16, 32, 64, 128]  # int(64f) ... int(512f)
    assert model.linear.in_features == 128
