"""The models plugin: the papers' architectures at their published sizes, and torchvision's.

Parameter counts are the reference ones (the papers' tables; WRN-28-2 as in FixMatch); forward and
training checks run on real Fashion-MNIST images from the bundled pack. Nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptl_cli import plugins
from ptl_cli.errors import UserError


def build(name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width=1.0, **params):
    return plugins.get("models", name).build(num_classes, in_channels, image_size, width, params=params)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prunable(model: nn.Module) -> int:
    """Conv and Linear weights plus the Linear biases: what the pruning papers count."""
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            total += module.weight.numel()
            if isinstance(module, nn.Linear) and module.bias is not None:
                total += module.bias.numel()
    return total


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fashion() -> tuple[torch.Tensor, torch.Tensor]:
    """64 real images (normalized, 1×28×28) with their labels."""
    ds = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    index = torch.arange(0, 64 * 73, 73)
    images = (ds.images[index].float() / 255 - ds.info.mean[0]) / ds.info.std[0]
    return images, ds.targets[index]


# -- Conv-2/4/6/8 -----------------------------------------------------------------------------------------
def test_conv6_has_the_papers_size_and_layout():
    model = build("conv6")
    assert count(model) == 2_262_602  # weights + biases at width 1, CIFAR-10 input
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert [(m.in_features, m.out_features) for m in linears] == [(4096, 256), (256, 256), (256, 10)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(torch.count_nonzero(m.bias) == 0 for m in convs + linears)  # zero-initialized biases
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    relus = sum(isinstance(m, nn.ReLU) for m in model.modules())
    assert relus == len(convs) + len(linears) - 1  # after every layer but the last


@pytest.mark.parametrize(("name", "convs"), [("conv2", 2), ("conv4", 4), ("conv6", 6), ("conv8", 8)])
def test_conv_nets_run_on_grey_28px_images_at_any_width(name, convs, fashion):
    images, _ = fashion
    model = build(name, in_channels=1, image_size=28, width=0.25)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs
    assert model(images[:4]).shape == (4, 10)
    assert build(name, width=0.5, bias=False).classifier[1].bias is None


def test_conv8_needs_big_enough_images():
    with pytest.raises(UserError, match="conv8 needs images of at least 16 pixels, got 8"):
        build("conv8", image_size=8)


# -- CIFAR ResNets -------------------------------------------------------------------------------
def test_resnet18_has_the_papers_prunable_size():
    model = build("resnet18")
    assert prunable(model) == 11_164_362
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0, 2.0])
def test_resnet_width_scales_the_stages_but_not_the_stem(width):
    model = build("resnet18", width=width)
    assert model.conv1.out_channels == 64  # the stem is never scaled
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert [s[-1].conv2.out_channels for s in stages] == [int(b * width) for b in (64, 128, 256, 512)]
    assert model.linear.in_features == int(512 * width)
    shortcut = model.layer2[0].shortcut  # shape changes: 1×1 conv + BatchNorm
    assert isinstance(shortcut[0], nn.Conv2d) and shortcut[0].kernel_size == (1, 1)
    assert isinstance(shortcut[1], nn.BatchNorm2d)


def test_resnet34_blocks_and_alias():
    model = build("cifar-resnet34")
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [3, 4, 6, 3]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


# -- Wide ResNet ---------------------------------------------------------------------------------------------
def test_wrn28_2_is_fixmatchs_network():
    model = build("wrn28")  # width 1 -> WRN-28-2
    assert count(model) == 1_467_610
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules()) == 25
    assert model.fc.in_features == 128 and model.bn.momentum == 0.001
    assert build("wrn28", width=4).fc.in_features == 512  # WRN-28-8
    assert build("wrn28", bn_momentum=0.1, leaky_slope=0.2).act.negative_slope == 0.2


# -- torchvision ----------------------------------------------------------------------------------
def test_torchvision_models_by_name():
    model = build("torchvision:resnet18", num_classes=7, image_size=64)
    assert model.fc.out_features == 7 and model(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
    cifar = build("torchvision:resnet18", stem="cifar")
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, nn.Identity)
    grey = build("torchvision:mobilenet_v3_small", in_channels=1, image_size=64)
    assert grey(torch.zeros(2, 1, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "params", "width", "message"),
    [
        ("torchvision:resnt18", {}, 1.0, "unknown torchvision model 'resnt18'; did you mean 'resnet18'"),
        ("torchvision:resnet18", {"weights": "IMAGENET1K_V2"}, 1.0, "did you mean 'IMAGENET1K_V1'"),
        ("torchvision:resnet18", {}, 0.5, "torchvision models have no width factor"),
        ("torchvision:vit_b_16", {"stem": "cifar"}, 1.0, "stem='cifar' works on torchvision ResNets"),
        ("torchvision:resnet18", {"stem": "tiny"}, 1.0, "key `stem`"),
    ],
)
def test_torchvision_bad_input_is_a_clear_error(name, params, width, message):
    with pytest.raises(UserError, match=message):
        build(name, width=width, **params)


def test_every_model_is_listed_with_its_parameters():
    names = set(plugins.manager().registry("models").names())
    assert {"conv2", "conv4", "conv6", "conv8", "resnet18", "resnet34", "wrn28", "torchvision:*"} <= names
    with pytest.raises(UserError, match="unknown model 'resnet19'; did you mean 'resnet18'"):
        plugins.get("models", "resnet19")


# -- they learn -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "width", "lr", "drop"),
    # Conv nets (no BatchNorm, PyTorch's default init) start slowly; the BatchNorm nets do not.
    [("conv4", 0.25, 0.2, 0.03), ("resnet18", 0.125, 0.05, 0.5), ("wrn28", 0.5, 0.05, 0.3)],
)
def test_a_few_sgd_steps_fit_a_real_batch(name, width, lr, drop, fashion):
    torch.manual_seed(0)
    images, labels = fashion
    model = build(name, in_channels=1, image_size=28, width=width)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    losses = []
    for _ in range(10):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses  # steadily down
    assert losses[-1] < (1 - drop) * losses[0], losses
