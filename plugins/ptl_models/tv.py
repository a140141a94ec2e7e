"""Any torchvision classifier as a ptl model: ``torchvision:resnet50``, ``torchvision:vit_b_16``..."""

from __future__ import annotations

from torch import nn

from ptl_cli.errors import UserError


class RepeatChannels(nn.Module):
    """Feeds grey images to a network built for RGB by repeating the channel."""

    def __init__(self, net: nn.Module, repeats: int) -> None:
        super().__init__()
        self.net = net
        self.repeats = repeats

    def forward(self, x):
        return self.net(x.repeat(1, self.repeats, 1, 1))


def _cifar_stem(net: nn.Module) -> None:
    if not (hasattr(net, "conv1") and hasattr(net, "maxpool")):
        raise UserError("stem='cifar' works on torchvision ResNets (conv1 + maxpool) only")
    old = net.conv1
    net.conv1 = nn.Conv2d(old.in_channels, old.out_channels, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()


def build(
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 224,
    width: float = 1.0,
    name: str = "torchvision:resnet18",
    weights: str | None = None,
    stem: str = "keep",
) -> nn.Module:
    import torchvision.models as tvm

    from ptl_models.tv_catalog import model_problem

    arch = name.split(":", 1)[1]
    problem = model_problem(name, weights, width, stem)  # what the recipe's check says, too
    if problem:
        raise UserError(f"{name}: {problem}")
    try:
        if weights:
            net = tvm.get_model(arch, weights=weights)
            head_replace(net, num_classes)
        else:
            net = tvm.get_model(arch, weights=None, num_classes=num_classes)
    except (OSError, RuntimeError) as exc:  # offline downloads surface as URLError (an OSError)
        raise UserError(
            f"{name}: weights {weights!r} could not be loaded ({exc}); check the network, or put the "
            "file in torch's hub cache ($TORCH_HOME/hub/checkpoints)"
        ) from None
    if stem == "cifar":
        _cifar_stem(net)
    if in_channels == 1:
        return RepeatChannels(net, 3)
    return net


def head_replace(net: nn.Module, num_classes: int) -> None:
    """Swap the last Linear layer for a fresh ``num_classes``-way one (pretrained bodies)."""
    parent, attr, last = None, None, None
    for module_name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            last = module_name
    if last is None:
        raise UserError("no Linear head found to replace")
    *path, attr = last.split(".")
    parent = net
    for part in path:
        parent = getattr(parent, part)
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))
