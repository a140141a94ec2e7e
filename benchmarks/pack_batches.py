"""The real images the reference comparisons (``*_reference.py``) step with: the bundled pack's
first train images, normalized as ptl's loaders normalize them, in batches of 32 — one definition,
so every comparison in docs/prune.md is made on the same batches."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ptl_cli import plugins

BATCH = 32


def pack_images(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``BATCH * steps`` train images of the bundled pack (normalized) and their labels."""
    dataset = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    count = BATCH * steps
    images = (dataset.images[:count].float() / 255.0 - dataset.info.mean[0]) / dataset.info.std[0]
    return images, dataset.targets[:count]


def batch(images: torch.Tensor, labels: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s batch of :func:`pack_images`."""
    return images[BATCH * step : BATCH * (step + 1)], labels[BATCH * step : BATCH * (step + 1)]


def backward_each(
    pairs: tuple[tuple[nn.Module, torch.optim.Optimizer], ...], x: torch.Tensor, y: torch.Tensor
) -> None:
    """For each ``(model, optimizer)``: zero its gradients and backpropagate the batch's
    cross-entropy (the optimizers step after the caller has compared the gradients)."""
    for model, optimizer in pairs:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()


def scores_sgd(params: Iterable[torch.Tensor], weight_decay: float = 0.0) -> torch.optim.SGD:
    """The optimizer every comparison gives both sides: SGD at lr 0.1 with momentum 0.9."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=weight_decay)
