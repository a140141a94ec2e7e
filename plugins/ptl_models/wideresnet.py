"""Wide ResNet-28-k as used by FixMatch and USB (pre-activation, LeakyReLU 0.1, BN momentum 0.001)."""

from __future__ import annotations

from torch import nn


class WideBlock(nn.Module):
    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        momentum: float,
        slope: float,
        dropout: float,
        activate_before_residual: bool = False,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, momentum=momentum)
        self.act1 = nn.LeakyReLU(slope, inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=momentum)
        self.act2 = nn.LeakyReLU(slope, inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.equal = cin == cout and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
        self.activate_before_residual = activate_before_residual

    def forward(self, x):
        # Pre-activation wiring of the FixMatch WRN: the first block of a stage that changes
        # shape feeds the raw input to both branches, except the very first block of the net.
        if self.equal:
            body, residual = self.act1(self.bn1(x)), x
        elif self.activate_before_residual:
            body = residual = self.act1(self.bn1(x))
        else:
            body = residual = x
        out = self.conv2(self.dropout(self.act2(self.bn2(self.conv1(body)))))
        return out + (residual if self.shortcut is None else self.shortcut(residual))


class WideResNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widen: int = 2,
        depth: int = 28,
        momentum: float = 0.001,
        slope: float = 0.1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks = []
        for stage in range(3):
            for index in range(n):
                cin = widths[stage] if index == 0 else widths[stage + 1]
                stride = (1 if stage == 0 else 2) if index == 0 else 1
                blocks.append(
                    WideBlock(
                        cin,
                        widths[stage + 1],
                        stride,
                        momentum,
                        slope,
                        dropout,
                        activate_before_residual=stage == 0 and index == 0,
                    )
                )
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3], momentum=momentum)
        self.act = nn.LeakyReLU(slope, inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = self.act(self.bn(self.blocks(self.conv1(x))))
        return self.fc(self.pool(out).flatten(1))


def wrn28(
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    width: float = 1.0,
    bn_momentum: float = 0.001,
    leaky_slope: float = 0.1,
    dropout: float = 0.0,
) -> WideResNet:
    return WideResNet(
        num_classes, in_channels, max(1, int(round(2 * width))), 28, bn_momentum, leaky_slope, dropout
    )
