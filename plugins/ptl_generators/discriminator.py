"""A small spectral-norm projection discriminator for training BigGAN-style generators.

BigGAN's discriminator weights were never published; ``ptl train-source generator --kind biggan``
needs one to train a generator, so this is the BigGAN/SNGAN design at small scale: residual
down-sampling blocks with spectral-normalized convolutions, sum pooling, and a projection term
``<embed(y), h>`` whose embedding is a bias-free linear map of the class vector (so one-hot rows
and class indices mean the same thing).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ptl_generators.biggan import SNConv2d, SNLinear


class DBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, down: bool, first: bool) -> None:
        super().__init__()
        self.first = first
        self.down = down
        self.conv_1 = SNConv2d(in_ch, out_ch, 3, padding=1)
        self.conv_2 = SNConv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = SNConv2d(in_ch, out_ch, 1) if (in_ch != out_ch or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv_2(F.relu(self.conv_1(h)))
        skip = x
        if self.down:
            h = F.avg_pool2d(h, 2)
        if self.shortcut is not None:
            skip = self.shortcut(skip)
        if self.down:
            skip = F.avg_pool2d(skip, 2)
        return h + skip


class ProjectionDiscriminator(nn.Module):
    """``D(x, y) = w·h(x) + <E y, h(x)>`` with ``h`` a stack of residual blocks."""

    def __init__(self, num_classes: int, in_channels: int, channels: Sequence[int], downs: Sequence[bool]):
        super().__init__()
        blocks = []
        prev = in_channels
        for i, (ch, down) in enumerate(zip(channels, downs, strict=True)):
            blocks.append(DBlock(prev, ch, down, first=i == 0))
            prev = ch
        self.blocks = nn.Sequential(*blocks)
        self.linear = SNLinear(prev, 1)
        self.embed = SNLinear(num_classes, prev, bias=False)

    def forward(self, x: torch.Tensor, class_probs: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.embed(class_probs) * h).sum(1)
