"""CIFAR-style ResNet-18/34 with a width factor on the four stages.

The stem is a 3×3 stride-1 conv of 64 channels that the width factor does not scale, with no
max-pool; shortcuts are 1×1 conv + BN where the shape changes. At width 1 the convs and the
linear layer hold 11,164,362 prunable weights (ResNet-18, 10 classes).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks: list[int], num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        planes_in = 64
        stages = []
        for index, (count, base) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True)):
            planes = max(1, int(base * width))
            layers = []
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(BasicBlock(planes_in, planes, stride))
                planes_in = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(planes_in, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet18(num_classes: int, in_channels: int = 3, image_size: int = 32, width: float = 1.0) -> CifarResNet:
    return CifarResNet([2, 2, 2, 2], num_classes, in_channels, width)


def resnet34(num_classes: int, in_channels: int = 3, image_size: int = 32, width: float = 1.0) -> CifarResNet:
    return CifarResNet([3, 4, 6, 3], num_classes, in_channels, width)
