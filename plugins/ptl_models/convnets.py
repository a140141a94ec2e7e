"""The Conv-2/4/6/8 networks of Frankle & Carbin and Ramanujan et al.

Conv-6 at width 1: 3×3 convs 3→64→64, pool, →128→128, pool, →256→256, pool, then
FC 4096→256→256→10; ReLU after every layer but the last, no BatchNorm, zero-initialized
biases. That is 2,262,602 weights and biases on 32×32 RGB input.
"""

from __future__ import annotations

from torch import nn

from ptl_models.pooling import MaxPool2x2

STAGES = {2: [64], 4: [64, 128], 6: [64, 128, 256], 8: [64, 128, 256, 512]}


class ConvNet(nn.Module):
    def __init__(
        self,
        depth: int,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        width: float = 1.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        size = image_size
        for stage in STAGES[depth]:
            out = max(1, int(stage * width))
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=bias),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, padding=1, bias=bias),
                nn.ReLU(inplace=True),
                MaxPool2x2(),  # nn.MaxPool2d(2) without its CPU kernel's data-dependent speed
            ]
            channels = out
            size //= 2
        if size < 1:
            from ptl_cli.errors import UserError

            raise UserError(
                f"conv{depth} needs images of at least {2 ** len(STAGES[depth])} pixels, got {image_size}"
            )
        self.features = nn.Sequential(*layers)
        hidden = max(1, int(256 * width))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * size * size, hidden, bias=bias),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden, bias=bias),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes, bias=bias),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.classifier(self.features(x))


def _factory(depth: int):
    def build(
        num_classes: int, in_channels: int = 3, image_size: int = 32, width: float = 1.0, bias: bool = True
    ):
        return ConvNet(depth, num_classes, in_channels, image_size, width, bias)

    build.__name__ = f"conv{depth}"
    return build


conv2, conv4, conv6, conv8 = (_factory(d) for d in (2, 4, 6, 8))
