"""The learning rate of an epoch: linear warm-up, cosine decay, then an optional constant tail.

Computed from the epoch number alone (as the reference's per-epoch cosine is), so a resumed run
needs no scheduler state: CIFAR recipes use the plain cosine, ImageNet ones 5 + 95 + 5 epochs.
"""

from __future__ import annotations

import math


def lr_at(
    epoch: int,
    epochs: int,
    base_lr: float,
    schedule: str = "cosine",
    warmup_epochs: int = 0,
    tail_epochs: int = 0,
    tail_lr: float = 0.0,
) -> float:
    if epoch < warmup_epochs:
        return base_lr * (epoch + 1) / warmup_epochs
    if epoch >= epochs - tail_epochs:
        return tail_lr
    if schedule == "constant":
        return base_lr
    position = epoch - warmup_epochs
    length = epochs - warmup_epochs - tail_epochs
    return 0.5 * (1.0 + math.cos(math.pi * position / length)) * base_lr
